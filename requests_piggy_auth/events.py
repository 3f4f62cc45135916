"""What the token cache tells its listeners: one small, frozen record per happening.

Register a callable with :meth:`TokenCache.add_listener`; it gets each event
after every library lock is released: a fetch's events in the thread (or task)
that fetched the token, once that fetch's waiters have their outcome; an
eviction and a resend in the caller's thread; a store's fallback and recovery
in the thread that found out. A listener that raises is logged at DEBUG, once
per listener and exception type, and never reaches a caller. No event carries
a token or a secret: a client is named by its id.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CooldownEnded",
    "CooldownStarted",
    "Event",
    "FetchFailed",
    "How",
    "Listener",
    "RequestResent",
    "Resent",
    "StoreFellBack",
    "StoreHealth",
    "StoreRecovered",
    "TokenEvicted",
    "TokenFetched",
]

log = logging.getLogger("requests_piggy_auth")

#: Why a token was requested: none cached, a refresh ahead of time, or after a 401.
How = Literal["cold", "refresh_ahead", "rejected"]
#: What a resend after a 401 came to: any answer but a 401, a 401 again, or no answer.
Resent = Literal["success", "rejected", "error"]


@dataclass(frozen=True)
class TokenFetched:
    """A fetch got a token (``duration`` in seconds on the cache's clock), after
    ``attempts`` token requests (0: from a store another process filled)."""

    client_id: str
    how: How
    duration: float
    expires_in: float
    attempts: int = 0


@dataclass(frozen=True)
class FetchFailed:
    """A fetch failed, after ``attempts`` token requests: the error's type name and the
    endpoint's status, if any."""

    client_id: str
    how: How
    duration: float
    error_type: str
    status: int | None
    attempts: int = 0


@dataclass(frozen=True)
class CooldownStarted:
    """The client's token requests pause for ``seconds`` after ``failures`` in a row."""

    client_id: str
    seconds: float
    failures: int


@dataclass(frozen=True)
class CooldownEnded:
    """A token came for the client after ``failures`` failed fetches in a row: its
    cool-down is over."""

    client_id: str
    failures: int


@dataclass(frozen=True)
class TokenEvicted:
    """A 401 evicted the client's token."""

    client_id: str


@dataclass(frozen=True)
class RequestResent:
    """A request that got a 401 was resent with a new token, through ``adapter``
    (``requests``, ``urllib3`` or ``httpx``)."""

    client_id: str
    adapter: str
    outcome: Resent


@dataclass(frozen=True)
class StoreFellBack:
    """The token store failed (``error_type``): tokens are fetched per process until it is back."""

    store: str
    error_type: str


@dataclass(frozen=True)
class StoreRecovered:
    """The token store answers again: tokens are shared again."""

    store: str


#: Any of the events.
Event = (
    TokenFetched
    | FetchFailed
    | CooldownStarted
    | CooldownEnded
    | TokenEvicted
    | RequestResent
    | StoreFellBack
    | StoreRecovered
)
#: What :meth:`~requests_piggy_auth.TokenCache.add_listener` takes: called with each event.
Listener = Callable[[Event], object]


class StoreHealth:
    """Whether a token store reaches its backend: the hook a store calls, whatever it is.

    A store makes one (``health``) and calls :meth:`failed` when its backend
    fails and :meth:`recovered` when it answers, outside any lock of its own.
    Only a change is news: it goes to the watchers (each
    :class:`~requests_piggy_auth.TokenCache` on the store) as an event.

    :param store: how events name the store, such as its ``repr``.
    """

    def __init__(self, store: str) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._failing = False
        self._watchers: tuple[weakref.WeakMethod[Listener], ...] = ()

    @property
    def failing(self) -> bool:
        """Whether the backend failed last time."""
        return self._failing

    def watch(self, listener: Listener) -> None:
        """Tell ``listener``, a bound method (a cache's), each change while its object lives:
        it is held weakly, so a store that outlives its caches keeps none of them alive."""
        held = weakref.WeakMethod(listener)
        with self._lock:
            self._watchers = (*(w for w in self._watchers if w() is not None), held)

    def failed(self, exc: BaseException) -> bool:
        """Note that the backend failed with ``exc``; returns whether it had worked till now."""
        if not self._changed(failing=True):
            return False
        dispatch(self._alive(), [StoreFellBack(self.store, type(exc).__name__)])
        return True

    def recovered(self) -> bool:
        """Note that the backend answered; returns whether it had failed till now."""
        if not self._failing or not self._changed(failing=False):  # the lock only for news
            return False
        dispatch(self._alive(), [StoreRecovered(self.store)])
        return True

    def _alive(self) -> list[Listener]:
        return [listener for listener in (w() for w in self._watchers) if listener is not None]

    def _changed(self, *, failing: bool) -> bool:
        with self._lock:
            changed, self._failing = self._failing != failing, failing
        return changed


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
