"""What a Piggy auth decides, whatever HTTP library sends its requests.

Where the token may go, which token to send now, and whether a 401 may be
cured by a new one. A policy sends nothing itself: it is given a
:data:`~.oauth.TokenSender` (or an async one) that moves the bytes.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Literal, NamedTuple

from .cache import CacheKey, Lease, TokenCache, aobserved, client_key, observed, shared_cache
from .challenges import token_rejected
from .errors import ConfigurationError, InvalidClientError, TokenExpiredError, TokenRequestError
from .events import Resent
from .oauth import (
    AsyncTokenSender,
    ClientCredentials,
    Token,
    TokenResponse,
    TokenSender,
    is_valid_token,
)
from .origins import Origin, secure_origin
from .retry import RetryPolicy
from .sources import Reading, afinished, finished

DEFAULT_BASE_URL = "https://api.piggy.eu"
#: Sets the base URL for auth objects created without ``base_url=``.
BASE_URL_VARIABLE = "PIGGY_BASE_URL"
#: Connect and read timeouts, in seconds, for each token request; the retry
#: policy's budget bounds a whole fetch.
DEFAULT_TIMEOUT = (3.05, 5.0)
#: Up to 3 retries with full-jitter backoff, within 10 s per fetch.
DEFAULT_RETRY = RetryPolicy()
#: A personal access token's source that gave back the token refused is not asked
#: again for it within this many seconds: a server that refuses it costs no read per call.
REREAD_INTERVAL = 5.0
#: A personal access token this close to its expiry date logs a warning.
PAT_WARNING_PERIOD = timedelta(days=7)

Timeout = float | tuple[float, float] | None

log = logging.getLogger("requests_piggy_auth")


class AuthPolicy:
    """What every Piggy auth shares: the origins its token may go to, and the lease.

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

        :param send: how to send a token request (``None``: this auth's own way).
        :param after: a lease that got a 401 which :meth:`rejected` said a new
            token may cure: the token returned was requested after that 401.
        :raises PiggyAuthError: when no token can be had.
        """
        raise NotImplementedError

    def cached(self) -> Lease | None:
        """The lease a cache hit gives now, without awaiting (``None``: ask :meth:`alease`)."""
        return None

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

        :param send: how to send a token request (``None``: this auth's own way).
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

    def resent(self, adapter: str, outcome: Resent) -> None:
        """Tell the token cache's listeners that a request was resent after a 401 (a
        policy without a cache tells no one)."""


class _Credentials(NamedTuple):
    """One secret's grant, cache key, and fetch through the policy's own sender."""

    grant: ClientCredentials
    key: CacheKey
    fetch: Callable[[], Token]


class ClientCredentialsPolicy(AuthPolicy):
    """OAuth client credentials: tokens fetched through a sender, cached and renewed.

    A callable ``client_secret`` is called at construction and again only once
    per refused token request (``invalid_client``, or a cool-down after one), outside
    every lock; a different secret is a different cache key, so its token request
    goes out at once, with no cool-down of the old secret's.

    :param send: how to send a token request when :meth:`lease` is given none.
    :param retry: how token requests are retried, and the time budget of one fetch.
    :param timeout: connect and read timeout for each token request, in seconds:
        with the retry budget, it bounds one acquisition.
    Other parameters as for :class:`~requests_piggy_auth.ClientCredentialsAuth`.
    """

    renewable = True

    def __init__(
        self,
        client_id: int | str,
        client_secret: str | Callable[[], str],
        *,
        send: TokenSender,
        base_url: str | None,
        allowed_origins: Iterable[str],
        cache: TokenCache | None,
        timeout: Timeout,
        retry: RetryPolicy,
        token_request_format: Literal["json", "form"],
    ) -> None:
        super().__init__(base_url=base_url, allowed_origins=allowed_origins)
        self._client = (self.base_url + "/oauth/token", client_id_text(client_id))
        self._format = token_request_format
        self._send = send
        self.cache = shared_cache() if cache is None else cache
        self.timeout = timeout
        self.retry = retry
        #: One acquisition's bound: the retry budget plus one more connect timeout.
        self._deadline = self.retry.budget + connect_timeout(timeout)
        #: Reads of a callable secret after a refusal, one at a time, in a thread.
        self._secret_reading = None
        if not isinstance(client_secret, str):
            read = partial(_fresh_secret, client_secret, self._client)
            self._secret_reading = Reading(read, "client secret")
        secret = client_secret if isinstance(client_secret, str) else client_secret()
        self._credentials = self._credentials_for(secret)
        self._reread_lock = threading.Lock()
        #: The refusal last read for, and its read.
        self._reread: tuple[BaseException, Future[str]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_reread_lock"]
        state["_reread"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reread_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r}, base_url={self.base_url!r})"

    @property
    def client_id(self) -> str:
        """The OAuth client id."""
        return self._client[1]

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return self._client[0]

    @property
    def grant(self) -> ClientCredentials:
        """The grant with the secret in use."""
        return self._credentials.grant

    @property
    def _key(self) -> CacheKey:
        return self._credentials.key

    def lease(self, send: TokenSender | None = None, *, after: Lease | None = None) -> Lease:
        """The cached token, fetched with ``send`` (default: this auth's own) on a miss.

        Token requests are retried by :attr:`retry`, whatever ``send`` is, and
        waiting for another thread's fetch takes at most its budget. A refused
        token request reads a callable secret again; a new one is tried at once.

        :param send: how to send a token request, such as
            :class:`~requests_piggy_auth.urllib3.AuthorizedHttp`'s pool.
        :param after: a lease whose 401 :meth:`rejected` judged curable.
        :raises TokenRequestError: (or a subclass) when no token could be had.
        """
        credentials = self._credentials
        hit = self.cache.hit(credentials.key)  # the hot path: a lookup, nothing more
        if hit is not None:
            return hit
        started = self.cache.clock()
        try:
            return self._lease(credentials, send, after, self._deadline)
        except TokenRequestError as exc:
            read = self._reading(credentials, exc)
            if not (read is True or self._switched(credentials, read, self._left(started))):
                raise
        return self._lease(self._credentials, send, after, self._left(started))

    def cached(self) -> Lease | None:
        """The cached token while it is short of its refresh point, else ``None``."""
        return self.cache.hit(self._key)

    async def alease(self, send: AsyncTokenSender, *, after: Lease | None = None) -> Lease:
        """The cached token, fetched with the async ``send`` on a miss (see :meth:`lease`).

        :param send: how to send a token request, awaiting its answer.
        :param after: a lease whose 401 :meth:`rejected` judged curable.
        :raises TokenRequestError: (or a subclass) when no token could be had.
        """
        credentials, started = self._credentials, self.cache.clock()
        try:
            return await self._alease(credentials, send, after, self._deadline)
        except TokenRequestError as exc:
            read = self._reading(credentials, exc)  # the source runs in a thread of its own
            if not (
                read is True
                or (
                    isinstance(read, Future)
                    and await afinished(read, self._left(started))
                    and self._switched(credentials, read, 0)
                )
            ):
                raise
        return await self._alease(self._credentials, send, after, self._left(started))

    def rejected(self, lease: Lease, www_authenticate: str | None, body: bytes) -> bool:
        """True when the 401 may mean a stale token and evicting it made room for a new one.

        :param lease: the lease the request carried.
        :param www_authenticate: the 401's ``WWW-Authenticate`` header, if any.
        :param body: the 401's body.
        """
        return token_rejected(www_authenticate, body) and self.cache.reject(self._key, lease)

    def resent(self, adapter: str, outcome: Resent) -> None:
        """Tell the cache's listeners that a request was resent after a 401."""
        self.cache.resent(self._key, adapter, outcome)

    def fetch_token(self) -> Token:
        """A new token straight from the token endpoint, past the cache (for tools).

        :raises TokenRequestError: (or a subclass) when no token could be had.
        """
        return self._credentials.fetch()

    def _lease(
        self,
        credentials: _Credentials,
        send: TokenSender | None,
        after: Lease | None,
        timeout: float,
    ) -> Lease:
        fetch = credentials.fetch if send is None else partial(self._fetch, send, credentials.grant)
        return self.cache.lease(credentials.key, fetch, timeout=timeout, after=after)

    async def _alease(
        self, credentials: _Credentials, send: AsyncTokenSender, after: Lease | None, timeout: float
    ) -> Lease:
        fetch = partial(self._afetch, send, credentials.grant)
        return await self.cache.alease(credentials.key, fetch, timeout=timeout, after=after)

    def _left(self, started: float) -> float:
        """What is left of one acquisition's deadline, begun at ``started`` on the cache's clock."""
        return max(0.0, self._deadline - (self.cache.clock() - started))

    def _credentials_for(self, secret: str) -> _Credentials:
        """The grant and cache key of ``secret`` (its scrypt fingerprint, once per secret)."""
        token_url, client_id = self._client
        grant = ClientCredentials(token_url, client_id, secret, self._format)
        key = client_key(token_url, client_id, secret)
        return _Credentials(grant, key, partial(self._fetch, self._send, grant))

    def _reading(self, credentials: _Credentials, failure: TokenRequestError) -> Future[str] | bool:
        """The read of a callable secret that ``failure`` for ``credentials`` calls for.

        A refusal (``invalid_client``, or a cool-down that one started) calls for one
        read, shared by every caller that got it, and by later refusals while it is in
        flight. ``True``: another caller has put new credentials in use already;
        ``False``: nothing to read (a fixed secret, or no refusal).
        """
        refusal = failure if isinstance(failure, InvalidClientError) else failure.__cause__
        if self._secret_reading is None or not isinstance(refusal, InvalidClientError):
            return False
        with self._reread_lock:
            if self._credentials is not credentials:
                return True
            if self._reread is None or self._reread[0] is not refusal:
                self._reread = (refusal, self._secret_reading.start())
            return self._reread[1]

    def _switched(
        self, credentials: _Credentials, read: Future[str] | bool, timeout: float
    ) -> bool:
        """Whether ``read`` gave, within ``timeout``, a secret other than ``credentials``',
        now in use (a read still going: no, this caller gets the refusal).

        :raises ConfigurationError: when the source failed or gave no usable secret.
        """
        if not isinstance(read, Future) or not finished(read, timeout):
            return False
        assert self._secret_reading is not None
        secret = self._secret_reading.value(read)
        if secret == credentials.grant.client_secret:
            return False  # the same secret cools down as before
        rotated = self._credentials_for(secret)  # its fingerprint computed in the read
        with self._reread_lock:
            if self._credentials is credentials:
                self._credentials = rotated
        return True

    def _fetch(self, send: TokenSender, grant: ClientCredentials) -> Token:
        return self._parsed(self.retry.send(observed(send), grant.token_request()), grant)

    async def _afetch(self, send: AsyncTokenSender, grant: ClientCredentials) -> Token:
        request = grant.token_request()
        return self._parsed(await self.retry.asend(aobserved(send), request), grant)

    def _parsed(self, response: TokenResponse, grant: ClientCredentials) -> Token:
        token = grant.parse(response)
        log.debug("new token for client %r (expires_in=%s)", self.client_id, token.expires_in)
        return token


class PersonalAccessTokenPolicy(AuthPolicy):
    """A personal access token, with an optional expiry date checked on an injected clock.

    :param now: the current time, timezone-aware (default: the system's, in UTC).
    Other parameters as for :class:`~requests_piggy_auth.PersonalAccessTokenAuth`.
    """

    #: How long a caller waits, after a 401, for a callable source to give the token.
    source_wait = DEFAULT_RETRY.budget + DEFAULT_TIMEOUT[0]

    def __init__(
        self,
        token: str | Callable[[], str],
        *,
        expires_at: datetime | None,
        base_url: str | None,
        allowed_origins: Iterable[str],
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(base_url=base_url, allowed_origins=allowed_origins)
        #: A callable source is read again after a 401 (never per request).
        self._source = None if isinstance(token, str) else token
        self.renewable = self._source is not None
        self._token = checked_pat(token if isinstance(token, str) else token())
        #: Reads of a callable source after a 401, one at a time, in a thread.
        self._reading = None
        if self._source is not None:
            self._reading = Reading(partial(_checked_read, self._source), "personal access token")
        #: When the source last gave back each token refused, on the monotonic clock.
        self._refused: dict[str, float] = {}
        self.expires_at = None if expires_at is None else expires_at.astimezone(timezone.utc)
        self._now = partial(datetime.now, timezone.utc) if now is None else now
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
        return f"{type(self).__name__}(base_url={self.base_url!r}{expiry})"

    def lease(self, send: TokenSender | None = None, *, after: Lease | None = None) -> Lease:
        """The personal access token.

        :param send: unused: a personal access token is never fetched.
        :param after: unused: after a 401 that :meth:`rejected` judged curable, the
            token is already the one the source gave then.
        :raises TokenExpiredError: when its expiry date has passed.
        """
        if self.expires_at is not None:
            self._check_expiry(self.expires_at - self._now())
        return Lease(self._token)

    def rejected(self, lease: Lease, www_authenticate: str | None, body: bytes) -> bool:
        """True when the source now yields a token other than the rejected one.

        The same token again means it is no good: one WARNING per token says why
        it may be, and the 401 goes back.

        :raises ConfigurationError: when the source fails, gives no usable token, or
            gives nothing within :attr:`source_wait`.
        """
        if self._reading is None or not token_rejected(www_authenticate, body):
            return False  # a fixed token: nothing to read again
        refused_at = self._refused.get(lease.access_token, -math.inf)
        if time.monotonic() - refused_at < REREAD_INTERVAL:
            return False  # the source gave it back moments ago: not asked again per call
        read = self._reading.start()  # the user's code, in a thread, shared by every caller
        if not finished(read, self.source_wait):
            raise ConfigurationError(
                f"the personal access token's source gave nothing within {self.source_wait:g} s"
            )
        current = self._reading.value(read)
        with self._warn_lock:
            if current != lease.access_token:
                if current != self._token:  # the known expiry was the old token's
                    self._token, self.expires_at = current, None
                return True
            first = current not in self._refused
            self._refused[current] = time.monotonic()
        if first:
            log.warning(
                "the personal access token was refused (401 invalid_token) and its source "
                "still gives the same one: it may have expired%s, been revoked in the "
                "Business Dashboard, or be a Register API key used on an OAuth route",
                "" if self.expires_at is None else f" (at {self.expires_at:%Y-%m-%d %H:%M} UTC)",
            )
        return False

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


def _checked_read(source: Callable[[], str]) -> str:
    """A token from ``source``, checked (in the reading thread)."""
    return checked_pat(source())


def _fresh_secret(source: Callable[[], str], client: tuple[str, str]) -> str:
    """A secret from ``source``, its fingerprint computed here, in the reading thread
    (scrypt: the caller finds it cached).

    :raises ConfigurationError: for anything but a non-empty string.
    """
    secret: object = source()
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError(
            f"the client secret's source gave no usable secret ({type(secret).__name__})"
        )
    client_key(*client, secret)
    return secret


def checked_pat(token: object) -> str:
    """``token`` if it can be a personal access token (its source may be the user's code).

    :raises ConfigurationError: (a ``ValueError``) for anything but a non-empty string
        without whitespace or control characters; the message never shows it.
    """
    if not is_valid_token(token):
        raise ConfigurationError(
            "personal access token must be a non-empty string without whitespace or "
            "control characters"
        )
    return token


def client_id_text(client_id: int | str) -> str:
    """A client id as Piggy's token endpoint takes it: ``4711`` and ``"4711"`` are one client.

    :raises TypeError: for anything but an int (not a bool) or a str.
    """
    if isinstance(client_id, bool) or not isinstance(client_id, (int, str)):
        raise TypeError(f"client_id must be an int or a str, got {type(client_id).__name__}")
    return str(client_id)


def connect_timeout(timeout: Timeout) -> float:
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
