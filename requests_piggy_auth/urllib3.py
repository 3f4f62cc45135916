"""Piggy auth for urllib3: :class:`AuthorizedHttp` wraps a PoolManager or ProxyManager.

It uses the same auth objects and token cache as the requests adapter, so one
token serves requests sessions and urllib3 pools alike. Token requests travel
through the wrapped pool, so a ProxyManager proxies them too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import urllib3
from urllib3._collections import HTTPHeaderDict
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util import parse_url
from urllib3.util.retry import Retry

from .cache import Lease
from .failures import token_request_failed
from .oauth import MAX_BODY, TokenRequest, TokenResponse
from .origins import Origin, keeps_token
from .policy import AuthPolicy, Timeout
from .replay import Answer, drive, read_at_most, replay, rewinder
from .responses import Answered401, answer

try:
    from urllib3._request_methods import RequestMethods
except ImportError:  # pragma: no cover - urllib3 1.26
    from urllib3.request import RequestMethods  # type: ignore[import-not-found,no-redef]

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

__all__ = ["AuthorizedHttp"]

_CHUNK = 64 * 1024
#: The headers that describe a request body: a 303 drops them with the body.
_BODY_HEADERS = frozenset(
    {
        "content-encoding",
        "content-language",
        "content-location",
        "content-type",
        "content-length",
        "digest",
        "last-modified",
    }
)


class AuthorizedHttp(RequestMethods):
    """A urllib3 pool that sends the Piggy token and recovers from a stale one.

    ``request()`` (inherited from urllib3's ``RequestMethods``) and
    ``urlopen()`` take urllib3's arguments and return urllib3's responses.
    The token goes only to the auth's origins, checked again at every
    redirect; a 401 for a stale token gets a new token and one resend, with
    the same rules as the requests adapter.

    :param auth: a :class:`~requests_piggy_auth.PiggyAuth` (any
        :class:`~requests_piggy_auth.policy.AuthPolicy`), shared freely.
    :param http: the ``PoolManager`` or ``ProxyManager`` to send through
        (token requests included); ``None`` for a new ``PoolManager``.
    """

    def __init__(self, auth: AuthPolicy, http: urllib3.PoolManager | None = None) -> None:
        # RequestMethods.__init__ would reset the wrapped pool's headers.
        self.auth = auth
        self.http = urllib3.PoolManager() if http is None else http

    def __repr__(self) -> str:
        return f"AuthorizedHttp({self.auth!r}, http={self.http!r})"

    @property
    def headers(self) -> Mapping[str, str]:
        """The wrapped pool's default headers."""
        return self.http.headers

    @headers.setter
    def headers(self, headers: Mapping[str, str]) -> None:
        self.http.headers = headers

    def __enter__(self) -> AuthorizedHttp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.clear()

    def clear(self) -> None:
        """Close the wrapped pool's connections."""
        self.http.clear()

    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        """Send a request like ``PoolManager.urlopen``, with the token where it belongs.

        Redirects are followed here, hop by hop, with urllib3's ``retries``
        rules, so each hop gets the token only if the auth sends it there.

        :param method: the HTTP method.
        :param url: the absolute URL.
        :param redirect: follow redirects (``False``: return them).
        :param kw: ``PoolManager.urlopen``'s other arguments (``body``,
            ``headers``, ``retries``, ``timeout``, ``preload_content``, ...).
        :raises TokenRequestError: (or a subclass) when no token could be had.
        :raises TokenExpiredError: for a personal access token past its expiry.
        :raises urllib3.exceptions.HTTPError: what urllib3 raises, such as
            ``MaxRetryError``.
        """
        if kw.get("headers") is None:
            kw["headers"] = self.http.headers
        lease = self.auth.lease(self._send) if self._sends_token_to(url) else None
        while True:
            rewind = rewinder(kw.get("body"))
            response = self.http.urlopen(method, url, redirect=False, **_sent(kw, lease))
            if lease is not None:
                exchange = _Exchange(self, response, lease, method, url, kw)
                flow = replay(self.auth, lease, answer(response), rewind, method, url, "urllib3")
                try:
                    drive(flow, exchange)
                except BaseException:
                    exchange.close()  # not handed back: its connection goes back to the pool
                    raise
                response, lease = exchange.result(), exchange.lease
            hop = redirect and self._redirect(response, method, url, kw)
            if not hop:
                return response
            method, location = hop
            if not (self._sends_token_to(location) and keeps_token(url, location)):
                lease = None
            url = location

    def _sends_token_to(self, url: str) -> bool:
        """Whether ``url`` gets the token, judged as the auth judges it and as urllib3 reads it.

        The pool picks the connection by ``parse_url(url)``: its origin must be allowed too.
        """
        if not self.auth.sends_token_to(url):
            return False
        sent = parse_url(url)
        return Origin.of(f"{sent.scheme}://{sent.netloc}") in self.auth.allowed_origins

    def _redirect(
        self, response: BaseHTTPResponse, method: str, url: str, kw: dict[str, Any]
    ) -> tuple[str, str] | None:
        """The next hop's method and URL, with ``kw`` updated as ``PoolManager`` does.

        ``None`` when ``response`` is no redirect, or one that ``retries``
        says to return.

        :raises MaxRetryError: when ``retries`` says to raise.
        """
        location = response.get_redirect_location()
        if not location:
            return None
        location = urljoin(url, location)
        if response.status == 303:
            method = "GET"
            kw.update(body=None, chunked=False, body_pos=None)
            kw["headers"] = _without(kw["headers"], _BODY_HEADERS)
        retries = kw.get("retries", response.retries)
        if not isinstance(retries, Retry):
            retries = Retry.from_int(retries, redirect=True)
        pool = self.http.connection_from_url(url)
        if retries.remove_headers_on_redirect and not pool.is_same_host(location):
            kw["headers"] = _without(kw["headers"], retries.remove_headers_on_redirect)
        try:
            kw["retries"] = retries.increment(method, url, response=response, _pool=pool)
        except MaxRetryError:
            if retries.raise_on_redirect:
                response.drain_conn()
                raise
            return None
        response.drain_conn()
        return method, location

    def _send(self, request: TokenRequest) -> TokenResponse:
        """Send a token request through the wrapped pool."""
        try:
            response = self.http.urlopen(
                "POST",
                request.url,
                body=request.body,
                headers=dict(request.headers),
                redirect=False,
                timeout=_timeout(self.auth.timeout),
                preload_content=False,
            )
            try:
                body = read_at_most(response.stream(_CHUNK), MAX_BODY)
            finally:
                response.close()  # a no-op once read to the end; else the rest is unread
                response.release_conn()
        except HTTPError as exc:
            failure = token_request_failed(request.url, exc)
        else:
            return TokenResponse(response.status, response.headers, body)
        raise failure


class _Exchange(Answered401):
    """A urllib3 response stepped through the replay flow: resent through the same pool."""

    def __init__(
        self,
        http: AuthorizedHttp,
        response: BaseHTTPResponse,
        lease: Lease,
        method: str,
        url: str,
        kw: Any,
    ) -> None:
        super().__init__(response, preload_content=kw.get("preload_content", True))
        self._http = http
        self._method = method
        self._url = url
        self._kw = kw
        self._resent: BaseHTTPResponse | None = None
        #: The lease the last request carried.
        self.lease = lease

    def renew(self, rejected: Lease) -> Lease:
        self.close()
        return self._http.auth.lease(self._http._send, after=rejected)

    def resend(self, lease: Lease) -> Answer:
        self.lease = lease
        self._resent = self._http.http.urlopen(
            self._method, self._url, redirect=False, **_sent(self._kw, lease)
        )
        return answer(self._resent)

    def result(self) -> BaseHTTPResponse:
        """The resend's response, or the 401 handed back."""
        if self._resent is not None:
            return self._resent
        return self.handed_back(self._url)


def _sent(kw: dict[str, Any], lease: Lease | None) -> dict[str, Any]:
    """``kw`` with ``lease``'s ``Authorization``."""
    if lease is None:
        return kw
    headers = HTTPHeaderDict(kw["headers"])
    headers["Authorization"] = lease.authorization
    return {**kw, "headers": headers}


def _without(headers: Mapping[str, str], names: Collection[str]) -> HTTPHeaderDict:
    """A copy of ``headers`` without those in ``names`` (lowercase)."""
    kept = HTTPHeaderDict(headers)
    for name in headers:
        if name.lower() in names:
            kept.discard(name)
    return kept


def _timeout(timeout: Timeout) -> urllib3.Timeout | float | None:
    """A requests-style timeout, ``(connect, read)`` or one number, for urllib3."""
    if isinstance(timeout, tuple):
        return urllib3.Timeout(connect=timeout[0], read=timeout[1])
    return timeout
