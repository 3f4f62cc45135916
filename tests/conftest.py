"""Test helpers: a small Piggy on loopback that counts what it sees, and a clock."""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, TokenCache

API = "/api/v3/oauth/clients/contacts"
CLIENT_ID, CLIENT_SECRET = "client-1", "s3cret-CANARY-5ecret"
#: The 401s that may mean a stale token: (headers, JSON body), each worth a new token.
STALE_TOKEN_401S = [
    pytest.param(({"WWW-Authenticate": 'Bearer error="invalid_token"'}, {}), id="header"),
    pytest.param(({}, {"error": "invalid_token"}), id="json-body"),
    pytest.param(({}, {"message": "Unauthenticated."}), id="bare"),
]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Hold:
    """A token request held at the server: ``arrived`` when it comes, waits for ``released``."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release_on_arrival(self) -> None:
        assert self.arrived.wait(30)
        self.released.set()


@dataclass
class Piggy:
    """A token endpoint and one API route on a real threaded HTTP server."""

    server: HTTPServer
    expires_in: object = 3600
    clients: dict[str, str] = field(default_factory=lambda: {CLIENT_ID: CLIENT_SECRET})
    valid: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    api_requests: list[str | None] = field(default_factory=list)
    unauthorized: int = 0
    holds: dict[str, list[Hold]] = field(default_factory=dict)
    reject_all: bool = False
    unauthorized_response: Callable[[], Response] | None = None
    token_response: Callable[[], Response] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    serial: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def hold(self, client_id: str = CLIENT_ID) -> Hold:
        """Make the next token request for ``client_id`` wait until released."""
        hold = Hold()
        with self.lock:
            self.holds.setdefault(client_id, []).append(hold)
        return hold

    def revoke_all(self) -> None:
        with self.lock:
            self.valid.clear()

    def handle_token(self, request: Request) -> Response:
        fields = dict(request.get_json() if request.is_json else request.form)
        with self.lock:
            self.token_requests.append(fields)
            holds = self.holds.get(fields.get("client_id", ""))
            hold = holds.pop(0) if holds else None
        if hold is not None:
            hold.arrived.set()
            hold.released.wait(30)
        if self.token_response is not None:
            return self.token_response()
        if self.clients.get(fields.get("client_id", "")) != fields.get("client_secret"):
            return json_response(
                {"error": "invalid_client", "error_description": "Client authentication failed"},
                401,
            )
        with self.lock:
            token = f"token-{fields['client_id']}-{next(self.serial):04d}-abcdefgh"
            self.valid.add(token)
        return json_response(
            {"token_type": "Bearer", "access_token": token, "expires_in": self.expires_in}
        )

    def handle_api(self, request: Request) -> Response:
        authorization = request.headers.get("Authorization")
        with self.lock:
            self.api_requests.append(authorization)
            token = (authorization or "").removeprefix("Bearer ")
            ok = not self.reject_all and token in self.valid
            self.unauthorized += not ok
        if ok:
            return json_response({"data": {"echo": request.get_data(as_text=True)}, "meta": {}})
        if self.unauthorized_response is not None:
            return self.unauthorized_response()
        return json_response(
            {"error": "invalid_token"},
            401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(json.dumps(payload), status, headers, content_type="application/json")


def running_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.stop()


# Servers live for the session (stopping one takes half a second) and are
# cleared after each test.
main_server = pytest.fixture(scope="session")(running_server)
other_server = pytest.fixture(scope="session")(running_server)


@pytest.fixture
def server(main_server: HTTPServer) -> Iterator[HTTPServer]:
    yield main_server
    main_server.clear()


@pytest.fixture
def other(other_server: HTTPServer) -> Iterator[HTTPServer]:
    """A second origin: same host, another port."""
    yield other_server
    other_server.clear()


@pytest.fixture
def piggy(server: HTTPServer) -> Piggy:
    piggy = Piggy(server)
    server.expect_request("/oauth/token", method="POST").respond_with_handler(piggy.handle_token)
    server.expect_request(re.compile("/api/.*")).respond_with_handler(piggy.handle_api)
    return piggy


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> TokenCache:
    return TokenCache(clock=clock)


@pytest.fixture
def auth(piggy: Piggy, cache: TokenCache) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
