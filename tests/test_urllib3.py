"""The urllib3 adapter against a real local server: same tokens, same rules, urllib3's API."""

from __future__ import annotations

import array
import gzip
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import requests
import urllib3
from pytest_httpserver import HTTPServer
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry
from werkzeug import Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    TokenCache,
    TokenRequestError,
    TokenResponseError,
)
from requests_piggy_auth.oauth import MAX_BODY
from requests_piggy_auth.policy import DEFAULT_TIMEOUT
from requests_piggy_auth.testing import FakeClock, FakePiggy, UnauthorizedStyle, json_response
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    STALE_TOKEN_401S,
    BrokenServer,
    MakeEndless,
    answer,
    authorizations,
    invalid_token,
)
from .test_concurrency import THREADS, reject_together, run_together
from .test_requests_auth import INVALID_REQUEST, INVALID_TOKEN, seen_authorization
from .test_responses import broken_auth, broken_http

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse


class RecordingPool(urllib3.PoolManager):
    """A real PoolManager that notes every ``urlopen`` call made on it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def urlopen(  # type: ignore[override]  # as PoolManager.urlopen is
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        self.calls.append((method, url, {**kw, "redirect": redirect}))
        return super().urlopen(method, url, redirect, **kw)


@pytest.fixture
def http(auth: ClientCredentialsAuth) -> Iterator[AuthorizedHttp]:
    with AuthorizedHttp(auth) as http:
        yield http


@pytest.fixture
def stale(piggy: FakePiggy, http: AuthorizedHttp) -> FakePiggy:
    """A piggy whose cached token was revoked: the next call gets a 401 first."""
    assert http.request("GET", piggy.url + API).status == 200
    piggy.revoke_all()
    return piggy


def data(response: BaseHTTPResponse) -> Any:
    """The ``data`` of a fake Piggy answer."""
    return json.loads(response.data)["data"]


def connections(http: AuthorizedHttp, url: str) -> int:
    """How many connections the wrapped pool opened to ``url``'s host."""
    return http.http.connection_from_url(url).num_connections


# The same token, the same cache


def test_sends_the_bearer_token_and_returns_urllib3_responses(
    piggy: FakePiggy, http: AuthorizedHttp
) -> None:
    first = http.request("GET", piggy.url + API)
    second = http.urlopen("GET", piggy.url + API)

    assert isinstance(first, urllib3.HTTPResponse)
    assert (first.status, second.status) == (200, 200)
    token = piggy.tokens()[0]
    assert authorizations(piggy) == [f"Bearer {token}"] * 2
    assert [dict(r.fields) for r in piggy.log("token")] == [
        {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    ]


def test_a_cold_start_in_32_threads_makes_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()
    with (
        AuthorizedHttp(auth, urllib3.PoolManager(maxsize=THREADS)) as http,
        ThreadPoolExecutor(1) as releaser,
    ):
        releaser.submit(hold.release_on_arrival)
        responses = run_together(THREADS, lambda: http.request("GET", piggy.url + API))

    assert [r.status for r in responses] == [200] * THREADS
    assert piggy.stats().token_requests == 1
    assert len(set(authorizations(piggy))) == 1


def test_32_concurrent_401s_make_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    with AuthorizedHttp(auth, urllib3.PoolManager(maxsize=THREADS)) as http:
        assert http.request("GET", piggy.url + API).status == 200
        piggy.revoke_all()
        reject_together(piggy, THREADS)

        responses = run_together(THREADS, lambda: http.request("GET", piggy.url + API))

    assert [r.status for r in responses] == [200] * THREADS
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == THREADS


def test_a_requests_session_and_a_urllib3_pool_share_one_token(
    piggy: FakePiggy, cache: TokenCache
) -> None:
    for_requests = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    for_urllib3 = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)

    with requests.Session() as session, AuthorizedHttp(for_urllib3) as http:
        session.auth = for_requests
        assert session.get(piggy.url + API).status_code == 200
        assert http.request("GET", piggy.url + API).status == 200

    assert piggy.stats().token_requests == 1
    assert len(set(authorizations(piggy))) == 1


def test_token_requests_go_through_the_wrapped_pool(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    pool = RecordingPool()
    with AuthorizedHttp(auth, pool) as http:
        assert http.http is pool
        assert http.request("GET", piggy.url + API).status == 200

    assert [(method, url) for method, url, _ in pool.calls] == [
        ("POST", auth.token_url),
        ("GET", piggy.url + API),
    ]
    token_call = pool.calls[0][2]
    assert token_call["redirect"] is False
    timeout = token_call["timeout"]
    assert (timeout.connect_timeout, timeout.read_timeout) == DEFAULT_TIMEOUT


@pytest.mark.parametrize("timeout", [2.5, None])
def test_a_single_timeout_or_none_is_passed_as_is(
    piggy: FakePiggy, cache: TokenCache, timeout: float | None
) -> None:
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache, timeout=timeout
    )
    pool = RecordingPool()

    with AuthorizedHttp(auth, pool) as http:
        http.request("GET", piggy.url + API)

    assert pool.calls[0][2]["timeout"] == timeout


def test_a_proxy_manager_proxies_token_requests_too(piggy: FakePiggy, cache: TokenCache) -> None:
    # The fake Piggy serves as the proxy: an http proxy gets absolute URLs, and
    # werkzeug routes them by path. Nothing listens at the target itself.
    target = "http://localhost:9"
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=target, cache=cache)

    with AuthorizedHttp(auth, urllib3.ProxyManager(piggy.url)) as http:
        assert http.request("GET", target + API).status == 200

    assert [(r.method, r.host, r.path) for r, _ in piggy.server.log] == [
        ("POST", "localhost:9", "/oauth/token"),
        ("GET", "localhost:9", API),
    ]
    assert piggy.stats().token_requests == 1


def test_a_personal_access_token_is_sent_and_its_401_handed_back_unread(
    piggy: FakePiggy,
) -> None:
    auth = PersonalAccessTokenAuth("pat-0123456789abcdef", base_url=piggy.url)

    with AuthorizedHttp(auth) as http:
        response = http.request("GET", piggy.url + API, preload_content=False)
        assert response.status == 401
        assert json.loads(response.read())["error"] == "invalid_token"
        response.release_conn()

    assert authorizations(piggy) == ["Bearer pat-0123456789abcdef"]
    assert piggy.stats().token_requests == 0


# urllib3's API


def test_urlopen_and_request_take_urllib3s_arguments(
    piggy: FakePiggy, http: AuthorizedHttp
) -> None:
    raw = http.urlopen("POST", piggy.url + API, body=b"raw", headers={"X-Trace": "1"})
    form = http.request("POST", piggy.url + API, fields={"name": "form"}, encode_multipart=False)
    query = http.request("GET", piggy.url + API, fields={"page": "2"})

    assert [entry.body for entry in piggy.log("resource")][:2] == [b"raw", b"name=form"]
    assert (raw.status, data(form)["name"]) == (422, "form")
    assert query.status == 200
    assert [r.query_string for r, _ in piggy.server.log if r.path == API][-1] == b"page=2"
    assert next(r.headers.get("X-Trace") for r, _ in piggy.server.log if r.path == API) == "1"


def test_the_pools_default_headers_are_sent_and_left_alone(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    pool = urllib3.PoolManager(headers={"X-Default": "yes"})
    with AuthorizedHttp(auth, pool) as http:
        assert http.headers == {"X-Default": "yes"}
        http.request("GET", piggy.url + API)
        http.headers = {"X-Default": "changed"}
        http.request("GET", piggy.url + API)

    api = [r for r, _ in piggy.server.log if r.path == API]
    assert [r.headers.get("X-Default") for r in api] == ["yes", "changed"]
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in api)
    assert pool.headers == {"X-Default": "changed"}


def test_the_context_manager_clears_the_pool(piggy: FakePiggy, auth: ClientCredentialsAuth) -> None:
    with AuthorizedHttp(auth) as http:
        http.request("GET", piggy.url + API)
        assert len(http.http.pools) == 1

    assert len(http.http.pools) == 0
    assert repr(http).startswith(f"AuthorizedHttp({auth!r}, http=<urllib3.")


def test_urllib3_status_retries_keep_working(piggy: FakePiggy, http: AuthorizedHttp) -> None:
    statuses = iter([503, 200])
    piggy.server.expect_request("/flaky").respond_with_handler(
        lambda _: Response("", next(statuses))
    )

    response = http.request("GET", piggy.url + "/flaky", retries=Retry(2, status_forcelist=[503]))

    assert response.status == 200
    flaky = [r.headers.get("Authorization") for r, _ in piggy.server.log if r.path == "/flaky"]
    assert len(flaky) == 2
    assert flaky[0] is not None
    assert flaky[0] == flaky[1]


def test_urllib3_read_retries_keep_working(broken_server: BrokenServer) -> None:
    broken_server.break_off("200 OK", b"Content-Length: 100\r\n", b"cut short", "close", faults=1)
    retries = Retry(total=3, read=3)

    http = broken_http(broken_server, broken_auth(broken_server))
    response = http.request("GET", broken_server.url + "/api", retries=retries)

    assert (response.status, response.data) == (200, b"ok")
    assert broken_server.authorizations == ["Bearer tok-1", "Bearer tok-1"]


# A 401 for a stale token


def test_a_stale_token_is_renewed_and_the_request_resent(
    stale: FakePiggy, http: AuthorizedHttp
) -> None:
    response = http.request("GET", stale.url + API)

    assert response.status == 200
    assert stale.stats().token_requests == 2
    assert stale.stats().unauthorized == 1
    assert authorizations(stale)[1] != authorizations(stale)[2]


@pytest.mark.parametrize("style", STALE_TOKEN_401S)
def test_every_401_style_that_may_mean_a_stale_token_is_retried(
    stale: FakePiggy, http: AuthorizedHttp, style: UnauthorizedStyle
) -> None:
    stale.unauthorized_style = style

    assert http.request("GET", stale.url + API).status == 200
    assert stale.stats().token_requests == 2


@pytest.mark.parametrize("decode_content", [True, False])
def test_a_preloaded_401_is_judged_from_its_data(
    stale: FakePiggy, http: AuthorizedHttp, decode_content: bool
) -> None:
    sent = gzip.compress(b'{"error": "invalid_token"}')
    stale.fault_resources(answer(Response(sent, 401, {"Content-Encoding": "gzip"})), times=1)

    response = http.request("GET", stale.url + API, decode_content=decode_content)

    assert response.status == 200
    assert stale.stats().token_requests == 2


def test_a_401_naming_another_error_is_returned_without_retry(
    piggy: FakePiggy, http: AuthorizedHttp
) -> None:
    piggy.fault_resources(lambda request: json_response({"error": "insufficient_scope"}, 401))

    response = http.request("GET", piggy.url + API)

    assert response.status == 401
    assert json.loads(response.data) == {"error": "insufficient_scope"}
    assert piggy.stats().resource_requests == 1
    assert piggy.stats().token_requests == 1


def test_a_401_on_the_resend_is_returned(piggy: FakePiggy, http: AuthorizedHttp) -> None:
    piggy.fault_resources(invalid_token)

    response = http.request("GET", piggy.url + API)

    assert response.status == 401
    assert piggy.stats().resource_requests == 2
    assert piggy.stats().token_requests == 2


# Replay


BODY = b'{"name": "in memory"}'


@pytest.mark.parametrize(
    "body",
    [BODY, bytearray(BODY), memoryview(BODY), BODY.decode(), array.array("B", BODY)],
    ids=["bytes", "bytearray", "memoryview", "str", "array"],
)
def test_every_in_memory_body_is_resent(stale: FakePiggy, http: AuthorizedHttp, body: Any) -> None:
    response = http.request("POST", stale.url + API, body=body)

    assert response.status == 201
    assert data(response)["name"] == "in memory"
    assert stale.stats().unauthorized == 1
    first, resent = stale.log("resource")[-2:]
    assert resent.body == first.body == BODY


def test_encoded_fields_are_resent(stale: FakePiggy, http: AuthorizedHttp) -> None:
    response = http.request_encode_body(
        "POST", stale.url + API, fields={"name": "fields"}, encode_multipart=False
    )

    assert data(response)["name"] == "fields"
    assert stale.stats().unauthorized == 1


def test_a_seekable_file_is_rewound_to_where_it_started(
    stale: FakePiggy, http: AuthorizedHttp
) -> None:
    body = io.BytesIO(b'SKIP{"name": "file"}')
    body.seek(4)

    response = http.request("POST", stale.url + API, body=body)

    assert response.status == 201
    assert data(response)["name"] == "file"


def test_a_generator_body_is_not_retried(
    stale: FakePiggy, http: AuthorizedHttp, caplog: pytest.LogCaptureFixture
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"stream"}'

    response = http.request("POST", stale.url + API, body=chunks())

    assert response.status == 401
    assert stale.stats().resource_requests == 2
    assert "cannot be replayed" in caplog.text


# Streaming: preload_content=False


def test_a_streamed_401_is_drained_and_its_connection_reused_for_the_resend(
    stale: FakePiggy, http: AuthorizedHttp
) -> None:
    response = http.request("GET", stale.url + API, preload_content=False)

    assert response.status == 200
    assert json.loads(b"".join(response.stream(4)))["data"] == []
    response.release_conn()
    assert stale.stats().unauthorized == 1
    assert connections(http, stale.url) == 1


@pytest.mark.parametrize("preload_content", [True, False])
def test_a_401_with_a_large_body_is_resent(
    stale: FakePiggy, http: AuthorizedHttp, preload_content: bool
) -> None:
    stale.fault_resources(lambda request: Response(b"x" * (3 * MAX_BODY), 401), times=1)

    response = http.request("GET", stale.url + API, preload_content=preload_content)

    assert response.status == 200
    assert data(response) == []
    assert stale.stats().token_requests == 2
    assert connections(http, stale.url) == 1


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_streamed_401_that_is_not_resent_can_still_be_read(
    piggy: FakePiggy, http: AuthorizedHttp, encoding: str
) -> None:
    body = json.dumps({"error": "insufficient_scope", "padding": "p" * 1000}).encode()
    sent = gzip.compress(body) if encoding == "gzip" else body
    piggy.fault_resources(lambda request: Response(sent, 401, {"Content-Encoding": encoding}))

    response = http.request("GET", piggy.url + API, preload_content=False)

    assert response.status == 401
    assert response.headers["Content-Encoding"] == encoding
    assert b"".join(response.stream(100)) == body
    response.release_conn()
    # The body was read to decide: it names another error, so no new token.
    assert piggy.stats().token_requests == 1
    assert connections(http, piggy.url) == 1


def test_a_large_streamed_401_that_is_not_resent_is_handed_back_whole(
    stale: FakePiggy, http: AuthorizedHttp
) -> None:
    large = bytes(range(256)) * (3 * MAX_BODY // 256)
    stale.fault_resources(lambda request: Response(large, 401))

    response = http.request("POST", stale.url + API, body=iter([b"once"]), preload_content=False)

    assert response.status == 401
    assert response.read() == large
    assert stale.stats().resource_requests == 2


@pytest.mark.parametrize("preload_content", [True, False])
def test_a_stale_401_with_an_endless_body_is_judged_closed_and_resent(
    stale: FakePiggy, http: AuthorizedHttp, endless_401: MakeEndless, preload_content: bool
) -> None:
    # Preloading reads a body to its end, with us or without: there it is large, not endless.
    large = answer(Response(b"x" * (3 * MAX_BODY), 401, INVALID_TOKEN))
    stale.fault_resources(large if preload_content else endless_401(headers=INVALID_TOKEN), times=1)

    response = http.request("GET", stale.url + API, preload_content=preload_content, timeout=5)

    assert response.status == 200
    assert data(response) == []
    assert stale.stats().resource_requests == 3
    assert stale.stats().token_requests == 2


def test_a_streamed_401_handed_back_streams_its_endless_body(
    piggy: FakePiggy, http: AuthorizedHttp, endless_401: MakeEndless
) -> None:
    start = b'{"error": "invalid_request", "padding": "'
    piggy.fault_resources(endless_401(start, INVALID_REQUEST))

    response = http.request("GET", piggy.url + API, preload_content=False, timeout=5)
    chunks = response.stream(256 * 1024)
    read = b""
    while len(read) < 3 * MAX_BODY:  # past what was judged
        read += next(chunks)
    response.close()

    assert response.status == 401
    assert read == start + b"x" * (len(read) - len(start))
    assert piggy.stats().resource_requests == 1


# Origins and redirects


def test_no_token_for_another_origin(
    piggy: FakePiggy, http: AuthorizedHttp, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")

    assert http.request("GET", other.url_for("/elsewhere")).status == 200
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 0


def test_a_callers_own_authorization_for_another_origin_is_left_alone(
    piggy: FakePiggy, http: AuthorizedHttp, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")
    mine = {"Authorization": "Basic bWU6c2VjcmV0"}

    http.request("GET", other.url_for("/elsewhere"), headers=mine)
    http.request("GET", piggy.url + API, headers=mine)

    assert seen_authorization(other) == ["Basic bWU6c2VjcmV0"]
    assert authorizations(piggy) == [f"Bearer {piggy.tokens()[0]}"]
    assert mine == {"Authorization": "Basic bWU6c2VjcmV0"}


@pytest.mark.parametrize(
    "retries",
    [None, Retry(3, remove_headers_on_redirect=[])],
    ids=["urllib3-default", "nothing-removed-on-redirect"],
)
def test_no_token_through_a_redirect_to_another_origin(
    piggy: FakePiggy, http: AuthorizedHttp, other: HTTPServer, retries: Retry | None
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    response = http.request("GET", piggy.url + "/go", retries=retries)

    assert response.status == 401
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 1


def test_a_401_from_an_allowed_origin_the_token_did_not_reach_keeps_the_token(
    piggy: FakePiggy, cache: TokenCache, other: HTTPServer
) -> None:
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=piggy.url,
        allowed_origins=[other.url_for("/")],
        cache=cache,
    )
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    with AuthorizedHttp(auth) as http:
        response = http.request("GET", piggy.url + "/go")
        assert http.request("GET", piggy.url + API).status == 200

    assert response.status == 401
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 1


def test_urllib3s_headers_to_remove_on_redirect_are_removed(
    piggy: FakePiggy, http: AuthorizedHttp, other: HTTPServer
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_data("ok")
    retries = Retry(3, remove_headers_on_redirect=["X-Secret"])

    http.request(
        "GET", piggy.url + "/go", headers={"X-Secret": "1", "X-Kept": "1"}, retries=retries
    )

    landing = other.log[0][0]
    assert ("X-Secret" in landing.headers, "X-Kept" in landing.headers) == (False, True)
    assert piggy.server.log[-1][0].headers["X-Secret"] == "1"


def test_a_redirect_from_elsewhere_to_the_api_gets_no_token(
    piggy: FakePiggy, http: AuthorizedHttp, other: HTTPServer
) -> None:
    # As with requests: a hop carries the token only if the hop before did.
    other.expect_request("/go").respond_with_data("", 307, {"Location": piggy.url + API})

    response = http.request("GET", other.url_for("/go"))

    assert response.status == 401
    assert seen_authorization(other) == [None]
    assert authorizations(piggy) == [None]
    assert piggy.stats().token_requests == 0


def test_a_401_after_a_same_origin_redirect_is_resent(
    stale: FakePiggy, http: AuthorizedHttp
) -> None:
    stale.server.expect_request("/go").respond_with_data("", 301, {"Location": API})

    response = http.request("GET", stale.url + "/go")

    assert response.status == 200
    assert stale.stats().unauthorized == 1
    assert stale.stats().token_requests == 2
    assert response.retries is not None
    assert [h.redirect_location for h in response.retries.history] == [API]


def test_a_303_turns_a_post_into_a_get_without_its_body(
    piggy: FakePiggy, http: AuthorizedHttp
) -> None:
    piggy.server.expect_request("/submit", method="POST").respond_with_data(
        "", 303, {"Location": API}
    )

    response = http.request(
        "POST",
        piggy.url + "/submit",
        body=b"data",
        headers={"Content-Type": "text/plain", "X-Trace": "1"},
    )

    assert data(response) == []
    landing = piggy.server.log[-1][0]
    assert (landing.method, landing.path) == ("GET", API)
    assert "Content-Type" not in landing.headers
    assert landing.headers["X-Trace"] == "1"
    assert landing.headers["Authorization"].startswith("Bearer ")


def test_redirect_false_returns_the_redirect(piggy: FakePiggy, http: AuthorizedHttp) -> None:
    piggy.server.expect_request("/go").respond_with_data("", 302, {"Location": API})

    response = http.request("GET", piggy.url + "/go", redirect=False)

    assert response.status == 302
    assert piggy.stats().resource_requests == 0


def test_urllib3s_redirect_limit_is_kept(piggy: FakePiggy, http: AuthorizedHttp) -> None:
    piggy.server.expect_request("/go").respond_with_data("", 302, {"Location": API})

    with pytest.raises(MaxRetryError):
        http.request("GET", piggy.url + "/go", retries=Retry(redirect=0))
    response = http.request(
        "GET", piggy.url + "/go", retries=Retry(redirect=0, raise_on_redirect=False)
    )

    assert response.status == 302
    assert piggy.stats().resource_requests == 0


# Token requests through urllib3


def test_a_network_error_is_a_token_request_error_naming_urllib3s_types(
    cache: TokenCache, unreachable: str
) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=unreachable, cache=cache)

    with AuthorizedHttp(auth) as http, pytest.raises(TokenRequestError) as caught:
        http.request("GET", unreachable + API, retries=False)

    assert str(caught.value) == (
        f"token request to {unreachable}/oauth/token failed: connection error "
        "(MaxRetryError: NewConnectionError: ConnectionRefusedError)"
    )
    assert (caught.value.__cause__, caught.value.__context__) == (None, None)
    assert CLIENT_SECRET not in str(caught.value)
    assert len(cache) == 0


def test_a_redirecting_token_endpoint_is_not_followed(
    piggy: FakePiggy, other: HTTPServer, http: AuthorizedHttp
) -> None:
    piggy.fault_token_endpoint(
        lambda request: Response("", 307, {"Location": other.url_for("/oauth/token")})
    )

    with pytest.raises(TokenRequestError, match="redirect"):
        http.request("GET", piggy.url + API)

    assert other.log == []


def test_an_oversized_token_answer_is_cut_short_and_the_pool_carries_on(
    piggy: FakePiggy, http: AuthorizedHttp, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(lambda request: Response(b"{" * (3 * MAX_BODY), 200), times=1)

    with pytest.raises(TokenResponseError, match="over"):
        http.request("GET", piggy.url + API)

    clock.advance(1)  # past the cool-down
    assert http.request("GET", piggy.url + API).status == 200


def test_debug_logs_never_carry_the_secret(
    piggy: FakePiggy, http: AuthorizedHttp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        http.request("GET", piggy.url + API)

    assert CLIENT_SECRET not in caplog.text
    assert piggy.tokens()[0][:-4] not in caplog.text
