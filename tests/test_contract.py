"""What every adapter promises, checked once and run against each (``tests/adapters.py``).

Tokens, single flight, 401 recovery, replay, origins and redirects, streamed 401s,
errors and personal access tokens, through each adapter's own client against a
real local server. What only one adapter has (requests' hooks and cookies,
urllib3's pools, retries and preloading) is tested in its own file.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    PiggyAuth,
    RetryPolicy,
    TokenCache,
    TokenExpiredError,
    TokenRequestError,
    TokenResponseError,
)
from requests_piggy_auth.oauth import MAX_BODY
from requests_piggy_auth.testing import (
    API_PREFIX,
    FakeClock,
    FakePiggy,
    Status,
    UnauthorizedStyle,
    json_response,
)

from .adapters import ADAPTERS, Client, Reply
from .conftest import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    INVALID_REQUEST,
    INVALID_TOKEN,
    STALE_TOKEN_401S,
    MakeAuth,
    MakeEndless,
    answer,
    authorizations,
    invalid_token,
    seen_authorization,
)
from .test_concurrency import THREADS, reject_together, run_together

MakeClient = Callable[[PiggyAuth], Client]


@pytest.fixture(params=list(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    """The name of the adapter under test: every test here runs once for each."""
    name: str = request.param
    return name


@pytest.fixture
def make_client(adapter: str) -> Iterator[MakeClient]:
    """Builds a client of the adapter around any auth; each is closed after the test."""
    made: list[Client] = []

    def make(auth: PiggyAuth) -> Client:
        made.append(ADAPTERS[adapter](auth))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def client(make_client: MakeClient, auth: ClientCredentialsAuth) -> Client:
    """A client around ``auth``."""
    return make_client(auth)


@pytest.fixture
def stale(piggy: FakePiggy, client: Client) -> FakePiggy:
    """A piggy whose token, cached by one call, was revoked: the next call gets a 401 first."""
    assert client.request("GET", piggy.url + API).status == 200
    piggy.revoke_all()
    return piggy


def disagreement(request: pytest.FixtureRequest, adapter: str, which: str, reason: str) -> None:
    """Mark this test an expected failure on the adapter ``which``: it breaks the contract.

    Strict, so the test fails once the adapter keeps the contract, and the mark goes.
    """
    if adapter == which:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


#: The httpx adapters: ``httpx.Client`` and ``httpx.AsyncClient``.
HTTPX = ("httpx", "httpx-async")
NO_BYTEARRAY = (
    "httpx takes bytes and str as content, not a bytearray or memoryview: it iterates one as "
    "chunks and sends its ints (TypeError), or, on an AsyncClient, refuses it as a sync stream"
)
FILE_LENGTH = (
    "httpx declares a file's whole size as its Content-Length, wherever the file is, so a file "
    "that is not at its start cannot be sent at all (LocalProtocolError: too little data); "
    "test_httpx.py checks that a file at its start is rewound and resent"
)
NO_SYNC_FILE = "an httpx.AsyncClient sends no sync file (RuntimeError: a sync request)"


def history(client: Client, statuses: list[int]) -> list[int] | None:
    """The :attr:`Reply.history` of an answer after ``statuses``, as ``client`` tells it."""
    return statuses if client.keeps_history else None


def bearers(piggy: FakePiggy) -> list[str]:
    """The ``Authorization`` of each token the server issued, in order."""
    return [f"Bearer {token}" for token in piggy.tokens()]


def read_past(reply: Reply, size: int) -> bytes:
    """What a streamed ``reply`` brings until past ``size`` bytes."""
    chunks, read = reply.chunks(256 * 1024), b""
    while len(read) <= size:
        read += next(chunks)
    return read


def server_saw(server: HTTPServer, path: str) -> list[str | None]:
    """The ``Authorization`` of each request to ``path`` that ``server`` saw."""
    return [r.headers.get("Authorization") for r, _ in server.log if r.path == path]


# Tokens


@pytest.mark.parametrize("token_request_format", ["json", "form"])
def test_sends_the_bearer_token_from_one_token_request(
    piggy: FakePiggy, make_client: MakeClient, make_auth: MakeAuth, token_request_format: str
) -> None:
    client = make_client(make_auth(token_request_format=token_request_format))

    replies = [client.request("GET", piggy.url + API) for _ in range(2)]

    assert [reply.status for reply in replies] == [200, 200]
    assert authorizations(piggy) == bearers(piggy) * 2
    (token_request,) = piggy.log("token")
    assert dict(token_request.fields) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    content_type = {"json": "application/json", "form": "application/x-www-form-urlencoded"}
    assert token_request.headers["Content-Type"] == content_type[token_request_format]
    assert token_request.headers["Accept"] == "application/json"
    assert token_request.headers["User-Agent"].startswith("requests-piggy-auth/")


def test_a_token_is_renewed_at_the_leeway_point_and_not_before(
    piggy: FakePiggy, make_client: MakeClient, make_auth: MakeAuth, clock: FakeClock
) -> None:
    client = make_client(make_auth(cache=TokenCache(clock=clock, refresh_ahead=False)))
    piggy.token_lifetime = 3600
    client.request("GET", piggy.url + API)
    clock.advance(3600 - 30 - 0.001)
    client.request("GET", piggy.url + API)
    assert piggy.stats().token_requests == 1

    clock.advance(0.001)
    assert client.request("GET", piggy.url + API).status == 200
    assert piggy.stats().token_requests == 2
    assert authorizations(piggy) == [bearers(piggy)[0]] * 2 + [bearers(piggy)[1]]


def test_the_leeway_is_clamped_for_short_lived_tokens(
    piggy: FakePiggy, make_client: MakeClient, make_auth: MakeAuth, clock: FakeClock
) -> None:
    client = make_client(make_auth(cache=TokenCache(clock=clock, refresh_ahead=False)))
    piggy.token_lifetime = 3  # the leeway is a tenth of its life: stale at 2.7 s
    client.request("GET", piggy.url + API)
    clock.advance(2.69)
    client.request("GET", piggy.url + API)
    assert piggy.stats().token_requests == 1

    clock.advance(0.01)
    client.request("GET", piggy.url + API)
    assert piggy.stats().token_requests == 2


# Single flight


def test_a_cold_start_in_32_threads_makes_one_token_request(
    piggy: FakePiggy, client: Client
) -> None:
    hold = piggy.hold()
    with ThreadPoolExecutor(1) as releaser:
        releaser.submit(hold.release_on_arrival)
        replies = run_together(THREADS, lambda: client.request("GET", piggy.url + API))

    assert [reply.status for reply in replies] == [200] * THREADS
    assert piggy.stats().token_requests == 1
    assert authorizations(piggy) == bearers(piggy) * THREADS


def test_32_concurrent_401s_make_one_token_request(piggy: FakePiggy, client: Client) -> None:
    assert client.request("GET", piggy.url + API).status == 200
    piggy.revoke_all()
    reject_together(piggy, THREADS)

    replies = run_together(THREADS, lambda: client.request("GET", piggy.url + API))

    assert [reply.status for reply in replies] == [200] * THREADS
    assert [reply.history for reply in replies] == [history(client, [401])] * THREADS
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == THREADS
    old, new = bearers(piggy)
    assert authorizations(piggy) == [old] * (1 + THREADS) + [new] * THREADS


# A 401 for a stale token


def test_a_stale_token_is_evicted_and_the_request_resent_once(
    stale: FakePiggy, client: Client
) -> None:
    reply = client.request("GET", stale.url + API)

    assert reply.status == 200
    assert reply.history == history(client, [401])
    old, new = bearers(stale)
    assert authorizations(stale) == [old, old, new]
    assert stale.stats().token_requests == 2
    assert stale.stats().unauthorized == 1


@pytest.mark.parametrize("style", STALE_TOKEN_401S)
def test_every_stale_token_401_style_is_resent(
    stale: FakePiggy, client: Client, style: UnauthorizedStyle
) -> None:
    stale.unauthorized_style = style

    reply = client.request("GET", stale.url + API)

    assert reply.status == 200
    assert reply.history == history(client, [401])
    assert authorizations(stale)[1:] == bearers(stale)
    assert stale.stats().token_requests == 2


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "read"])
def test_a_401_on_the_resend_is_returned(piggy: FakePiggy, client: Client, stream: bool) -> None:
    piggy.fault_resources(invalid_token)

    reply = client.request("GET", piggy.url + API, stream=stream)

    assert reply.status == 401
    body = b"".join(reply.chunks(5)) if stream else reply.read()
    assert json.loads(body) == {"error": "invalid_token"}
    assert reply.history == history(client, [401])
    assert authorizations(piggy) == bearers(piggy)
    assert piggy.stats().resource_requests == 2
    assert piggy.stats().token_requests == 2


NOT_STALE = {
    "invalid-request-challenge": ({}, INVALID_REQUEST),
    "insufficient-scope-challenge": (
        {"error": "insufficient_scope"},
        {"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    ),
    "insufficient-scope-body": ({"error": "insufficient_scope"}, {}),
}


@pytest.mark.parametrize("kind", list(NOT_STALE))
def test_a_401_that_is_not_for_a_stale_token_is_returned_without_a_resend(
    piggy: FakePiggy, client: Client, kind: str
) -> None:
    body, headers = NOT_STALE[kind]
    piggy.fault_resources(lambda request: json_response(body, 401, headers))

    reply = client.request("GET", piggy.url + API)

    assert reply.status == 401
    assert reply.json() == body
    assert reply.history == history(client, [])
    assert piggy.stats().resource_requests == 1
    assert piggy.stats().token_requests == 1


def test_each_new_token_is_renewed_in_turn_when_it_goes_stale(
    piggy: FakePiggy, client: Client, auth: ClientCredentialsAuth, clock: FakeClock
) -> None:
    for _ in range(3):
        assert client.request("GET", piggy.url + API).status == 200
        piggy.revoke_all()
        clock.advance(auth.cache.min_evict_interval)

    reply = client.request("GET", piggy.url + API)

    assert reply.status == 200
    assert reply.history == history(client, [401])
    first, second, third, fourth = bearers(piggy)
    assert authorizations(piggy) == [first, first, second, second, third, third, fourth]


def test_a_persistent_401_does_not_turn_every_call_into_a_token_request(
    piggy: FakePiggy, client: Client, clock: FakeClock
) -> None:
    piggy.fault_resources(invalid_token)

    statuses = set()
    for _ in range(50):
        statuses.add(client.request("GET", piggy.url + API).status)
        clock.advance(0.1)

    assert statuses == {401}
    # One first token, then one renewal per 5 s of 401s: 5 s passed.
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == 51


# Replay


BODY = b'{"name": "in memory"}'


@pytest.mark.parametrize(
    "body",
    [BODY, bytearray(BODY), memoryview(BODY), BODY.decode()],
    ids=["bytes", "bytearray", "memoryview", "str"],
)
def test_every_in_memory_body_is_resent(
    stale: FakePiggy, client: Client, body: object, request: pytest.FixtureRequest, adapter: str
) -> None:
    if not isinstance(body, (bytes, str)):
        for httpx in HTTPX:
            disagreement(request, adapter, httpx, NO_BYTEARRAY)
    reply = client.request("POST", stale.url + API, body=body)

    assert reply.status == 201
    assert reply.json()["data"]["name"] == "in memory"
    assert reply.history == history(client, [401])
    first, resent = stale.log("resource")[1:]
    assert (first.status, resent.status) == (401, 201)
    assert resent.body == first.body == BODY


def test_a_seekable_file_is_rewound_to_where_it_started(
    stale: FakePiggy, client: Client, request: pytest.FixtureRequest, adapter: str
) -> None:
    disagreement(request, adapter, "httpx", FILE_LENGTH)
    disagreement(request, adapter, "httpx-async", NO_SYNC_FILE)
    body = io.BytesIO(b'SKIP{"name": "file"}')
    body.seek(4)

    reply = client.request("POST", stale.url + API, body=body)

    assert reply.status == 201
    assert reply.json()["data"]["name"] == "file"
    first, resent = stale.log("resource")[1:]
    assert resent.body == first.body == b'{"name": "file"}'


def test_a_seekable_file_is_sent_whole_through_a_307_and_on_the_resend(
    stale: FakePiggy, client: Client, request: pytest.FixtureRequest, adapter: str
) -> None:
    disagreement(
        request,
        adapter,
        "urllib3",
        "AuthorizedHttp hops as urllib3's PoolManager does, which does not rewind a file at a "
        "307: the hop sends what is left of it (nothing) and the resend after its 401 is "
        "rewound only to where that hop started; requests rewinds the file at the redirect",
    )
    disagreement(request, adapter, "httpx", FILE_LENGTH)
    disagreement(request, adapter, "httpx-async", NO_SYNC_FILE)
    stale.server.expect_request("/go", method="POST").respond_with_data("", 307, {"Location": API})
    body = io.BytesIO(b'SKIP{"name": "file"}')
    body.seek(4)

    reply = client.request("POST", stale.url + "/go", body=body)

    assert [entry.body for entry in stale.log("resource")[1:]] == [b'{"name": "file"}'] * 2
    assert reply.status == 201


def test_a_one_shot_body_is_not_resent_and_a_warning_says_so(
    stale: FakePiggy, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"stream"}'

    reply = client.request("POST", stale.url + API, body=chunks())

    assert reply.status == 401
    assert reply.json()["error"] == "invalid_token"
    assert reply.history == history(client, [])
    assert stale.stats().resource_requests == 2
    warned = [r for r in caplog.records if "cannot be replayed" in r.getMessage()]
    assert [(r.name, r.levelno) for r in warned] == [("requests_piggy_auth", logging.WARNING)]
    assert f"POST {stale.url + API} got 401 for a stale token" in warned[0].getMessage()


# Streamed 401s and large ones


def test_a_stale_401_with_an_endless_streamed_body_is_judged_closed_and_resent(
    stale: FakePiggy, client: Client, endless_401: MakeEndless
) -> None:
    stale.fault_resources(endless_401(headers=INVALID_TOKEN), times=1)

    reply = client.request("GET", stale.url + API, stream=True)

    assert reply.status == 200
    assert json.loads(b"".join(reply.chunks(4)))["data"] == []
    assert reply.history == history(client, [401])
    assert stale.stats().resource_requests == 3
    assert stale.stats().token_requests == 2


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "read"])
def test_a_stale_401_with_a_large_body_is_resent(
    stale: FakePiggy, client: Client, stream: bool
) -> None:
    stale.fault_resources(answer(Response(b"x" * (3 * MAX_BODY), 401, INVALID_TOKEN)), times=1)

    reply = client.request("GET", stale.url + API, stream=stream)

    assert reply.status == 200
    assert reply.json()["data"] == []
    assert stale.stats().resource_requests == 3
    assert stale.stats().token_requests == 2


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_streamed_401_that_is_not_resent_can_still_be_read_whole(
    piggy: FakePiggy, client: Client, encoding: str
) -> None:
    body = json.dumps({"error": "insufficient_scope", "padding": "p" * 1000}).encode()
    sent = gzip.compress(body) if encoding == "gzip" else body
    piggy.fault_resources(answer(Response(sent, 401, {"Content-Encoding": encoding})))

    reply = client.request("GET", piggy.url + API, stream=True)

    assert reply.status == 401
    assert reply.headers["Content-Encoding"] == encoding
    assert b"".join(reply.chunks(100)) == body
    # The body was read to judge it: it names another error, so no new token.
    assert piggy.stats().token_requests == 1
    assert piggy.stats().resource_requests == 1


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "read"])
def test_a_large_401_that_is_not_resent_is_handed_back_whole(
    stale: FakePiggy, client: Client, stream: bool
) -> None:
    large = bytes(range(256)) * (3 * MAX_BODY // 256)
    stale.fault_resources(answer(Response(large, 401)))

    reply = client.request("POST", stale.url + API, body=iter([b"once"]), stream=stream)

    assert reply.status == 401
    assert reply.read() == large
    assert stale.stats().resource_requests == 2


def test_a_streamed_401_handed_back_streams_its_endless_body(
    piggy: FakePiggy, client: Client, endless_401: MakeEndless
) -> None:
    start = b'{"error": "invalid_request", "padding": "'
    piggy.fault_resources(endless_401(start, INVALID_REQUEST))

    reply = client.request("GET", piggy.url + API, stream=True)
    try:
        read = read_past(reply, 3 * MAX_BODY)  # past what was judged
    finally:
        reply.close()

    assert reply.status == 401
    assert read == start + b"x" * (len(read) - len(start))
    assert piggy.stats().resource_requests == 1


# Origins and redirects


def test_no_token_for_another_origin(piggy: FakePiggy, client: Client, other: HTTPServer) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")

    assert client.request("GET", other.url_for("/elsewhere")).status == 200
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 0


def test_allowed_origins_get_the_token(
    piggy: FakePiggy, make_client: MakeClient, make_auth: MakeAuth, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")
    client = make_client(make_auth(allowed_origins=[other.url_for("/")]))

    assert client.request("GET", other.url_for("/elsewhere")).status == 200
    assert seen_authorization(other) == bearers(piggy)


def test_a_callers_own_authorization_for_another_origin_is_left_alone(
    piggy: FakePiggy, client: Client, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")
    mine = {"Authorization": "Basic bWU6c2VjcmV0"}

    client.request("GET", other.url_for("/elsewhere"), headers=mine)
    client.request("GET", piggy.url + API, headers=mine)

    assert seen_authorization(other) == ["Basic bWU6c2VjcmV0"]
    assert authorizations(piggy) == bearers(piggy)
    assert mine == {"Authorization": "Basic bWU6c2VjcmV0"}


def test_no_token_through_a_redirect_to_another_origin(
    piggy: FakePiggy, client: Client, other: HTTPServer
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    reply = client.request("GET", piggy.url + "/go")

    assert reply.status == 401
    assert server_saw(piggy.server, "/go") == bearers(piggy)
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 1


def test_a_401_from_an_allowed_origin_the_token_did_not_reach_keeps_the_token(
    piggy: FakePiggy, make_client: MakeClient, make_auth: MakeAuth, other: HTTPServer
) -> None:
    client = make_client(make_auth(allowed_origins=[other.url_for("/")]))
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/landing")}
    )
    other.expect_request("/landing").respond_with_json({"error": "invalid_token"}, 401)

    reply = client.request("GET", piggy.url + "/go")

    assert reply.status == 401
    assert seen_authorization(other) == [None]
    assert piggy.stats().token_requests == 1
    assert client.request("GET", piggy.url + API).status == 200
    assert piggy.stats().token_requests == 1


def test_a_redirect_from_elsewhere_to_the_api_gets_no_token(
    piggy: FakePiggy, client: Client, other: HTTPServer
) -> None:
    # A hop carries the token only if the hop before did.
    other.expect_request("/go").respond_with_data("", 307, {"Location": piggy.url + API})

    reply = client.request("GET", other.url_for("/go"))

    assert reply.status == 401
    assert seen_authorization(other) == [None]
    assert authorizations(piggy) == [None]
    assert piggy.stats().token_requests == 0


def test_a_token_dropped_at_a_redirect_stays_dropped_when_the_chain_comes_back(
    piggy: FakePiggy, client: Client, other: HTTPServer
) -> None:
    piggy.server.expect_request("/go").respond_with_data(
        "", 302, {"Location": other.url_for("/back")}
    )
    other.expect_request("/back").respond_with_data("", 302, {"Location": piggy.url + API})

    reply = client.request("GET", piggy.url + "/go")

    assert reply.status == 401
    assert server_saw(piggy.server, "/go") == bearers(piggy)
    assert seen_authorization(other) == [None]
    assert authorizations(piggy) == [None]
    assert piggy.stats().token_requests == 1


def test_a_same_origin_redirect_keeps_the_token_and_its_401_is_resent(
    stale: FakePiggy, client: Client
) -> None:
    stale.server.expect_request("/go").respond_with_data("", 301, {"Location": API})

    reply = client.request("GET", stale.url + "/go")

    assert reply.status == 200
    old, new = bearers(stale)
    assert server_saw(stale.server, "/go") == [old]
    assert authorizations(stale) == [old, old, new]
    assert stale.stats().unauthorized == 1
    assert stale.stats().token_requests == 2


def test_a_resend_answered_with_a_redirect_goes_on_with_the_new_token(
    stale: FakePiggy, client: Client
) -> None:
    old = bearers(stale)[0]

    def moved(request: Request) -> Response | None:
        if request.path.endswith("/moved") and request.headers.get("Authorization") != old:
            return Response(b"", 302, {"Location": stale.url + API})
        return None  # the old token's 401, or the API itself

    stale.fault_resources(moved)
    reply = client.request("GET", stale.url + API_PREFIX + "/moved")

    assert reply.status == 200
    # requests rebuilds the history of a redirect chain from the resend on; httpx keeps the 401.
    assert reply.history == history(client, [302] if client.history_restarts else [401, 302])
    new = bearers(stale)[1]
    assert authorizations(stale) == [old, old, new, new]
    assert stale.stats().token_requests == 2


def test_redirect_false_returns_the_redirect(piggy: FakePiggy, client: Client) -> None:
    piggy.server.expect_request("/go").respond_with_data("", 302, {"Location": API})

    reply = client.request("GET", piggy.url + "/go", redirect=False)

    assert (reply.status, reply.headers["Location"]) == (302, API)
    assert server_saw(piggy.server, "/go") == bearers(piggy)
    assert piggy.stats().resource_requests == 0


# Errors


def test_an_unreachable_token_endpoint_is_a_token_request_error_naming_types_only(
    make_client: MakeClient, make_auth: MakeAuth, clock: FakeClock, unreachable: str
) -> None:
    retry = RetryPolicy(sleep=clock.sleep, asleep=clock.asleep, clock=clock)
    auth = make_auth(base_url=unreachable, retry=retry)
    client = make_client(auth)

    with pytest.raises(TokenRequestError) as raised:
        client.request("GET", unreachable + API)

    assert str(raised.value) == (
        f"token request to {unreachable}/oauth/token failed: connection error ({client.refused})"
    )
    assert raised.value.status is None
    assert (raised.value.__cause__, raised.value.__context__) == (None, None)
    assert CLIENT_SECRET not in str(raised.value)
    assert len(auth.cache) == 0


def test_a_token_endpoint_that_is_down_is_a_token_request_error_with_its_status(
    piggy: FakePiggy, client: Client
) -> None:
    piggy.fault_token_endpoint(Status(503))

    with pytest.raises(TokenRequestError) as raised:
        client.request("GET", piggy.url + API)

    assert raised.value.status == 503
    assert CLIENT_SECRET not in str(raised.value)
    assert piggy.stats().token_requests == 4  # the first attempt and 3 retries
    assert piggy.stats().resource_requests == 0


def test_a_redirecting_token_endpoint_is_not_followed(
    piggy: FakePiggy, other: HTTPServer, client: Client
) -> None:
    piggy.fault_token_endpoint(
        lambda request: Response("", 307, {"Location": other.url_for("/oauth/token")})
    )

    with pytest.raises(TokenRequestError, match="redirect"):
        client.request("GET", piggy.url + API)

    assert other.log == []
    assert piggy.stats().resource_requests == 0


def test_an_oversized_token_answer_is_cut_short_and_the_next_call_gets_a_token(
    piggy: FakePiggy, client: Client, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(lambda request: Response(b"{" * (3 * MAX_BODY), 200), times=1)

    with pytest.raises(TokenResponseError, match="over"):
        client.request("GET", piggy.url + API)

    clock.advance(1)  # past the cool-down
    assert client.request("GET", piggy.url + API).status == 200
    assert piggy.stats().token_requests == 2


def test_debug_logs_show_no_secret_and_no_part_of_a_token(
    stale: FakePiggy, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):  # every logger: the HTTP libraries' too
        assert client.request("GET", stale.url + API).status == 200

    assert f"new token for client {CLIENT_ID!r}" in caplog.text
    assert CLIENT_SECRET not in caplog.text
    assert len(stale.tokens()) == 2  # the revoked one, and the one its 401 brought
    for token in stale.tokens():
        assert all(token[i : i + 8] not in caplog.text for i in range(len(token) - 7))


# Personal access tokens

PAT = "1|pat-CANARY-0123456789abcdef"


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "read"])
def test_a_personal_access_token_is_sent_and_its_401_handed_back(
    piggy: FakePiggy, make_client: MakeClient, stream: bool
) -> None:
    client = make_client(PersonalAccessTokenAuth(PAT, base_url=piggy.url))

    refused = client.request("GET", piggy.url + API, stream=stream)
    assert (refused.status, refused.json()["error"]) == (401, "invalid_token")
    assert refused.history == history(client, [])
    piggy.add_personal_access_token(PAT)
    assert client.request("GET", piggy.url + API, stream=stream).status == 200

    assert authorizations(piggy) == [f"Bearer {PAT}"] * 2
    assert piggy.stats().token_requests == 0


def test_an_expired_personal_access_token_raises_before_sending(
    piggy: FakePiggy, make_client: MakeClient
) -> None:
    expired = datetime.now(timezone.utc) - timedelta(minutes=1)
    client = make_client(PersonalAccessTokenAuth(PAT, base_url=piggy.url, expires_at=expired))

    with pytest.raises(TokenExpiredError, match="Apps → Integrations → Personal Access Tokens"):
        client.request("GET", piggy.url + API)

    assert piggy.stats().resource_requests == 0
