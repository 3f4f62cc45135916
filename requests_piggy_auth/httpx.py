"""Piggy auth for httpx: :class:`HttpxAuth` is an ``httpx.Auth`` for ``Client`` and ``AsyncClient``.

It wraps the same auth objects and token cache as the requests and urllib3
adapters, so one token serves them all. Async callers acquire through
:meth:`~.policy.AuthPolicy.alease`, so the event loop never blocks.

Token requests go out on an httpx client of their own, one per token request
(which is rare: once per token lifetime per process): the cache runs a fetch in
a thread or task of its own, for every caller waiting on it, so it cannot be a
request yielded from one caller's auth flow.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Callable, Generator, Iterable
from contextlib import closing
from typing import Any, cast

import httpx

from .cache import Lease
from .failures import token_request_failed
from .oauth import MAX_BODY, TokenRequest, TokenResponse
from .policy import AuthPolicy, Timeout
from .replay import Answer, Flow, Renew, Resend, read_at_most, replay, rewinder, stay

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
    """

    def __init__(self, auth: AuthPolicy) -> None:
        self.auth = auth
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
                else:
                    sent = response.read()[: MAX_BODY + 1] if _bounded(response) else b""

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
                else:
                    sent = (await response.aread())[: MAX_BODY + 1] if _bounded(response) else b""

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
        """Send a token request on a client of its own."""
        try:
            with (
                httpx.Client(timeout=_timeout(self.auth.timeout)) as client,
                client.stream("POST", request.url, **_posted(request)) as response,
            ):
                body = read_at_most(response.iter_bytes(), MAX_BODY)
        except httpx.TransportError as exc:
            failure = token_request_failed(request.url, exc)
        else:
            return TokenResponse(response.status_code, response.headers, body)
        raise failure

    async def _asend(self, request: TokenRequest) -> TokenResponse:
        """Send a token request on an async client of its own, awaiting its answer."""
        try:
            async with (
                httpx.AsyncClient(timeout=_timeout(self.auth.timeout)) as client,
                client.stream("POST", request.url, **_posted(request)) as response,
            ):
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        break
        except httpx.TransportError as exc:
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
    """Close a 401 whose body was not read, and leave httpx an empty one to read instead:
    httpx reads a 401 whole before the resend, and its body may never end."""
    if not response.is_stream_consumed:
        stream, response.stream = response.stream, httpx.ByteStream(b"")
        cast(httpx.SyncByteStream, stream).close()


async def _adrop(response: httpx.Response) -> None:
    """:func:`_drop` for an ``AsyncClient``'s response."""
    if not response.is_stream_consumed:
        stream, response.stream = response.stream, httpx.ByteStream(b"")
        await cast(httpx.AsyncByteStream, stream).aclose()


def _bounded(response: httpx.Response) -> bool:
    """Whether ``response``'s body may be read whole to judge it: it says it is at most
    ``MAX_BODY`` bytes. httpx reads a 401 whole before a resend
    (as for its DigestAuth), so one of unknown length is judged on its header alone."""
    length = response.headers.get("Content-Length", "")
    return length.isdigit() and int(length) <= MAX_BODY


def _posted(request: TokenRequest) -> dict[str, Any]:
    """The token request's body and headers, as ``client.stream`` takes them."""
    return {"content": request.body, "headers": dict(request.headers)}


def _timeout(timeout: Timeout) -> httpx.Timeout:
    """A requests-style timeout, ``(connect, read)`` or one number, for httpx."""
    if isinstance(timeout, tuple):
        return httpx.Timeout(timeout[1], connect=timeout[0])
    return httpx.Timeout(timeout)
