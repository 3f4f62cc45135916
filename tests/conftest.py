"""Test helpers: the shipped fake Piggy (the plugin's ``fake_piggy``), a clock, a second origin.

A real redis-server comes from ``tests.redis_server``.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, CoolDown, RetryPolicy, TokenCache
from requests_piggy_auth.testing import (
    API_PREFIX,
    FakeClock,
    FakePiggy,
    Fault,
    UnauthorizedStyle,
    json_response,
)

# The plugin is registered here rather than by its entry point (see pyproject.toml).
pytest_plugins = ["pytester", "requests_piggy_auth.pytest_plugin", "tests.redis_server"]

API = API_PREFIX + "/contacts"
CLIENT_ID, CLIENT_SECRET = "client-1", "s3cret-CANARY-5ecret"
#: The 401s that may mean a stale token, each worth a new token: every style the fake has.
STALE_TOKEN_401S: list[UnauthorizedStyle] = ["rfc6750", "header-only", "body-only", "bare"]


def authorizations(piggy: FakePiggy) -> list[str | None]:
    """The ``Authorization`` header of each request to the resource routes."""
    return [entry.headers.get("Authorization") for entry in piggy.log("resource")]


def invalid_token(request: Request) -> Response:
    """A fault: the 401 for a stale token, whatever the token."""
    return json_response(
        {"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


@pytest.fixture
def piggy(fake_piggy: FakePiggy) -> FakePiggy:
    """The plugin's fake Piggy, knowing ``CLIENT_ID``."""
    fake_piggy.add_client(CLIENT_ID, CLIENT_SECRET)
    return fake_piggy


@pytest.fixture
def unreachable() -> str:
    """The URL of a port nobody listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


class EchoHandler(socketserver.StreamRequestHandler):
    """Reads one HTTP request, then answers with it as the status line, or with nothing."""

    server: EchoServer

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n") and (line := self.rfile.readline()):
            head += line
        length = next(
            (
                int(line[15:])
                for line in head.lower().splitlines()
                if line.startswith(b"content-length:")
            ),
            0,
        )
        request = head + self.rfile.read(length)
        self.server.requests += 1
        if self.server.mode == "echo":
            self.wfile.write(request.replace(b"\r\n", b" ") + b"\r\n\r\n")
        elif self.server.mode == "token":
            body = b'{"access_token": "tok-from-echo-server", "expires_in": 3600}'
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif self.server.mode == "trickle":
            self._trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1_000_000)

    def _trickle(self, data: bytes) -> None:
        """One byte at a time, each well within a read timeout, until the client leaves."""
        try:
            for byte in data:
                if self.server.stopped.wait(0.02):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:
            return


class EchoServer(socketserver.ThreadingTCPServer):
    """A hostile loopback server: ``"echo"`` writes the request back as its status line
    (``BadStatusLine``), ``"close"`` hangs up without answering (``RemoteDisconnected``),
    ``"trickle"`` sends its status line and headers a byte at a time without end;
    ``"token"`` answers like a token endpoint. ``requests`` counts what it read."""

    daemon_threads = True
    mode = "echo"
    requests = 0
    stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with EchoServer(("127.0.0.1", 0), EchoHandler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        server.stopped = threading.Event()
        try:
            yield server
        finally:
            server.stopped.set()
            server.shutdown()
            thread.join()


@pytest.fixture(scope="session")
def other_server() -> Iterator[HTTPServer]:
    with HTTPServer(host="127.0.0.1", threaded=True) as server:
        yield server


@pytest.fixture
def other(other_server: HTTPServer) -> Iterator[HTTPServer]:
    """A second origin: same host, another port."""
    yield other_server
    other_server.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> TokenCache:
    return TokenCache(clock=clock)


MakeAuth = Callable[..., ClientCredentialsAuth]


@pytest.fixture
def make_auth(piggy: FakePiggy, cache: TokenCache) -> MakeAuth:
    """Builds the test client's auth for this Piggy and cache; keywords change either."""

    def make(**options: Any) -> ClientCredentialsAuth:
        options = {"base_url": piggy.url, "cache": cache, **options}
        return ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, **options)

    return make


@pytest.fixture
def auth(make_auth: MakeAuth, clock: FakeClock) -> ClientCredentialsAuth:
    """The client, with retries that wait on the cache's clock."""
    return make_auth(retry=RetryPolicy(sleep=clock.sleep, clock=clock))


@pytest.fixture
def plain_auth(make_auth: MakeAuth) -> ClientCredentialsAuth:
    """The client without retries or cool-down: every miss is one token request."""
    return make_auth(cache=TokenCache(cooldown=CoolDown(first=0)), retry=RetryPolicy(total=0))


class EndlessBody:
    """A fault: a 401 whose body never ends, as far as the client can tell.

    Chunk after chunk of ``x`` follows ``start``, until :meth:`stop` (which
    the ``endless_401`` fixture calls when the test is over); ``trickle``: a
    byte every 10 ms, each well within any read timeout.
    """

    def __init__(self, start: bytes, headers: Mapping[str, str], trickle: bool = False) -> None:
        self.start = start
        self.headers = headers
        self.chunk, self.every = (b"x", 0.01) if trickle else (b"x" * 65536, 0.0)
        self._stopped = threading.Event()

    def __call__(self, request: Request) -> Response:
        return Response(self._chunks(), 401, self.headers)

    def _chunks(self) -> Iterator[bytes]:
        yield self.start
        while not self._stopped.wait(self.every):
            yield self.chunk

    def stop(self) -> None:
        self._stopped.set()


MakeEndless = Callable[..., EndlessBody]


@pytest.fixture
def endless_401() -> Iterator[MakeEndless]:
    """Makes :class:`EndlessBody` faults, stopped when the test is over."""
    made: list[EndlessBody] = []

    def make(
        start: bytes = b"", headers: Mapping[str, str] | None = None, trickle: bool = False
    ) -> EndlessBody:
        made.append(EndlessBody(start, headers or {}, trickle))
        return made[-1]

    yield make
    for body in made:
        body.stop()


def answer(response: Response) -> Fault:
    """A fault that sends ``response``."""
    return lambda request: response


@contextmanager
def fetch_held(piggy: FakePiggy, auth: ClientCredentialsAuth) -> Iterator[Future[str]]:
    """``auth.token()`` in another thread, its token request held at the server until exit."""
    hold = piggy.hold()
    with ThreadPoolExecutor(1) as pool:
        try:
            leader = pool.submit(auth.token)
            assert hold.arrived.wait(30)
            yield leader
        finally:
            hold.release()
