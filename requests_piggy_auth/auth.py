"""Piggy auth for requests: attach the Bearer token, recover from a stale one.

The auth objects hold configuration only, so one object can be shared by any
number of threads and sessions. What one request needs to recover from a 401
(the token it sent, how to rewind its body) is bound to the response hook
registered on that request.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import requests
from requests.cookies import extract_cookies_to_jar

from .cache import Lease, TokenCache, client_key, shared_cache
from .challenges import token_rejected
from .errors import TokenExpiredError
from .failures import token_request_failed
from .oauth import (
    MAX_BODY,
    AsyncTokenSender,
    ClientCredentials,
    Token,
    TokenRequest,
    TokenResponse,
    TokenSender,
    is_valid_token,
)
from .origins import Origin, secure_origin
from .responses import Head, decoded, preloaded, read_head, replayed
from .retry import RetryPolicy
from .token_session import token_session

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

DEFAULT_BASE_URL = "https://api.piggy.eu"
#: Sets the base URL for auth objects created without ``base_url=``.
BASE_URL_VARIABLE = "PIGGY_BASE_URL"
#: Connect and read timeouts, in seconds, for each token request; the retry
#: policy's budget bounds a whole fetch.
DEFAULT_TIMEOUT = (3.05, 5.0)
#: Up to 3 retries with full-jitter backoff, within 10 s per fetch.
DEFAULT_RETRY = RetryPolicy()
#: A personal access token this close to its expiry date logs a warning.
PAT_WARNING_PERIOD = timedelta(days=7)

Timeout = float | tuple[float, float] | None

log = logging.getLogger("requests_piggy_auth")


class PiggyAuth(requests.auth.AuthBase):
    """What every Piggy auth shares: origins, the Bearer header, the 401 hook.

    Adapters for other HTTP libraries use :meth:`sends_token_to`,
    :meth:`lease` and :meth:`rejected`, so the rules live in one place.

    :param base_url: the API's base URL; ``None``: ``$PIGGY_BASE_URL``, else
        ``https://api.piggy.eu``. Must be https unless loopback.
    :param allowed_origins: more origins (URLs) that may receive the token.
    :raises ValueError: for a URL that is not absolute http(s), or plain http
        to a host other than loopback.
    """

    #: Whether a 401 can be cured by fetching a new token.
    renewable = False
    #: Connect and read timeouts, in seconds, for token requests.
    timeout: Timeout = DEFAULT_TIMEOUT

    def __init__(self, *, base_url: str | None, allowed_origins: Iterable[str]) -> None:
        if base_url is None:
            base_url = os.environ.get(BASE_URL_VARIABLE, "").strip() or DEFAULT_BASE_URL
        self.base_url = base_url.rstrip("/")
        origin = secure_origin(self.base_url, what="base_url")
        if isinstance(allowed_origins, str):
            allowed_origins = [allowed_origins]
        self.allowed_origins = frozenset(
            {origin, *(secure_origin(url, what="allowed_origins") for url in allowed_origins)}
        )
        self._prefixes = tuple(allowed.prefix for allowed in self.allowed_origins)

    def sends_token_to(self, url: str) -> bool:
        """Whether a request to ``url`` gets the token: its origin is allowed."""
        # The prefix test answers the usual URL without parsing it.
        return url.startswith(self._prefixes) or Origin.of(url) in self.allowed_origins

    def lease(self, send: TokenSender | None = None, *, after: Lease | None = None) -> Lease:
        """The token to send now; ``send`` makes a token request if one is needed.

        :param send: how to send a token request (``None``: with requests).
        :param after: a lease that got a 401 which :meth:`rejected` said a new
            token may cure: the token returned was requested after that 401.
        :raises PiggyAuthError: when no token can be had.
        """
        raise NotImplementedError

    async def alease(self, send: AsyncTokenSender, *, after: Lease | None = None) -> Lease:
        """:meth:`lease` for asyncio: a token request goes out through the async ``send``,
        and every wait is awaited, so the event loop runs on.

        :param send: how to send a token request, awaiting its answer.
        :param after: as for :meth:`lease`.
        :raises PiggyAuthError: when no token can be had.
        """
        return self.lease(after=after)

    def token(self, send: TokenSender | None = None) -> str:
        """The access token to send now (see :meth:`lease`).

        :param send: how to send a token request (``None``: with requests).
        :raises PiggyAuthError: when no token can be had.
        """
        return self.lease(send).access_token

    def rejected(self, lease: Lease, www_authenticate: str | None, body: bytes) -> bool:
        """Whether a 401 to a request that carried ``lease`` may be cured by a new token.

        Evicts the lease's token when the 401 says it is stale; a resend then
        takes ``lease(send, after=lease)``.

        :param lease: the lease the request carried (read from what was sent).
        :param www_authenticate: the 401's ``WWW-Authenticate`` header, if any.
        :param body: the 401's body (at most 1 MiB of it).
        """
        return False

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = r.url
        # The prefix test answers the usual URL without a call.
        if url is None or not (url.startswith(self._prefixes) or self.sends_token_to(url)):
            return r
        lease = self.lease()
        r.headers["Authorization"] = lease.authorization
        if self.renewable:
            # What register_hook does, without its checks: "response" is always there.
            rewind = _stay if r.body is None else rewinder(r.body)
            r.hooks["response"].append(partial(self._handle_401, lease, rewind))
        return r

    def _handle_401(
        self,
        lease: Lease,
        rewind: Callable[[], object] | None,
        r: requests.Response,
        **kwargs: Any,
    ) -> requests.Response:
        """Resend once with a new token when a 401 says ``lease``'s token is stale.

        Only an answer to a request that carried the lease counts: requests
        drops the header on a redirect to another origin, and that 401 says
        nothing about the token.
        """
        request = r.request
        if request.headers.get("Authorization") != lease.authorization:
            return r
        if r.status_code != 401:
            lease.answered(r.status_code)
            return r
        judged = judge_401(self, lease, r.raw, rewind, request.method, r.url)
        if not judged.resend:
            r.raw = replayed(r.raw, judged.head, r.url)
            return r
        r._content = judged.body  # the 401 in history keeps what was judged of its body
        retry = request.copy()
        jar = retry._cookies  # the jar requests keeps for this request
        assert jar is not None
        extract_cookies_to_jar(jar, request, r.raw)
        retry.prepare_cookies(jar)
        renewed = self.lease(after=lease)
        retry.headers["Authorization"] = renewed.authorization
        response: requests.Response = r.connection.send(retry, **kwargs)
        renewed.answered(response.status_code)
        # requests follows a redirect of the resend from the original request: it must
        # carry the new token, while the 401 keeps a copy of what was sent.
        r.request = request.copy()
        request.headers["Authorization"] = renewed.authorization
        response.history.append(r)
        response.request = retry
        return response


class ClientCredentialsAuth(PiggyAuth):
    """Auth with OAuth client credentials; tokens are fetched, cached and renewed.

    :param client_id: the OAuth client id.
    :param client_secret: the OAuth client secret.
    :param base_url: the API's base URL; the token endpoint is
        ``base_url + "/oauth/token"``. Must be https unless loopback.
        ``None``: ``$PIGGY_BASE_URL``, else ``https://api.piggy.eu``.
    :param allowed_origins: more origins (URLs) that may receive the token.
    :param cache: the :class:`TokenCache` to share; ``None`` for the process-wide one.
    :param token_session: the ``requests.Session`` for token requests;
        ``None`` for the library's own.
    :param timeout: connect and read timeout for each token request, in seconds.
    :param retry: how token requests are retried, and the time budget of one
        fetch (see :class:`RetryPolicy`); ``RetryPolicy(total=0)`` never retries.
    :param token_request_format: ``"json"`` or ``"form"`` encoding of the token request.
    :raises ValueError: for an empty id or secret, a bad URL or format.
    """

    renewable = True

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        base_url: str | None = None,
        allowed_origins: Iterable[str] = (),
        cache: TokenCache | None = None,
        token_session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        token_request_format: Literal["json", "form"] = "json",
    ) -> None:
        super().__init__(base_url=base_url, allowed_origins=allowed_origins)
        self.grant = ClientCredentials(
            self.base_url + "/oauth/token", client_id, client_secret, token_request_format
        )
        self.cache = shared_cache() if cache is None else cache
        self.token_session = token_session
        self.timeout = timeout
        self.retry = retry
        self._key = client_key(self.grant.token_url, client_id, client_secret)
        #: One acquisition's bound: the retry budget plus one more connect timeout.
        self._deadline = self.retry.budget + _connect_timeout(timeout)
        self._fetch_with_requests = partial(self._fetch, self._send)

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(client_id={self.client_id!r}, base_url={self.base_url!r})"

    @property
    def client_id(self) -> str:
        """The OAuth client id."""
        return self.grant.client_id

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return self.grant.token_url

    def lease(self, send: TokenSender | None = None, *, after: Lease | None = None) -> Lease:
        """The cached token, fetched with ``send`` (default: requests) on a miss.

        Token requests are retried by :attr:`retry`, whatever ``send`` is, and
        waiting for another thread's fetch takes at most its budget.

        :param send: how to send a token request, such as
            :class:`~requests_piggy_auth.urllib3.AuthorizedHttp`'s pool
            (``None``: this auth's ``token_session``, else the library's own).
        :param after: a lease whose 401 :meth:`rejected` judged curable.
        :raises TokenRequestError: (or a subclass) when no token could be had.
        """
        fetch = self._fetch_with_requests if send is None else partial(self._fetch, send)
        return self.cache.lease(self._key, fetch, timeout=self._deadline, after=after)

    async def alease(self, send: AsyncTokenSender, *, after: Lease | None = None) -> Lease:
        """The cached token, fetched with the async ``send`` on a miss (see :meth:`lease`).

        :param send: how to send a token request, awaiting its answer.
        :param after: a lease whose 401 :meth:`rejected` judged curable.
        :raises TokenRequestError: (or a subclass) when no token could be had.
        """
        fetch = partial(self._afetch, send)
        return await self.cache.alease(self._key, fetch, timeout=self._deadline, after=after)

    def rejected(self, lease: Lease, www_authenticate: str | None, body: bytes) -> bool:
        """True when the 401 may mean a stale token and evicting it made room for a new one.

        :param lease: the lease the request carried.
        :param www_authenticate: the 401's ``WWW-Authenticate`` header, if any.
        :param body: the 401's body.
        """
        return token_rejected(www_authenticate, body) and self.cache.reject(self._key, lease)

    def fetch_token(self) -> Token:
        """A new token straight from the token endpoint, past the cache (for tools).

        :raises TokenRequestError: (or a subclass) when no token could be had.
        """
        return self._fetch_with_requests()

    def _fetch(self, send: TokenSender) -> Token:
        return self._parsed(self.retry.send(send, self.grant.token_request()))

    async def _afetch(self, send: AsyncTokenSender) -> Token:
        return self._parsed(await self.retry.asend(send, self.grant.token_request()))

    def _parsed(self, response: TokenResponse) -> Token:
        token = self.grant.parse(response)
        log.debug("new token for client %r (expires_in=%s)", self.client_id, token.expires_in)
        return token

    def _send(self, request: TokenRequest) -> TokenResponse:
        session = self.token_session or token_session()
        try:
            with session.post(
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                body = read_at_most(response.iter_content(64 * 1024), MAX_BODY)
                return TokenResponse(response.status_code, response.headers, body)
        except requests.RequestException as exc:
            failure = token_request_failed(request.url, exc)
        raise failure


class PersonalAccessTokenAuth(PiggyAuth):
    """Auth with a personal access token from the Business Dashboard.

    :param token: the token (Apps → Integrations → Personal Access Tokens).
    :param expires_at: its expiry date, if it has one; a naive datetime is
        local time. Requests after it raise :class:`TokenExpiredError`.
    :param base_url: the API's base URL. Must be https unless loopback.
        ``None``: ``$PIGGY_BASE_URL``, else ``https://api.piggy.eu``.
    :param allowed_origins: more origins (URLs) that may receive the token.
    :raises ValueError: for an empty token, one with whitespace or control
        characters, or a bad URL.
    """

    def __init__(
        self,
        token: str,
        *,
        expires_at: datetime | None = None,
        base_url: str | None = None,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        super().__init__(base_url=base_url, allowed_origins=allowed_origins)
        if not is_valid_token(token):
            raise ValueError(
                "personal access token must be a non-empty string without whitespace or "
                "control characters"
            )
        self._token = token
        self.expires_at = None if expires_at is None else expires_at.astimezone(timezone.utc)
        self._warn_lock = threading.Lock()
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_warn_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._warn_lock = threading.Lock()

    def __repr__(self) -> str:
        expiry = "" if self.expires_at is None else f", expires_at={self.expires_at.isoformat()!r}"
        return f"PersonalAccessTokenAuth(base_url={self.base_url!r}{expiry})"

    def lease(self, send: TokenSender | None = None, *, after: Lease | None = None) -> Lease:
        """The personal access token.

        :param send: unused: a personal access token is never fetched.
        :param after: unused: a personal access token is never renewed.
        :raises TokenExpiredError: when its expiry date has passed.
        """
        if self.expires_at is not None:
            self._check_expiry(self.expires_at - datetime.now(timezone.utc))
        return Lease(self._token)

    def _check_expiry(self, remaining: timedelta) -> None:
        if remaining <= timedelta(0):
            raise TokenExpiredError(
                f"the personal access token expired at {self.expires_at:%Y-%m-%d %H:%M} UTC; "
                "create a new one in the Piggy Business Dashboard under Apps → Integrations → "
                "Personal Access Tokens"
            )
        if remaining < PAT_WARNING_PERIOD:
            with self._warn_lock:
                warned, self._warned = self._warned, True
            if not warned:
                log.warning(
                    "the personal access token expires in %.1f days (at %s UTC); create a new "
                    "one in the Business Dashboard under Apps → Integrations → Personal Access "
                    "Tokens",
                    remaining / timedelta(days=1),
                    f"{self.expires_at:%Y-%m-%d %H:%M}",
                )


def read_at_most(chunks: Iterable[bytes], limit: int) -> bytes:
    """Join ``chunks`` but stop after ``limit + 1`` bytes, so an oversized body shows."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[: limit + 1])


def warn_not_resent(method: str | None, url: str) -> None:
    """Log that a request got a 401 for a stale token but its body cannot be replayed."""
    log.warning(
        "%s %s got 401 for a stale token, but its body cannot be replayed (a generator or a "
        "consumed stream), so it was not resent; send bytes or a seekable file to let it be "
        "retried",
        method,
        url,
    )


def rewinder(body: object) -> Callable[[], object] | None:
    """How to put ``body`` back where it starts, or ``None`` if it cannot be replayed.

    In memory (str, bytes and any other bytes-like object) it needs nothing; a
    seekable file is sought back to where it is now.
    """
    if body is None or isinstance(body, (bytes, bytearray, memoryview, str)):
        return _stay
    try:
        return partial(body.seek, body.tell())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass
    try:
        memoryview(body)  # type: ignore[arg-type]
    except TypeError:
        return None
    return _stay


def _stay() -> None:
    """Rewind a body that needs none: nothing, or one in memory."""


class Judged(NamedTuple):
    """What a 401 to a request that carried a lease came to, in either adapter."""

    #: Whether to resend: the 401 is closed and the body rewound.
    resend: bool
    #: What was read of its body to judge it (nothing if it was preloaded).
    head: Head
    #: The body (at most ``MAX_BODY + 1`` bytes of it) decoded, as it was judged.
    body: bytes


def judge_401(
    auth: PiggyAuth,
    lease: Lease,
    response: BaseHTTPResponse,
    rewind: Callable[[], object] | None,
    method: str | None,
    url: str,
    *,
    preload_content: bool = False,
) -> Judged:
    """Judge a 401 that ``response`` brought to a request that carried ``lease``.

    A resend closes ``response`` rather than drain it (its body may never
    end); otherwise hand it back as it is if it was preloaded, else with
    :func:`~.responses.replayed`.

    :param rewind: how to rewind the request's body (:func:`rewinder`).
    :param method: the request's method and ``url`` its URL, for the warning
        when its body cannot be replayed.
    :param preload_content: whether its body was preloaded; else it is unread.
    """
    if preload_content:
        head, body = Head(b""), preloaded(response)
    else:
        head = read_head(response)
        body = decoded(response.headers, head.sent)
    if not auth.rejected(lease, response.headers.get("WWW-Authenticate"), body):
        return Judged(False, head, body)
    if rewind is None:
        warn_not_resent(method, url)
        return Judged(False, head, body)
    rewind()
    response.close()
    response.release_conn()
    return Judged(True, head, body)


def _connect_timeout(timeout: Timeout) -> float:
    """The connect part of a requests-style timeout, in seconds (0 for none).

    :raises ValueError: for anything but ``None``, a positive finite number of
        seconds, or a ``(connect, read)`` pair of them.
    """
    parts = timeout if isinstance(timeout, tuple) else (timeout,)
    if not 1 <= len(parts) <= 2 or not all(
        part is None
        or (isinstance(part, (int, float)) and not isinstance(part, bool) and 0 < part < math.inf)
        for part in parts
    ):
        raise ValueError(
            "timeout must be None, a positive number of seconds or a (connect, read) pair of "
            f"them, got {timeout!r}"
        )
    return parts[0] or 0.0
