"""What every token store shares: wall-clock entries, which token a call can use, the
wait a call allows, and carrying on without a failing backend."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .cache import CachedToken, CacheKey, Clock
from .oauth import is_valid_token

log = logging.getLogger("requests_piggy_auth")

#: The times of a stored entry, in seconds since the epoch.
TIMES = ("fetched_at", "stale_at", "expires_at")


@dataclass(frozen=True)
class Wanted:
    """Which stored token a call can use: times on ``clock``; not ``replacing``; fetched
    no earlier than ``fresher_than``."""

    clock: Clock
    replacing: str | None
    fresher_than: float | None

    def accepts(self, access_token: str, fetched_at: float) -> bool:
        return access_token != self.replacing and (
            self.fresher_than is None or fetched_at >= self.fresher_than
        )

    def since(self, first_rejection: float) -> Wanted:
        """Also a token fetched after ``first_rejection``, the first 401 any sharer saw."""
        earliest = first_rejection
        if self.fresher_than is not None:
            earliest = min(earliest, self.fresher_than)
        return replace(self, fresher_than=earliest)


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


def gave_up(wait: float, key: CacheKey) -> None:
    log.warning(
        "waited %.1f s for another process's token request for client %r; making one here",
        wait,
        key[1],
    )


class Shared:
    """A store's common part: its wait limits, and how it carries on while its backend
    fails (one warning, the backend left alone for ``retry_interval``, one note when
    it is back).

    ``_retry_at`` and ``_failing`` are plain attributes: threads racing on them can at
    worst log the same news twice.
    """

    #: What the messages call the backend.
    backend = "backend"

    def __init__(self, *, wait_timeout: float, retry_interval: float, timer: Clock) -> None:
        if not wait_timeout >= 0 or not retry_interval >= 0:
            raise ValueError("wait_timeout and retry_interval must be >= 0")
        self.wait_timeout = wait_timeout
        self.retry_interval = retry_interval
        self.timer = timer
        self._retry_at = -math.inf
        self._failing = False

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
        if not self._failing:
            self._failing = True
            log.warning(
                "the token store's %s failed (%s: %s); tokens are fetched per process "
                "until it is back, tried again every %g s",
                self.backend,
                type(exc).__name__,
                exc,
                self.retry_interval,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("the token store's %s is back; tokens are shared again", self.backend)
