"""The Redis token store: see :mod:`requests_piggy_auth.stores`."""

from __future__ import annotations

import json
import math
import pickle
import secrets
import time
import warnings
from collections.abc import Callable, Collection
from typing import Any

try:
    import redis
except ImportError as exc:
    raise ImportError(
        "RedisTokenStore needs redis-py: pip install 'requests-piggy-auth[redis]'"
    ) from exc

from ._sharing import (
    TIMES,
    Shared,
    Wanted,
    attempt,
    digest,
    gave_up_waiting,
    shared_token,
    stored_times,
)
from .cache import CachedToken, CacheKey, Clock
from .oauth import MAX_LIFETIME

__all__ = ["RedisTimeoutWarning", "RedisTokenStore"]

# Delete KEYS[1] only if it holds ARGV[1]: a lock is released by its owner alone.
_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""

# A 401 rejected the token ARGV[1]: note when (ARGV[2]) unless a sharer noted it first,
# in KEYS[2] for ARGV[3] ms; delete the token entry KEYS[1] if it still holds that token.
# Returns when the first sharer saw it rejected.
_REJECT = """
redis.call("SET", KEYS[2], ARGV[2], "NX", "PX", ARGV[3])
local entry = redis.call("GET", KEYS[1])
if entry then
    local ok, token = pcall(cjson.decode, entry)
    if ok and type(token) == "table" and token.access_token == ARGV[1] then
        redis.call("DEL", KEYS[1])
    end
end
return redis.call("GET", KEYS[2])
"""
#: How long a sharer's note of a rejected token lasts: no token lives longer.
_REJECTION_MS = round(MAX_LIFETIME * 1000)

_TIMEOUTS = ("socket_timeout", "socket_connect_timeout")

_SETTINGS = (
    "namespace",
    "lock_timeout",
    "wait_timeout",
    "poll_interval",
    "retry_interval",
    "wall_clock",
    "timer",
    "sleep",
)

#: The pool classes whose settings can be seen, and those settings (beyond connection_kwargs).
_POOLS: dict[type[redis.ConnectionPool], tuple[str, ...]] = {
    redis.ConnectionPool: ("max_connections",),
    redis.BlockingConnectionPool: ("max_connections", "timeout", "queue_class"),
}


class RedisTimeoutWarning(UserWarning):
    """A :class:`RedisTokenStore` was given a Redis client that can wait for ever."""


class RedisTokenStore(Shared):
    """Tokens in Redis, shared by every process that uses the same Redis and namespace.

    :param redis_client: a ``redis.Redis``. Give it short timeouts and few
        retries (``socket_timeout=0.5, socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1)``) so a slow or lost Redis costs little.
    :param namespace: the prefix of every key this store writes.
    :param lock_timeout: seconds until a fetching process's lock expires by
        itself, so one that dies mid-fetch blocks the others no longer than
        this. Make it longer than a token request can take.
    :param wait_timeout: the longest a process waits for another process's
        fetch before fetching on its own (default: ``lock_timeout``).
    :param poll_interval: how often, in seconds, a waiting process looks for
        the token.
    :param retry_interval: after a Redis error, how many seconds to leave
        Redis alone before trying it again.
    :param wall_clock: the clock, in seconds since the epoch, of the times
        stored in Redis; the processes' machines must agree on it to well
        within the cache's ``leeway`` (NTP does).
    :param timer: a monotonic clock for waits and ``retry_interval``.
    :param sleep: how a waiting process pauses between looks, in seconds of ``timer``.
    :raises ValueError: for an empty namespace, a ``lock_timeout`` under 1 ms,
        a ``poll_interval`` not above 0, or a negative ``wait_timeout`` or
        ``retry_interval``.
    """

    backend = "Redis"

    def __init__(
        self,
        redis_client: redis.Redis,
        namespace: str = "piggy-auth",
        *,
        lock_timeout: float = 30.0,
        wait_timeout: float | None = None,
        poll_interval: float = 0.05,
        retry_interval: float = 30.0,
        wall_clock: Clock = time.time,
        timer: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError("namespace must be a non-empty string")
        if wait_timeout is None:
            wait_timeout = lock_timeout
        if not lock_timeout >= 0.001:
            raise ValueError("lock_timeout must be at least 0.001 s")
        self.namespace = namespace
        super().__init__(
            wait_timeout=wait_timeout,
            retry_interval=retry_interval,
            poll_interval=poll_interval,
            wall_clock=wall_clock,
            timer=timer,
            sleep=sleep,
        )
        self.redis = redis_client
        self.lock_timeout = lock_timeout
        self._release_lock = redis_client.register_script(_RELEASE)
        self._reject_token = redis_client.register_script(_REJECT)
        unbounded = _unbounded_timeouts(redis_client)
        if unbounded:
            warnings.warn(
                f"this Redis client has no {' or '.join(unbounded)}, so a Redis that stops "
                "answering blocks API calls for ever; give it timeouts: redis.Redis(..., "
                "socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1))",
                RedisTimeoutWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        return f"RedisTokenStore(namespace={self.namespace!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle settings and how the client connects: the copy makes a client of its own.

        :raises TypeError: if part of the client's configuration cannot be carried.
        """
        settings = {name: getattr(self, name) for name in _SETTINGS}
        return (_rebuilt, (type(self), *_client_recipe(self.redis), settings))

    def _shared(
        self, key: CacheKey, fetch: Callable[[], CachedToken], wanted: Wanted, wait: float
    ) -> CachedToken:
        """:meth:`get` through Redis: the process that gets the key's lock looks once
        more, then fetches, stores the token with its expiry and releases the lock; the
        others wait for the token. A 401's note and compare-and-delete come first."""
        token_key, lock_key = self._keys(key)
        owner = secrets.token_hex(16)
        try:
            if wanted.rejected:
                first = self._first_rejection(key, wanted.rejected, wanted.clock)
                wanted = wanted.since(first)
            shared = self._token_or_lock(key, owner, wait, wanted)
        except redis.RedisError as exc:
            self._unavailable(exc)
            return fetch()
        if shared is not None:
            return shared
        failure = None
        try:
            cached = fetch()
            failure = attempt(redis.RedisError, self._save, token_key, cached, wanted.clock)
        finally:  # the lock released even when Redis just failed, before it is told
            failure = attempt(redis.RedisError, self._release_lock, [lock_key], [owner]) or failure
        if failure is not None:
            self._unavailable(failure)
        return cached

    def _first_rejection(self, key: CacheKey, rejected: Collection[str], clock: Clock) -> float:
        """Delete each ``rejected`` token if it is still shared; return, on ``clock``, when
        the first sharer saw one of them rejected."""
        token_key = self._keys(key)[0]
        now = self.wall_clock()
        offset = clock() - now
        first = math.inf
        for access_token in rejected:
            noted = self._rejection_key(key, access_token)
            seen = self._reject_token([token_key, noted], [access_token, repr(now), _REJECTION_MS])
            first = min(first, float(seen))
        return first + offset

    def _rejection_key(self, key: CacheKey, access_token: str) -> str:
        """Where sharers note when ``access_token`` was first rejected (by its hash)."""
        return f"{self.namespace}:rejected:{self._name(key)}:{digest(access_token)}"

    def _keys(self, key: CacheKey) -> tuple[str, str]:
        """The Redis keys of ``key``'s token and of its lock."""
        name = self._name(key)
        return f"{self.namespace}:token:{name}", f"{self.namespace}:lock:{name}"

    @staticmethod
    def _name(key: CacheKey) -> str:
        return json.dumps(key, separators=(",", ":"))

    def _token_or_lock(
        self, key: CacheKey, owner: str, wait: float, wanted: Wanted
    ) -> CachedToken | None:
        """A stored token that is ``wanted``, or ``None`` once ``owner`` holds the
        lock or ``wait`` seconds are over."""
        token_key, lock_key = self._keys(key)
        wait_until = self.timer() + wait
        lock_ms = round(self.lock_timeout * 1000)
        while True:
            shared = self._load(token_key, wanted)
            if shared is not None:
                return shared
            if self._lock(lock_key, owner, lock_ms):
                shared = self._load(token_key, wanted)  # stored just before the lock
                if shared is not None:  # a failure to free it: it expires by itself
                    attempt(redis.RedisError, self._release_lock, [lock_key], [owner])
                return shared
            remaining = wait_until - self.timer()
            if remaining <= 0:
                gave_up_waiting(wait, key)
                return None
            self.sleep(min(self.poll_interval, remaining))

    def _lock(self, lock_key: str, owner: str, lock_ms: int) -> bool:
        """Take the lock for ``owner``; also true when it is ``owner``'s already, as after
        a ``SET NX`` whose reply was lost and that redis-py sent again."""
        if self.redis.set(lock_key, owner, nx=True, px=lock_ms):
            return True
        return self.redis.get(lock_key) in (owner, owner.encode())

    def _load(self, token_key: str, wanted: Wanted) -> CachedToken | None:
        """The stored token, on ``wanted.clock``, if it is fresh and ``wanted``; else ``None``."""
        raw = self.redis.get(token_key)
        self._recovered()
        if raw is None:
            return None
        try:
            entry: dict[str, Any] = json.loads(raw)
            fields = entry["access_token"], [entry[name] for name in TIMES]
        except (ValueError, TypeError, KeyError):
            return None  # not ours, or from another version: the next fetch overwrites it
        return shared_token(*fields, wanted, self.wall_clock)

    def _save(self, token_key: str, cached: CachedToken, clock: Clock) -> None:
        """Store ``cached`` with wall-clock times; it expires in Redis when the token does."""
        ttl_ms = round((cached.expires_at - clock()) * 1000)
        if ttl_ms <= 0:
            return
        entry: dict[str, object] = {"access_token": cached.access_token}
        entry.update(stored_times(cached, clock, self.wall_clock))
        self.redis.set(token_key, json.dumps(entry), px=ttl_ms)


def _unbounded_timeouts(redis_client: redis.Redis) -> list[str]:
    """The socket timeouts that ``redis_client``'s connections lack.

    Read from a connection made (not connected) as its pool makes them, so
    redis-py's defaults and fallbacks, which differ between versions, count.
    """
    pool = redis_client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    return [name for name in _TIMEOUTS if getattr(connection, name) is None]


def _client_recipe(
    client: redis.Redis,
) -> tuple[type[redis.Redis], type[redis.ConnectionPool], dict[str, Any]]:
    """The client class, pool class and pool arguments of a new client connected like
    ``client``: its pool's settings that pickle, less what a new pool makes itself.

    :raises TypeError: naming what cannot be carried (never its value).
    """
    pool = client.connection_pool
    pool_class = type(pool)
    if pool_class not in _POOLS:
        raise _uncarriable(f"its connection pool, a {pool_class.__qualname__},")
    if getattr(pool, "cache", None) is not None:  # redis-py 5.1+
        raise _uncarriable("its client-side cache")
    options = {name: getattr(pool, name) for name in _POOLS[pool_class]}
    dropped = []
    for name, value in {
        "connection_class": pool.connection_class,
        **pool.connection_kwargs,
    }.items():
        if type(value) is object:
            continue  # redis-py's placeholder for a default: a pickled copy would not be it
        if _pickles(value):
            options[name] = value
        else:
            dropped.append(name)
    made = pool_class(**options).connection_kwargs  # per-pool objects, such as registries
    lost = [name for name in dropped if name not in made]
    if lost:
        raise _uncarriable(f"its {', '.join(lost)}")
    return type(client), pool_class, options


def _pickles(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # whatever a value's __reduce__ raises
        return False
    return True


def _uncarriable(what: str) -> TypeError:
    return TypeError(
        f"cannot pickle or copy a RedisTokenStore whose Redis client cannot be rebuilt: "
        f"{what} cannot be carried to another process; make the store there instead "
        "(in the process pool's initializer, say)"
    )


def _rebuilt(
    cls: type[RedisTokenStore],
    client_class: type[redis.Redis],
    pool_class: type[redis.ConnectionPool],
    options: dict[str, Any],
    settings: dict[str, Any],
) -> RedisTokenStore:
    """A store with ``settings`` on a new client and pool (how a pickled store comes back)."""
    client = client_class(connection_pool=pool_class(**options))
    client.auto_close_connection_pool = True  # the pool is its own: closed with it
    return cls(client, **settings)
