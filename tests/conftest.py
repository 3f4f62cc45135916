"""Test helpers: the shipped fake Piggy (the plugin's ``fake_piggy``), a clock, a second origin.

A real redis-server comes from ``tests.redis_server``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, CoolDown, RetryPolicy, TokenCache
from requests_piggy_auth.cache import FETCH_THREAD, REFRESH_THREAD
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


def fetches_ended(*names: str) -> None:
    """Wait for the cache's fetch threads (only those ``names``, if given) to end."""
    for thread in threading.enumerate():
        if thread.name in (names or (FETCH_THREAD, REFRESH_THREAD)):
            thread.join(30)
            assert not thread.is_alive()


def authorizations(piggy: FakePiggy) -> list[str | None]:
    """The ``Authorization`` header of each request to the resource routes."""
    return [entry.headers.get("Authorization") for entry in piggy.log("resource")]


def seen_authorization(server: HTTPServer) -> list[str | None]:
    """The ``Authorization`` header of each request ``server`` saw."""
    return [request.headers.get("Authorization") for request, _ in server.log]


#: A 401's challenge for a stale token, and one for another error.
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
INVALID_REQUEST = {"WWW-Authenticate": 'Bearer error="invalid_request"'}


def invalid_token(request: Request) -> Response:
    """A fault: the 401 for a stale token, whatever the token."""
    return json_response({"error": "invalid_token"}, 401, INVALID_TOKEN)


@pytest.fixture(autouse=True)
def _token_store_of_its_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test, nor the commands it runs, touches the user's token store: the default
    file of ``SQLiteTokenStore()`` and of ``piggy-auth`` is the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PIGGY_AUTH_TOKEN_STORE", raising=False)


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


S = TypeVar("S", "EchoServer", "BrokenServer")


@contextmanager
def serving(server: S) -> Iterator[S]:
    """``server`` serving in a thread until exit, when its ``stopped`` is set."""
    with server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        server.stopped = threading.Event()
        try:
            yield server
        finally:
            server.stopped.set()
            server.shutdown()
            thread.join()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    with serving(EchoServer(("127.0.0.1", 0), EchoHandler)) as server:
        yield server


class BrokenHandler(socketserver.StreamRequestHandler):
    """Answers one HTTP request: a token at ``/oauth/token``, else the server's ``fault``
    (while ``faults`` last) or a 200."""

    server: BrokenServer

    def handle(self) -> None:
        lines = []
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            lines.append(line.decode("latin-1").rstrip("\r\n"))
        if not lines:
            return
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        self.rfile.read(int(headers.get("content-length", 0)))
        if lines[0].split()[1] == "/oauth/token":
            self.server.tokens += 1
            token = {"access_token": f"tok-{self.server.tokens}", "expires_in": 3600}
            self._answer(json.dumps(token).encode())
            return
        self.server.authorizations.append(headers.get("authorization"))
        if self.server.faults <= 0:
            self._answer(b"ok")
            return
        self.server.faults -= 1
        self.wfile.write(self.server.fault)
        if self.server.ending == "stall":
            self.server.stopped.wait()
        elif self.server.ending == "pause":
            self.server.stopped.wait(0.5)
            self.wfile.write(self.server.rest)
        elif self.server.ending == "keep":  # a whole answer, and the next on this connection
            self.handle()
        elif self.server.ending == "reset":
            self.server.stopped.wait(0.1)  # the client reads what came, then the reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _answer(self, body: bytes) -> None:
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )


class BrokenServer(socketserver.ThreadingTCPServer):
    """A loopback server whose answers break off: the first ``faults`` requests (but
    token requests, answered ``tok-1``, ``tok-2``, ...) get ``fault``, the start of an
    answer, and then, by ``ending``: ``"close"`` hangs up, ``"reset"`` resets the
    connection, ``"stall"`` sends nothing more until the test ends, ``"pause"`` sends
    ``rest`` after 0.5 s, ``"keep"`` answers the next request on the same connection
    (keep-alive). Others get a 200. ``authorizations`` lists what each request but
    token requests carried. With ``context`` it speaks TLS."""

    daemon_threads = True
    fault = b""
    faults = 0
    ending = "close"
    rest = b""
    tokens = 0
    stopped = threading.Event()

    def __init__(self, context: ssl.SSLContext | None = None, cert: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), BrokenHandler)
        self.context, self.cert = context, cert
        self.authorizations: list[str | None] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.context is None:
            return sock, address
        return self.context.wrap_socket(sock, server_side=True), address

    @property
    def url(self) -> str:
        scheme = "http" if self.context is None else "https"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    @property
    def verify(self) -> str | bool:
        """What requests verifies this server with."""
        return self.cert or True

    def break_off(
        self, status: str, headers: bytes, body: bytes, ending: str, faults: int, rest: bytes = b""
    ) -> None:
        """Send ``faults`` answers that break off after ``body``, as ``ending`` says."""
        self.fault = f"HTTP/1.1 {status}\r\n".encode() + headers + b"\r\n" + body
        self.ending, self.faults, self.rest = ending, faults, rest


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key: the files' paths."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(params=["http", "https"])
def broken_server(request: pytest.FixtureRequest) -> Iterator[BrokenServer]:
    """A :class:`BrokenServer`, plain or over TLS."""
    context = cert = None
    if request.param == "https":
        cert, key = request.getfixturevalue("certificate")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
    with serving(BrokenServer(context, cert)) as server:
        yield server


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
    return make_auth(retry=RetryPolicy(sleep=clock.sleep, asleep=clock.asleep, clock=clock))


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


class Ticks:
    """Counts the turns of an event loop while a call is pending and something is held.

    :meth:`hold` (a fault, or a thread's wait) lasts until the loop has turned
    ``enough`` times, or a second at most, the time the issue gives a slow token
    endpoint. A loop blocked meanwhile counts nothing: when it runs again, the
    hold is over.
    """

    def __init__(self, enough: int = 20) -> None:
        self.enough = enough
        self.counted = 0
        self.holding, self.reached, self.over = (threading.Event() for _ in range(3))

    def hold(self, request: Request | None = None) -> None:
        self.holding.set()
        self.reached.wait(1)
        self.over.set()

    async def tick(self, pending: Awaitable[Any]) -> None:
        """Count while ``pending`` is not done and the hold is on; stop when it is over."""
        waited = asyncio.ensure_future(pending)
        while not self.over.is_set():
            if self.holding.is_set() and not waited.done() and self.counted < self.enough:
                self.counted += 1
                if self.counted == self.enough:
                    self.reached.set()
            await asyncio.sleep(0.001)
