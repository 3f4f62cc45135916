"""What every token store shares: wall-clock entries, which token a call can use, the
wait a call allows, and carrying on without a failing backend."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from typing import Any

from .cache import CachedToken, CacheKey, Clock
from .events import StoreHealth
from .oauth import is_valid_token

log = logging.getLogger("requests_piggy_auth")

#: The times of a stored entry, in seconds since the epoch.
TIMES = ("fetched_at", "stale_at", "expires_at")


@dataclass(frozen=True)
class Wanted:
    """Which stored token a call can use: times on ``clock``; not ``replacing`` nor one
    of ``rejected``; fetched no earlier than ``fresher_than``."""

    clock: Clock
    replacing: str | None
    fresher_than: float | None
    rejected: Collection[str] = ()

    def accepts(self, access_token: str, fetched_at: float) -> bool:
        return (
            access_token != self.replacing
            and access_token not in self.rejected
            and (self.fresher_than is None or fetched_at >= self.fresher_than)
        )

    def since(self, first_rejection: float) -> Wanted:
        """Also a token fetched after ``first_rejection``, the first 401 any sharer saw."""
        earlier = self.fresher_than
        return replace(
            self,
            fresher_than=first_rejection if earlier is None else min(earlier, first_rejection),
        )


def shared_token(
    access_token: object, times: Iterable[object], wanted: Wanted, wall_clock: Clock
) -> CachedToken | None:
    """A stored entry (``times`` on ``wall_clock``) as a token on ``wanted.clock``, if it
    is a token, fresh and ``wanted``; else ``None`` (not ours, or from another version:
    the next fetch overwrites it)."""
    try:
        fetched_at, stale_at, expires_at = (float(time) for time in times)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    now = wall_clock()
    offset = wanted.clock() - now
    if not (
        is_valid_token(access_token)
        and now < stale_at
        and wanted.accepts(access_token, fetched_at + offset)
    ):
        return None
    return CachedToken(access_token, fetched_at + offset, stale_at + offset, expires_at + offset)


def stored_times(cached: CachedToken, clock: Clock, wall_clock: Clock) -> dict[str, float]:
    """``cached``'s times, from ``clock`` to ``wall_clock``, the clock that sharers share."""
    offset = wall_clock() - clock()
    return {name: getattr(cached, name) + offset for name in TIMES}


def digest(access_token: str) -> str:
    """How a rejected token is named where sharers note it: its hash, never the token."""
    return hashlib.sha256(access_token.encode()).hexdigest()


class Shared:
    """A store's common part: its wait limits, and how it carries on while its backend
    fails (one warning, the backend left alone for ``retry_interval``, one note when
    it is back).

    Its :attr:`health` tells each cache on the store when the backend fails and
    recovers. ``_retry_at`` is a plain attribute: threads racing on it at worst both
    ask the backend. A subclass sets what its ``repr`` shows before this ``__init__``.
    """

    #: What the messages call the backend.
    backend = "backend"

    def __init__(
        self,
        *,
        wait_timeout: float,
        retry_interval: float,
        poll_interval: float,
        wall_clock: Clock,
        timer: Clock,
        sleep: Callable[[float], None],
    ) -> None:
        if not wait_timeout >= 0 or not retry_interval >= 0:
            raise ValueError("wait_timeout and retry_interval must be >= 0")
        if not poll_interval > 0:
            raise ValueError("poll_interval must be above 0")
        self.wait_timeout = wait_timeout
        self.retry_interval = retry_interval
        self.poll_interval = poll_interval
        self.wall_clock = wall_clock
        self.timer = timer
        self.sleep = sleep
        self._retry_at = -math.inf
        #: Whether the backend answers: the caches on this store tell their listeners.
        self.health = StoreHealth(repr(self))

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
        """``key``'s stored token while it is fresh; else ``fetch()`` once for all sharers,
        as :meth:`~requests_piggy_auth.TokenStore.get` says (its parameters are those).

        Errors from ``fetch`` go to the caller (and free the store's lock at
        once); the store's own errors never do. Without a ``deadline``, the wait for
        another process's fetch is ``wait_timeout`` alone.
        """
        wait = self._wait(clock, deadline)
        if wait is None:
            return fetch()
        return self._shared(key, fetch, Wanted(clock, replacing, fresher_than, rejected), wait)

    def _shared(
        self, key: CacheKey, fetch: Callable[[], CachedToken], wanted: Wanted, wait: float
    ) -> CachedToken:
        """:meth:`get` once the store is to be asked, waiting at most ``wait`` seconds."""
        raise NotImplementedError

    def _wait(self, clock: Clock, deadline: float | None) -> float | None:
        """How long this call may wait for another process's fetch; ``None``: it fetches
        at once, without the backend (its deadline has passed, or the backend failed
        less than ``retry_interval`` ago)."""
        wait = self.wait_timeout
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                return None
            wait = min(wait, left)
        return wait if self.timer() >= self._retry_at else None

    def _unavailable(self, exc: Exception) -> None:
        self._retry_at = self.timer() + self.retry_interval
        if self.health.failed(exc):
            log.warning(
                "the token store's %s failed (%s: %s); tokens are fetched per process "
                "until it is back, tried again every %g s",
                self.backend,
                type(exc).__name__,
                exc,
                self.retry_interval,
            )

    def _recovered(self) -> None:
        if self.health.recovered():
            log.info("the token store's %s is back; tokens are shared again", self.backend)


def gave_up_waiting(wait: float, key: CacheKey) -> None:
    """Tell that a call waited ``wait`` seconds for another process's token request for
    ``key`` and now makes its own (not a store failure: the store is used again at once)."""
    log.warning(
        "waited %.1f s for another process's token request for client %r; making one here",
        wait,
        key[1],
    )


def attempt(
    failures: type[Exception] | tuple[type[Exception], ...],
    call: Callable[..., object],
    *args: Any,
) -> Exception | None:
    """``call(*args)``; a store failure (one of ``failures``) is returned, not raised, to be
    told once the store's lock is free."""
    try:
        call(*args)
    except failures as exc:
        return exc
    return None
