"""Every error from a real token endpoint: typed, informative, secret-free, never cached."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator

import pytest
import requests
from werkzeug import Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    InvalidClientError,
    PiggyAuthError,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
    TokenResponseError,
)
from requests_piggy_auth.oauth import MAX_LIFETIME
from requests_piggy_auth.testing import FakeClock, FakePiggy, json_response
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth, answer

CANARY_TOKEN = "tok-CANARY-7f3a9c"


def html(status: int = 200) -> Response:
    return Response("<html>oops</html>", status, content_type="text/html")


CASES: list[tuple[str, Callable[[], Response], type[TokenRequestError], str]] = [
    (
        "server-error",
        lambda: json_response({"message": f"boom, your secret was {CLIENT_SECRET}"}, 500),
        TokenRequestError,
        "HTTP 500 (message withheld: it could hold a secret or a token)",
    ),
    ("html", html, TokenResponseError, "a body that is not JSON (text/html, 17 bytes)"),
    ("empty", lambda: Response(b"", 200), TokenResponseError, "with an empty body"),
    (
        "truncated-json",
        lambda: Response(f'{{"access_token": "{CANARY_TOKEN}', 200),
        TokenResponseError,
        "a body that is not JSON",
    ),
    (
        "array",
        lambda: json_response([CANARY_TOKEN]),
        TokenResponseError,
        "a JSON array instead of an object",
    ),
    (
        "string",
        lambda: json_response(CANARY_TOKEN),
        TokenResponseError,
        "a JSON string instead of an object",
    ),
    (
        "no-token",
        lambda: json_response({"expires_in": 60}),
        TokenResponseError,
        "without an access_token",
    ),
    (
        "number-token",
        lambda: json_response({"access_token": 12345}),
        TokenResponseError,
        "unusable access_token, a JSON number",
    ),
    (
        "token-with-newline",
        lambda: json_response({"access_token": CANARY_TOKEN + "\r\nX-Evil: 1"}),
        TokenResponseError,
        "visible ASCII",
    ),
    (
        "token-with-space",
        lambda: json_response({"access_token": CANARY_TOKEN + " x"}),
        TokenResponseError,
        "visible ASCII",
    ),
    (
        "negative-expiry",
        lambda: json_response({"access_token": CANARY_TOKEN, "expires_in": -5}),
        TokenResponseError,
        "expires_in=",
    ),
    (
        "zero-expiry",
        lambda: json_response({"access_token": CANARY_TOKEN, "expires_in": 0}),
        TokenResponseError,
        "positive number",
    ),
    (
        "text-expiry",
        lambda: json_response({"access_token": CANARY_TOKEN, "expires_in": "soon"}),
        TokenResponseError,
        "'soon'",
    ),
    (
        "bool-expiry",
        lambda: json_response({"access_token": CANARY_TOKEN, "expires_in": True}),
        TokenResponseError,
        "expires_in=",
    ),
    (
        "nan-expiry",
        lambda: Response(f'{{"access_token": "{CANARY_TOKEN}", "expires_in": NaN}}', 200),
        TokenResponseError,
        "positive number",
    ),
    (
        "mac-token-type",
        lambda: json_response({"access_token": CANARY_TOKEN, "token_type": "mac"}),
        TokenResponseError,
        "token_type",
    ),
    (
        "redirect",
        lambda: Response("", 302, {"Location": "https://evil.example/oauth/token"}),
        TokenRequestError,
        "redirect",
    ),
    (
        "unauthenticated-without-oauth-error",
        lambda: json_response({"message": "Unauthenticated."}, 401),
        TokenRequestError,
        "HTTP 401 (message 'Unauthenticated.')",
    ),
    (
        "deeply-nested-json",
        lambda: Response(b"[" * 100_000, 200),
        TokenResponseError,
        "a body that is not JSON",
    ),
    (
        "null-token",
        lambda: json_response({"access_token": None}),
        TokenResponseError,
        "unusable access_token, JSON null",
    ),
    (
        "empty-token",
        lambda: json_response({"access_token": ""}),
        TokenResponseError,
        "unusable access_token, an empty string",
    ),
    (
        "token-with-control-character",
        lambda: json_response({"access_token": CANARY_TOKEN + "\x07"}),
        TokenResponseError,
        "with whitespace, control or non-ASCII ones",
    ),
    (
        "token-with-tab",
        lambda: json_response({"access_token": "\t" + CANARY_TOKEN}),
        TokenResponseError,
        "with whitespace, control or non-ASCII ones",
    ),
    (
        "non-ascii-token",
        lambda: json_response({"access_token": CANARY_TOKEN + "\u00e9"}),
        TokenResponseError,
        "with whitespace, control or non-ASCII ones",
    ),
    (
        "negative-infinite-expiry",
        lambda: Response(f'{{"access_token": "{CANARY_TOKEN}", "expires_in": -Infinity}}', 200),
        TokenResponseError,
        "expires_in='-inf'",
    ),
    (
        "huge-negative-expiry",
        lambda: Response(f'{{"access_token": "{CANARY_TOKEN}", "expires_in": -{"9" * 400}}}', 200),
        TokenResponseError,
        "positive number",
    ),
    (
        "list-expiry",
        lambda: json_response({"access_token": CANARY_TOKEN, "expires_in": [60]}),
        TokenResponseError,
        "expires_in='[60]'",
    ),
    (
        "number-token-type",
        lambda: json_response({"access_token": CANARY_TOKEN, "token_type": 1}),
        TokenResponseError,
        "token_type a JSON number, expected 'Bearer'",
    ),
    (
        "oauth-error-with-a-200",
        lambda: json_response({"error": "server_error"}),
        TokenResponseError,
        "without an access_token",
    ),
    (
        "error-text-injecting-lines",
        lambda: json_response(
            {"error": "invalid_client", "error_description": "bad\r\nX-Evil: 1" + "!" * 500}, 401
        ),
        InvalidClientError,
        "(bad X-Evil: 1!!!",
    ),
]


@pytest.mark.parametrize(
    ("answer", "error", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_bad_answer_is_a_typed_error_and_nothing_is_cached(
    piggy: FakePiggy,
    auth: ClientCredentialsAuth,
    cache: TokenCache,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    answer: Callable[[], Response],
    error: type[TokenRequestError],
    says: str,
) -> None:
    piggy.fault_token_endpoint(lambda request: answer())  # retries get it too
    with caplog.at_level(logging.DEBUG), pytest.raises(error) as raised:
        requests.get(piggy.url + API, auth=auth)

    assert type(raised.value) is error
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)
    assert len(str(raised.value)) < 500
    assert_no_secrets(raised.value, auth, caplog.text)
    assert len(cache) == 0
    assert piggy.stats().resource_requests == 0

    piggy.clear_faults()
    piggy.add_client("client-b", "secret-b")
    other = ClientCredentialsAuth("client-b", "secret-b", base_url=piggy.url, cache=cache)
    assert requests.get(piggy.url + API, auth=other).status_code == 200  # unaffected
    with pytest.raises(TokenRequestError, match="no token request"):
        auth.token()  # still cooling down
    clock.advance(1)  # past the cool-down
    assert requests.get(piggy.url + API, auth=auth).status_code == 200


def test_wrong_secret_is_an_invalid_client_error(
    piggy: FakePiggy, cache: TokenCache, caplog: pytest.LogCaptureFixture
) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, "wrong-CANARY", base_url=piggy.url, cache=cache)

    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidClientError) as raised:
        requests.get(piggy.url + API, auth=auth)

    error = raised.value
    assert (error.status, error.error) == (401, "invalid_client")
    assert error.error_description == "Client authentication failed"
    assert "invalid_client (Client authentication failed)" in str(error)
    assert "wrong-CANARY" not in str(error) + "".join(traceback.format_exception(error))
    assert "wrong-CANARY" not in caplog.text
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("description", "shown"),
    [
        ("Client authentication failed", "Client authentication failed"),
        (f"bad secret {CLIENT_SECRET}", None),
        (f"bad secret {CLIENT_SECRET[:-3]}", None),  # a piece of it is enough
        ("bad secret czNjcmV0LUNBTkFSWS01ZWNyZXQ=", None),  # base64
        ("the token eyJ0eXAiOiJKV1QiLCJhbGciOi is revoked", None),  # looks like a token
        # A random token with no digit in it, as one in about 1,400 of 43 characters is:
        ("token hHuUrlrjcOxd_ZpmWTqZXQauUrhRTsABZVhzXNRpspY is still valid", None),
        ("see https://api.piggy.eu/oauth/token", "see https://api.piggy.eu/oauth/token"),
        ("x" * 1001, None),
    ],
    ids=["plain", "secret", "piece", "base64", "token-like", "no-digit", "url", "long"],
)
def test_an_oauth_error_description_is_shown_only_when_it_cannot_hold_a_secret(
    piggy: FakePiggy, auth: ClientCredentialsAuth, description: str, shown: str | None
) -> None:
    refusal = {"error": "invalid_grant", "error_description": description}
    piggy.fault_token_endpoint(answer(json_response(refusal, 400)))

    with pytest.raises(InvalidClientError) as raised:
        auth.token()

    assert raised.value.error_description == shown
    assert (raised.value.status, raised.value.error) == (400, "invalid_grant")
    said = shown or "error_description withheld: it could hold a secret or a token"
    assert str(raised.value).endswith(f"HTTP 400 invalid_grant ({said})")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"error": "in valid", "error_description": "x"},
            "HTTP 401 (an unrecognised OAuth error; ",
        ),
        ({"error": "a" * 41}, "HTTP 401 (an unrecognised OAuth error)"),
        ({"error": "server_error"}, "HTTP 500 (OAuth error server_error)"),
        ({"status_code": 599, "code": 4012, "message": "Busy"}, "(code 4012; status_code 599; "),
        ({"status_code": True, "code": "4012"}, "HTTP 500 with a JSON object with no error"),
        ({"message": " "}, "HTTP 500 with a JSON object with no error"),
        ([1], "HTTP 500 with a JSON array instead of an object"),
    ],
    ids=["code-with-space", "long-code", "5xx-code", "numbers", "not-numbers", "blank", "array"],
)
def test_a_refusal_says_its_status_and_only_the_fields_that_can_be_checked(
    piggy: FakePiggy, plain_auth: ClientCredentialsAuth, body: object, says: str
) -> None:
    status = (
        401
        if isinstance(body, dict) and body.get("error", "server_error") != "server_error"
        else 500
    )
    piggy.fault_token_endpoint(answer(json_response(body, status)))

    with pytest.raises(TokenRequestError) as raised:
        plain_auth.token()

    assert type(raised.value) is TokenRequestError
    assert raised.value.status == status
    assert says in str(raised.value)


def test_a_connection_failure_is_a_token_request_error_naming_its_type(
    make_auth: MakeAuth, unreachable: str
) -> None:
    auth = make_auth(base_url=unreachable, retry=RetryPolicy(total=0))

    with pytest.raises(TokenRequestError) as raised:
        auth.token()

    assert raised.value.status is None
    assert str(raised.value) == (
        f"token request to {unreachable}/oauth/token failed: connection error (ConnectionError: "
        "MaxRetryError: NewConnectionError: ConnectionRefusedError)"
    )
    # Neither cause nor context: their text could quote what a server sent, and requests'
    # exception holds the request, its body (the secret) included.
    assert (raised.value.__cause__, raised.value.__context__) == (None, None)
    assert_no_secrets(raised.value, auth, "")


def test_a_timeout_is_a_token_request_error_that_says_it_timed_out(
    piggy: FakePiggy, make_auth: MakeAuth
) -> None:
    hold = piggy.hold()
    auth = make_auth(timeout=0.2, retry=RetryPolicy(total=0))  # retried: test_retry.py
    try:
        with pytest.raises(TokenRequestError) as raised:
            auth.token()
    finally:
        hold.release()

    assert str(raised.value) == (
        f"token request to {auth.token_url} timed out (ReadTimeout: ReadTimeoutError: TimeoutError)"
    )
    assert raised.value.__cause__ is None


@pytest.mark.parametrize("transport", ["requests", "urllib3"])
def test_an_answer_that_cannot_be_decoded_is_a_token_request_error_naming_its_type(
    piggy: FakePiggy, plain_auth: ClientCredentialsAuth, transport: str
) -> None:
    garbled = Response(b"not gzip", 200, {"Content-Encoding": "gzip"})
    piggy.fault_token_endpoint(answer(garbled))

    def through_urllib3() -> object:
        with AuthorizedHttp(plain_auth) as http:
            return http.request("GET", piggy.url + API)

    with pytest.raises(TokenRequestError) as raised:
        {"requests": plain_auth.token, "urllib3": through_urllib3}[transport]()

    assert raised.value.status is None
    assert str(raised.value).endswith(
        {"requests": "failed (ContentDecodingError: DecodeError: error)"}.get(
            transport, "failed (DecodeError: error)"
        )
    )
    assert raised.value.__cause__ is None


def test_an_oversized_token_response_stops_being_read(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    piggy.fault_token_endpoint(
        lambda request: Response(b"{" + b" " * (2 * 1024 * 1024) + b"}", 200)
    )

    with pytest.raises(TokenResponseError, match="body over 1048576 bytes; stopped reading"):
        auth.token()


def test_errors_are_request_exceptions() -> None:
    assert issubclass(PiggyAuthError, requests.RequestException)
    assert issubclass(TokenResponseError, TokenRequestError)
    assert issubclass(InvalidClientError, TokenRequestError)


def assert_no_secrets(error: BaseException, auth: ClientCredentialsAuth, logs: str) -> None:
    shown = "".join([str(error), repr(error), repr(auth), logs, *traceback.format_exception(error)])
    assert CLIENT_SECRET not in shown
    assert CANARY_TOKEN not in shown


@pytest.mark.parametrize("expires_in", ["9" * 400, "1e999", "Infinity", '"1e400"', "31536000000"])
def test_an_absurd_lifetime_is_capped_at_a_day(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock, expires_in: str
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, refresh_ahead=False))
    body = f'{{"access_token": "{CANARY_TOKEN}", "expires_in": {expires_in}}}'
    piggy.fault_token_endpoint(answer(Response(body, 200)), times=1)
    assert auth.token() == CANARY_TOKEN

    clock.advance(MAX_LIFETIME - auth.cache.leeway - 1)
    assert auth.token() == CANARY_TOKEN
    clock.advance(1)
    assert auth.token() != CANARY_TOKEN
    assert piggy.stats().token_requests == 2


def test_the_token_type_is_case_insensitive(piggy: FakePiggy, auth: ClientCredentialsAuth) -> None:
    body = {"access_token": CANARY_TOKEN, "token_type": "BEARER", "expires_in": 60}
    piggy.fault_token_endpoint(answer(json_response(body)), times=1)
    assert auth.token() == CANARY_TOKEN


def test_an_endless_token_response_stops_being_read(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    def endless() -> Iterator[bytes]:
        while True:
            yield b" " * (64 * 1024)

    piggy.fault_token_endpoint(lambda request: Response(endless(), 200), times=1)

    with pytest.raises(TokenResponseError, match="body over 1048576 bytes"):
        auth.token()
    assert piggy.stats().token_requests == 1


def test_a_401_with_a_deeply_nested_body_is_still_understood(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    auth.token()
    piggy.revoke_all()
    piggy.fault_resources(answer(Response(b"[" * 100_000, 401)), times=1)

    response = requests.get(piggy.url + API, auth=auth)

    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert piggy.stats().token_requests == 2
