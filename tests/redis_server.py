"""A real redis-server on a free loopback port, for the token store tests.

The tests that use it are skipped, with the reason shown, when redis-server
is not installed, except in CI (``CI=true``), where they fail instead.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

READY = b"Ready to accept connections"


class RedisServer:
    """One redis-server process that can be killed and started again on the same port."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(
        self, cls: type[redis.Redis] = redis.Redis, port: int = 0, **options: Any
    ) -> redis.Redis:
        """A client with short timeouts and one quick retry, as the docs recommend.

        :param cls: ``redis.Redis`` or a subclass of it.
        :param port: another port to connect to (such as a proxy's) than the server's.
        """
        settings: dict[str, Any] = {
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            "retry": Retry(NoBackoff(), 1),
        }
        url = f"redis://127.0.0.1:{port or self.port}/0"
        return cls.from_url(url, **(settings | options))

    def start(self) -> None:
        """Start on a free port (the same port again after :meth:`kill`)."""
        for _ in range(5):
            port = self.port or _free_port()
            if self._started_on(port):
                self.port = port
                return
            if self.port:
                break
        raise RuntimeError(f"redis-server did not start on port {self.port or 'any'}")

    def _started_on(self, port: int) -> bool:
        options = {
            "port": port,
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "hz": 100,  # shuts down in 10 ms rather than 100 ms
            "dir": self.directory,
        }
        command = [self.executable]
        for name, value in options.items():
            command += [f"--{name}", str(value)]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        for line in process.stdout:  # it logs to stdout; stops at "ready" or at exit
            if READY in line:
                self.process = process
                return True
        process.wait()
        return False

    def kill(self) -> None:
        """Kill it at once (SIGKILL): no goodbye to its clients."""
        assert self.process is not None
        self.process.kill()
        self._reap()

    def stop(self) -> None:
        """Shut it down cleanly (SIGTERM; nothing is saved)."""
        if self.process is not None:
            self.process.terminate()
            self._reap()

    def _reap(self) -> None:
        assert self.process is not None
        self.process.wait(30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None


class ReplyDropper:
    """A loopback TCP proxy to Redis that loses one reply.

    It relays both ways, except that the first command holding every one of
    ``markers`` goes to Redis and its reply does not come back: the proxy keeps
    it in :attr:`withheld` and closes both connections, as a network would that
    fails at that moment. A client that retries then sends the command again.
    """

    def __init__(self, redis_port: int, *markers: bytes) -> None:
        self.redis_address = ("127.0.0.1", redis_port)
        self.markers = markers
        #: The replies that were not relayed.
        self.withheld: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._wake, self._waker = socket.socketpair()
        self._thread = threading.Thread(target=self._relay, name="reply-dropper")

    def __enter__(self) -> ReplyDropper:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._waker.send(b"stop")
        self._thread.join()
        for sock in (self._listener, self._wake, self._waker):
            sock.close()

    def _relay(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        selector.register(self._wake, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        clients: set[socket.socket] = set()
        try:
            while True:
                for ready, _ in selector.select():
                    sock: socket.socket = ready.fileobj  # type: ignore[assignment]
                    if sock is self._wake:
                        return
                    if sock is self._listener:
                        client, _ = sock.accept()
                        server = socket.create_connection(self.redis_address)
                        peers.update({client: server, server: client})
                        clients.add(client)
                        selector.register(client, selectors.EVENT_READ)
                        selector.register(server, selectors.EVENT_READ)
                    elif sock in peers:  # not closed earlier in this round
                        peer = peers[sock]
                        data = sock.recv(65536)
                        if sock in clients and self._loses_reply_to(data):
                            peer.sendall(data)
                            self.withheld.append(peer.recv(65536))
                            data = b""
                        if data:
                            peer.sendall(data)
                        else:
                            for end in (sock, peer):
                                selector.unregister(end)
                                end.close()
                                del peers[end]
                                clients.discard(end)
        finally:
            for sock in peers:
                sock.close()
            selector.close()

    def _loses_reply_to(self, command: bytes) -> bool:
        return not self.withheld and all(marker in command for marker in self.markers)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_server_executable() -> str:
    """redis-server's path; skips the test without one, or fails it in CI."""
    executable = shutil.which("redis-server")
    if executable is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the Redis tests")
        pytest.skip(reason)
    return executable


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_executable(), tmp_path)
    server.start()
    yield server
    server.stop()
