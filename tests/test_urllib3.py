"""What only the urllib3 adapter has: urllib3's API and responses, the wrapped pool (token
requests through it, connections reused), ``Retry`` objects, preloading, ProxyManager.

What every adapter promises is in ``tests/test_contract.py``.
"""

from __future__ import annotations

import array
import gzip
import json
from collections.abc import Iterator
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
    ConfigurationError,
    PersonalAccessTokenAuth,
    TokenCache,
)
from requests_piggy_auth.oauth import MAX_BODY
from requests_piggy_auth.policy import DEFAULT_TIMEOUT
from requests_piggy_auth.testing import FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    INVALID_TOKEN,
    BrokenServer,
    MakeAuth,
    answer,
    authorizations,
    invalid_token,
    seen_authorization,
)
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


def test_request_and_urlopen_send_the_token_and_return_urllib3_responses(
    piggy: FakePiggy, http: AuthorizedHttp
) -> None:
    first = http.request("GET", piggy.url + API)
    second = http.urlopen("GET", piggy.url + API)

    assert isinstance(first, urllib3.HTTPResponse)
    assert isinstance(second, urllib3.HTTPResponse)
    assert (first.status, second.status) == (200, 200)
    assert authorizations(piggy) == [f"Bearer {piggy.tokens()[0]}"] * 2
    assert piggy.stats().token_requests == 1


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


@pytest.mark.parametrize("decode_content", [True, False])
def test_a_preloaded_401_is_judged_from_its_data(
    stale: FakePiggy, http: AuthorizedHttp, decode_content: bool
) -> None:
    sent = gzip.compress(b'{"error": "invalid_token"}')
    stale.fault_resources(answer(Response(sent, 401, {"Content-Encoding": "gzip"})), times=1)

    response = http.request("GET", stale.url + API, decode_content=decode_content)

    assert response.status == 200
    assert stale.stats().token_requests == 2


# Replay


BODY = b'{"name": "in memory"}'


def test_any_bytes_like_body_is_resent(stale: FakePiggy, http: AuthorizedHttp) -> None:
    """urllib3 sends any object with the buffer protocol: it is in memory, and resent."""
    body: Any = array.array("B", BODY)  # urllib3's types name fewer bodies than it sends
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
def test_a_stale_401_with_a_large_body_leaves_one_connection_for_the_resend(
    stale: FakePiggy, http: AuthorizedHttp, preload_content: bool
) -> None:
    stale.fault_resources(lambda request: Response(b"x" * (3 * MAX_BODY), 401), times=1)

    response = http.request("GET", stale.url + API, preload_content=preload_content)

    assert response.status == 200
    assert data(response) == []
    assert stale.stats().unauthorized == 1
    assert connections(http, stale.url) == 1


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_streamed_401_handed_back_and_read_returns_its_connection_to_the_pool(
    piggy: FakePiggy, http: AuthorizedHttp, encoding: str
) -> None:
    body = json.dumps({"error": "insufficient_scope", "padding": "p" * 1000}).encode()
    sent = gzip.compress(body) if encoding == "gzip" else body
    piggy.fault_resources(lambda request: Response(sent, 401, {"Content-Encoding": encoding}))

    response = http.request("GET", piggy.url + API, preload_content=False)

    assert response.status == 401
    assert b"".join(response.stream(100)) == body
    response.release_conn()
    assert http.request("GET", piggy.url + API).status == 401
    assert piggy.stats().resource_requests == 2
    assert connections(http, piggy.url) == 1


# Origins and redirects


@pytest.mark.parametrize(
    "retries",
    [None, 3, Retry(3, remove_headers_on_redirect=[])],
    ids=["none", "a-number", "nothing-removed-on-redirect"],
)
def test_no_token_through_a_redirect_to_another_origin_whatever_the_retries(
    piggy: FakePiggy, http: AuthorizedHttp, other: HTTPServer, retries: Retry | int | None
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    response = http.request("GET", piggy.url + "/go", retries=retries)

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


def test_the_redirect_before_a_resend_is_in_the_responses_retries(
    stale: FakePiggy, http: AuthorizedHttp
) -> None:
    stale.server.expect_request("/go").respond_with_data("", 301, {"Location": API})

    response = http.request("GET", stale.url + "/go")

    assert response.status == 200
    assert stale.stats().unauthorized == 1
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


def test_urllib3s_redirect_limit_is_kept(piggy: FakePiggy, http: AuthorizedHttp) -> None:
    piggy.server.expect_request("/go").respond_with_data("", 302, {"Location": API})

    with pytest.raises(MaxRetryError):
        http.request("GET", piggy.url + "/go", retries=Retry(redirect=0))
    response = http.request(
        "GET", piggy.url + "/go", retries=Retry(redirect=0, raise_on_redirect=False)
    )

    assert response.status == 302
    assert piggy.stats().resource_requests == 0


def test_a_body_that_tells_but_cannot_seek_is_not_resent_and_the_401_goes_back(
    piggy: FakePiggy,
    make_auth: MakeAuth,
    other: HTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A streamed download passed on as an upload tells how far it has been read, but
    cannot seek: it cannot be replayed, so the 401 goes back with the warning."""
    other.expect_request("/download").respond_with_data(b'{"email": "a@example.com"}')
    piggy.fault_resources(invalid_token, times=1)
    with AuthorizedHttp(make_auth(cache=TokenCache())) as http:
        download = http.request("GET", other.url_for("/download"), preload_content=False)
        response = http.request("POST", piggy.url + API, body=download)

    assert response.status == 401
    assert len(piggy.log("resource")) == 1
    assert any("not resent" in record.getMessage() for record in caplog.records)


def test_a_401_whose_judging_raises_gives_its_connection_back(fake_piggy: FakePiggy) -> None:
    """The source gives an unusable token after a 401 whose body was read in part: the 401
    is closed and its connection goes back to the pool, not held for ever."""
    tokens = iter(["pat-first-0123456789", "a token with spaces"])
    fake_piggy.add_personal_access_token("pat-first-0123456789")
    fake_piggy.revoke("pat-first-0123456789")
    large = Response(b"x" * (2 * MAX_BODY), 401, INVALID_TOKEN)
    fake_piggy.fault_resources(lambda request: large, times=1)
    auth = PersonalAccessTokenAuth(lambda: next(tokens), base_url=fake_piggy.url)
    pool = urllib3.PoolManager(maxsize=1, block=True)
    with pytest.raises(ConfigurationError):
        AuthorizedHttp(auth, pool).request(
            "GET", fake_piggy.api_url + "/contacts", preload_content=False, timeout=5
        )

    free = pool.request("GET", fake_piggy.url + "/health", pool_timeout=5, retries=False)
    assert free.status in (200, 401, 404)  # a connection was free: the pool gave one
    pool.clear()
