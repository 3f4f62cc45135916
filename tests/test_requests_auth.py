"""What only the requests adapter has: the hook's requests and history, cookies, form data,
hooks that run before the body is read; and the auth object's own settings.

What every adapter promises is in ``tests/test_contract.py``.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, ConfigurationError, PersonalAccessTokenAuth
from requests_piggy_auth.testing import FakePiggy, json_response
from requests_piggy_auth.token_session import close_token_session, token_session

from .conftest import API, CLIENT_ID, CLIENT_SECRET, INVALID_TOKEN, MakeEndless, invalid_token


def get(auth: ClientCredentialsAuth, url: str) -> requests.Response:
    with requests.Session() as session:
        session.auth = auth
        return session.get(url)


@pytest.fixture
def stale(piggy: FakePiggy, auth: ClientCredentialsAuth) -> FakePiggy:
    """A piggy whose cached token was revoked: the next call gets a 401 first."""
    get(auth, piggy.url + API)
    piggy.revoke_all()
    return piggy


def test_the_resent_answer_and_its_401_each_carry_the_request_that_was_sent(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    first = get(auth, piggy.url + API)
    piggy.revoke_all()

    response = get(auth, piggy.url + API)

    assert [r.status_code for r in response.history] == [401]
    old, new = (f"Bearer {token}" for token in piggy.tokens())
    assert first.request.headers["Authorization"] == old
    assert response.history[0].request.headers["Authorization"] == old
    assert response.request.headers["Authorization"] == new


def test_cookies_set_by_the_401_are_sent_with_the_retry(
    stale: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    stale.fault_resources(
        lambda request: json_response(
            {"error": "invalid_token"}, 401, {"Set-Cookie": "affinity=node-7; Path=/"}
        ),
        times=1,
    )

    response = get(auth, stale.url + API)

    assert response.status_code == 200
    assert response.request.headers["Cookie"] == "affinity=node-7"
    assert stale.log("resource")[-1].headers["Cookie"] == "affinity=node-7"


@pytest.mark.parametrize(
    "data", [{"name": "form"}, [("name", "form")]], ids=["dict", "list-of-tuples"]
)
def test_form_data_is_resent(stale: FakePiggy, auth: ClientCredentialsAuth, data: Any) -> None:
    response = requests.post(stale.url + API, data=data, auth=auth)

    assert response.status_code == 201
    assert [r.status_code for r in response.history] == [401]
    assert response.json()["data"]["name"] == "form"
    first, resent = stale.log("resource")[-2:]
    assert resent.body == first.body == b"name=form"


def test_an_unstreamed_stale_401_with_an_endless_body_is_judged_closed_and_resent(
    stale: FakePiggy, auth: ClientCredentialsAuth, endless_401: MakeEndless
) -> None:
    """The hook runs before requests reads the body, so not streaming is no hang either
    (urllib3 preloads a body before anything else sees it: there, only streamed)."""
    stale.fault_resources(endless_401(headers=INVALID_TOKEN), times=1)

    response = requests.get(stale.url + API, auth=auth, stream=False, timeout=5)

    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert stale.stats().resource_requests == 3
    assert stale.stats().token_requests == 2


def strings_in(value: object, seen: dict[int, object]) -> Iterator[str]:
    """Every string reachable from ``value`` through attributes, partials and containers."""
    if id(value) in seen:
        return
    seen[id(value)] = value  # kept alive, so that its id is not reused
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.items():
            yield from strings_in(item, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from strings_in(item, seen)
    elif isinstance(value, functools.partial):
        yield from strings_in((value.func, value.args, value.keywords), seen)
    elif isinstance(value, types.MethodType):
        yield from strings_in(value.__self__, seen)
    elif isinstance(value, requests.auth.AuthBase):
        yield from strings_in(vars(value), seen)


def test_no_attribute_of_the_auth_holds_a_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    get(auth, piggy.url + API)
    requests.post(piggy.url + API, data=b"{}", auth=auth)

    held = list(strings_in(auth, {}))

    assert [s for s in held if any(token in s for token in piggy.tokens())] == []
    assert CLIENT_ID in held  # the walk does reach the configuration


def test_a_repr_shows_client_and_base_url_only(
    auth: ClientCredentialsAuth, piggy: FakePiggy
) -> None:
    assert repr(auth) == f"ClientCredentialsAuth(client_id={CLIENT_ID!r}, base_url={piggy.url!r})"
    assert auth.token_url == piggy.url + "/oauth/token"


def test_the_shared_cache_is_the_default() -> None:
    first = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET)
    second = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET)
    assert first.cache is second.cache


def test_the_token_session_can_be_closed_and_reopened(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    close_token_session()
    close_token_session()
    assert get(auth, piggy.url + API).status_code == 200
    assert token_session() is token_session()


@pytest.mark.parametrize(
    "timeout", [0, -1, math.nan, math.inf, (3, math.nan), (1, 2, 3), "5", True], ids=repr
)
def test_a_timeout_that_could_never_bound_a_token_request_is_refused(
    piggy: FakePiggy, timeout: object
) -> None:
    with pytest.raises(ValueError, match="timeout must be None, a positive number of seconds"):
        ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [None, 2, 0.5, (1, None), (None, 2), (0.5, 4)], ids=repr)
def test_timeouts_requests_takes_are_taken(piggy: FakePiggy, timeout: object) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, timeout=timeout)  # type: ignore[arg-type]
    assert auth.timeout == timeout


def test_a_gateway_redirect_before_every_401_costs_no_token_request_per_call(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    """A redirect a gateway answers on its own (a trailing slash) says nothing of the
    token: a server behind it that rejects every token still costs one renewal per
    interval, not one per call."""

    def gateway(request: Request) -> Response:
        if not request.path.endswith("/"):
            return Response(status=301, headers={"Location": request.path + "/"})
        return invalid_token(request)

    piggy.fault_resources(gateway)
    with requests.Session() as session:
        statuses = [session.get(piggy.url + API, auth=auth).status_code for _ in range(5)]

    assert statuses == [401] * 5
    assert piggy.stats().token_requests == 2  # the first token, one renewal in the interval


def test_a_401_whose_judging_raises_gives_its_connection_back(fake_piggy: FakePiggy) -> None:
    """As for urllib3: a source that gives an unusable token after a 401 read in part
    leaves no connection held by that 401."""
    tokens = iter(["pat-first-0123456789", "a token with spaces"])
    fake_piggy.add_personal_access_token("pat-first-0123456789")
    fake_piggy.revoke("pat-first-0123456789")
    large = Response(b"x" * (2 * 1024 * 1024), 401, INVALID_TOKEN)
    fake_piggy.fault_resources(lambda request: large, times=1)
    auth = PersonalAccessTokenAuth(lambda: next(tokens), base_url=fake_piggy.url)
    with requests.Session() as session, ThreadPoolExecutor(1) as pool:
        session.mount("http://", HTTPAdapter(pool_maxsize=1, pool_block=True))
        with pytest.raises(ConfigurationError):
            session.get(fake_piggy.api_url + "/contacts", auth=auth, stream=True, timeout=5)
        free = pool.submit(session.get, fake_piggy.url + "/health", timeout=5)
        assert free.result(timeout=30).status_code in (200, 401, 404)  # a connection was free
