"""Piggy auth for httpx: :class:`HttpxAuth` is an ``httpx.Auth`` for ``Client`` and ``AsyncClient``.

It wraps the same auth objects and token cache as the requests and urllib3
adapters, so one token serves them all. Async callers acquire through
:meth:`~.policy.AuthPolicy.alease`, so the event loop never blocks.

Token requests go out through the client given as ``client=`` (or
``async_client=``), so its transport, proxies, ``verify`` and event hooks apply,
or else on a client of their own: the cache runs a fetch in a thread or task of
its own, for every caller waiting on it, so it cannot be a request yielded from
one caller's auth flow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager, closing, nullcontext
from typing import Any, cast

import httpx

from .cache import Lease
from .failures import token_request_failed
from .oauth import MAX_BODY, TokenRequest, TokenResponse
from .policy import AuthPolicy, Timeout
from .replay import Answer, Flow, Judge, Renew, Resend, read_at_most, replay, rewinder, stay
from .responses import MAX_JUDGE_SECONDS, decoded

__all__ = ["HttpxAuth"]

#: How many origins an :class:`HttpxAuth` remembers its decision for.
MAX_ORIGINS = 64


class HttpxAuth(httpx.Auth):
    """An ``httpx.Auth`` that sends the Piggy token and recovers from a stale one.

    The token goes only to the auth's origins (httpx drops ``Authorization``
    on a redirect to another origin); a 401 for a stale token gets a token
    requested after it and one resend, if the request's body is in memory.

    :param auth: a :class:`~requests_piggy_auth.PiggyAuth` (any
        :class:`~requests_piggy_auth.policy.AuthPolicy`), shared freely.
    :param client: the ``httpx.Client`` that token requests go through (your own,
        this auth's included), sent with no auth and no redirects followed;
        ``None``: a new client for each token request.
    :param async_client: the ``httpx.AsyncClient`` that async callers' token
        requests go through, likewise.
    """

    def __init__(
        self,
        auth: AuthPolicy,
        *,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.auth = auth
        self.client = client
        self.async_client = async_client
        #: The policy's answer for each origin seen, as httpx parsed it (where it connects).
        self._origins: dict[tuple[str, bytes, int | None], bool] = {}

    def __repr__(self) -> str:
        return f"HttpxAuth({self.auth!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if not self._sends_token_to(request.url):
            yield request
            return
        rewind = _rewinder(request)
        lease = self.auth.lease(self._send)
        request.headers["Authorization"] = lease.authorization
        response = yield request
        flow, hop = _flow(self.auth, lease, rewind, response), response.request
        sent: object = None
        with closing(flow):  # a raise closes it
            while True:
                try:
                    step = flow.send(sent)
                except StopIteration:
                    return
                if isinstance(step, Resend):
                    hop.headers["Authorization"] = step.lease.authorization
                    sent = _answer((yield hop))
                elif isinstance(step, Renew):
                    _drop(response)
                    sent = self.auth.lease(self._send, after=step.rejected)
                elif isinstance(step, Judge):
                    sent = step.verdict()
                else:
                    sent = _read_head(response)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._sends_token_to(request.url):
            yield request
            return
        rewind = _rewinder(request)
        lease = self.auth.cached() or await self.auth.alease(self._asend)
        request.headers["Authorization"] = lease.authorization
        response = yield request
        flow, hop = _flow(self.auth, lease, rewind, response), response.request
        sent: object = None
        with closing(flow):  # a raise closes it
            while True:
                try:
                    step = flow.send(sent)
                except StopIteration:
                    return
                if isinstance(step, Resend):
                    hop.headers["Authorization"] = step.lease.authorization
                    sent = _answer((yield hop))
                elif isinstance(step, Renew):
                    await _adrop(response)
                    sent = await self.auth.alease(self._asend, after=step.rejected)
                elif isinstance(step, Judge):  # a token's source is the user's code
                    sent = await asyncio.to_thread(step.verdict)
                else:
                    sent = await _aread_head(response)

    def _sends_token_to(self, url: httpx.URL) -> bool:
        """:meth:`~.AuthPolicy.sends_token_to` for ``url``, remembered by its origin: a
        decision by origin alone, and a URL's text costs more than a cache hit."""
        origin = (url.scheme, url.raw_host, url.port)
        known = self._origins.get(origin)
        if known is None:
            if len(self._origins) >= MAX_ORIGINS:
                self._origins.clear()
            known = self._origins[origin] = self.auth.sends_token_to(str(url))
        return known

    def _send(self, request: TokenRequest) -> TokenResponse:
        """Send a token request through :attr:`client`, or a client of its own."""
        own: AbstractContextManager[httpx.Client] = (
            httpx.Client() if self.client is None else nullcontext(self.client)
        )
        try:
            with (
                own as client,
                client.stream(
                    "POST", request.url, **_posted(request, self.auth.timeout)
                ) as response,
            ):
                body = read_at_most(response.iter_bytes(), MAX_BODY)
        except httpx.HTTPStatusError as exc:  # a hook of the client's raised for its status
            return _unread(exc.response)
        except httpx.HTTPError as exc:  # no answer, or one that could not be decoded
            failure = token_request_failed(request.url, exc)
        else:
            return TokenResponse(response.status_code, response.headers, body)
        raise failure

    async def _asend(self, request: TokenRequest) -> TokenResponse:
        """Send a token request through :attr:`async_client`, or an async client of its
        own, awaiting its answer."""
        own: AbstractAsyncContextManager[httpx.AsyncClient] = (
            httpx.AsyncClient() if self.async_client is None else nullcontext(self.async_client)
        )
        try:
            async with (
                own as client,
                client.stream(
                    "POST", request.url, **_posted(request, self.auth.timeout)
                ) as response,
            ):
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        break
        except httpx.HTTPStatusError as exc:
            return _unread(exc.response)
        except httpx.HTTPError as exc:
            failure = token_request_failed(request.url, exc)
        else:
            return TokenResponse(
                response.status_code, response.headers, bytes(body[: MAX_BODY + 1])
            )
        raise failure


def _flow(
    policy: AuthPolicy,
    lease: Lease,
    rewind: Callable[[], object] | None,
    response: httpx.Response,
) -> Flow:
    """The replay flow for ``response``, the answer after the request that carried ``lease``.

    httpx follows redirects inside the auth flow: ``response`` answers the last
    hop, which it judges and resends. A hop that did not carry the token (httpx
    drops it on a redirect to another origin) tells nothing of it: its answer
    goes back as it is.
    """
    hop = response.request
    if hop.headers.get("Authorization") != lease.authorization:
        return
    yield from replay(policy, lease, _answer(response), rewind, hop.method, str(hop.url), "httpx")


def _answer(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.headers.get("WWW-Authenticate"))


def _rewinder(request: httpx.Request) -> Callable[[], object] | None:
    """How to put ``request``'s body back before a resend, or ``None`` if httpx cannot replay it.

    In memory (``content=b"..."``, ``json=``, ``data=``) it needs nothing; a
    seekable file is sought back to where it is now; a byte stream that
    iterates anew each time (a list of chunks) needs nothing. A generator, an
    iterator and anything else (a multipart upload) cannot be replayed.
    """
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        return stay
    body = getattr(stream, "_stream", None)  # what httpx's iterator streams were given
    if hasattr(body, "read"):
        return rewinder(body)
    if isinstance(body, Iterable) and iter(body) is not body:
        return stay
    if isinstance(body, AsyncIterable) and aiter(body) is not body:
        return stay
    return None


def _drop(response: httpx.Response) -> None:
    """Close a 401 judged from its head, and leave httpx an empty body to read instead:
    httpx reads a 401 whole before the resend, and its body may never end."""
    stream, response.stream = response.stream, httpx.ByteStream(b"")
    cast(httpx.SyncByteStream, stream).close()


async def _adrop(response: httpx.Response) -> None:
    """:func:`_drop` for an ``AsyncClient``'s response."""
    stream, response.stream = response.stream, httpx.ByteStream(b"")
    await cast(httpx.AsyncByteStream, stream).aclose()


def _read_head(response: httpx.Response) -> bytes:
    """At most ``MAX_BODY + 1`` bytes of a 401's body, decoded, read as sent for at most
    ``MAX_JUDGE_SECONDS`` (and one read); the response keeps them before the rest."""
    stream = cast(httpx.SyncByteStream, response.stream)
    chunks = iter(stream)
    head, error, until = bytearray(), None, time.monotonic() + MAX_JUDGE_SECONDS
    try:
        for chunk in chunks:
            head += chunk
            if len(head) > MAX_BODY or time.monotonic() >= until:
                break
    except httpx.TransportError as exc:  # raised again where the rest would be read
        error = exc
    response.stream = _Replayed(bytes(head), chunks, error, stream.close)
    return decoded(response.headers, bytes(head[: MAX_BODY + 1]))


async def _aread_head(response: httpx.Response) -> bytes:
    """:func:`_read_head` for an ``AsyncClient``'s response."""
    stream = cast(httpx.AsyncByteStream, response.stream)
    chunks = aiter(stream)
    head, error, until = bytearray(), None, time.monotonic() + MAX_JUDGE_SECONDS
    try:
        async for chunk in chunks:
            head += chunk
            if len(head) > MAX_BODY or time.monotonic() >= until:
                break
    except httpx.TransportError as exc:
        error = exc
    response.stream = _AsyncReplayed(bytes(head), chunks, error, stream.aclose)
    return decoded(response.headers, bytes(head[: MAX_BODY + 1]))


class _Replayed(httpx.SyncByteStream):
    """A 401's body again: what was read to judge it, then the rest (or its read error)."""

    def __init__(
        self,
        head: bytes,
        rest: Iterator[bytes],
        error: httpx.TransportError | None,
        close: Callable[[], None],
    ) -> None:
        self._head, self._rest, self._error, self._close = head, rest, error, close

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        if self._error is not None:
            raise self._error
        yield from self._rest

    def close(self) -> None:
        self._close()


class _AsyncReplayed(httpx.AsyncByteStream):
    """:class:`_Replayed` for an ``AsyncClient``'s response."""

    def __init__(
        self,
        head: bytes,
        rest: AsyncIterator[bytes],
        error: httpx.TransportError | None,
        aclose: Callable[[], Any],
    ) -> None:
        self._head, self._rest, self._error, self._aclose = head, rest, error, aclose

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        if self._error is not None:
            raise self._error
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await self._aclose()


def _unread(response: httpx.Response) -> TokenResponse:
    """The answer to a token request, judged by its status and headers: a client's event
    hook raised for its status before its body was read."""
    return TokenResponse(response.status_code, response.headers, b"")


def _posted(request: TokenRequest, timeout: Timeout) -> dict[str, Any]:
    """The token request as ``client.stream`` takes it: with no auth (not even the
    client's own) and no redirect followed."""
    return {
        "content": request.body,
        "headers": dict(request.headers),
        "auth": None,
        "follow_redirects": False,
        "timeout": _timeout(timeout),
    }


def _timeout(timeout: Timeout) -> httpx.Timeout:
    """A requests-style timeout, ``(connect, read)`` or one number, for httpx."""
    if isinstance(timeout, tuple):
        return httpx.Timeout(timeout[1], connect=timeout[0])
    return httpx.Timeout(timeout)
