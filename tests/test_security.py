"""Secrets stay secret on every path, and go nowhere but where they belong."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    ConfigurationError,
    PersonalAccessTokenAuth,
    RetryPolicy,
    TokenExpiredError,
    TokenRequestError,
    from_env,
)
from requests_piggy_auth.oauth import Token, TokenResponse
from requests_piggy_auth.testing import FakeClock, FakePiggy, Status, json_response
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth, answer, fetch_held, invalid_token

CANARY_TOKEN = "tok-CANARY-1b2c3d4e5f"


class Exposure:
    """Everything a user or an operator could see: errors, logs, reprs."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.errors: list[BaseException] = []
        self.objects: list[object] = []

    def error(self, call: Callable[[], object]) -> BaseException:
        """Run ``call``, which must raise, and keep what it raised."""
        with pytest.raises(Exception) as caught:  # noqa: PT011 - any error is scanned
            call()
        self.errors.append(caught.value)
        return caught.value

    def text(self) -> str:
        seen = [self.caplog.text, *map(repr, self.objects)]
        for error in self.errors:
            seen += [str(error), repr(error), *traceback.format_exception(error)]
        return "\n".join(seen)

    def assert_hidden(self, *tokens: str) -> None:
        text = self.text()
        for canary in (CLIENT_SECRET, CANARY_TOKEN, *tokens):
            assert canary not in text


@pytest.fixture
def exposure(caplog: pytest.LogCaptureFixture) -> Iterator[Exposure]:
    with caplog.at_level(logging.DEBUG):
        yield Exposure(caplog)


def test_canaries_hidden_when_the_endpoint_echoes_the_secret(
    piggy: FakePiggy, auth: ClientCredentialsAuth, clock: FakeClock, exposure: Exposure
) -> None:
    echo = f"client_secret={CLIENT_SECRET} is wrong"
    refusal = {"error": "invalid_client", "error_description": echo}
    piggy.fault_token_endpoint(answer(json_response(refusal, 401)), times=1)
    piggy.fault_token_endpoint(answer(json_response({"message": echo}, 500)), times=4)
    exposure.error(auth.token)
    exposure.error(auth.token)  # cooling down, chained to the refusal
    clock.advance(2)
    exposure.error(lambda: requests.get(piggy.url + API, auth=auth))
    exposure.objects += [auth, auth.cache, auth.grant, auth.grant.token_request()]

    exposure.assert_hidden()


@pytest.mark.parametrize(
    "body",
    [
        {"access_token": CANARY_TOKEN + "\r\nX-Injected: 1"},
        {"access_token": CANARY_TOKEN, "expires_in": "never"},
        {"access_token": CANARY_TOKEN, "token_type": "mac"},
        {"access_token": CANARY_TOKEN, "expires_in": -1},
        CANARY_TOKEN,
        [CANARY_TOKEN],
    ],
)
def test_canaries_hidden_when_a_token_comes_back_unusable(
    piggy: FakePiggy, auth: ClientCredentialsAuth, exposure: Exposure, body: object
) -> None:
    piggy.fault_token_endpoint(answer(json_response(body)), times=1)
    exposure.error(lambda: requests.get(piggy.url + API, auth=auth))
    exposure.error(auth.token)

    exposure.assert_hidden()


def test_canaries_hidden_when_a_truncated_answer_holds_the_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth, exposure: Exposure
) -> None:
    truncated = Response(f'{{"access_token": "{CANARY_TOKEN}", "expires_in": 3', 200)
    piggy.fault_token_endpoint(answer(truncated), times=1)
    exposure.error(auth.token)
    exposure.objects.append(TokenResponse(200, {}, CANARY_TOKEN.encode()))

    exposure.assert_hidden()


def test_canaries_hidden_when_the_endpoint_is_down_or_hung(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock, exposure: Exposure, unreachable: str
) -> None:
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    down = make_auth(base_url=unreachable, retry=retry)
    exposure.error(down.token)
    exposure.error(down.token)

    hung = make_auth(timeout=(5, 0.3), retry=RetryPolicy(total=0, budget=0.1))
    with fetch_held(piggy, hung) as leader:
        exposure.error(hung.token)  # gave up waiting
        exposure.error(leader.result)  # read timeout

    exposure.assert_hidden()


def test_canaries_hidden_when_a_renewal_fails_and_a_401_is_retried(
    piggy: FakePiggy, auth: ClientCredentialsAuth, clock: FakeClock, exposure: Exposure
) -> None:
    issued = auth.token()
    clock.advance(3600 - 20)  # within the leeway: stale, still valid
    piggy.fault_token_endpoint(Status(503))
    assert auth.token() == issued  # the renewal failed; the warning names no token
    piggy.clear_faults()
    clock.advance(60)  # hard-expired; fetch a new one

    with requests.Session() as session:
        session.auth = auth
        piggy.fault_resources(invalid_token)  # every token gets a 401: resent once, returned
        assert session.get(piggy.url + API).status_code == 401
        clock.advance(auth.cache.min_evict_interval)
        assert session.post(piggy.url + API, data=iter([b"x"])).status_code == 401

    logged = exposure.caplog.text
    assert "using the current token" in logged
    assert "cannot be replayed" in logged
    exposure.assert_hidden(*piggy.tokens())


def test_canaries_hidden_on_the_urllib3_adapter(
    piggy: FakePiggy, auth: ClientCredentialsAuth, exposure: Exposure
) -> None:
    piggy.fault_token_endpoint(answer(json_response({"access_token": CANARY_TOKEN + " x"})))
    with AuthorizedHttp(auth) as http:
        exposure.error(lambda: http.request("GET", piggy.url + API))
        exposure.objects.append(http)

    exposure.assert_hidden()


def test_canaries_hidden_for_personal_access_tokens(exposure: Exposure) -> None:
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    expired = PersonalAccessTokenAuth(CANARY_TOKEN, expires_at=yesterday)
    exposure.error(
        lambda: requests.Request("GET", "https://api.piggy.eu/x", auth=expired).prepare()
    )
    exposure.error(lambda: PersonalAccessTokenAuth(CANARY_TOKEN + "\n"))
    exposure.error(lambda: from_env({"PIGGY_PERSONAL_ACCESS_TOKEN": CANARY_TOKEN + " x"}))
    exposure.error(lambda: from_env({"PIGGY_CLIENT_SECRET": CLIENT_SECRET}))
    exposure.objects += [expired, Token(CANARY_TOKEN, 60)]

    assert [type(error) for error in exposure.errors] == [
        TokenExpiredError,
        ValueError,
        ConfigurationError,
        ConfigurationError,
    ]
    exposure.assert_hidden()


def secret_seen(server: HTTPServer) -> list[str]:
    """The requests (method and path) that carried the client secret anywhere."""
    return [
        f"{request.method} {request.path}"
        for request, _ in server.log
        if CLIENT_SECRET in request.url + str(request.headers) + request.get_data(as_text=True)
    ]


def test_the_secret_goes_only_to_the_token_endpoint(
    piggy: FakePiggy, auth: ClientCredentialsAuth, other: HTTPServer
) -> None:
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    with requests.Session() as session, AuthorizedHttp(auth) as http:
        session.auth = auth
        assert session.get(piggy.url + API).status_code == 200
        piggy.revoke_all()
        new_contact = {"email": "ann@example.com"}
        assert session.post(piggy.url + API, json=new_contact).ok  # 401, renewed, resent
        assert http.request("GET", piggy.url + API).status == 200
        assert session.get(piggy.url + "/go").status_code == 401
        assert http.request("GET", piggy.url + "/go").status == 401

    assert secret_seen(piggy.server) == ["POST /oauth/token"] * 2
    assert secret_seen(other) == []
    assert [r.headers.get("Authorization") for r, _ in other.log] == [None, None]
    tokens = piggy.tokens()
    assert len(tokens) == 2
    assert not any(token in str(r.headers) + r.url for r, _ in other.log for token in tokens)


@pytest.mark.parametrize("transport", ["requests", "urllib3"])
def test_a_token_request_redirected_elsewhere_is_refused(
    piggy: FakePiggy, auth: ClientCredentialsAuth, other: HTTPServer, transport: str
) -> None:
    redirect = Response("", 307, {"Location": other.url_for("/oauth/token")})
    piggy.fault_token_endpoint(answer(redirect), times=1)
    get: Callable[[], object] = {
        "requests": lambda: requests.get(piggy.url + API, auth=auth),
        "urllib3": lambda: AuthorizedHttp(auth).request("GET", piggy.url + API),
    }[transport]

    with pytest.raises(TokenRequestError, match="never follow redirects") as caught:
        get()

    assert caught.value.status == 307
    assert other.log == []


@pytest.mark.parametrize(
    "base_url", ["http://api.piggy.eu", "http://10.0.0.1", "http://piggy.test:8080"]
)
def test_a_plain_http_token_endpoint_is_refused_unless_loopback(base_url: str) -> None:
    with pytest.raises(ValueError, match="must use https"):
        ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=base_url)
    for loopback in ("http://localhost:8080", "http://127.0.0.1", "http://[::1]:9000"):
        assert ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=loopback).token_url
