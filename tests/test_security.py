"""Secrets stay secret on every path, and go nowhere but where they belong."""

from __future__ import annotations

import base64
import html
import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal
from urllib.parse import quote, quote_plus

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    ConfigurationError,
    InvalidClientError,
    PersonalAccessTokenAuth,
    RetryPolicy,
    TokenCache,
    TokenExpiredError,
    TokenRequestError,
    from_env,
)
from requests_piggy_auth.cache import FETCH_THREAD, REFRESH_THREAD
from requests_piggy_auth.events import Event
from requests_piggy_auth.oauth import Token, TokenResponse
from requests_piggy_auth.otel import instrument, uninstrument
from requests_piggy_auth.testing import FakeClock, FakePiggy, Status, json_response
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    EchoServer,
    MakeAuth,
    answer,
    fetch_held,
    invalid_token,
)
from .test_cli import piggy_auth
from .test_otel import Telemetry

CANARY_TOKEN = "tok-CANARY-1b2c3d4e5f"
#: A secret whose JSON, percent, form, HTML and base64 encodings all differ from it.
ECHO_SECRET = "s3cr/et+Qz7&<x=y> k9"
ECHO_CLIENT = "echo-client"
#: The shortest piece of a secret that must never show (a cut-off echo).
FRAGMENT = 6


def encodings(secret: str) -> dict[str, str]:
    """``secret`` as a server might echo it back."""
    return {
        "plain": secret,
        "json-escaped": json.dumps(secret)[1:-1].replace("/", "\\/"),  # as PHP escapes it
        "unicode-escaped": "".join(f"\\u{ord(c):04x}" for c in secret),
        "percent-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
        "html-escaped": html.escape(secret),
        "base64": base64.b64encode(secret.encode()).decode(),
    }


class Exposure:
    """Everything a user or an operator could see: errors, logs, reprs, CLI output."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self.errors: list[BaseException] = []
        self.objects: list[object] = []
        self.outputs: list[str] = []

    def error(self, call: Callable[[], object]) -> BaseException:
        """Run ``call``, which must raise, and keep what it raised."""
        with pytest.raises(Exception) as caught:  # noqa: PT011 - any error is scanned
            call()
        self.errors.append(caught.value)
        return caught.value

    def text(self) -> str:
        seen = [self.caplog.text, *map(repr, self.objects), *self.outputs]
        for error in self.errors:
            seen += [str(error), repr(error), *traceback.format_exception(error)]
        return "\n".join(seen)

    def assert_hidden(self, *tokens: str) -> None:
        """No secret in any encoding, no piece of the echoed one, no token whole or in half."""
        text = self.text()
        for secret in (CLIENT_SECRET, ECHO_SECRET):
            for encoded in encodings(secret).values():
                assert encoded not in text
        for start in range(len(ECHO_SECRET) - FRAGMENT + 1):
            assert ECHO_SECRET[start : start + FRAGMENT] not in text
        for token in (CANARY_TOKEN, *tokens):
            assert token not in text
            assert token[: len(token) // 2] not in text


@pytest.fixture
def exposure(caplog: pytest.LogCaptureFixture) -> Iterator[Exposure]:
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, "requests_piggy_auth"):
        yield Exposure(caplog)


@pytest.fixture
def echo_auth(piggy: FakePiggy, cache: TokenCache, clock: FakeClock) -> ClientCredentialsAuth:
    """A client whose secret's encodings all differ, retrying on the fake clock."""
    piggy.add_client(ECHO_CLIENT, ECHO_SECRET)
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    return ClientCredentialsAuth(
        ECHO_CLIENT, ECHO_SECRET, base_url=piggy.url, cache=cache, retry=retry
    )


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


ECHOES = {
    "oauth-error": lambda echo: json_response(
        {"error": "invalid_client", "error_description": f"client_secret={echo} is wrong"}, 401
    ),
    "piggy-error": lambda echo: json_response(
        {"status_code": 500, "code": 500, "message": f"client_secret={echo}", "errors": {}}, 500
    ),
    "html-page": lambda echo: Response(f"<p>got {echo}</p>", 502, content_type="text/html"),
    "redirect": lambda echo: Response("", 302, {"Location": f"/login?client_secret={echo}"}),
    "token-type": lambda echo: json_response({"access_token": "ok", "token_type": echo}),
    "expires-in": lambda echo: json_response({"access_token": "ok", "expires_in": echo}),
    "content-type": lambda echo: Response("<p>ok</p>", 200, content_type=f"text/{echo}"),
}


@pytest.mark.parametrize("encoding", list(encodings(ECHO_SECRET)))
@pytest.mark.parametrize("shape", list(ECHOES))
def test_canaries_hidden_when_the_endpoint_echoes_the_secret_encoded(
    piggy: FakePiggy,
    echo_auth: ClientCredentialsAuth,
    exposure: Exposure,
    shape: str,
    encoding: str,
) -> None:
    piggy.fault_token_endpoint(answer(ECHOES[shape](encodings(ECHO_SECRET)[encoding])))
    error = exposure.error(echo_auth.token)
    exposure.error(echo_auth.token)  # cooling down, chained to the first failure

    assert isinstance(error, TokenRequestError)
    exposure.assert_hidden()


@pytest.mark.parametrize(
    "body",
    [("x" * 191 + ECHO_SECRET)[:200], " " * 792 + ECHO_SECRET],
    ids=["cut-at-200", "cut-at-800"],
)
def test_canaries_hidden_when_an_echo_is_cut_at_an_excerpt_boundary(
    piggy: FakePiggy, echo_auth: ClientCredentialsAuth, exposure: Exposure, body: str
) -> None:
    piggy.fault_token_endpoint(answer(Response(body, 500)))
    exposure.error(echo_auth.token)

    exposure.assert_hidden()


def test_canaries_hidden_when_an_error_echoes_an_issued_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth, exposure: Exposure
) -> None:
    issued = auth.token()
    echo = f"token {issued} is still valid"
    refusal = {"error": "invalid_client", "error_description": echo}
    piggy.fault_token_endpoint(answer(json_response(refusal, 401)), times=1)
    exposure.error(auth.fetch_token)
    piggy.fault_token_endpoint(answer(json_response({"message": echo}, 503)))
    exposure.error(auth.fetch_token)

    exposure.assert_hidden(issued)


@pytest.mark.parametrize("mode", ["echo", "close"])
@pytest.mark.parametrize("request_format", ["json", "form"])
@pytest.mark.parametrize("transport", ["requests", "urllib3"])
def test_canaries_hidden_when_a_server_answers_a_token_request_with_its_own_bytes(
    echo_server: EchoServer,
    cache: TokenCache,
    clock: FakeClock,
    exposure: Exposure,
    transport: str,
    request_format: Literal["json", "form"],
    mode: str,
) -> None:
    echo_server.mode = mode
    auth = ClientCredentialsAuth(
        ECHO_CLIENT,
        ECHO_SECRET,
        base_url=echo_server.url,
        cache=cache,
        retry=RetryPolicy(sleep=clock.sleep, clock=clock),
        token_request_format=request_format,
    )

    def get() -> object:
        with AuthorizedHttp(auth) as http:
            return http.request("GET", echo_server.url + API)

    error = exposure.error({"requests": auth.token, "urllib3": get}[transport])

    assert isinstance(error, TokenRequestError)
    assert error.status is None
    assert "connection error" in str(error)
    assert len(clock.sleeps) == 3  # each retry logged
    exposure.assert_hidden()


@pytest.mark.parametrize("mode", ["echo", "close"])
def test_the_cli_prints_no_token_an_api_server_echoes_back(
    echo_server: EchoServer, exposure: Exposure, mode: str
) -> None:
    echo_server.mode = mode
    env = {"PIGGY_BASE_URL": echo_server.url, "PIGGY_PERSONAL_ACCESS_TOKEN": CANARY_TOKEN}

    result = piggy_auth("get", API, env=env)
    exposure.outputs += [result.stdout, result.stderr]

    assert result.returncode == 1
    assert result.stderr.startswith(f"piggy-auth: GET {echo_server.url}{API} failed: connection")
    exposure.assert_hidden()


@pytest.mark.parametrize(("body", "status"), [("json", 400), ("text", 400), ("base64", 599)])
def test_the_cli_masks_a_token_the_api_echoes_in_its_answer(
    piggy: FakePiggy, exposure: Exposure, body: str, status: int
) -> None:
    def echo(request: Request) -> Response:
        sent = request.headers["Authorization"]
        text = {
            "json": json.dumps({"you sent": sent}),
            "text": f"you sent {sent}",
            "base64": f"you sent {base64.b64encode(sent.encode()).decode()}",
        }[body]
        return Response(text, f"{status} {sent}", content_type=f"application/{body}")

    piggy.fault_resources(echo)
    env = {"PIGGY_BASE_URL": piggy.url, "PIGGY_CLIENT_ID": CLIENT_ID}
    result = piggy_auth("get", API, env=env | {"PIGGY_CLIENT_SECRET": CLIENT_SECRET})
    exposure.outputs += [result.stdout, result.stderr]

    token = piggy.tokens()[0]
    assert result.returncode == 1
    if body == "base64":
        assert result.stdout.endswith("bytes, is withheld: it holds the token)\n")
        assert result.stderr == f"piggy-auth: GET {piggy.url}{API} answered HTTP 599\n"
    else:
        assert f"Bearer ********{token[-4:]}" in result.stdout
        assert result.stderr == f"piggy-auth: GET {piggy.url}{API} answered HTTP 400 Bad Request\n"
    exposure.assert_hidden(token)


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


def test_canaries_hidden_from_events_metrics_spans_and_status(
    piggy: FakePiggy,
    echo_auth: ClientCredentialsAuth,
    cache: TokenCache,
    clock: FakeClock,
    exposure: Exposure,
) -> None:
    telemetry = Telemetry()
    heard: list[Event] = []
    cache.add_listener(heard.append)
    instrument(telemetry.meters, telemetry.tracers, cache=cache)
    canary = {"token_type": "Bearer", "access_token": CANARY_TOKEN, "expires_in": 3600}
    piggy.fault_token_endpoint(answer(json_response(canary)), times=1)
    try:
        with requests.Session() as session:
            session.auth = echo_auth
            # The canary is refused (the server never issued it): evicted, renewed, resent.
            assert session.get(piggy.url + API).status_code == 200
            piggy.revoke_all()
            assert session.get(piggy.url + API).status_code == 200
            clock.advance(60)
            piggy.revoke_all()
            piggy.fault_token_endpoint(Status(503))  # the renewal fails: a cool-down
            exposure.error(lambda: session.get(piggy.url + API))
            exposure.error(lambda: session.get(piggy.url + API))  # cooling down
    finally:
        uninstrument(cache)
    for thread in threading.enumerate():  # each fetch tells its listeners before it ends
        if thread.name in (FETCH_THREAD, REFRESH_THREAD):
            thread.join(30)

    assert {type(event).__name__ for event in heard} >= {
        "TokenFetched",
        "FetchFailed",
        "CooldownStarted",
        "TokenEvicted",
        "RequestResent",
    }
    metrics = telemetry.reader.get_metrics_data()
    assert metrics is not None
    spans = telemetry.exporter.get_finished_spans()
    assert len(spans) == 3 + 4  # three tokens, then a first try and three retries refused
    exposure.outputs += [*map(repr, heard), json.dumps(cache.status()), metrics.to_json()]
    exposure.outputs += [span.to_json() for span in spans]
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
        ConfigurationError,
        ConfigurationError,
        ConfigurationError,
    ]
    exposure.assert_hidden()


def test_canaries_hidden_for_a_personal_access_token_file(
    piggy: FakePiggy, exposure: Exposure, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(CANARY_TOKEN + "\n", encoding="utf-8")
    piggy.add_personal_access_token(CANARY_TOKEN)
    auth = PersonalAccessTokenAuth.from_file(path, base_url=piggy.url)
    piggy.revoke(CANARY_TOKEN)
    path.write_text(CANARY_TOKEN + " x", encoding="utf-8")  # a broken rewrite
    exposure.error(lambda: requests.get(piggy.url + API, auth=auth))
    exposure.error(lambda: from_env({"PIGGY_PERSONAL_ACCESS_TOKEN_FILE": str(path)}))
    path.write_text(CANARY_TOKEN, encoding="utf-8")
    with requests.Session() as session:  # the token refused: one WARNING, without it
        assert session.get(piggy.url + API, auth=auth).status_code == 401
    exposure.objects += [auth, auth._source]

    assert [type(error) for error in exposure.errors] == [ConfigurationError] * 2
    assert "refused" in exposure.caplog.text
    exposure.assert_hidden()


def test_canaries_hidden_for_a_callable_secret_that_rotates(
    piggy: FakePiggy, cache: TokenCache, exposure: Exposure
) -> None:
    piggy.add_client(ECHO_CLIENT, ECHO_SECRET)
    secrets = iter([ECHO_SECRET, CLIENT_SECRET, ""])
    auth = ClientCredentialsAuth(
        ECHO_CLIENT, lambda: next(secrets), base_url=piggy.url, cache=cache
    )
    assert auth.token()
    piggy.rotate_client_secret(ECHO_CLIENT, "s3cret-CANARY-rotated-5ecret")
    cache.clear()
    exposure.error(auth.token)  # refused; the next secret is refused too
    exposure.error(auth.token)  # cooling down after that; the source gives an empty secret
    exposure.objects += [auth, auth.grant, auth._credentials, auth.grant.token_request()]

    assert [type(error) for error in exposure.errors] == [InvalidClientError, ConfigurationError]

    assert "s3cret-CANARY-rotated" not in exposure.text()
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
