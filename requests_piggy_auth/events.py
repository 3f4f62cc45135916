"""What the token cache tells its listeners: one small, frozen record per happening.

Register a callable with :meth:`TokenCache.add_listener`; it gets each event
after the cache's lock is released, in the thread (or task) that fetched the
token, once that fetch's waiters have their outcome. A listener that raises is
logged at DEBUG, once per listener and exception type, and never reaches a
caller. No event carries a token or a secret: a client is named by its id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("requests_piggy_auth")

#: Why a token was requested: none cached, a refresh ahead of time, or after a 401.
How = Literal["cold", "refresh_ahead", "rejected"]


@dataclass(frozen=True)
class TokenFetched:
    """A token request succeeded (``duration`` in seconds on the cache's clock)."""

    client_id: str
    how: How
    duration: float
    expires_in: float


@dataclass(frozen=True)
class FetchFailed:
    """A token request failed: the error's type name and the endpoint's status, if any."""

    client_id: str
    how: How
    duration: float
    error_type: str
    status: int | None


@dataclass(frozen=True)
class CooldownStarted:
    """The client's token requests pause for ``seconds`` after ``failures`` in a row."""

    client_id: str
    seconds: float
    failures: int


@dataclass(frozen=True)
class TokenEvicted:
    """A 401 evicted the client's token."""

    client_id: str


Event = TokenFetched | FetchFailed | CooldownStarted | TokenEvicted
Listener = Callable[[Event], object]

_reported: set[tuple[int, type[BaseException]]] = set()
_reported_lock = threading.Lock()


def dispatch(listeners: Iterable[Listener], events: Iterable[Event]) -> None:
    """Give each of ``events`` to each of ``listeners``; what one raises is logged, once."""
    for event in events:
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:  # a listener never fails a caller
                _report(listener, exc)


def _report(listener: Listener, exc: Exception) -> None:
    mark = (id(listener), type(exc))
    with _reported_lock:
        first = mark not in _reported
        _reported.add(mark)
    if first:
        log.debug("a token cache listener %r raised %s", listener, type(exc).__name__)
