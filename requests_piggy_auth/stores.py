"""Token stores shared by processes: one token per client for a machine or a fleet.

A store is the second tier of a :class:`~requests_piggy_auth.TokenCache`::

    cache = TokenCache(store=SQLiteTokenStore())                 # processes on one machine
    cache = TokenCache(store=RedisTokenStore(redis.Redis(...)))  # a fleet of machines

Each process keeps its own entries in front, so a cache hit never touches the
store. On a local miss the process's one fetching thread asks the store: a
fresh token stored there is used as it is; otherwise the thread takes the
store's lock for the key, looks again, fetches, stores the token and releases
the lock, while the other processes wait for it. A 401 deletes the stored
token only if it is still the rejected one, so a revocation seen by every
process makes one new token request.

Stores hold wall-clock times (seconds since the epoch), the one clock that
processes share; each process turns them into times on its own monotonic
clock when it reads them.

When a store's backend fails (Redis refused or timed out; a database file
that is corrupt, read-only or locked for longer than the wait), the cache
carries on without it: tokens are fetched once per process, a warning is
logged, and the backend is tried again ``retry_interval`` seconds later. A
store's error never fails an API call. Every wait is bounded by the call's
deadline.

:class:`SQLiteTokenStore` needs only the standard library;
:class:`RedisTokenStore` needs redis-py: ``pip install 'requests-piggy-auth[redis]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._sqlite_store import SQLiteTokenStore

if TYPE_CHECKING:
    from ._redis_store import RedisTimeoutWarning, RedisTokenStore

__all__ = ["RedisTimeoutWarning", "RedisTokenStore", "SQLiteTokenStore"]


def __getattr__(name: str) -> Any:
    """The Redis store, imported when first asked for (it needs redis-py)."""
    if name in ("RedisTimeoutWarning", "RedisTokenStore"):
        return getattr(importlib.import_module("._redis_store", __name__.rpartition(".")[0]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
