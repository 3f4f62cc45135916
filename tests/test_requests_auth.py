"""The requests adapter against a real local server: expiry, 401 recovery, replay, origins."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.token_session import close_token_session, token_session

from .conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    STALE_TOKEN_401S,
    FakeClock,
    Piggy,
    json_response,
)


def get(auth: ClientCredentialsAuth, url: str) -> requests.Response:
    with requests.Session() as session:
        session.auth = auth
        return session.get(url)


def test_sends_the_bearer_token(piggy: Piggy, auth: ClientCredentialsAuth) -> None:
    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert piggy.api_requests == [f"Bearer {next(iter(piggy.valid))}"]
    assert piggy.token_requests == [
        {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    ]


def test_form_encoded_token_requests(piggy: Piggy, cache: TokenCache) -> None:
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache, token_request_format="form"
    )

    assert get(auth, piggy.url + API).status_code == 200
    assert piggy.token_requests[0]["grant_type"] == "client_credentials"


def test_token_request_headers(server: HTTPServer, cache: TokenCache) -> None:
    seen: list[Request] = []

    def token(request: Request) -> Response:
        seen.append(request)
        return json_response({"access_token": "abc", "expires_in": 60})

    server.expect_request("/oauth/token", method="POST").respond_with_handler(token)
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=server.url_for(""), cache=cache)

    assert auth.token() == "abc"
    assert seen[0].headers["Accept"] == "application/json"
    assert seen[0].headers["Content-Type"] == "application/json"
    assert seen[0].headers["User-Agent"].startswith("requests-piggy-auth/")


def test_a_token_is_renewed_at_the_leeway_point_and_not_before(
    piggy: Piggy, auth: ClientCredentialsAuth, clock: FakeClock
) -> None:
    piggy.expires_in = 3600
    get(auth, piggy.url + API)
    clock.advance(3600 - 30 - 0.001)
    get(auth, piggy.url + API)
    assert len(piggy.token_requests) == 1

    clock.advance(0.001)
    get(auth, piggy.url + API)
    assert len(piggy.token_requests) == 2


def test_the_leeway_is_clamped_for_short_lived_tokens(
    piggy: Piggy, auth: ClientCredentialsAuth, clock: FakeClock
) -> None:
    piggy.expires_in = 3
    get(auth, piggy.url + API)
    clock.advance(1.49)
    get(auth, piggy.url + API)
    assert len(piggy.token_requests) == 1

    clock.advance(0.01)
    get(auth, piggy.url + API)
    assert len(piggy.token_requests) == 2


def test_a_stale_token_is_renewed_and_the_request_resent(
    piggy: Piggy, auth: ClientCredentialsAuth
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
    assert len(piggy.token_requests) == 2


@pytest.mark.parametrize("rejection", STALE_TOKEN_401S)
def test_every_401_style_that_may_mean_a_stale_token_is_retried(
    piggy: Piggy, auth: ClientCredentialsAuth, rejection: tuple[dict[str, str], dict[str, str]]
) -> None:
    headers, body = rejection
    piggy.unauthorized_response = lambda: json_response(body, 401, headers)
    get(auth, piggy.url + API)
    piggy.revoke_all()

    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert len(piggy.token_requests) == 2


def test_a_401_naming_another_error_is_returned_without_retry(
    piggy: Piggy, auth: ClientCredentialsAuth
) -> None:
    piggy.unauthorized_response = lambda: json_response(
        {}, 401, {"WWW-Authenticate": 'Bearer error="invalid_request"'}
    )
    piggy.reject_all = True

    response = get(auth, piggy.url + API)

    assert response.status_code == 401
    assert response.history == []
    assert len(piggy.token_requests) == 1


def test_a_401_on_the_retry_is_returned(piggy: Piggy, auth: ClientCredentialsAuth) -> None:
    piggy.reject_all = True

    response = get(auth, piggy.url + API)

    assert response.status_code == 401
    assert [r.status_code for r in response.history] == [401]
    assert len(piggy.api_requests) == 2
    assert len(piggy.token_requests) == 2


def test_a_persistent_401_does_not_turn_every_call_into_a_token_request(
    piggy: Piggy, auth: ClientCredentialsAuth, clock: FakeClock
) -> None:
    piggy.reject_all = True

    statuses = set()
    for _ in range(50):
        statuses.add(get(auth, piggy.url + API).status_code)
        clock.advance(0.1)

    assert statuses == {401}
    # One first token, then one renewal per 5 s of 401s: 5 s passed.
    assert len(piggy.token_requests) == 2
    assert piggy.unauthorized == 51


def test_cookies_set_by_the_401_are_sent_with_the_retry(
    piggy: Piggy, auth: ClientCredentialsAuth
) -> None:
    get(auth, piggy.url + API)
    piggy.revoke_all()
    piggy.unauthorized_response = lambda: json_response(
        {"error": "invalid_token"}, 401, {"Set-Cookie": "affinity=node-7; Path=/"}
    )

    response = get(auth, piggy.url + API)

    assert response.status_code == 200
    assert response.request.headers["Cookie"] == "affinity=node-7"


@pytest.fixture
def stale(piggy: Piggy, auth: ClientCredentialsAuth) -> Piggy:
    """A piggy whose cached token was revoked: the next call gets a 401 first."""
    get(auth, piggy.url + API)
    piggy.revoke_all()
    return piggy


@pytest.mark.parametrize(
    "body",
    [b'{"name": "bytes"}', '{"name": "str"}'],
    ids=["bytes", "str"],
)
def test_bytes_and_str_bodies_are_resent(
    stale: Piggy, auth: ClientCredentialsAuth, body: bytes | str
) -> None:
    response = requests.post(stale.url + API, data=body, auth=auth)

    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    expected = body.decode() if isinstance(body, bytes) else body
    assert response.json()["data"]["echo"] == expected


def test_a_seekable_file_is_rewound_to_where_it_started(
    stale: Piggy, auth: ClientCredentialsAuth
) -> None:
    body = io.BytesIO(b'SKIP{"name": "file"}')
    body.seek(4)

    response = requests.post(stale.url + API, data=body, auth=auth)

    assert response.status_code == 200
    assert response.json()["data"]["echo"] == '{"name": "file"}'


def test_a_generator_body_is_not_retried(
    stale: Piggy, auth: ClientCredentialsAuth, caplog: pytest.LogCaptureFixture
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"stream"}'

    response = requests.post(stale.url + API, data=chunks(), auth=auth)

    assert response.status_code == 401
    assert response.history == []
    assert len(stale.api_requests) == 2
    assert "cannot be replayed" in caplog.text


def seen_authorization(server: HTTPServer) -> list[str | None]:
    return [request.headers.get("Authorization") for request, _ in server.log]


def test_no_token_for_another_origin(
    piggy: Piggy, auth: ClientCredentialsAuth, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")

    assert requests.get(other.url_for("/elsewhere"), auth=auth).status_code == 200
    assert seen_authorization(other) == [None]
    assert piggy.token_requests == []


def test_no_token_through_a_redirect_to_another_origin(
    piggy: Piggy, auth: ClientCredentialsAuth, other: HTTPServer
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    response = requests.get(piggy.url + "/go", auth=auth)

    assert response.status_code == 401
    assert seen_authorization(other) == [None]
    assert len(piggy.token_requests) == 1


def test_allowed_origins_get_the_token(piggy: Piggy, cache: TokenCache, other: HTTPServer) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=piggy.url,
        allowed_origins=[other.url_for("/")],
        cache=cache,
    )

    requests.get(other.url_for("/elsewhere"), auth=auth)

    assert seen_authorization(other) == [f"Bearer {next(iter(piggy.valid))}"]


def test_a_repr_shows_client_and_base_url_only(auth: ClientCredentialsAuth, piggy: Piggy) -> None:
    assert repr(auth) == f"ClientCredentialsAuth(client_id={CLIENT_ID!r}, base_url={piggy.url!r})"
    assert auth.token_url == piggy.url + "/oauth/token"


def test_the_shared_cache_is_the_default() -> None:
    first = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET)
    second = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET)
    assert first.cache is second.cache


def test_debug_logs_show_at_most_the_last_four_characters(
    piggy: Piggy, auth: ClientCredentialsAuth, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, "requests_piggy_auth"):
        get(auth, piggy.url + API)

    token = next(iter(piggy.valid))
    assert f"...{token[-4:]}" in caplog.text
    assert token[:-4] not in caplog.text


def test_the_token_session_can_be_closed_and_reopened(
    piggy: Piggy, auth: ClientCredentialsAuth
) -> None:
    close_token_session()
    close_token_session()
    assert get(auth, piggy.url + API).status_code == 200
    assert token_session() is token_session()
