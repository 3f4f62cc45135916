"""The requests adapter against a real local server: expiry, 401 recovery, replay, origins."""

from __future__ import annotations

import functools
import io
import logging
import math
import types
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.oauth import MAX_BODY
from requests_piggy_auth.testing import (
    API_PREFIX,
    FakeClock,
    FakePiggy,
    UnauthorizedStyle,
    json_response,
)
from requests_piggy_auth.token_session import close_token_session, token_session

from .conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    STALE_TOKEN_401S,
    MakeAuth,
    MakeEndless,
    authorizations,
    invalid_token,
)


def get(auth: ClientCredentialsAuth, url: str) -> requests.Response:
    with requests.Session() as session:
        session.auth = auth
        return session.get(url)


def test_sends_the_bearer_token(piggy: FakePiggy, auth: ClientCredentialsAuth) -> None:
    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert authorizations(piggy) == [f"Bearer {piggy.tokens()[0]}"]
    assert [dict(r.fields) for r in piggy.log("token")] == [
        {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    ]


def test_form_encoded_token_requests(piggy: FakePiggy, cache: TokenCache) -> None:
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache, token_request_format="form"
    )

    assert get(auth, piggy.url + API).status_code == 200
    assert piggy.log("token")[0].fields["grant_type"] == "client_credentials"
    assert piggy.log("token")[0].headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_token_request_headers(piggy: FakePiggy, auth: ClientCredentialsAuth) -> None:
    assert auth.token() == piggy.tokens()[0]
    seen = piggy.log("token")
    assert seen[0].headers["Accept"] == "application/json"
    assert seen[0].headers["Content-Type"] == "application/json"
    assert seen[0].headers["User-Agent"].startswith("requests-piggy-auth/")


def test_a_token_is_renewed_at_the_leeway_point_and_not_before(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, refresh_ahead=False))
    piggy.token_lifetime = 3600
    get(auth, piggy.url + API)
    clock.advance(3600 - 30 - 0.001)
    get(auth, piggy.url + API)
    assert piggy.stats().token_requests == 1

    clock.advance(0.001)
    get(auth, piggy.url + API)
    assert piggy.stats().token_requests == 2


def test_the_leeway_is_clamped_for_short_lived_tokens(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, refresh_ahead=False))
    piggy.token_lifetime = 3  # the leeway is a tenth of its life: stale at 2.7 s
    get(auth, piggy.url + API)
    clock.advance(2.69)
    get(auth, piggy.url + API)
    assert piggy.stats().token_requests == 1

    clock.advance(0.01)
    get(auth, piggy.url + API)
    assert piggy.stats().token_requests == 2


def test_a_stale_token_is_renewed_and_the_request_resent(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    first = get(auth, piggy.url + API)
    piggy.revoke_all()

    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert (
        response.history[0].request.headers["Authorization"]
        == (first.request.headers["Authorization"])
    )
    assert response.request.headers["Authorization"] != first.request.headers["Authorization"]
    assert piggy.stats().token_requests == 2


def test_each_new_token_is_renewed_in_turn_when_it_goes_stale(
    piggy: FakePiggy, auth: ClientCredentialsAuth, clock: FakeClock
) -> None:
    sent = []
    for _ in range(3):
        response = get(auth, piggy.url + API)
        assert response.status_code == 200
        sent.append(response.request.headers["Authorization"])
        piggy.revoke_all()
        clock.advance(auth.cache.min_evict_interval)

    assert [r.status_code for r in get(auth, piggy.url + API).history] == [401]
    assert len(set(sent)) == 3
    assert piggy.stats().token_requests == 4


@pytest.mark.parametrize("style", STALE_TOKEN_401S)
def test_every_401_style_that_may_mean_a_stale_token_is_retried(
    piggy: FakePiggy, auth: ClientCredentialsAuth, style: UnauthorizedStyle
) -> None:
    piggy.unauthorized_style = style
    get(auth, piggy.url + API)
    piggy.revoke_all()

    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert piggy.stats().token_requests == 2


def test_a_401_naming_another_error_is_returned_without_retry(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    piggy.fault_resources(
        lambda request: json_response(
            {}, 401, {"WWW-Authenticate": 'Bearer error="invalid_request"'}
        )
    )

    response = get(auth, piggy.url + API)

    assert response.status_code == 401
    assert response.history == []
    assert piggy.stats().token_requests == 1


def test_a_401_on_the_retry_is_returned(piggy: FakePiggy, auth: ClientCredentialsAuth) -> None:
    piggy.fault_resources(invalid_token)

    response = get(auth, piggy.url + API)

    assert response.status_code == 401
    assert [r.status_code for r in response.history] == [401]
    assert piggy.stats().resource_requests == 2
    assert piggy.stats().token_requests == 2


def test_a_persistent_401_does_not_turn_every_call_into_a_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth, clock: FakeClock
) -> None:
    piggy.fault_resources(invalid_token)

    statuses = set()
    for _ in range(50):
        statuses.add(get(auth, piggy.url + API).status_code)
        clock.advance(0.1)

    assert statuses == {401}
    # One first token, then one renewal per 5 s of 401s: 5 s passed.
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == 51


def test_cookies_set_by_the_401_are_sent_with_the_retry(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    get(auth, piggy.url + API)
    piggy.revoke_all()
    piggy.fault_resources(
        lambda request: json_response(
            {"error": "invalid_token"}, 401, {"Set-Cookie": "affinity=node-7; Path=/"}
        ),
        times=1,
    )

    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert response.request.headers["Cookie"] == "affinity=node-7"


@pytest.fixture
def stale(piggy: FakePiggy, auth: ClientCredentialsAuth) -> FakePiggy:
    """A piggy whose cached token was revoked: the next call gets a 401 first."""
    get(auth, piggy.url + API)
    piggy.revoke_all()
    return piggy


BODY = b'{"name": "in memory"}'


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        bytearray(BODY),
        memoryview(BODY),
        BODY.decode(),
        {"name": "in memory"},
        [("name", "in memory")],
    ],
    ids=["bytes", "bytearray", "memoryview", "str", "dict", "list-of-tuples"],
)
def test_every_in_memory_body_is_resent(
    stale: FakePiggy, auth: ClientCredentialsAuth, body: Any
) -> None:
    response = requests.post(stale.url + API, data=body, auth=auth)

    assert response.status_code == 201
    assert [r.status_code for r in response.history] == [401]
    assert response.json()["data"]["name"] == "in memory"
    first, resent = stale.log("resource")[-2:]
    assert resent.body == first.body


def test_a_seekable_file_is_rewound_to_where_it_started(
    stale: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    body = io.BytesIO(b'SKIP{"name": "file"}')
    body.seek(4)

    response = requests.post(stale.url + API, data=body, auth=auth)

    assert response.status_code == 201
    assert response.json()["data"]["name"] == "file"


def test_a_generator_body_is_not_retried(
    stale: FakePiggy, auth: ClientCredentialsAuth, caplog: pytest.LogCaptureFixture
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"stream"}'

    response = requests.post(stale.url + API, data=chunks(), auth=auth)

    assert response.status_code == 401
    assert response.history == []
    assert stale.stats().resource_requests == 2
    assert "cannot be replayed" in caplog.text


# A 401 with an endless body


INVALID_REQUEST = {"WWW-Authenticate": 'Bearer error="invalid_request"'}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@pytest.mark.parametrize("stream", [True, False])
def test_a_stale_401_with_an_endless_body_is_judged_closed_and_resent(
    stale: FakePiggy, auth: ClientCredentialsAuth, endless_401: MakeEndless, stream: bool
) -> None:
    stale.fault_resources(endless_401(headers=INVALID_TOKEN), times=1)

    response = requests.get(stale.url + API, auth=auth, stream=stream, timeout=5)

    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert stale.stats().resource_requests == 3
    assert stale.stats().token_requests == 2


def test_a_streamed_401_handed_back_streams_its_endless_body(
    piggy: FakePiggy, auth: ClientCredentialsAuth, endless_401: MakeEndless
) -> None:
    start = b'{"error": "invalid_request", "padding": "'
    piggy.fault_resources(endless_401(start, INVALID_REQUEST))

    with requests.get(piggy.url + API, auth=auth, stream=True, timeout=5) as response:
        chunks = response.iter_content(256 * 1024)
        read = b""
        while len(read) < 3 * MAX_BODY:  # past what was judged
            read += next(chunks)

    assert response.status_code == 401
    assert read == start + b"x" * (len(read) - len(start))
    assert piggy.stats().resource_requests == 1


def seen_authorization(server: HTTPServer) -> list[str | None]:
    return [request.headers.get("Authorization") for request, _ in server.log]


def test_no_token_for_another_origin(
    piggy: FakePiggy, auth: ClientCredentialsAuth, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")

    assert requests.get(other.url_for("/elsewhere"), auth=auth).status_code == 200
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 0


def test_no_token_through_a_redirect_to_another_origin(
    piggy: FakePiggy, auth: ClientCredentialsAuth, other: HTTPServer
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    response = requests.get(piggy.url + "/go", auth=auth)

    assert response.status_code == 401
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 1


def test_a_401_from_an_allowed_origin_the_token_did_not_reach_keeps_the_token(
    piggy: FakePiggy, make_auth: MakeAuth, other: HTTPServer
) -> None:
    auth = make_auth(allowed_origins=[other.url_for("/")])
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    response = requests.get(piggy.url + "/go", auth=auth)

    assert response.status_code == 401
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 1
    assert get(auth, piggy.url + API).status_code == 200
    assert piggy.stats().token_requests == 1


def test_allowed_origins_get_the_token(
    piggy: FakePiggy, cache: TokenCache, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=piggy.url,
        allowed_origins=[other.url_for("/")],
        cache=cache,
    )

    requests.get(other.url_for("/elsewhere"), auth=auth)

    assert seen_authorization(other) == [f"Bearer {piggy.tokens()[0]}"]


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


def test_debug_logs_show_no_part_of_a_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, "requests_piggy_auth"):
        get(auth, piggy.url + API)

    token = piggy.tokens()[0]
    assert f"new token for client {CLIENT_ID!r}" in caplog.text
    assert all(token[i : i + 8] not in caplog.text for i in range(len(token) - 7))


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


def test_a_resend_answered_with_a_redirect_goes_on_with_the_new_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    """requests follows a redirect from the original request: it carries the new token too."""
    get(auth, piggy.url + API)
    old = piggy.tokens()[0]
    piggy.revoke_all()

    def moved(request: Request) -> Response | None:
        sent = request.headers.get("Authorization", "")
        if request.path.endswith("/moved") and sent != f"Bearer {old}":
            return Response(b"", 302, {"Location": piggy.url + API})
        return None  # the old token's 401, or the API itself

    piggy.fault_resources(moved)
    response = get(auth, piggy.url + API_PREFIX + "/moved")

    # requests rebuilds the history of a redirect chain from the resend on.
    assert (response.status_code, [r.status_code for r in response.history]) == (200, [302])
    assert authorizations(piggy)[1:] == [f"Bearer {old}"] + [f"Bearer {piggy.tokens()[1]}"] * 2
    assert piggy.stats().token_requests == 2
