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

from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import closing
from typing import Any

import httpx

from .cache import Lease
from .failures import token_request_failed
from .oauth import MAX_BODY, TokenRequest, TokenResponse
from .policy import AuthPolicy, Timeout
from .replay import Answer, Flow, Renew, Resend, read_at_most, replay, stay

__all__ = ["HttpxAuth"]


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

    def __repr__(self) -> str:
        return f"HttpxAuth({self.auth!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        url = str(request.url)
        if not self.auth.sends_token_to(url):
            yield request
            return
        lease = self.auth.lease(self._send)
        request.headers["Authorization"] = lease.authorization
        response = yield request
        sent: object = None
        with closing(_flow(self.auth, lease, request, response)) as flow:  # a raise closes it
            while True:
                try:
                    step = flow.send(sent)
                except StopIteration:
                    return
                if isinstance(step, Resend):
                    request.headers["Authorization"] = step.lease.authorization
                    sent = _answer((yield request))
                elif isinstance(step, Renew):
                    sent = self.auth.lease(self._send, after=step.rejected)
                else:
                    sent = response.read()[: MAX_BODY + 1] if _bounded(response) else b""

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        url = str(request.url)
        if not self.auth.sends_token_to(url):
            yield request
            return
        lease = await self.auth.alease(self._asend)
        request.headers["Authorization"] = lease.authorization
        response = yield request
        sent: object = None
        with closing(_flow(self.auth, lease, request, response)) as flow:  # a raise closes it
            while True:
                try:
                    step = flow.send(sent)
                except StopIteration:
                    return
                if isinstance(step, Resend):
                    request.headers["Authorization"] = step.lease.authorization
                    sent = _answer((yield request))
                elif isinstance(step, Renew):
                    sent = await self.auth.alease(self._asend, after=step.rejected)
                else:
                    sent = (await response.aread())[: MAX_BODY + 1] if _bounded(response) else b""

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
    policy: AuthPolicy, lease: Lease, request: httpx.Request, response: httpx.Response
) -> Flow:
    """The replay flow for ``response``, the answer to ``request`` that carried ``lease``."""
    rewind = _rewinder(request)
    return replay(
        policy, lease, _answer(response), rewind, request.method, str(request.url), "httpx"
    )


def _answer(response: httpx.Response) -> Answer:
    return Answer(response.status_code, response.headers.get("WWW-Authenticate"))


def _rewinder(request: httpx.Request) -> Callable[[], object] | None:
    """``stay`` for a request whose body httpx holds in memory, else ``None`` (a stream)."""
    try:
        request.content  # noqa: B018 - raises for a body httpx has not read
    except httpx.RequestNotRead:
        return None
    return stay


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
