"""Every error from a real token endpoint: typed, informative, secret-free, never cached."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import pytest
import requests
from werkzeug import Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    InvalidClientError,
    PiggyAuthError,
    TokenCache,
    TokenRequestError,
    TokenResponseError,
)
from requests_piggy_auth.testing import FakePiggy, json_response

from .conftest import API, CLIENT_ID, CLIENT_SECRET

CANARY_TOKEN = "tok-CANARY-7f3a9c"


def html(status: int = 200) -> Response:
    return Response("<html>oops</html>", status, content_type="text/html")


CASES: list[tuple[str, Callable[[], Response], type[TokenRequestError], str]] = [
    (
        "server-error",
        lambda: json_response({"message": f"boom, your secret was {CLIENT_SECRET}"}, 500),
        TokenRequestError,
        "HTTP 500",
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
        "Unauthenticated",
    ),
]


@pytest.mark.parametrize(
    ("answer", "error", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_bad_answer_is_a_typed_error_and_nothing_is_cached(
    piggy: FakePiggy,
    auth: ClientCredentialsAuth,
    cache: TokenCache,
    caplog: pytest.LogCaptureFixture,
    answer: Callable[[], Response],
    error: type[TokenRequestError],
    says: str,
) -> None:
    piggy.fault_token_endpoint(lambda request: answer(), times=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(error) as raised:
        requests.get(piggy.url + API, auth=auth)

    assert type(raised.value) is error
    assert says in str(raised.value)
    assert_no_secrets(raised.value, auth, caplog.text)
    assert len(cache) == 0
    assert piggy.stats().resource_requests == 0

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


def test_an_oauth_error_echoing_the_secret_is_redacted(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    piggy.fault_token_endpoint(
        lambda request: json_response(
            {"error": "invalid_grant", "error_description": f"bad secret {CLIENT_SECRET}"}, 400
        )
    )

    with pytest.raises(InvalidClientError) as raised:
        auth.token()

    assert raised.value.error_description == "bad secret [secret]"
    assert raised.value.status == 400


def test_a_connection_failure_is_a_token_request_error_chained_from_requests(
    cache: TokenCache, unreachable: str
) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=unreachable, cache=cache)

    with pytest.raises(TokenRequestError) as raised:
        auth.token()

    assert raised.value.status is None
    assert isinstance(raised.value.__cause__, requests.ConnectionError)
    assert "token request to http://127.0.0.1" in str(raised.value)
    assert_no_secrets(raised.value, auth, "")


def test_a_timeout_is_a_token_request_error(piggy: FakePiggy, cache: TokenCache) -> None:
    hold = piggy.hold()
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache, timeout=0.2
    )
    try:
        with pytest.raises(TokenRequestError) as raised:
            auth.token()
    finally:
        hold.released.set()

    assert isinstance(raised.value.__cause__, requests.Timeout)


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
