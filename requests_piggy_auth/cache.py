"""The token cache: one token per client, fetched once, shared by every thread.

A :class:`TokenCache` maps a client's key (token URL, client id, a fingerprint
of the secret) to a token. A cache hit is a dictionary lookup under a lock.
A miss makes exactly one fetch per key however many threads miss at once
(single-flight): the fetch runs in a thread of its own and every caller waits
for it, each no longer than its deadline, and gets the same token or the
same error. A fetch past its deadline is abandoned, so the next caller can
start a new one. Fetches for different keys never wait for each other. After
a failed fetch the key cools down: for a short while its callers fail fast
instead of each calling the token endpoint again.

A 401 for a token starts a renewal: the rejected token is evicted, and the
request is resent with a token that was requested after the 401 arrived, so
a token that may predate a revocation is never good enough.

A :class:`TokenStore` (such as :class:`requests_piggy_auth.stores.RedisTokenStore`)
adds a second tier shared by processes: a local miss asks the store, and the
store makes one fetch for the whole fleet.

Refresh-ahead: a token's first hit once the time left before it goes stale
falls to its key's margin (measured from how long the key's token requests
take, see :class:`~requests_piggy_auth.refresh.RefreshMargin`) starts one
background refresh for its key while every caller keeps the current token, so
no caller waits for a token request as long as tokens are renewed in time.

No log call, callback or clock of the caller's runs while the cache's lock is held.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import itertools
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Future, InvalidStateError, wait
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any, Protocol

from cachetools import Cache, LRUCache

from .errors import TokenRequestError
from .events import (
    CooldownEnded,
    CooldownStarted,
    Event,
    FetchFailed,
    How,
    Listener,
    RequestResent,
    Resent,
    StoreHealth,
    TokenEvicted,
    TokenFetched,
    dispatch,
)
from .oauth import AsyncTokenSender, Token, TokenRequest, TokenResponse, TokenSender
from .refresh import MAX_LEEWAY_SHARE, RefreshMargin

#: ``(token_url, client_id, secret fingerprint)``: different credentials never share a
#: token or a cool-down. ``key[1]`` is the client id.
CacheKey = tuple[str, ...]
Clock = Callable[[], float]

log = logging.getLogger("requests_piggy_auth")

#: The name of the threads that fetch tokens for callers.
FETCH_THREAD = "piggy-auth-fetch"
#: The name of the threads that refresh tokens ahead of time.
REFRESH_THREAD = "piggy-auth-refresh"
#: How many fetch threads may still be running past their deadlines before no
#: more start: each holds a connection that a server keeps open.
MAX_STUCK_FETCHES = 8

#: How long one wait for a fetch lasts before the deadline is checked again on the
#: cache's clock (which tests move by hand).
_WAIT_SLICE = 0.5


def client_key(token_url: str, client_id: str, client_secret: str) -> CacheKey:
    """The cache key of a client: its secret only as a slow, salted fingerprint.

    The fingerprint (scrypt) tells credentials apart without revealing the
    secret, even to whoever reads a shared store. It is computed once per
    client and process: threads making auth objects at once wait for that one.
    """
    with _fingerprint_lock:
        return _client_key(token_url, client_id, client_secret)


_fingerprint_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def _client_key(token_url: str, client_id: str, client_secret: str) -> CacheKey:
    fingerprint = hashlib.scrypt(
        client_secret.encode(),
        salt=f"requests-piggy-auth\0{token_url}\0{client_id}".encode(),
        n=2**14,
        r=8,
        p=1,
        dklen=16,
    )
    return (token_url, client_id, fingerprint.hex())


#: Answers that tell nothing of whether the server accepted a token.
_SAYS_NOTHING_OF_THE_TOKEN = frozenset({401, 407, 429})


class Lease:
    """A token handed out for requests, with what the cache needs to judge a 401 for it.

    Adapters send :attr:`authorization` as the ``Authorization`` header, tell
    it each answer's status (:meth:`answered`), and give the lease back with a
    401 (``PiggyAuth.rejected``).
    """

    __slots__ = (
        "accepted",
        "access_token",
        "authorization",
        "expires_at",
        "order",
        "rejected",
        "renewal",
    )

    def __init__(
        self,
        access_token: str,
        order: int = 0,
        *,
        renewal: bool = False,
        expires_at: float = math.inf,
    ) -> None:
        self.access_token = access_token
        #: The ``Authorization`` header value.
        self.authorization = f"Bearer {access_token}"
        #: When its token was requested, in the cache's own order of events.
        self.order = order
        #: Whether its token was requested to replace one the server rejected.
        self.renewal = renewal
        #: When its token expires, on the cache's clock (infinity: not known to expire).
        self.expires_at = expires_at
        #: Whether the server has accepted the token at least once.
        self.accepted = False
        #: When the first 401 for the token was recorded, in the cache's order (0: never).
        self.rejected = 0

    def __repr__(self) -> str:
        return f"<Lease order={self.order} accepted={self.accepted}>"

    def answered(self, status: int) -> None:
        """Note the status of an answer to a request that carried the token.

        Only an answer that an authenticated request gets counts as the server
        accepting it: not a 401, nor what a gateway may answer on its own
        (a redirect, a 5xx, 429, 407).
        """
        if (200 <= status < 300 or 400 <= status < 500) and (
            status not in _SAYS_NOTHING_OF_THE_TOKEN
        ):
            self.accepted = True


@dataclass(frozen=True)
class CachedToken:
    """A token with its times on the cache's clock.

    :param access_token: the token.
    :param fetched_at: when its request was sent.
    :param stale_at: when it stops being handed out (``leeway`` before expiry).
    :param expires_at: when the server stops accepting it.
    """

    access_token: str = field(repr=False)
    fetched_at: float
    stale_at: float
    expires_at: float


class TokenStore(Protocol):
    """A tier behind :class:`TokenCache` that processes share, consulted on a local miss.

    A store may have a ``health`` attribute, a :class:`~.events.StoreHealth` that it
    tells when its backend fails and recovers: each cache on it tells its listeners.
    """

    def get(
        self,
        key: CacheKey,
        fetch: Callable[[], CachedToken],
        clock: Clock,
        *,
        replacing: str | None = None,
        rejected: Collection[str] = (),
        fresher_than: float | None = None,
        deadline: float | None = None,
    ) -> CachedToken:
        """``key``'s shared token while it is fresh; else ``fetch()``, once for all, stored.

        Times are on ``clock``, the cache's clock. A store that cannot be
        reached calls ``fetch`` itself: its own errors never reach the caller.

        :param replacing: a token being refreshed ahead of time: while the
            shared token is still this one it counts as a miss, so the store
            replaces it (or returns the one another process replaced it with).
        :param rejected: tokens a 401 rejected since this key's last fetch
            here: each is deleted if it is still the shared one, and a shared
            token requested before the first 401 any sharer saw for one of
            them counts as a miss.
        :param fresher_than: a time on ``clock``: a shared token whose request
            was sent before it counts as a miss, like ``replacing`` (after a 401,
            so a resend never gets a token that may predate a revocation).
        :param deadline: a time on ``clock`` by which to return whatever happens:
            the wait for another sharer's fetch ends then and ``fetch`` is
            called; once it has passed, ``fetch`` is called at once
            (``None``: only the store's own wait limit applies).
        """


class TokenRequestObserver(Protocol):
    """What watches each token request of a cache's fetches (``requests_piggy_auth.otel``).

    It wraps the sender of each fetch, in the fetching thread or task: there
    the context is that of the caller that started the fetch.
    """

    def sender(self, send: TokenSender, client_id: str, how: How) -> TokenSender:
        """``send``, watched, for a fetch of ``client_id``'s token for reason ``how``."""

    def async_sender(self, send: AsyncTokenSender, client_id: str, how: How) -> AsyncTokenSender:
        """:meth:`sender` for an async ``send``."""


class _Tally:
    """How many token requests one fetch has sent."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = 0


#: The fetch this thread or task runs: the cache's observer, the client id, why, its tally.
_Fetching = tuple[TokenRequestObserver | None, str, How, _Tally]
_fetching: contextvars.ContextVar[_Fetching | None] = contextvars.ContextVar(
    "piggy_auth_fetching", default=None
)


def observed(send: TokenSender) -> TokenSender:
    """``send`` counted for the fetch running here, and watched by its observer, if any
    (``send`` itself outside a fetch)."""
    fetching = _fetching.get()
    if fetching is None:
        return send
    observer, client_id, how, tally = fetching
    watched = send if observer is None else observer.sender(send, client_id, how)

    def counted(request: TokenRequest) -> TokenResponse:
        tally.sent += 1
        return watched(request)

    return counted


def aobserved(send: AsyncTokenSender) -> AsyncTokenSender:
    """:func:`observed` for an async ``send``."""
    fetching = _fetching.get()
    if fetching is None:
        return send
    observer, client_id, how, tally = fetching
    watched = send if observer is None else observer.async_sender(send, client_id, how)

    async def counted(request: TokenRequest) -> TokenResponse:
        tally.sent += 1
        return await watched(request)

    return counted


@dataclass(frozen=True)
class CoolDown:
    """How long a key's token requests pause after failed fetches.

    After the *n*-th failure in a row the pause is
    ``min(maximum, first * 2**(n - 1))`` seconds, shortened at random by up
    to ``jitter`` of it so a fleet does not retry in lockstep. One success
    ends it. ``CoolDown(first=0)`` turns it off.

    :param first: the pause after the first failure.
    :param maximum: the longest pause.
    :param jitter: the random part of each pause, from 0.0 to 1.0.
    """

    first: float = 1.0
    maximum: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.maximum or not 0 <= self.jitter <= 1:
            raise ValueError("CoolDown needs 0 <= first <= maximum and 0 <= jitter <= 1")

    def pause(self, failures: int) -> float:
        """The pause after ``failures`` failures in a row, jittered."""
        longest = min(self.maximum, self.first * 2.0 ** min(failures - 1, 64))
        return longest * (1 - self.jitter * random.random())  # noqa: S311 - not cryptography


@dataclass(frozen=True)
class _Failures:
    """A key's failed fetches in a row: how many, until when it cools down, the last error."""

    count: int
    until: float
    last: Exception


@dataclass(frozen=True)
class _Entry:
    """A token in this process's tier, with when its hits start a refresh-ahead."""

    lease: Lease
    stale_at: float
    expires_at: float
    refresh_at: float


@dataclass(frozen=True, eq=False)
class _Flight:
    """One fetch for a key: its waiters, its place in the order, its deadline, its task.

    :param renewal: it replaces a token the server rejected.
    :param replacing: the token it refreshes ahead of time, if it does.
    :param fresher_than: a shared token requested before this time will not do.
    :param rejected: tokens the server rejected, for the store.
    """

    future: Future[Lease]
    order: int
    deadline: float
    renewal: bool = False
    replacing: str | None = field(default=None, repr=False)
    fresher_than: float | None = None
    rejected: tuple[str, ...] = field(default=(), repr=False)
    #: When it started, on the cache's clock.
    started: float = 0.0
    #: The token requests its fetch sent (through :func:`observed`).
    tally: _Tally = field(default_factory=_Tally)

    @property
    def how(self) -> How:
        """Why its token is requested, as events tell it."""
        if self.replacing is not None:
            return "refresh_ahead"
        return "rejected" if self.renewal else "cold"


@dataclass(eq=False)
class _Record:
    """What the cache knows of one key, besides its token."""

    flight: _Flight | None = None
    failures: _Failures | None = None
    #: The order and time of the last 401 that evicted the key's token.
    rejected_order: int = -1
    rejected_at: float = -math.inf
    #: Tokens rejected since the last fetch, for the next one to tell the store.
    rejected: tuple[str, ...] = field(default=(), repr=False)
    #: A 401 evicted the key's token and no token has come since.
    renewing: bool = False
    #: The last fetch's outcome (``"success"`` or ``"error"``) and duration.
    last: tuple[str, float] | None = None
    #: How long the key's recent token requests took, oldest first.
    durations: tuple[float, ...] = ()


class _Records(LRUCache[CacheKey, _Record]):
    """Each key's record, the least recently fetched going first, and its token apart.

    A cache hit reads :attr:`tokens` alone, a plain dictionary; the records'
    order of use moves on every miss, refresh and renewal.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.tokens: dict[CacheKey, _Entry] = {}

    def peek(self) -> list[tuple[CacheKey, _Record]]:
        """Each key and record, without counting as a use of any."""
        return [(key, Cache.__getitem__(self, key)) for key in Cache.__iter__(self)]

    def popitem(self) -> tuple[CacheKey, _Record]:
        key, record = super().popitem()
        self.tokens.pop(key, None)
        return key, record

    def clear(self) -> None:
        super().clear()
        self.tokens.clear()


#: What a caller does next: take a lease, wait for a flight, or raise.
_Step = Lease | _Flight | TokenRequestError


class TokenCache:
    """A thread-safe, bounded (least recently used) cache of access tokens keyed by client.

    :param maxsize: how many clients to keep (least recently used go first), at least 1.
    :param leeway: renew a token this many seconds before it expires; clamped
        to a tenth of the token's lifetime so short-lived tokens stay usable.
    :param default_lifetime: the lifetime assumed when the server sends no
        ``expires_in``; a 401 renews the token earlier if needed.
    :param min_evict_interval: a token fetched to replace a rejected one that
        is rejected too, before the server ever accepted it and within this
        many seconds of the first rejection, is not replaced again: the
        server rejects every token, and a new one would not help.
    :param store: a second tier shared with other processes (``None``: this
        process only). The local entry stays in front, so a hit never
        touches the store.
    :param cooldown: how long a key's callers fail fast after a failed fetch.
    :param refresh_ahead: renew a token in the background before it goes
        stale, while callers keep using it (``False``: only when it is stale).
    :param refresh_margin: how long before a token goes stale its refresh
        starts: measured from how long the key's token requests take. A
        token's first hit at its refresh point starts one background refresh.
    :param refresh_window: the earliest a refresh may start, as the last
        fraction of a token's usable lifetime (from its request to ``leeway``
        before expiry), above 0 and at most 1: the margin never reaches further.
    :param jitter: where in its margin's random part each refresh point lies,
        from 0.0 to 1.0, drawn per token and process so a fleet spreads out.
    :param clock: a monotonic clock in seconds; tests inject their own.
    :raises ValueError: for a ``maxsize`` that is not a whole number of at
        least 1, a negative ``leeway`` or ``min_evict_interval``,
        ``default_lifetime`` not above 0, or ``refresh_window`` outside (0, 1].
    """

    def __init__(
        self,
        maxsize: int = 1024,
        *,
        leeway: float = 30.0,
        default_lifetime: float = 300.0,
        min_evict_interval: float = 5.0,
        store: TokenStore | None = None,
        cooldown: CoolDown = CoolDown(),
        refresh_ahead: bool = True,
        refresh_margin: RefreshMargin = RefreshMargin(),
        refresh_window: float = 0.5,
        jitter: Callable[[], float] = random.random,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_settings(maxsize, leeway, default_lifetime, min_evict_interval, refresh_window)
        self.maxsize = maxsize
        self.leeway = leeway
        self.default_lifetime = default_lifetime
        self.min_evict_interval = min_evict_interval
        self.store = store
        self.cooldown = cooldown
        self.refresh_ahead = refresh_ahead
        self.refresh_margin = refresh_margin
        self.refresh_window = refresh_window
        self.jitter = jitter
        self.clock = clock
        self._lock = threading.Lock()
        self._records = _Records(maxsize)
        #: Each record's token, by key: all that a cache hit looks at.
        self._hits = self._records.tokens
        self._orders = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: tuple[Listener, ...] = ()
        #: Watches every token request of this cache's fetches (``None``: none does).
        self.observer: TokenRequestObserver | None = None
        if isinstance(health := getattr(store, "health", None), StoreHealth):
            health.watch(self._tell)
        _register_for_fork(self)

    def __repr__(self) -> str:
        # No lock: repr may be called by a log handler while the lock is held.
        return f"<TokenCache clients={len(self._records)} maxsize={self.maxsize}>"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle settings only: no token, lock or fetch crosses to another process."""
        if self is _shared:
            return (shared_cache, ())
        settings = {name: getattr(self, name) for name in _SETTINGS}
        return (_rebuilt, (type(self), settings))

    def __len__(self) -> int:
        """How many clients have a token that has not expired."""
        now = self.clock()
        with self._lock:
            entries = list(self._hits.values())
        return sum(1 for entry in entries if now < entry.expires_at)

    def lease(
        self,
        key: CacheKey,
        fetch: Callable[[], Token],
        *,
        timeout: float | None = None,
        after: Lease | None = None,
    ) -> Lease:
        """The cached token for ``key``, fetched with ``fetch`` on a miss.

        Concurrent misses for one key call ``fetch`` once, in a thread of its
        own; every caller gets its token or its exception. A failure is never
        cached, but it starts a cool-down (see :class:`CoolDown`) during which
        callers get a token that has not yet expired, if one is cached, or
        else fail fast. A hit past its refresh point starts ``fetch`` in the
        background, once (see ``refresh_ahead``), and returns the current token.

        :param timeout: how many seconds this call may take in all, waiting
            for another caller's fetch included; a fetch that this call
            starts is abandoned after that long (``None``: no limit).
        :param after: a lease that :meth:`reject` said a new token may cure:
            the token returned was requested after that rejection.
        :raises TokenRequestError: during a cool-down, or when no token came
            within ``timeout``; or whatever ``fetch`` raised.
        """
        now = self.clock()
        with self._lock:
            # A rejection evicts every token cached before it: what is here is later.
            entry = self._hits.get(key)
            if entry is not None and now < entry.refresh_at:
                return entry.lease
        step, start, deadline = self._decide(key, now, timeout, renewal=after is not None)
        if start is not None:
            self._start(key, start, fetch)
        if isinstance(step, _Flight):
            return self._wait(key, step, deadline)
        return _taken(step)

    async def alease(
        self,
        key: CacheKey,
        fetch: Callable[[], Awaitable[Token]],
        *,
        timeout: float | None = None,
        after: Lease | None = None,
    ) -> Lease:
        """:meth:`lease` for asyncio: every wait is awaited, the event loop runs on.

        A fetch this call starts is a task of its own on the running loop, so
        cancelling the caller never cancels it: its other waiters get its token.
        A fetch led by another thread, task or loop is awaited, not joined.

        :param fetch: awaits a new token.
        :param timeout: how many seconds this call may take in all.
        :param after: as for :meth:`lease`.
        :raises TokenRequestError: as :meth:`lease` does.
        """
        hit = self.hit(key)
        if hit is not None:
            return hit
        now = self.clock()
        step, start, deadline = self._decide(key, now, timeout, renewal=after is not None)
        if start is not None:
            task = asyncio.get_running_loop().create_task(self._arun(key, start, fetch))
            self._tasks.add(task)  # a strong reference until it is done
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(functools.partial(self._ended, key, start))
        if isinstance(step, _Flight):
            return await self._await(key, step, deadline)
        return _taken(step)

    def hit(self, key: CacheKey) -> Lease | None:
        """``key``'s lease while its token is short of its refresh point, else ``None``:
        what :meth:`lease` and :meth:`alease` hand out first, with nothing to await."""
        now = self.clock()
        with self._lock:
            entry = self._hits.get(key)
        return entry.lease if entry is not None and now < entry.refresh_at else None

    def get(
        self, key: CacheKey, fetch: Callable[[], Token], *, timeout: float | None = None
    ) -> str:
        """The access token of :meth:`lease`, for callers that judge no 401s.

        :param timeout: how many seconds this call may take in all.
        :raises TokenRequestError: as :meth:`lease` does.
        """
        return self.lease(key, fetch, timeout=timeout).access_token

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with each :mod:`~requests_piggy_auth.events` event, outside
        every lock, after the waiters of the fetch it tells of have their outcome."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (one registration of it; none: nothing)."""
        while True:
            listeners = self._listeners
            kept = list(listeners)
            if listener in kept:  # the listeners' __eq__: outside the lock
                kept.remove(listener)
            with self._lock:
                if self._listeners is listeners:  # else one came or went meanwhile
                    self._listeners = tuple(kept)
                    return

    def resent(self, key: CacheKey, adapter: str, outcome: Resent) -> None:
        """Tell listeners that a request that got a 401 for ``key``'s token was resent
        through ``adapter``, and what came of it."""
        self._tell(RequestResent(key[1], adapter, outcome))

    def _tell(self, event: Event) -> None:
        """Give ``event`` to the listeners, if any (never under a lock)."""
        listeners = self._listeners
        if listeners:
            dispatch(listeners, [event])

    def status(self) -> list[dict[str, Any]]:
        """Each client's state as plain data for a health endpoint: no token, no secret.

        Times are seconds from now on the cache's clock (``None``: not applicable).
        """
        now = self.clock()
        with self._lock:
            rows = [(key, record, self._hits.get(key)) for key, record in self._records.peek()]
        return [_status(key, record, entry, now) for key, record, entry in rows]

    def reject(self, key: CacheKey, lease: Lease) -> bool:
        """Record that the server answered 401 to a request that carried ``lease``, and
        tell listeners when it evicted the token (see :meth:`_reject`)."""
        renewable, evicted = self._reject(key, lease)
        if evicted and self._listeners:
            dispatch(self._listeners, [TokenEvicted(key[1])])
        return renewable

    def _reject(self, key: CacheKey, lease: Lease) -> tuple[bool, bool]:
        """Record that the server answered 401 to a request that carried ``lease``.

        The first 401 for a token evicts it, along with any other token cached
        for ``key`` (each was requested before that 401, so it may be revoked
        too); later ones for the same token evict nothing more.

        :returns: whether a new token may help, so a resend with
            ``lease(key, fetch, after=lease)`` is worth it (``False`` only for
            a token fetched to replace a rejected one and rejected before the
            server ever accepted it, within ``min_evict_interval``), and
            whether this call evicted it.
        """
        now = self.clock()
        with self._lock:
            record = self._records.get(key)
            if record is None:  # forgotten since (cleared, least recently used): start anew
                record = self._records[key] = _Record()
            if lease.rejected:
                return True, False  # its first 401 is known: what is cached or coming is later
            if (
                lease.renewal
                and not lease.accepted
                and now - record.rejected_at < self.min_evict_interval
            ):
                return False, False
            order = next(self._orders)
            record.rejected_order, record.rejected_at, record.renewing = order, now, True
            lease.rejected = order
            rejected = {lease.access_token}
            entry = self._hits.pop(key, None)
            if entry is not None:  # requested before this 401: the same revocation may have hit it
                entry.lease.rejected = entry.lease.rejected or order
                rejected.add(entry.lease.access_token)
            if record.flight is not None and record.flight.order < order:
                record.flight = None  # requested before the 401: its token is not good enough
            if self.store is not None:
                record.rejected = tuple(sorted({*record.rejected, *rejected}))
            return True, True

    def evict(self, key: CacheKey, access_token: str) -> bool:
        """Forget ``access_token`` for ``key`` because the server rejected it.

        :meth:`reject` with the lease of the cached token, if it is still
        ``access_token`` (compare and evict).

        :returns: whether a new token may help (see :meth:`reject`).
        """
        with self._lock:
            entry = self._hits.get(key)
        if entry is None or entry.lease.access_token != access_token:
            return True
        return self.reject(key, entry.lease)

    def clear(self) -> None:
        """Forget every token here (fetches in flight complete unseen; a store keeps its own)."""
        with self._lock:
            self._records.clear()

    def _decide(
        self, key: CacheKey, now: float, timeout: float | None, *, renewal: bool
    ) -> tuple[_Step, _Flight | None, float]:
        """What a caller that missed does next, a flight for it to start, and its deadline."""
        deadline = math.inf if timeout is None else now + timeout
        with self._lock:
            step, start = self._decision(key, now, deadline, renewal=renewal)
        return step, start, deadline

    def _decision(
        self, key: CacheKey, now: float, deadline: float, *, renewal: bool
    ) -> tuple[_Step, _Flight | None]:
        """:meth:`_decide`'s decision, under the lock, with no I/O."""
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
        entry = self._hits.get(key)
        cooling = record.failures is not None and now < record.failures.until
        if entry is not None and now < entry.stale_at:
            if record.flight is not None and now >= record.flight.deadline:
                return record.flight, None  # overdue: the caller abandons it, keeps the token
            if (
                now < entry.refresh_at
                or cooling
                or record.flight is not None
                or not threading.main_thread().is_alive()
            ):
                return entry.lease, None
            # The first hit past the refresh point: refresh in the background, keep the token.
            record.flight = self._flight(deadline, now, replacing=entry.lease.access_token)
            return entry.lease, record.flight
        if cooling:
            assert record.failures is not None
            if entry is not None and now < entry.expires_at:  # stale, still good
                return entry.lease, None
            return _cooling_down(key, record.failures, record.failures.until - now), None
        if record.flight is not None:  # a rejection drops the flight it may predate
            return record.flight, None
        renewal = renewal or record.renewing
        fresher_than = record.rejected_at if renewal else None
        record.flight = self._flight(
            deadline, now, renewal=renewal, fresher_than=fresher_than, rejected=record.rejected
        )
        record.rejected = ()
        return record.flight, record.flight

    def _flight(self, deadline: float, started: float, **task: Any) -> _Flight:
        return _Flight(Future(), next(self._orders), deadline, started=started, **task)

    def _start(self, key: CacheKey, flight: _Flight, fetch: Callable[[], Token]) -> None:
        """Run ``flight``'s fetch in a thread of its own.

        Not while :data:`MAX_STUCK_FETCHES` fetches are still running past their
        deadlines (an endpoint that holds every request): the flight fails at
        once. An interrupt (Ctrl-C) before the thread runs leaves no flight
        behind for others to wait on. At interpreter shutdown, where no thread
        can start, the fetch runs in the caller's thread.
        """
        thread = None
        try:
            if _workers.stuck() >= MAX_STUCK_FETCHES:
                self._finish(key, flight, _too_many_stuck(key))
                return
            context = contextvars.copy_context()
            name = FETCH_THREAD if flight.replacing is None else REFRESH_THREAD
            thread = threading.Thread(
                target=context.run, args=(self._run, key, flight, fetch), name=name, daemon=True
            )
            _workers.add(thread, flight.deadline - self.clock())
            thread.start()
        except RuntimeError as exc:  # no new thread: none left, or the interpreter is ending
            _workers.discard(thread)
            if threading.main_thread().is_alive():
                self._finish(key, flight, _no_thread(key, exc))
            else:  # pragma: no cover - Python 3.12+ at shutdown
                contextvars.copy_context().run(self._run, key, flight, fetch)
        except BaseException as exc:  # an interrupt: its waiters get it too, with no cool-down
            _workers.discard(thread)
            self._finish(key, flight, exc)
            raise

    def _run(self, key: CacheKey, flight: _Flight, fetch: Callable[[], Token]) -> None:
        """Fetch through the store, if any, and complete ``flight`` with the outcome."""
        result: _Entry | BaseException
        try:  # in a context of its own (see _start): nothing to reset
            _fetching.set(self._watching(key, flight))
            if self.store is None:
                cached = self._fetched(key, fetch)
            else:
                cached = self._through_store(key, flight, fetch)
            result = self._entry(key, cached, flight)
        except BaseException as exc:  # every outcome reaches the waiters
            result = exc
        finally:
            _workers.discard(threading.current_thread())
        self._finish(key, flight, result)

    def _watching(self, key: CacheKey, flight: _Flight) -> _Fetching:
        """What :func:`observed` needs to count and watch ``flight``'s token requests."""
        return (self.observer, key[1], flight.how, flight.tally)

    def _wait(self, key: CacheKey, flight: _Flight, deadline: float) -> Lease:
        """``flight``'s lease, waiting no later than ``deadline`` or the flight's own."""
        until = min(deadline, flight.deadline)
        while not flight.future.done():
            remaining = until - self.clock()
            if remaining <= 0:
                self._overdue(key, flight, until)
                break
            wait([flight.future], min(remaining, _WAIT_SLICE))
        return flight.future.result()

    def _overdue(self, key: CacheKey, flight: _Flight, until: float) -> None:
        """A wait for ``flight`` ended at ``until``: the caller gives up, or, at the
        flight's own deadline, the flight is abandoned.

        :raises TokenRequestError: when the caller gives up before the flight's deadline.
        """
        if until < flight.deadline:
            raise TokenRequestError(
                f"gave up waiting for another caller's token request for client "
                f"{key[1]!r} at {key[0]}"
            )
        self._finish(key, flight, _abandoned(key))

    async def _arun(
        self, key: CacheKey, flight: _Flight, fetch: Callable[[], Awaitable[Token]]
    ) -> None:
        """:meth:`_run` as a task, its fetch cancelled at the flight's deadline: the
        store, if any, works in a thread, off the loop."""
        result: _Entry | BaseException
        seconds = _seconds(flight.deadline - self.clock())
        try:
            _fetching.set(self._watching(key, flight))  # in the task's own context
            if self.store is None:
                sent_at = self.clock()
                cached = self._timed(key, await asyncio.wait_for(fetch(), seconds), sent_at)
            else:
                loop = asyncio.get_running_loop()

                def fetch_on_the_loop() -> Token:
                    bounded = asyncio.wait_for(_awaited(fetch), seconds)
                    return asyncio.run_coroutine_threadsafe(bounded, loop).result(seconds)

                cached = await asyncio.to_thread(
                    self._through_store, key, flight, fetch_on_the_loop
                )
            result = self._entry(key, cached, flight)
        except asyncio.CancelledError:
            raise  # its loop ends: the task's done callback tells the waiters (see alease)
        except (asyncio.TimeoutError, FutureTimeoutError):  # cancelled, its connection closed
            if flight.future.done():
                return  # a waiter abandoned it at the same deadline, and told so
            result = _abandoned(key)
        except BaseException as exc:  # every outcome reaches the waiters
            result = exc
        self._finish(key, flight, result)

    def _ended(self, key: CacheKey, flight: _Flight, task: asyncio.Task[None]) -> None:
        """A fetch task is done: if it was cancelled, even before it ran, its waiters
        are told so, in our terms."""
        if task.cancelled():
            self._finish(key, flight, _cancelled(key), cools=False)

    async def _await(self, key: CacheKey, flight: _Flight, deadline: float) -> Lease:
        """:meth:`_wait` for asyncio: the flight's future awaited, never cancelled for others."""
        until = min(deadline, flight.deadline)
        waiting = asyncio.wrap_future(flight.future)
        waiting.add_done_callback(_retrieved)  # a waiter that gives up leaves no error unread
        while not flight.future.done():
            remaining = until - self.clock()
            if remaining <= 0:
                self._overdue(key, flight, until)
                break
            try:
                await asyncio.wait_for(asyncio.shield(waiting), min(remaining, _WAIT_SLICE))
            except asyncio.TimeoutError:
                continue
        return flight.future.result()

    def _finish(
        self, key: CacheKey, flight: _Flight, result: _Entry | BaseException, *, cools: bool = True
    ) -> None:
        """:meth:`_complete` ``flight``, then tell the listeners, outside every lock."""
        events = self._complete(key, flight, result, cools=cools)
        if events:
            dispatch(self._listeners, events)

    def _complete(
        self, key: CacheKey, flight: _Flight, result: _Entry | BaseException, *, cools: bool = True
    ) -> list[Event]:
        """End ``flight``: cache its token or start a cool-down, then resolve its waiters.

        A flight that is no longer its key's (abandoned, superseded, cleared)
        changes nothing here, but its waiters still get its outcome. The clock
        and the cool-down are asked outside the lock. ``cools``: a failure
        starts a cool-down (not one that says nothing of the endpoint). Returns the
        events for listeners, for :meth:`_finish` to tell (none without listeners).
        """
        now = self.clock()
        with self._lock:
            record = self._records.get(key)
            failures = None if record is None else record.failures
        count = 1 if failures is None else failures.count + 1
        pause = self.cooldown.pause(count) if cools and isinstance(result, Exception) else None
        warning, settled = None, False
        with self._lock:
            current = self._records.get(key)
            if record is not None and record is current and record.flight is flight:
                record.flight, settled, record.last = None, True, _last(result, now, flight)
                outcome, warning = self._settle(key, record, result, now, count, pause)
            elif isinstance(result, _Entry):
                outcome = result.lease
                if current is not None and flight.order < current.rejected_order:
                    outcome.rejected = current.rejected_order  # requested before that 401
            else:
                outcome = result
        _resolve(flight, outcome)
        if warning is not None:
            _warn_renewal_failed(key, *warning)
        if not self._listeners:
            return []
        ended = failures.count if settled and failures is not None else 0
        return _events(key[1], flight, result, now, pause if settled else None, count, ended)

    def _settle(
        self,
        key: CacheKey,
        record: _Record,
        result: _Entry | BaseException,
        now: float,
        count: int,
        pause: float | None,
    ) -> tuple[Lease | BaseException, tuple[BaseException, float] | None]:
        """Record ``result`` for its key: the outcome for waiters, and what to warn about.

        ``count`` is the failures in a row this one would make, ``pause`` its cool-down
        (``None``: none).
        """
        if isinstance(result, _Entry):
            self._hits[key], record.failures, record.renewing = result, None, False
            return result.lease, None
        if pause is None or not isinstance(result, Exception):  # an interrupt, a cancellation
            return result, None
        record.failures = _Failures(count, now + pause, result)
        entry = self._hits.get(key)
        if entry is None or now >= entry.expires_at:
            return result, None
        return entry.lease, (result, entry.expires_at - now)

    def _through_store(
        self, key: CacheKey, flight: _Flight, fetch: Callable[[], Token]
    ) -> CachedToken:
        """The store's token for ``flight``, or one fetched once for all its sharers."""
        assert self.store is not None
        now = self.clock()  # the store's waits take half the time left, its fetch the rest
        return self.store.get(
            key,
            functools.partial(self._fetched, key, fetch),
            self.clock,
            replacing=flight.replacing,
            rejected=flight.rejected,
            fresher_than=flight.fresher_than,
            deadline=now + (flight.deadline - now) / 2,
        )

    def _fetched(self, key: CacheKey, fetch: Callable[[], Token]) -> CachedToken:
        sent_at = self.clock()
        return self._timed(key, fetch(), sent_at)

    def _timed(self, key: CacheKey, token: Token, sent_at: float) -> CachedToken:
        """``token`` with its times, its lifetime counted from ``sent_at``; how long its
        request took is noted for ``key``'s refresh margin."""
        now = self.clock()
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                samples = (*record.durations, now - sent_at)
                record.durations = samples[-self.refresh_margin.samples :]
        lifetime = token.expires_in or self.default_lifetime
        expires_at = sent_at + lifetime
        leeway = min(self.leeway, lifetime * MAX_LEEWAY_SHARE)
        return CachedToken(token.access_token, sent_at, expires_at - leeway, expires_at)

    def _entry(self, key: CacheKey, cached: CachedToken, flight: _Flight) -> _Entry:
        """``cached`` with its refresh point in this process: its key's margin before it
        goes stale, no earlier than the refresh window allows."""
        refresh_at = cached.stale_at
        if self.refresh_ahead:
            with self._lock:
                record = self._records.get(key)
            durations = () if record is None else record.durations
            spread = self.jitter()
            spread = spread if 0 <= spread <= 1 else 0.0  # NaN and strays: no random part
            usable = cached.stale_at - cached.fetched_at
            margin = self.refresh_margin.margin(durations, usable, spread)
            refresh_at -= min(margin, usable * self.refresh_window)
        lease = Lease(
            cached.access_token,
            flight.order,
            renewal=flight.renewal,
            expires_at=cached.expires_at,
        )
        return _Entry(lease, cached.stale_at, cached.expires_at, refresh_at)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        for record in self._records.values():
            record.flight = None  # the threads running them do not exist here


_SETTINGS = (
    "maxsize",
    "leeway",
    "default_lifetime",
    "min_evict_interval",
    "store",
    "cooldown",
    "refresh_ahead",
    "refresh_margin",
    "refresh_window",
    "jitter",
    "clock",
)


def _check_settings(
    maxsize: int,
    leeway: float,
    default_lifetime: float,
    min_evict_interval: float,
    refresh_window: float,
) -> None:
    """Refuse a :class:`TokenCache` setting out of its range, naming it.

    :raises ValueError: for the first one out of range.
    """
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"maxsize must be a whole number of at least 1, got {maxsize!r}")
    if not (leeway >= 0 and 0 < default_lifetime < math.inf and min_evict_interval >= 0):
        raise ValueError(
            "leeway and min_evict_interval must be >= 0 and default_lifetime a finite "
            "number of seconds above 0"
        )
    if not 0 < refresh_window <= 1:
        raise ValueError("refresh_window must be above 0 and at most 1")


def _rebuilt(cls: type[TokenCache], settings: dict[str, Any]) -> TokenCache:
    """A new, empty cache with ``settings`` (how a pickled cache comes back)."""
    return cls(**settings)


def _resolve(flight: _Flight, outcome: Lease | BaseException) -> None:
    """Give ``flight``'s waiters ``outcome``, unless they have had their error already."""
    try:
        if isinstance(outcome, Lease):
            flight.future.set_result(outcome)
        else:
            flight.future.set_exception(outcome)
    except InvalidStateError:
        pass  # abandoned at its deadline: its waiters have their error


def _events(
    client_id: str,
    flight: _Flight,
    result: _Entry | BaseException,
    now: float,
    pause: float | None,
    count: int,
    ended: int,
) -> list[Event]:
    """What listeners hear of a flight's end: its token or failure, and a cool-down
    started (``pause``, after ``count`` failures) or ended (after ``ended``)."""
    duration, how, sent = now - flight.started, flight.how, flight.tally.sent
    if isinstance(result, _Entry):
        fetched = TokenFetched(client_id, how, duration, result.expires_at - now, sent)
        return [fetched, CooldownEnded(client_id, ended)] if ended else [fetched]
    status = result.status if isinstance(result, TokenRequestError) else None
    events: list[Event] = [
        FetchFailed(client_id, how, duration, type(result).__name__, status, sent)
    ]
    if pause is not None:  # only an Exception cools a key down
        events.append(CooldownStarted(client_id, pause, count))
    return events


def _warn_renewal_failed(key: CacheKey, error: BaseException, expires_in: float) -> None:
    """Log that a renewal failed while the current token still has ``expires_in`` seconds."""
    log.warning(
        "renewing the token for client %r failed (%s); using the current token, which "
        "expires in %.0f s",
        key[1],
        error,
        expires_in,
    )


def _last(result: _Entry | BaseException, now: float, flight: _Flight) -> tuple[str, float]:
    """A flight's outcome and duration, for :meth:`TokenCache.status`."""
    return ("success" if isinstance(result, _Entry) else "error", now - flight.started)


def _status(key: CacheKey, record: _Record, entry: _Entry | None, now: float) -> dict[str, Any]:
    """One client's row of :meth:`TokenCache.status`."""
    failures = record.failures
    cooling = failures is not None and now < failures.until
    return {
        "client_id": key[1],
        "token_url": key[0],
        "token_cached": entry is not None and now < entry.expires_at,
        "stale_in": None if entry is None else entry.refresh_at - now,
        "expires_in": None if entry is None else entry.expires_at - now,
        "last_fetch": None
        if record.last is None
        else {"outcome": record.last[0], "duration": record.last[1]},
        "failures_in_a_row": 0 if failures is None else failures.count,
        "cooling_down_for": failures.until - now if cooling and failures else None,
    }


def _seconds(remaining: float) -> float | None:
    """A wait for what is left of a deadline, in seconds (``None``: no limit)."""
    return None if math.isinf(remaining) else max(remaining, 0.0)


def _taken(step: Lease | TokenRequestError) -> Lease:
    """The lease a decision hands the caller, or the error it raises."""
    if isinstance(step, TokenRequestError):
        raise step
    return step


async def _awaited(fetch: Callable[[], Awaitable[Token]]) -> Token:
    return await fetch()


def _retrieved(future: asyncio.Future[Lease]) -> None:
    """Read ``future``'s outcome, so that asyncio never reports it unread."""
    None if future.cancelled() else future.exception()


def _cancelled(key: CacheKey) -> TokenRequestError:
    return TokenRequestError(
        f"no token for client {key[1]!r} from {key[0]}: the token request was cancelled "
        "(the event loop it ran on ended)"
    )


def _no_thread(key: CacheKey, exc: RuntimeError) -> TokenRequestError:
    return TokenRequestError(
        f"no token request for client {key[1]!r} to {key[0]}: no thread could start for it "
        f"({type(exc).__name__})"
    )


def _too_many_stuck(key: CacheKey) -> TokenRequestError:
    return TokenRequestError(
        f"no token request for client {key[1]!r} to {key[0]}: {MAX_STUCK_FETCHES} token "
        "requests are still held past their deadlines"
    )


def _abandoned(key: CacheKey) -> TokenRequestError:
    return TokenRequestError(
        f"no token for client {key[1]!r} from {key[0]} within the time allowed; "
        "the token request was abandoned"
    )


def _cooling_down(key: CacheKey, failures: _Failures, remaining: float) -> TokenRequestError:
    last = failures.last
    error = TokenRequestError(
        f"no token request for client {key[1]!r} at {key[0]} for another {remaining:.1f} s, "
        f"after {failures.count} failed in a row; the last one: {last}",
        status=last.status if isinstance(last, TokenRequestError) else None,
    )
    error.__cause__ = last
    return error


class _Workers:
    """The fetch threads running, each with its deadline on the monotonic clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[threading.Thread, float] = {}

    def add(self, thread: threading.Thread, seconds: float) -> None:
        """Track ``thread``, due to end in ``seconds`` (infinity: unbounded)."""
        until = time.monotonic() + seconds
        with self._lock:
            self._until[thread] = until

    def discard(self, thread: threading.Thread | None) -> None:
        with self._lock:
            self._until.pop(thread, None)  # type: ignore[arg-type]

    def stuck(self) -> int:
        """How many are still running past their deadlines (abandoned, held by a server)."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for until in self._until.values() if until < now)

    def join(self) -> None:
        """Wait for each until its deadline: exit finishes a fetch, never hangs on one
        (nor waits for an unbounded one)."""
        with self._lock:
            until = dict(self._until)
        for thread, deadline in until.items():
            if math.isfinite(deadline):
                thread.join(min(max(deadline - time.monotonic(), 0.0), threading.TIMEOUT_MAX))

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._until = {}


_workers = _Workers()
# Runs when the main thread is done, before the interpreter shuts down, as
# concurrent.futures does for its workers (the fetch threads are daemons).
getattr(threading, "_register_atexit", lambda join: None)(_workers.join)


# Fork safety: hold every cache's lock across fork() so a child never copies a
# half-updated cache, then give the child fresh locks and no fetches in flight
# (the threads running them do not exist in the child). The child's handler
# takes no lock.
_fork_lock = threading.Lock()
_caches: weakref.WeakSet[TokenCache] = weakref.WeakSet()
_held: list[TokenCache] = []


def _register_for_fork(cache: TokenCache) -> None:
    with _fork_lock:
        _caches.add(cache)


def _before_fork() -> None:
    _fork_lock.acquire()
    _held.extend(_caches)
    for cache in _held:
        cache._lock.acquire()


def _after_fork_in_parent() -> None:
    for cache in _held:
        cache._lock.release()
    _held.clear()
    _fork_lock.release()


def _after_fork_in_child() -> None:
    global _fork_lock, _fingerprint_lock
    for cache in _held:
        cache._after_fork_in_child()
    _held.clear()
    _fork_lock = threading.Lock()
    _fingerprint_lock = threading.Lock()
    _workers.after_fork_in_child()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


_shared = TokenCache()


def shared_cache() -> TokenCache:
    """The process-wide cache that auth objects use when given ``cache=None``."""
    return _shared
