"""The token cache: one token per client, fetched once, shared by every thread.

A :class:`TokenCache` maps ``(token_url, client_id)`` to a token. A cache hit
is a dictionary lookup under a lock. A miss makes exactly one fetch per key
however many threads miss at once (single-flight); the others wait for it and
get the same token or the same error. Fetches for different keys never wait
for each other. After a failed fetch the key cools down: for a short while its
callers fail fast instead of each calling the token endpoint again.

A :class:`TokenStore` (such as :class:`requests_piggy_auth.stores.RedisTokenStore`)
adds a second tier shared by processes: a local miss asks the store, and the
store makes one fetch for the whole fleet.

Refresh-ahead: a token's first hit in the last part of its lifetime starts one
background refresh for its key while every caller keeps the current token, so
no caller waits for a token request as long as tokens are renewed in time.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from cachetools import LRUCache

from .errors import TokenRequestError
from .oauth import Token

#: ``(token_url, client_id)``: different clients never share a token.
CacheKey = tuple[str, str]
Clock = Callable[[], float]

log = logging.getLogger("requests_piggy_auth")

#: The name of the threads that refresh tokens ahead of time.
REFRESH_THREAD = "piggy-auth-refresh"


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


@dataclass(frozen=True)
class _Entry(CachedToken):
    """A token in this process's tier, with when its hits start a refresh-ahead."""

    refresh_at: float


class TokenStore(Protocol):
    """A tier behind :class:`TokenCache` that processes share, consulted on a local miss."""

    def get(
        self,
        key: CacheKey,
        fetch: Callable[[], CachedToken],
        clock: Clock,
        *,
        replacing: str | None = None,
        fresher_than: float | None = None,
        deadline: float | None = None,
    ) -> CachedToken:
        """``key``'s shared token while it is fresh; else ``fetch()``, once for all, stored.

        Times are on ``clock``, the cache's clock. A store that cannot be
        reached calls ``fetch`` itself: its own errors never reach the caller.

        :param replacing: a token being refreshed ahead of time: while the
            shared token is still this one it counts as a miss, so the store
            replaces it (or returns the one another process replaced it with).
        :param fresher_than: a time on ``clock``: a shared token whose request
            was sent no later counts as a miss, like ``replacing`` (after a 401,
            so a resend never gets a token that may predate a revocation).
        :param deadline: a time on ``clock`` by which to return whatever happens:
            the wait for another sharer's fetch ends then and ``fetch`` is
            called; once it has passed, ``fetch`` is called at once
            (``None``: only the store's own wait limit applies).
        """

    def discard(self, key: CacheKey, access_token: str) -> None:
        """Delete ``key``'s shared token if it is still ``access_token``."""


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


class TokenCache:
    """A thread-safe, bounded (least recently used) cache of access tokens keyed by client.

    :param maxsize: how many clients' tokens to keep (least recently used go first).
    :param leeway: renew a token this many seconds before it expires; clamped
        to half the token's lifetime so short-lived tokens stay usable.
    :param default_lifetime: the lifetime assumed when the server sends no
        ``expires_in``; a 401 renews the token earlier if needed.
    :param min_evict_interval: a 401 evicts a key's token at most once per
        this many seconds, so a 401 that no new token can fix does not turn
        every call into a token request.
    :param store: a second tier shared with other processes (``None``: this
        process only). The local entry stays in front, so a hit never
        touches the store.
    :param cooldown: how long a key's callers fail fast after a failed fetch.
    :param refresh_ahead: renew a token in the background before it goes
        stale, while callers keep using it (``False``: only when it is stale).
    :param refresh_window: the refresh window, as the last fraction of a
        token's usable lifetime (from its request to ``leeway`` before expiry),
        above 0 and at most 1. A token's first hit at its refresh point, drawn
        in the window's first half, starts one background refresh.
    :param jitter: where in the window's first half each refresh point lies,
        from 0.0 to 1.0, drawn per token and process so a fleet spreads out.
    :param clock: a monotonic clock in seconds; tests inject their own.
    :raises ValueError: for a negative ``leeway`` or ``min_evict_interval``,
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
        refresh_window: float = 0.5,
        jitter: Callable[[], float] = random.random,
        clock: Clock = time.monotonic,
    ) -> None:
        if leeway < 0 or default_lifetime <= 0 or min_evict_interval < 0:
            raise ValueError("leeway and min_evict_interval must be >= 0 and default_lifetime > 0")
        if not 0 < refresh_window <= 1:
            raise ValueError("refresh_window must be above 0 and at most 1")
        self.leeway = leeway
        self.default_lifetime = default_lifetime
        self.min_evict_interval = min_evict_interval
        self.store = store
        self.cooldown = cooldown
        self.refresh_ahead = refresh_ahead
        self.refresh_window = refresh_window
        self.jitter = jitter
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: LRUCache[CacheKey, _Entry] = LRUCache(maxsize)
        self._evicted_at: LRUCache[CacheKey, float] = LRUCache(maxsize)
        self._failures: LRUCache[CacheKey, _Failures] = LRUCache(maxsize)
        self._flights: dict[CacheKey, Future[str]] = {}
        _register_for_fork(self)

    def __repr__(self) -> str:
        return f"<TokenCache clients={len(self)} maxsize={self._tokens.maxsize}>"

    def __len__(self) -> int:
        """How many clients have a token that has not expired."""
        with self._lock:
            now = self.clock()
            return sum(1 for cached in self._tokens.values() if now < cached.expires_at)

    def get(
        self, key: CacheKey, fetch: Callable[[], Token], *, timeout: float | None = None
    ) -> str:
        """Return the cached token for ``key``, calling ``fetch`` on a miss.

        Concurrent misses for one key call ``fetch`` once; every caller gets
        its token or its exception. A failure is never cached, but it starts
        a cool-down (see :class:`CoolDown`) during which callers get a token
        that has not yet expired, if one is cached, or else fail fast. A hit
        in the refresh window starts ``fetch`` in a background thread, once
        (see ``refresh_ahead``), and returns the current token.

        :param timeout: how many seconds to wait for another caller's fetch
            (``None``: as long as it takes).
        :raises TokenRequestError: during a cool-down, or when the wait for
            another caller's fetch timed out; or whatever ``fetch`` raised.
        """
        with self._lock:
            now = self.clock()
            cached = self._tokens.get(key)
            if cached is not None and now < cached.refresh_at:
                return cached.access_token
            failures = self._failures.get(key)
            if failures is not None and now >= failures.until:
                failures = None  # its cool-down is over
            if cached is not None and now < cached.stale_at:
                if failures is None:
                    self._refresh_ahead(key, cached.access_token, fetch)
                return cached.access_token
            if failures is not None:
                if cached is not None and now < cached.expires_at:  # stale, still good
                    return cached.access_token
                raise _cooling_down(key, failures, failures.until - now)
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = Future()
        if leading:
            self._fetch(key, flight, fetch)
        elif not wait([flight], timeout).done:
            raise TokenRequestError(
                f"gave up after {timeout} s waiting for another thread's token request for "
                f"client {key[1]!r} at {key[0]}"
            )
        return flight.result()

    def evict(self, key: CacheKey, access_token: str) -> bool:
        """Forget ``access_token`` for ``key`` because the server rejected it.

        The entry is removed only if it still holds that token (compare and
        evict), so many threads reporting one stale token cause one renewal.
        A store's copy goes first, on the same condition.

        :returns: whether a new token may help, so a retry is worth it:
            ``False`` only when the same token is still cached because the
            key was evicted less than ``min_evict_interval`` seconds ago.
        """
        if self.store is not None and self._evictable(key, access_token):
            # The shared tier goes first, so no fetch here can read the token back from it.
            self.store.discard(key, access_token)
        with self._lock:
            if not self._holds(key, access_token):
                return True
            if self._evicted_recently(key):
                return False
            del self._tokens[key]
            self._evicted_at[key] = self.clock()
            return True

    def clear(self) -> None:
        """Forget every token here (fetches in flight still complete; a store keeps its own)."""
        with self._lock:
            self._tokens.clear()
            self._evicted_at.clear()
            self._failures.clear()

    def _evictable(self, key: CacheKey, access_token: str) -> bool:
        with self._lock:
            return self._holds(key, access_token) and not self._evicted_recently(key)

    def _holds(self, key: CacheKey, access_token: str) -> bool:
        cached = self._tokens.get(key)
        return cached is not None and cached.access_token == access_token

    def _evicted_recently(self, key: CacheKey) -> bool:
        last = self._evicted_at.get(key)
        return last is not None and self.clock() - last < self.min_evict_interval

    def _refresh_ahead(self, key: CacheKey, access_token: str, fetch: Callable[[], Token]) -> None:
        """Start ``key``'s background refresh, under the lock, unless one may not start now.

        Not while a fetch for the key is in flight, and not once the
        interpreter exits: refresh threads are not daemons, so exit waits for
        one in flight (its token request is bounded by its retries). The
        caller starts none while the key cools down.
        """
        if key in self._flights or not threading.main_thread().is_alive():
            return
        flight: Future[str] = Future()
        threading.Thread(
            target=self._fetch,
            args=(key, flight, fetch, access_token),
            name=REFRESH_THREAD,
            daemon=False,  # even when started by a daemon thread: exit waits for it
        ).start()
        self._flights[key] = flight  # before the thread can end it: that needs the lock

    def _fetch(
        self,
        key: CacheKey,
        flight: Future[str],
        fetch: Callable[[], Token],
        replacing: str | None = None,
    ) -> None:
        try:
            fetched = partial(self._fetched, fetch)
            cached = self._local(
                fetched()
                if self.store is None
                else self.store.get(key, fetched, self.clock, replacing=replacing)
            )
        except Exception as exc:
            with self._lock:
                current = self._failed(key, exc)
                del self._flights[key]
            if current is None:
                flight.set_exception(exc)
            else:
                flight.set_result(current)
        except BaseException as exc:  # KeyboardInterrupt and the like: no cool-down
            with self._lock:
                del self._flights[key]
            flight.set_exception(exc)
        else:
            with self._lock:
                self._tokens[key] = cached
                self._failures.pop(key, None)
                del self._flights[key]
            flight.set_result(cached.access_token)

    def _fetched(self, fetch: Callable[[], Token]) -> CachedToken:
        sent_at = self.clock()
        return self._timed(fetch(), sent_at)

    def _failed(self, key: CacheKey, exc: Exception) -> str | None:
        """Start or extend ``key``'s cool-down; return its cached token if still valid."""
        previous = self._failures.get(key)
        count = 1 if previous is None else previous.count + 1
        self._failures[key] = _Failures(count, self.clock() + self.cooldown.pause(count), exc)
        cached = self._tokens.get(key)
        if cached is None or self.clock() >= cached.expires_at:
            return None
        log.warning(
            "renewing the token for client %r failed (%s); using the current token, which "
            "expires in %.0f s",
            key[1],
            exc,
            cached.expires_at - self.clock(),
        )
        return cached.access_token

    def _local(self, cached: CachedToken) -> _Entry:
        """``cached`` with its refresh point in this process, drawn in the window's first half."""
        refresh_at = cached.stale_at
        if self.refresh_ahead:
            window = (cached.stale_at - cached.fetched_at) * self.refresh_window
            refresh_at -= window - self.jitter() * window / 2
        return _Entry(
            cached.access_token, cached.fetched_at, cached.stale_at, cached.expires_at, refresh_at
        )

    def _timed(self, token: Token, sent_at: float) -> CachedToken:
        lifetime = token.expires_in or self.default_lifetime
        expires_at = sent_at + lifetime
        return CachedToken(
            token.access_token, sent_at, expires_at - min(self.leeway, lifetime / 2), expires_at
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._flights = {}


# Fork safety: hold every cache's lock across fork() so a child never copies a
# half-updated cache, then give the child fresh locks and no fetches in flight
# (the threads running them do not exist in the child).
_fork_lock = threading.Lock()
_caches: weakref.WeakSet[TokenCache] = weakref.WeakSet()
_held: list[TokenCache] = []


def _cooling_down(key: CacheKey, failures: _Failures, remaining: float) -> TokenRequestError:
    last = failures.last
    error = TokenRequestError(
        f"no token request for client {key[1]!r} at {key[0]} for another {remaining:.1f} s, "
        f"after {failures.count} failed in a row; the last one: {last}",
        status=last.status if isinstance(last, TokenRequestError) else None,
    )
    error.__cause__ = last
    return error


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
    global _fork_lock
    for cache in _held:
        cache._after_fork_in_child()
    _held.clear()
    _fork_lock = threading.Lock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


_shared = TokenCache()


def shared_cache() -> TokenCache:
    """The process-wide cache that auth objects use when given ``cache=None``."""
    return _shared
