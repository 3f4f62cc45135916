"""The adapters that ``tests/test_contract.py`` holds to one contract, each behind a tiny shim.

A shim sends one request the way a user of its library would, with the auth in
place, and hands back a :class:`Reply`. It must not do any of the work under
test (judging a 401, resending, rewinding, choosing where the token goes): that
is the adapter's. A new adapter joins the whole suite with one class here and
one entry in :data:`ADAPTERS`. An asyncio adapter fits too: its shim runs each
call to the end on an event loop of its own (the storms call it from many
threads at once, so one loop per call, or per thread).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx
import requests
import urllib3
from requests.adapters import HTTPAdapter

from requests_piggy_auth import PiggyAuth
from requests_piggy_auth.httpx import HttpxAuth
from requests_piggy_auth.urllib3 import AuthorizedHttp

T = TypeVar("T")

#: Connections each client keeps per host: enough for the storms' threads.
POOL_SIZE = 32
#: Each request's connect and read timeout, in seconds: a net under a test that
#: would otherwise hang (an endless body), never a measure of speed.
TIMEOUT = 5.0


@dataclass(frozen=True)
class Reply:
    """What a client handed back, as every adapter can tell it."""

    status: int
    headers: Mapping[str, str]
    #: The statuses of the earlier answers handed back with this one, oldest
    #: first (requests' ``history``); ``None`` where the library hands back none.
    history: list[int] | None
    #: The whole body, decoded (``Content-Encoding``), read now if it was streamed.
    read: Callable[[], bytes]
    #: A streamed body (``stream=True``), decoded, in pieces of at most the size given,
    #: as it comes.
    chunks: Callable[[int], Iterator[bytes]]
    #: Close the answer, whatever is left of its body unread.
    close: Callable[[], None]

    def json(self) -> Any:
        return json.loads(self.read())


class Client(Protocol):
    """One adapter's client, built around an auth object."""

    #: Whether :attr:`Reply.history` is a list (else it is always ``None``).
    keeps_history: bool
    #: Whether the history starts anew at a resend (requests), or keeps the 401 (httpx).
    history_restarts: bool
    #: What a refused connection raises in the library, as the type names, outermost
    #: first, that a :class:`~requests_piggy_auth.TokenRequestError` shows.
    refused: str

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        redirect: bool = True,
    ) -> Reply:
        """Send a request; ``stream``: leave the body unread; ``redirect``: follow them."""
        ...

    def close(self) -> None:
        """Close the client's connections."""
        ...


class RequestsClient:
    """requests: a ``Session`` whose ``auth`` is the auth object."""

    keeps_history = True
    history_restarts = True
    refused = "ConnectionError: MaxRetryError: NewConnectionError: ConnectionRefusedError"

    def __init__(self, auth: PiggyAuth) -> None:
        self.session = requests.Session()
        self.session.auth = auth
        self.session.mount("http://", HTTPAdapter(pool_maxsize=POOL_SIZE))

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        redirect: bool = True,
    ) -> Reply:
        response = self.session.request(
            method,
            url,
            data=body,
            headers=headers,
            stream=stream,
            allow_redirects=redirect,
            timeout=TIMEOUT,
        )
        return Reply(
            response.status_code,
            response.headers,
            [earlier.status_code for earlier in response.history],
            lambda: response.content,
            response.iter_content,
            response.close,
        )

    def close(self) -> None:
        self.session.close()


class Urllib3Client:
    """urllib3: :class:`AuthorizedHttp` around a ``PoolManager``."""

    keeps_history = False
    history_restarts = False
    refused = "MaxRetryError: NewConnectionError: ConnectionRefusedError"

    def __init__(self, auth: PiggyAuth) -> None:
        self.http = AuthorizedHttp(auth, urllib3.PoolManager(maxsize=POOL_SIZE))

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        redirect: bool = True,
    ) -> Reply:
        response = self.http.request(
            method,
            url,
            body=body,
            headers=headers,
            preload_content=not stream,
            redirect=redirect,
            timeout=TIMEOUT,
        )
        return Reply(
            response.status,
            response.headers,
            None,
            lambda: response.data,
            response.stream,
            response.close,
        )

    def close(self) -> None:
        self.http.clear()


class HttpxClient:
    """httpx: an ``httpx.Client`` whose ``auth`` is :class:`HttpxAuth` around the auth object."""

    keeps_history = True
    history_restarts = False
    refused = "ConnectError: ConnectionRefusedError"

    def __init__(self, auth: PiggyAuth) -> None:
        limits = httpx.Limits(max_connections=POOL_SIZE)
        self.client = httpx.Client(auth=HttpxAuth(auth), timeout=TIMEOUT, limits=limits)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        redirect: bool = True,
    ) -> Reply:
        request = self.client.build_request(method, url, content=body, headers=headers)
        response = self.client.send(request, stream=stream, follow_redirects=redirect)
        return Reply(
            response.status_code,
            response.headers,
            [earlier.status_code for earlier in response.history],
            response.read,
            response.iter_bytes,
            response.close,
        )

    def close(self) -> None:
        self.client.close()


class AsyncHttpxClient:
    """httpx: an ``httpx.AsyncClient`` with :class:`HttpxAuth`, one loop and client per thread.

    A body the tests give as a sync iterator goes as the async generator an
    async caller would write; each call, and each read of a reply, runs to its
    end on the calling thread's loop.
    """

    keeps_history = True
    history_restarts = False
    refused = "ConnectError: OSError: ConnectionRefusedError"  # through anyio

    def __init__(self, auth: PiggyAuth) -> None:
        self.auth = HttpxAuth(auth)
        self.local = threading.local()
        self.made: list[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = []
        self.lock = threading.Lock()

    def _mine(self) -> tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]:
        if not hasattr(self.local, "loop"):
            loop = asyncio.new_event_loop()
            limits = httpx.Limits(max_connections=POOL_SIZE)
            client = httpx.AsyncClient(auth=self.auth, timeout=TIMEOUT, limits=limits)
            self.local.loop, self.local.client = loop, client
            with self.lock:
                self.made.append((loop, client))
        return self.local.loop, self.local.client

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        redirect: bool = True,
    ) -> Reply:
        loop, client = self._mine()
        if isinstance(body, Iterator) and not hasattr(body, "read"):
            body = _async(body)
        request = client.build_request(method, url, content=body, headers=headers)
        send = client.send(request, stream=stream, follow_redirects=redirect)
        response = loop.run_until_complete(send)

        def chunks(size: int) -> Iterator[bytes]:
            pieces = response.aiter_bytes(size)
            while True:
                try:
                    yield loop.run_until_complete(pieces.__anext__())
                except StopAsyncIteration:
                    return

        return Reply(
            response.status_code,
            response.headers,
            [earlier.status_code for earlier in response.history],
            lambda: _run(loop, response.aread()),
            chunks,
            lambda: _run(loop, response.aclose()),
        )

    def close(self) -> None:
        for loop, client in self.made:
            try:
                loop.run_until_complete(_closed(client))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()


async def _closed(client: httpx.AsyncClient) -> None:
    """Close ``client``; end the loop's other tasks (a refresh ahead) as ``asyncio.run`` does."""
    await client.aclose()
    pending = asyncio.all_tasks() - {asyncio.current_task()}
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _run(loop: asyncio.AbstractEventLoop, step: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(step)


async def _async(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A sync iterator's chunks as the async generator an async caller would send."""
    for chunk in chunks:
        yield chunk


#: Every adapter the contract holds, by the name its tests are parametrized with.
ADAPTERS: dict[str, Callable[[PiggyAuth], Client]] = {
    "requests": RequestsClient,
    "urllib3": Urllib3Client,
    "httpx": HttpxClient,
    "httpx-async": AsyncHttpxClient,
}
