"""The token stores behind TokenCache, in one process: a real redis-server, a real SQLite file.

Each ``TokenCache`` here plays one process of a fleet: its own local tier and
clock, the shared store behind it. The tests that take ``shared`` hold for every
store (the contract); the others are Redis's own, then, at the end, SQLite's own. The
SQLite store's processes are in test_fleet.py, its place in the command in test_cli.py.
"""

from __future__ import annotations

import base64
import ctypes
import fcntl
import importlib
import json
import logging
import os
import pickle
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
import requests
from werkzeug import Request

from requests_piggy_auth import ClientCredentialsAuth, RetryPolicy, TokenCache, TokenStore
from requests_piggy_auth.cache import CachedToken
from requests_piggy_auth.events import Event, StoreFellBack, StoreRecovered
from requests_piggy_auth.oauth import Token
from requests_piggy_auth.stores import RedisTimeoutWarning, RedisTokenStore, SQLiteTokenStore
from requests_piggy_auth.testing import FakeClock, FakePiggy

from .conftest import API, CLIENT_ID, CLIENT_SECRET
from .redis_server import RedisServer, ReplyDropper
from .test_refresh_ahead import REFRESH_POINT, refreshed

#: ``(token_url, client_id, secret_fingerprint)``; ``Any`` until ``CacheKey`` has three parts.
KEY: Any = ("https://api.piggy.eu/oauth/token", "client-1", "5ec7e7f1" * 8)
OTHER_KEY: Any = ("https://api.piggy.eu/oauth/token", "client-2", "0ther" * 8)
TOKEN_KEY = f'piggy-auth:token:["https://api.piggy.eu/oauth/token","client-1","{KEY[2]}"]'
LOCK_KEY = f'piggy-auth:lock:["https://api.piggy.eu/oauth/token","client-1","{KEY[2]}"]'
EPOCH = 1_800_000_000.0


class Endpoint:
    """A token endpoint: numbered tokens, counted."""

    def __init__(self, expires_in: float = 3600) -> None:
        self.expires_in = expires_in
        self.issued: list[str] = []

    def __call__(self) -> Token:
        self.issued.append(f"token-CANARY-{len(self.issued):04d}")
        return Token(self.issued[-1], self.expires_in)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(EPOCH)


@pytest.fixture
def timer() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


@pytest.fixture
def store(client: redis.Redis, wall: FakeClock, timer: FakeClock) -> RedisTokenStore:
    return RedisTokenStore(client, poll_interval=0.001, wall_clock=wall, timer=timer)


class Shared(Protocol):
    """A store under test and a look at what it holds, from outside the store."""

    @property
    def store(self) -> TokenStore:
        """The store."""

    def token(self) -> str | None:
        """The stored token of ``KEY``, if any."""

    def locked(self) -> bool:
        """Whether a process holds the store's lock for ``KEY``."""

    def lock(self) -> None:
        """Take that lock as another process would, for the rest of the test."""

    def dump(self) -> bytes:
        """Everything the store holds, as bytes."""


class SharedRedis:
    def __init__(self, client: redis.Redis, store: RedisTokenStore) -> None:
        self.client, self.store = client, store

    def token(self) -> str | None:
        raw = self.client.get(TOKEN_KEY)
        return None if raw is None else json.loads(raw)["access_token"]

    def locked(self) -> bool:
        return bool(self.client.exists(LOCK_KEY))

    def lock(self) -> None:
        self.client.set(LOCK_KEY, "another-process", px=60_000)

    def dump(self) -> bytes:
        return b"".join(name + self.client.get(name) for name in self.client.scan_iter())


def flocked(lock_file: Path) -> int:
    """``lock_file`` open and ``flock``-ed, as another process's fetch holds a key's lock."""
    fd = os.open(lock_file, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def is_flocked(lock_file: Path) -> bool:
    """Whether some open of ``lock_file`` holds its ``flock``."""
    if not lock_file.exists():
        return False
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_locked(path: Path) -> bool:
    """Whether a connection holds the database's write lock."""
    with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as db:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        return False


class SharedSQLite:
    def __init__(self, store: SQLiteTokenStore) -> None:
        self.store = store
        self.holder: int | None = None

    def token(self) -> str | None:
        with closing(sqlite3.connect(self.store.path)) as db:
            tables = db.execute("SELECT name FROM sqlite_master WHERE name = 'tokens'")
            if not tables.fetchall():
                return None
            rows = db.execute("SELECT key, access_token FROM tokens").fetchall()
        assert [key for key, _ in rows] in ([], [json.dumps(KEY, separators=(",", ":"))])
        return rows[0][1] if rows else None

    def locked(self) -> bool:
        return is_flocked(self.store._lock_file(KEY))

    def lock(self) -> None:
        self.store.path.parent.mkdir(parents=True, exist_ok=True)
        self.holder = flocked(self.store._lock_file(KEY))

    def dump(self) -> bytes:
        return b"".join(path.read_bytes() for path in self.store.path.parent.iterdir())


@pytest.fixture(params=["redis", "sqlite"])
def shared(
    request: pytest.FixtureRequest, wall: FakeClock, timer: FakeClock, tmp_path: Path
) -> Iterator[Shared]:
    """Each store in turn, on a fresh Redis or a fresh file."""
    if request.param == "redis":
        client = request.getfixturevalue("redis_server").client()
        yield SharedRedis(
            client, RedisTokenStore(client, poll_interval=0.001, wall_clock=wall, timer=timer)
        )
        return
    sqlite = SharedSQLite(
        SQLiteTokenStore(tmp_path / "tokens.sqlite3", wall_clock=wall, timer=timer)
    )
    yield sqlite
    if sqlite.holder is not None:
        os.close(sqlite.holder)


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the library logs; no test may find a token in it."""
    with caplog.at_level(logging.DEBUG, "requests_piggy_auth"):
        yield caplog
    assert "CANARY" not in caplog.text


def process(store: TokenStore, clock: FakeClock | None = None, **options: Any) -> TokenCache:
    """A process's cache: its own local tier and clock, ``store`` behind it."""
    return TokenCache(store=store, clock=clock or FakeClock(), **options)


def test_a_second_process_uses_the_token_the_first_stored(
    shared: Shared, endpoint: Endpoint
) -> None:
    assert process(shared.store).get(KEY, endpoint) == "token-CANARY-0000"
    assert process(shared.store).get(KEY, endpoint) == "token-CANARY-0000"

    assert endpoint.issued == ["token-CANARY-0000"]
    assert shared.token() == "token-CANARY-0000"
    assert not shared.locked()


def test_redis_holds_the_token_with_wall_clock_times_until_it_expires(
    store: RedisTokenStore, client: redis.Redis, endpoint: Endpoint
) -> None:
    process(store).get(KEY, endpoint)

    assert client.keys() == [TOKEN_KEY.encode()]
    assert json.loads(client.get(TOKEN_KEY)) == {  # type: ignore[arg-type]
        "access_token": "token-CANARY-0000",
        "fetched_at": EPOCH,
        "stale_at": EPOCH + 3600 - 30,
        "expires_at": EPOCH + 3600,
    }
    assert 3_590_000 < client.pttl(TOKEN_KEY) <= 3_600_000  # it expires with the token


@pytest.fixture
def stranded(store: RedisTokenStore, redis_server: RedisServer, endpoint: Endpoint) -> TokenCache:
    """A process holding a token from Redis, which has just been killed."""
    cache = process(store)
    cache.get(KEY, endpoint)
    redis_server.kill()
    return cache


def test_a_hit_stays_local(stranded: TokenCache, endpoint: Endpoint, logs: Any) -> None:
    assert stranded.get(KEY, endpoint) == "token-CANARY-0000"
    assert logs.records == []  # Redis was not asked


def test_stored_times_carry_over_to_each_process_clock(
    shared: Shared, wall: FakeClock, endpoint: Endpoint
) -> None:
    store = shared.store
    first = process(store, FakeClock())
    first.get(KEY, endpoint)
    later_clock = FakeClock(123_456.0)  # monotonic clocks start anywhere
    later = process(store, later_clock, refresh_ahead=False)

    def advance(seconds: float) -> None:
        wall.advance(seconds)
        later_clock.advance(seconds)

    advance(1000)
    assert later.get(KEY, endpoint) == "token-CANARY-0000"
    advance(3600 - 30 - 1000 - 0.001)
    assert later.get(KEY, endpoint) == "token-CANARY-0000"
    advance(0.001)  # stale for everyone: locally and in Redis
    assert later.get(KEY, endpoint) == "token-CANARY-0001"
    assert endpoint.issued == ["token-CANARY-0000", "token-CANARY-0001"]


def test_namespaces_keep_fleets_apart(
    client: redis.Redis, wall: FakeClock, endpoint: Endpoint
) -> None:
    blue = RedisTokenStore(client, "blue", wall_clock=wall)
    green = RedisTokenStore(client, "green", wall_clock=wall)

    assert process(blue).get(KEY, endpoint) == "token-CANARY-0000"
    assert process(green).get(KEY, endpoint) == "token-CANARY-0001"
    assert len(client.keys("blue:*")) == len(client.keys("green:*")) == 1


def test_a_401_deletes_the_stored_token_only_while_it_is_the_one_rejected(
    shared: Shared, endpoint: Endpoint
) -> None:
    store = shared.store
    a, b, newcomer = process(store), process(store), process(store)
    a.get(KEY, endpoint)
    b.get(KEY, endpoint)

    assert b.evict(KEY, "token-CANARY-0000") is True
    assert b.get(KEY, endpoint) == "token-CANARY-0001"
    # a's 401 for the old token arrives late: the new token stays.
    assert a.evict(KEY, "token-CANARY-0000") is True
    assert a.get(KEY, endpoint) == "token-CANARY-0001"
    # A process that never held the token leaves Redis alone too.
    assert newcomer.evict(KEY, "token-CANARY-0001") is True
    assert endpoint.issued == ["token-CANARY-0000", "token-CANARY-0001"]
    assert shared.token() == "token-CANARY-0001"


def test_a_renewal_the_server_rejects_too_leaves_the_stored_token(
    shared: Shared, endpoint: Endpoint
) -> None:
    store = shared.store
    cache = process(store)
    first = cache.lease(KEY, endpoint)
    assert cache.reject(KEY, first) is True
    renewed = cache.lease(KEY, endpoint, after=first)

    assert cache.reject(KEY, renewed) is False  # never accepted, within min_evict_interval
    assert shared.token() == "token-CANARY-0001"
    assert process(store).get(KEY, endpoint) == "token-CANARY-0001"


def test_a_resend_never_gets_a_token_another_process_requested_before_the_revocation(
    shared: Shared, wall: FakeClock, endpoint: Endpoint
) -> None:
    store = shared.store
    a, b_clock = process(store), FakeClock()
    b = process(store, b_clock)
    old = a.lease(KEY, endpoint)
    assert b.get(KEY, endpoint) == old.access_token
    b_clock.advance(3600 - 30 - 1)  # b refreshes ahead and stores its new token
    assert b.get(KEY, endpoint) == old.access_token
    refreshed()
    assert endpoint.issued == ["token-CANARY-0000", "token-CANARY-0001"]
    wall.advance(1)  # every token is revoked, then a's request with the old one gets a 401

    assert a.reject(KEY, old) is True
    assert a.lease(KEY, endpoint, after=old).access_token == "token-CANARY-0002"


def test_a_late_401_for_a_shared_token_takes_the_renewal_another_process_made(
    shared: Shared, wall: FakeClock, endpoint: Endpoint
) -> None:
    store = shared.store
    a, b = process(store), process(store)
    old, olds = a.lease(KEY, endpoint), b.lease(KEY, endpoint)
    wall.advance(1)
    assert a.reject(KEY, old) is True
    renewed = a.lease(KEY, endpoint, after=old)
    wall.advance(1)  # b's request with the old token took longer

    assert b.reject(KEY, olds) is True
    assert b.lease(KEY, endpoint, after=olds).access_token == renewed.access_token
    assert endpoint.issued == ["token-CANARY-0000", "token-CANARY-0001"]


def test_the_lock_winner_uses_a_token_stored_just_before_it_got_the_lock(
    redis_server: RedisServer, wall: FakeClock, endpoint: Endpoint
) -> None:
    other_process = process(RedisTokenStore(redis_server.client(), wall_clock=wall))

    class Racing(redis.Redis):
        """Lets the other process store a token between our look and our lock."""

        def set(self, name: Any, *args: Any, **kwargs: Any) -> Any:
            if name == LOCK_KEY and not endpoint.issued:
                other_process.get(KEY, endpoint)
            return super().set(name, *args, **kwargs)

    racing = redis_server.client(Racing)
    assert process(RedisTokenStore(racing, wall_clock=wall)).get(KEY, endpoint) == (
        "token-CANARY-0000"
    )
    assert endpoint.issued == ["token-CANARY-0000"]
    assert not racing.exists(LOCK_KEY)


def test_a_failed_fetch_frees_the_lock_at_once_and_stores_nothing(
    shared: Shared, endpoint: Endpoint
) -> None:
    def failing() -> Token:
        assert shared.locked()
        raise RuntimeError("token endpoint down")

    with pytest.raises(RuntimeError, match="down"):
        process(shared.store).get(KEY, failing)
    assert not shared.locked()
    assert shared.token() is None
    assert process(shared.store).get(KEY, endpoint) == "token-CANARY-0000"


def test_a_process_that_waits_too_long_fetches_its_own_token(
    client: redis.Redis, wall: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    client.set(LOCK_KEY, "another-process", px=60_000)
    impatient = RedisTokenStore(client, wait_timeout=0, wall_clock=wall)

    assert process(impatient).get(KEY, endpoint) == "token-CANARY-0000"
    assert client.get(LOCK_KEY) == b"another-process"  # only its owner releases a lock
    assert logs.messages == [
        "waited 0.0 s for another process's token request for client 'client-1'; making one here"
    ]


def test_a_token_that_expired_during_its_request_is_not_stored(shared: Shared) -> None:
    clock = FakeClock()

    def slow() -> Token:
        clock.advance(20)
        return Token("token-CANARY-slow", 10)

    process(shared.store, clock).get(KEY, slow)
    assert shared.token() is None
    assert not shared.locked()


@pytest.mark.parametrize(
    "entry",
    [
        "not json",
        json.dumps(["a", "list"]),
        json.dumps({"access_token": "token-CANARY-old"}),
        json.dumps(
            {"access_token": "bad token", "fetched_at": 0, "stale_at": 9e9, "expires_at": 9e9}
        ),
        json.dumps({"access_token": None, "fetched_at": 0, "stale_at": 9e9, "expires_at": 9e9}),
        json.dumps({"access_token": "t", "fetched_at": "x", "stale_at": 9e9, "expires_at": 9e9}),
    ],
)
def test_an_entry_that_is_not_a_usable_token_is_replaced(
    store: RedisTokenStore, client: redis.Redis, endpoint: Endpoint, entry: str
) -> None:
    client.set(TOKEN_KEY, entry)

    assert process(store).get(KEY, endpoint) == "token-CANARY-0000"
    assert json.loads(client.get(TOKEN_KEY))["access_token"] == "token-CANARY-0000"  # type: ignore[arg-type]


def test_a_token_redis_will_not_store_is_told_once_the_lock_is_free(
    redis_server: RedisServer, client: redis.Redis, endpoint: Endpoint, logs: Any
) -> None:
    """Logging and listeners are the user's code: never while this process holds the
    fleet's lock for the key."""
    # A user that may take the lock but not write the token (as a read-only replica).
    client.execute_command(  # type: ignore[no-untyped-call]
        *("ACL", "SETUSER", "app", "on", ">pw", "~piggy-auth:lock:*", "~piggy-auth:rejected:*"),
        *("%R~piggy-auth:token:*", "+@all"),
    )
    cache = process(RedisTokenStore(redis_server.client(username="app", password="pw")))
    locks_when_told: list[list[Any]] = []

    def listener(event: Event) -> None:
        if isinstance(event, StoreFellBack):
            locks_when_told.append(client.keys("piggy-auth:lock:*"))

    cache.add_listener(listener)

    assert cache.get(KEY, endpoint) == "token-CANARY-0000"

    assert locks_when_told == [[]]
    assert [record.getMessage()[:44] for record in logs.records] == [
        "the token store's Redis failed (NoPermission"
    ]


def test_a_lost_redis_is_left_alone_for_retry_interval_with_one_warning(
    store: RedisTokenStore,
    redis_server: RedisServer,
    timer: FakeClock,
    endpoint: Endpoint,
    logs: Any,
) -> None:
    heard: list[Event] = []
    listening = process(store)  # every cache on the store hears its news, while it lives
    listening.add_listener(heard.append)
    redis_server.kill()
    assert process(store).get(KEY, endpoint) == "token-CANARY-0000"
    timer.advance(30)
    assert process(store).get(KEY, endpoint) == "token-CANARY-0001"  # tried again: still down
    redis_server.start()
    # Redis is back, but this store leaves it alone until retry_interval has passed.
    assert process(store).get(KEY, endpoint) == "token-CANARY-0002"
    timer.advance(30)
    assert process(store).get(KEY, endpoint) == "token-CANARY-0003"
    assert process(store).get(KEY, endpoint) == "token-CANARY-0003"  # shared again

    [down, back] = logs.records
    assert down.levelno == logging.WARNING
    assert down.getMessage().startswith("the token store's Redis failed (ConnectionError: ")
    assert down.getMessage().endswith(
        "tokens are fetched per process until it is back, tried again every 30 s"
    )
    assert (back.levelno, back.getMessage()) == (
        logging.INFO,
        "the token store's Redis is back; tokens are shared again",
    )
    name = "RedisTokenStore(namespace='piggy-auth')"
    assert heard == [StoreFellBack(name, "ConnectionError"), StoreRecovered(name)]


def test_evicting_while_redis_is_lost_still_evicts(
    stranded: TokenCache, endpoint: Endpoint, logs: Any
) -> None:
    assert stranded.evict(KEY, "token-CANARY-0000") is True
    assert stranded.get(KEY, endpoint) == "token-CANARY-0001"
    assert len(logs.records) == 1


def test_a_renewal_leaves_a_failed_redis_alone_until_retry_interval_has_passed(
    store: RedisTokenStore, redis_server: RedisServer, client: redis.Redis, endpoint: Endpoint
) -> None:
    cache = process(store)
    redis_server.kill()
    assert cache.get(KEY, endpoint) == "token-CANARY-0000"
    redis_server.start()
    times = {"fetched_at": EPOCH, "stale_at": EPOCH + 3570, "expires_at": EPOCH + 3600}
    client.set(TOKEN_KEY, json.dumps({"access_token": "token-CANARY-0000", **times}))

    assert cache.evict(KEY, "token-CANARY-0000") is True
    assert cache.get(KEY, endpoint) == "token-CANARY-0001"
    assert client.exists(TOKEN_KEY)  # Redis was not asked to delete it


def test_a_slow_redis_times_out_and_the_call_goes_on(
    redis_server: RedisServer, client: redis.Redis, wall: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    impatient = redis_server.client(socket_timeout=0.1, retry=None)
    client.client_pause(60_000)  # every client's commands now hang; the server stops anyway
    assert process(RedisTokenStore(impatient, wall_clock=wall)).get(KEY, endpoint) == (
        "token-CANARY-0000"
    )
    assert "TimeoutError" in logs.messages[0]


def test_a_redis_error_storing_the_token_frees_the_lock_and_costs_no_second_request(
    redis_server: RedisServer, client: redis.Redis, wall: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    # This user may take locks but only read tokens: storing the token fails.
    client.acl_setuser(
        "reader",
        enabled=True,
        passwords=["+pw"],
        keys=["piggy-auth:lock:*", "%R~piggy-auth:token:*"],
        commands=["+@all"],
    )
    reader = redis_server.client(username="reader", password="pw")
    cache = process(RedisTokenStore(reader, wall_clock=wall))

    assert cache.get(KEY, endpoint) == "token-CANARY-0000"
    assert endpoint.issued == ["token-CANARY-0000"]
    assert client.keys() == []  # its owner freed the lock: no process waits for it to expire
    [failed] = logs.messages
    assert "NoPermissionError" in failed


def test_a_redis_that_stalls_while_the_token_is_stored_still_gets_the_lock_freed(
    redis_server: RedisServer, client: redis.Redis, wall: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    assert redis_server.process is not None
    pid = redis_server.process.pid

    class Resuming(RedisTokenStore):
        """Lets Redis go on once the store has given up storing the token."""

        def _save(self, *args: Any) -> None:
            try:
                super()._save(*args)
            finally:
                os.kill(pid, signal.SIGCONT)

    store = Resuming(redis_server.client(socket_timeout=0.2, retry=None), wall_clock=wall)

    def stalling() -> Token:
        os.kill(pid, signal.SIGSTOP)  # Redis stops answering while the token is requested
        return endpoint()

    try:
        assert process(store).get(KEY, stalling) == "token-CANARY-0000"
    finally:
        os.kill(pid, signal.SIGCONT)

    assert not client.exists(LOCK_KEY)
    [timed_out] = logs.messages
    assert "TimeoutError" in timed_out


def test_a_lock_whose_reply_was_lost_is_known_to_be_its_own(
    redis_server: RedisServer, wall: FakeClock, timer: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    set_lock = (b"\r\nSET\r\n", LOCK_KEY.encode(), b"\r\nNX\r\n")
    with ReplyDropper(redis_server.port, *set_lock) as dropper:
        proxied = redis_server.client(port=dropper.port)  # it resends a command once
        store = RedisTokenStore(
            proxied, poll_interval=1, wall_clock=wall, timer=timer, sleep=timer.sleep
        )
        token = process(store).get(KEY, endpoint)
        proxied.close()

    assert dropper.withheld == [b"+OK\r\n"]  # the first SET NX took the lock
    assert token == "token-CANARY-0000"
    assert timer.sleeps == []  # it did not wait for its own lock
    assert logs.messages == []
    assert redis_server.client().keys() == [TOKEN_KEY.encode()]


def fetching(endpoint: Endpoint, clock: FakeClock) -> Callable[[], CachedToken]:
    """``endpoint`` as a store's ``fetch``: its next token, timed on ``clock``."""

    def fetch() -> CachedToken:
        token = endpoint()
        return CachedToken(token.access_token, clock(), clock() + 3570, clock() + 3600)

    return fetch


def test_a_call_waits_for_another_process_no_longer_than_its_deadline(
    client: redis.Redis, wall: FakeClock, timer: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    client.set(LOCK_KEY, "another-process", px=60_000)
    store = RedisTokenStore(
        client, wait_timeout=60, poll_interval=1, wall_clock=wall, timer=timer, sleep=timer.sleep
    )
    clock = FakeClock(50_000.0)  # the cache's clock: the deadline is on it

    cached = store.get(KEY, fetching(endpoint, clock), clock, deadline=clock() + 3.5)

    assert cached.access_token == "token-CANARY-0000"
    assert timer.sleeps == [1.0, 1.0, 1.0, 0.5]
    assert client.get(LOCK_KEY) == b"another-process"
    assert logs.messages == [
        "waited 3.5 s for another process's token request for client 'client-1'; making one here"
    ]


def test_a_call_whose_deadline_has_passed_fetches_without_asking_the_store(
    shared: Shared, timer: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    shared.lock()
    clock = FakeClock()

    cached = shared.store.get(KEY, fetching(endpoint, clock), clock, deadline=clock())

    assert cached.access_token == "token-CANARY-0000"
    assert timer.sleeps == []
    assert shared.token() is None  # nothing read, waited for or stored
    assert logs.records == []


def test_a_stored_token_not_fetched_after_fresher_than_counts_as_missing(
    shared: Shared, wall: FakeClock, endpoint: Endpoint
) -> None:
    store = shared.store
    process(store).get(KEY, endpoint)  # stored at EPOCH
    clock = FakeClock(50_000.0)  # another process's clock, which reads EPOCH as 50_000
    wall.advance(5)
    clock.advance(5)
    unauthorized_at = clock()  # a 401 came back for a token that may be the stored one

    after_401 = store.get(KEY, fetching(endpoint, clock), clock, fresher_than=unauthorized_at)
    clock.advance(1)
    later = store.get(KEY, fetching(endpoint, clock), clock, fresher_than=unauthorized_at - 1)

    assert after_401.access_token == later.access_token == "token-CANARY-0001"
    assert endpoint.issued == ["token-CANARY-0000", "token-CANARY-0001"]
    assert shared.token() == "token-CANARY-0001"


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({"socket_timeout": None}, "socket_timeout"),
        (
            {"socket_timeout": None, "socket_connect_timeout": None},
            "socket_timeout or socket_connect_timeout",
        ),
    ],
)
def test_a_client_that_can_wait_for_ever_is_warned_about_when_the_store_is_made(
    redis_server: RedisServer, options: dict[str, Any], missing: str
) -> None:
    hanging = redis_server.client(**options)

    with pytest.warns(RedisTimeoutWarning) as warned:
        RedisTokenStore(hanging)

    [warning] = warned
    assert warning.filename == __file__  # it points at the code that made the store
    assert str(warning.message) == (
        f"this Redis client has no {missing}, so a Redis that stops answering blocks "
        "API calls for ever; give it timeouts: redis.Redis(..., socket_timeout=0.5, "
        "socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1))"
    )


def test_a_client_whose_connect_timeout_is_its_socket_timeout_is_not_warned_about(
    redis_server: RedisServer,
) -> None:
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        RedisTokenStore(redis_server.client(socket_connect_timeout=None))  # redis-py: 2.0 s
    assert warned == []


def test_nothing_in_the_store_gives_the_client_secret_away(
    piggy: FakePiggy, shared: Shared
) -> None:
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache(store=shared.store)
    )
    assert requests.get(piggy.url + API, auth=auth, timeout=10).status_code == 200

    stored = shared.dump()
    assert piggy.tokens()[0].encode() in stored
    secret = CLIENT_SECRET.encode()
    assert b"access_token" in stored
    for encoded in (secret, secret.hex().encode(), base64.b64encode(secret)):
        assert encoded not in stored


def test_a_client_that_decodes_responses_works_too(
    redis_server: RedisServer, wall: FakeClock, endpoint: Endpoint
) -> None:
    store = RedisTokenStore(redis_server.client(decode_responses=True), wall_clock=wall)
    process(store).get(KEY, endpoint)
    assert process(store).get(KEY, endpoint) == "token-CANARY-0000"


@pytest.mark.parametrize(
    "options",
    [
        {"namespace": ""},
        {"lock_timeout": 0},
        {"poll_interval": 0},
        {"wait_timeout": -1},
        {"retry_interval": -1},
    ],
)
def test_bad_settings_are_refused(client: redis.Redis, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RedisTokenStore(client, **options)


def test_repr_names_the_namespace_only(client: redis.Redis) -> None:
    assert repr(RedisTokenStore(client, "fleet-a")) == "RedisTokenStore(namespace='fleet-a')"


def test_the_package_and_its_stores_import_without_redis_and_redis_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = "import sys, requests_piggy_auth.stores; assert 'redis' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "requests_piggy_auth._redis_store")
    stores = importlib.import_module("requests_piggy_auth.stores")
    with pytest.raises(ImportError, match=r"pip install 'requests-piggy-auth\[redis\]'"):
        stores.RedisTokenStore  # noqa: B018
    with pytest.raises(AttributeError, match="MemcachedTokenStore"):
        stores.MemcachedTokenStore  # noqa: B018


def test_a_refresh_ahead_replaces_the_stored_token_rather_than_reading_it_back(
    shared: Shared, endpoint: Endpoint
) -> None:
    clock = FakeClock()
    cache = process(shared.store, clock, jitter=lambda: 0.0)
    cache.get(KEY, endpoint)
    clock.advance(REFRESH_POINT)

    assert cache.get(KEY, endpoint) == "token-CANARY-0000"
    refreshed()
    assert cache.get(KEY, endpoint) == "token-CANARY-0001"
    assert shared.token() == "token-CANARY-0001"
    assert not shared.locked()


def test_two_processes_refreshing_ahead_at_once_make_one_token_request(
    redis_server: RedisServer, store: RedisTokenStore, wall: FakeClock, endpoint: Endpoint
) -> None:
    waiting = threading.Event()

    class Watched(redis.Redis):
        """Tells when its process found the key locked by the other one."""

        def set(self, name: Any, *args: Any, **kwargs: Any) -> Any:
            locked = super().set(name, *args, **kwargs)
            if name == LOCK_KEY and not locked:
                waiting.set()
            return locked

    gate = threading.Event()
    arrived = threading.Event()

    def held() -> Token:
        arrived.set()
        assert gate.wait(30)
        return endpoint()

    watched = RedisTokenStore(redis_server.client(Watched), poll_interval=0.001, wall_clock=wall)
    a_clock, b_clock = FakeClock(), FakeClock()
    a = process(store, a_clock, jitter=lambda: 0.0)
    b = process(watched, b_clock, jitter=lambda: 0.0)
    assert a.get(KEY, endpoint) == b.get(KEY, endpoint) == "token-CANARY-0000"
    a_clock.advance(REFRESH_POINT)
    b_clock.advance(REFRESH_POINT)

    try:
        assert a.get(KEY, held) == "token-CANARY-0000"
        assert arrived.wait(30)  # a holds the lock and its token request is under way
        assert b.get(KEY, held) == "token-CANARY-0000"
        assert waiting.wait(30)  # b saw the old token, then the lock: it waits for a's token
    finally:
        gate.set()
    refreshed()

    assert a.get(KEY, endpoint) == b.get(KEY, endpoint) == "token-CANARY-0001"
    assert endpoint.issued == ["token-CANARY-0000", "token-CANARY-0001"]


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_lock_held_past_half_the_deadline_leaves_the_call_time_to_fetch_its_own(
    piggy: FakePiggy, redis_server: RedisServer, tmp_path: Path, logs: Any, kind: str
) -> None:
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=piggy.url,
        timeout=(0.2, 1),
        retry=RetryPolicy(total=0, budget=1),  # a deadline of 1.2 s
    )
    store: RedisTokenStore | SQLiteTokenStore
    if kind == "redis":
        store = RedisTokenStore(redis_server.client(), poll_interval=0.01)
        redis_server.client().set(store._keys(auth._key)[1], "a process holding it", px=60_000)
    else:
        store = SQLiteTokenStore(tmp_path / "tokens.sqlite3")
        holder = flocked(store._lock_file(auth._key))
    auth.cache = TokenCache(store=store)

    try:
        assert requests.get(piggy.url + API, auth=auth, timeout=5).status_code == 200
    finally:
        if kind == "sqlite":
            os.close(holder)
    assert piggy.stats().token_requests == 1
    [waited] = [r.getMessage() for r in logs.records if r.levelno >= logging.WARNING]
    assert waited.endswith(f"for client {CLIENT_ID!r}; making one here")
    assert not store.health.failing


@pytest.mark.parametrize("forgets", ["least-recently-used", "clear"])
def test_a_401_after_the_key_was_forgotten_still_renews_past_the_stored_token(
    piggy: FakePiggy, shared: Shared, forgets: str
) -> None:
    """The key's record goes while a request is at the server: its 401 still tells the store."""
    piggy.add_client("other-client", "other-secret")
    cache = TokenCache(maxsize=1, store=shared.store)
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    other = ClientCredentialsAuth("other-client", "other-secret", base_url=piggy.url, cache=cache)
    assert requests.get(piggy.url + API, auth=auth, timeout=5).status_code == 200
    piggy.revoke_all()
    forgetting: dict[str, Callable[[], object]] = {
        "least-recently-used": other.token,
        "clear": cache.clear,
    }
    forget = forgetting[forgets]

    def meanwhile(request: Request) -> None:
        forget()

    piggy.fault_resources(meanwhile, times=1)
    response = requests.get(piggy.url + API, auth=auth, timeout=10)

    assert (response.status_code, [r.status_code for r in response.history]) == (200, [401])


# -- SQLiteTokenStore's own promises: a private file, and a bad one never fails a call ------

NAME = json.dumps(KEY, separators=(",", ":"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "requests-piggy-auth" / "tokens.sqlite3"


@pytest.fixture
def sqlite_store(path: Path, wall: FakeClock, timer: FakeClock) -> SQLiteTokenStore:
    return SQLiteTokenStore(path, wall_clock=wall, timer=timer)


def stored(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT * FROM tokens").fetchall()


def test_the_file_is_0600_in_a_directory_made_0700(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint
) -> None:
    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0000"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stored(path) == [
        (NAME, "token-CANARY-0000", EPOCH, EPOCH + 3600 - 30, EPOCH + 3600)
    ]  # the key holds the secret's fingerprint only


def test_a_file_others_could_read_is_made_0600_before_a_token_goes_in(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint
) -> None:
    path.parent.mkdir(parents=True, mode=0o700)
    path.touch(mode=0o644)  # an earlier tool's, a copy, a umask
    path.chmod(0o644)

    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0000"

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(stored(path)) == 1


@pytest.mark.parametrize("which", ["database", "lock file"])
def test_a_path_that_is_a_fifo_blocks_nothing_and_calls_go_on(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, logs: Any, which: str
) -> None:
    """Opening a FIFO would wait for a writer: it is no database nor lock, and calls go on."""
    fifo = path if which == "database" else sqlite_store._lock_file(KEY)
    path.parent.mkdir(parents=True, mode=0o700)
    os.mkfifo(fifo, 0o600)

    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(process(sqlite_store).get, KEY, endpoint)
        assert got.result(timeout=10) == "token-CANARY-0000"
    [refused] = logs.messages
    assert f"(OSError: {fifo} is not a regular file)" in refused


def test_a_file_another_user_owns_is_refused_and_calls_go_on(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, logs: Any
) -> None:
    path.parent.mkdir(parents=True, mode=0o700)
    path.touch()
    path.chmod(0o644)
    if os.getuid() != 0:
        pytest.skip("only root can give a file away")
    os.chown(path, 65534, 65534)  # nobody's

    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0000"
    [refused] = logs.messages
    assert f"(PermissionError: {path} is another user's)" in refused
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not ours to change


@pytest.mark.parametrize("other", ["can-write", "owns"])
def test_a_directory_another_user_can_write_to_is_refused_and_calls_go_on(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, logs: Any, other: str
) -> None:
    path.parent.mkdir(parents=True)
    if other == "can-write":
        path.parent.chmod(0o777)
    elif os.getuid() == 0:
        os.chown(path.parent, 65534, 65534)  # nobody's
    else:
        pytest.skip("only root can give a directory away")

    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0000"
    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0001"  # left alone meanwhile
    assert not path.exists()
    [refused] = logs.messages
    assert refused == (
        f"the token store's database failed (PermissionError: {path.parent} is not private: "
        "another user owns it or can write to it); tokens are fetched per process until it "
        "is back, tried again every 30 s"
    )


def test_a_corrupt_file_is_survived_with_one_warning_and_tried_again_later(
    sqlite_store: SQLiteTokenStore, path: Path, timer: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    path.parent.mkdir(parents=True, mode=0o700)
    path.write_bytes(b"not a database, CANARY" * 100)

    tokens = [process(sqlite_store).get(KEY, endpoint) for _ in range(3)]
    timer.advance(30)
    tokens.append(process(sqlite_store).get(KEY, endpoint))  # tried again: still corrupt
    path.unlink()  # the user deletes it
    timer.advance(30)
    tokens += [process(sqlite_store).get(KEY, endpoint) for _ in range(2)]

    assert tokens == [f"token-CANARY-000{n}" for n in range(5)] + ["token-CANARY-0004"]
    [corrupt, back] = logs.records
    assert corrupt.levelno == logging.WARNING
    assert corrupt.getMessage().startswith(
        "the token store's database failed (DatabaseError: file is not a database); "
    )
    assert back.getMessage() == "the token store's database is back; tokens are shared again"


@contextmanager
def without_root_override() -> Iterator[None]:
    """Permissions apply even to root, in this thread and the threads it starts."""
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inherit")]

    header, data = Header(0x20080522, 0), (Data * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0
    effective = data[0].effective
    data[0].effective &= ~0b110  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    assert libc.capset(ctypes.byref(header), data) == 0
    try:
        yield
    finally:
        data[0].effective = effective
        assert libc.capset(ctypes.byref(header), data) == 0


@pytest.mark.parametrize("with_file", [False, True], ids=["no-file", "a-file"])
def test_a_read_only_directory_is_survived_with_every_call_succeeding(
    sqlite_store: SQLiteTokenStore,
    path: Path,
    wall: FakeClock,
    endpoint: Endpoint,
    logs: Any,
    with_file: bool,
) -> None:
    if with_file:  # a token another process stored, now stale: a new one cannot be stored
        process(SQLiteTokenStore(path, wall_clock=wall)).get(KEY, endpoint)
        wall.advance(3600)
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.parent.chmod(0o500)
    try:
        with without_root_override():
            tokens = [process(sqlite_store).get(KEY, endpoint) for _ in range(3)]
    finally:
        path.parent.chmod(0o700)

    assert tokens == endpoint.issued[-3:]
    assert len(set(tokens)) == 3
    [read_only] = logs.messages
    assert read_only.startswith("the token store's database failed (")


@pytest.mark.parametrize("mode", ["EXCLUSIVE", "IMMEDIATE"], ids=["readers-too", "writers"])
def test_a_file_another_program_keeps_locked_is_survived_with_one_warning(
    path: Path, wall: FakeClock, timer: FakeClock, endpoint: Endpoint, logs: Any, mode: str
) -> None:
    """Its long transaction, locking out every other connection (``EXCLUSIVE``) or
    writers only (``IMMEDIATE``: the look works, the client's lock is taken, the write
    transaction under it is not)."""
    store = SQLiteTokenStore(path, wait_timeout=0.01, wall_clock=wall, timer=timer)
    process(store).get(OTHER_KEY, endpoint)  # makes the file
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute(f"BEGIN {mode}")

        tokens = [process(store).get(KEY, endpoint) for _ in range(2)]
        assert not is_flocked(store._lock_file(KEY))  # freed before the warning

    assert tokens == ["token-CANARY-0001", "token-CANARY-0002"]
    [locked] = logs.messages
    assert locked.startswith(
        "the token store's database failed (OperationalError: database is locked); "
    )


def test_a_read_only_file_is_survived_with_one_warning(
    sqlite_store: SQLiteTokenStore, path: Path, wall: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    process(sqlite_store).get(KEY, endpoint)
    wall.advance(3600)  # stale: a new one is wanted, and cannot be stored
    path.chmod(0o400)
    with without_root_override():
        tokens = [process(sqlite_store).get(KEY, endpoint) for _ in range(2)]

    assert tokens == ["token-CANARY-0001", "token-CANARY-0002"]
    [read_only] = logs.messages
    assert read_only.startswith(
        "the token store's database failed (OperationalError: attempt to write a readonly "
        "database); "
    )


def test_a_token_that_cannot_be_stored_is_used_and_the_lock_freed(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, logs: Any
) -> None:
    process(sqlite_store).get(KEY, endpoint)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM tokens")
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON tokens BEGIN SELECT RAISE(ABORT, 'no'); END"
        )

    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0001"
    assert stored(path) == []
    with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")  # free
    [failed] = logs.messages
    assert "IntegrityError: no" in failed


@pytest.mark.parametrize(
    "row",
    [
        (NAME, "bad token", 0, 9e12, 9e12),
        (NAME, None, 0, 9e12, 9e12),
        (NAME, "token-CANARY-old", "x", 9e12, 9e12),
        (NAME, "token-CANARY-old", 0, None, 9e12),
    ],
)
def test_a_row_that_is_not_a_usable_token_is_replaced(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, row: tuple[Any, ...]
) -> None:
    process(sqlite_store).get(OTHER_KEY, endpoint)  # makes the file
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM tokens")
        db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?)", row)

    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0001"
    assert [entry[1] for entry in stored(path)] == ["token-CANARY-0001"]


def test_expired_tokens_and_rejections_are_forgotten_when_a_token_is_stored(
    sqlite_store: SQLiteTokenStore, path: Path, wall: FakeClock, endpoint: Endpoint
) -> None:
    cache = process(sqlite_store)
    cache.get(KEY, endpoint)
    cache.evict(KEY, "token-CANARY-0000")
    cache.get(KEY, endpoint)
    wall.advance(86_400)
    process(sqlite_store).get(OTHER_KEY, endpoint)

    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT key, access_token FROM tokens").fetchall() == [
            (json.dumps(OTHER_KEY, separators=(",", ":")), "token-CANARY-0002")
        ]
        assert db.execute("SELECT * FROM rejections").fetchall() == []


def test_a_process_killed_holding_the_lock_leaves_it_free(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, logs: Any
) -> None:
    process(sqlite_store).get(OTHER_KEY, endpoint)  # makes the file
    holding = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o600);"
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"
    )
    untraced = {k: v for k, v in os.environ.items() if k != "COVERAGE_PROCESS_CONFIG"}
    child = subprocess.Popen(  # killed: it would leave a broken coverage file behind
        [sys.executable, "-c", holding, str(sqlite_store._lock_file(KEY))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=untraced,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "locked\n"
    patient = SQLiteTokenStore(path, wait_timeout=0.01)
    assert process(patient).get(KEY, endpoint) == "token-CANARY-0001"  # waited, gave up
    child.kill()
    assert child.wait() == -9
    assert child.stdout.read() == ""
    child.stdout.close()
    assert child.stdin is not None
    child.stdin.close()

    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0002"  # took the lock at once
    assert process(sqlite_store).get(KEY, endpoint) == "token-CANARY-0002"
    assert logs.messages == [  # the patient store's: it gave up waiting
        "waited 0.0 s for another process's token request for client 'client-1'; making one here"
    ]


def test_a_slow_token_request_for_one_client_never_delays_another_on_the_file(
    piggy: FakePiggy, path: Path, logs: Any
) -> None:
    piggy.add_client("other-client", "other-secret")
    cache = TokenCache(store=SQLiteTokenStore(path))
    slow = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    other = ClientCredentialsAuth("other-client", "other-secret", base_url=piggy.url, cache=cache)
    hold = piggy.hold(CLIENT_ID)

    with ThreadPoolExecutor(2) as pool:
        try:
            held = pool.submit(slow.token)
            assert hold.arrived.wait(30)  # client 1's token request is at the server, held
            other_token = pool.submit(other.token).result(timeout=30)
            assert not held.done()
            assert not write_locked(path)  # no transaction spans the held request
            assert [entry[1] for entry in stored(path)] == [other_token]
        finally:
            hold.release()
        slow_token = held.result(timeout=30)

    assert sorted(entry[1] for entry in stored(path)) == sorted([slow_token, other_token])
    assert piggy.stats().token_requests == 2
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []


def test_two_caches_on_one_file_make_one_token_request_while_one_is_held(
    piggy: FakePiggy, path: Path, logs: Any
) -> None:
    """Each cache on a store of its own, as two processes would be; the second polls the
    key's lock while the first's token request is held."""
    polling = threading.Event()

    def poll(seconds: float) -> None:
        polling.set()
        time.sleep(seconds)  # the store's pause between tries of the lock

    first = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache(store=SQLiteTokenStore(path))
    )
    second_store = SQLiteTokenStore(path, poll_interval=0.01, sleep=poll)
    second = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache(store=second_store)
    )
    hold = piggy.hold(CLIENT_ID)

    with ThreadPoolExecutor(2) as pool:
        try:
            a = pool.submit(first.token)
            assert hold.arrived.wait(30)  # the first holds the key's lock, its request held
            b = pool.submit(second.token)
            assert polling.wait(30)  # the second found the lock taken: it waits for the token
            assert is_flocked(second_store._lock_file(first._key))
            assert not write_locked(path)
        finally:
            hold.release()
        assert a.result(timeout=30) == b.result(timeout=30)

    assert piggy.stats().token_requests == 1
    assert [r for r in logs.records if r.levelno >= logging.WARNING] == []


def test_a_lock_not_free_by_the_end_of_the_wait_is_no_store_failure(
    path: Path, wall: FakeClock, timer: FakeClock, endpoint: Endpoint, logs: Any
) -> None:
    store = SQLiteTokenStore(
        path, wait_timeout=60, poll_interval=1, wall_clock=wall, timer=timer, sleep=timer.sleep
    )
    assert process(store).get(OTHER_KEY, endpoint) == "token-CANARY-0000"  # makes the file
    holder = flocked(store._lock_file(KEY))  # another process's fetch of KEY, under way
    clock = FakeClock(50_000.0)  # the cache's clock: the deadline is on it
    try:
        cached = store.get(KEY, fetching(endpoint, clock), clock, deadline=clock() + 3.5)

        assert cached.access_token == "token-CANARY-0001"
        assert timer.sleeps == [1.0, 1.0, 1.0, 0.5]
        assert logs.messages == [
            "waited 3.5 s for another process's token request for client 'client-1'; "
            "making one here"
        ]
        assert not store.health.failing
        # Not left alone for retry_interval: the next call reads the file at once.
        assert process(store).get(OTHER_KEY, endpoint) == "token-CANARY-0000"
        assert is_flocked(store._lock_file(KEY))  # only its owner frees a lock
    finally:
        os.close(holder)
    assert process(store).get(KEY, endpoint) == "token-CANARY-0002"  # the lock is free
    assert process(store).get(KEY, endpoint) == "token-CANARY-0002"
    assert len(logs.records) == 1


def test_lock_files_are_0600_next_to_the_database_one_per_client(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint
) -> None:
    process(sqlite_store).get(KEY, endpoint)
    process(sqlite_store).get(OTHER_KEY, endpoint)

    lock_files = sorted(path.parent.glob("*.lock"))
    assert lock_files == sorted(sqlite_store._lock_file(key) for key in (KEY, OTHER_KEY))
    assert {stat.S_IMODE(lock_file.stat().st_mode) for lock_file in lock_files} == {0o600}
    for lock_file in lock_files:
        assert lock_file.read_bytes() == b""  # no key, no secret, no token


def test_a_file_system_without_flock_is_survived_with_one_warning(
    sqlite_store: SQLiteTokenStore,
    path: Path,
    endpoint: Endpoint,
    logs: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(37, "No locks available")

    process(sqlite_store).get(OTHER_KEY, endpoint)  # makes the file
    monkeypatch.setattr(fcntl, "flock", no_locks)
    open_files = len(os.listdir("/proc/self/fd"))

    tokens = [process(sqlite_store).get(KEY, endpoint) for _ in range(2)]

    assert tokens == ["token-CANARY-0001", "token-CANARY-0002"]
    assert len(os.listdir("/proc/self/fd")) == open_files  # the lock file was closed
    [failed] = logs.messages
    assert "(OSError: [Errno 37] No locks available)" in failed


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_child_forked_during_a_fetch_keeps_no_copy_of_the_lock(
    sqlite_store: SQLiteTokenStore, endpoint: Endpoint
) -> None:
    """An ``flock`` is the open file's: a child's copy of the file would hold the lock after
    the parent freed it, for as long as the child lives."""
    gate, arrived = threading.Event(), threading.Event()

    def held() -> Token:
        arrived.set()
        assert gate.wait(30)
        return endpoint()

    told, tell = os.pipe()
    started, start = os.pipe()
    with ThreadPoolExecutor(1) as pool:
        try:
            fetched = pool.submit(process(sqlite_store).get, KEY, held)
            assert arrived.wait(30)  # the lock is held, the token request under way
            child = os.fork()
            if child == 0:  # the child, its fork handlers run, lives on until told to exit
                os.write(start, b"x")
                os.read(told, 1)
                os._exit(0)
        finally:
            gate.set()
        assert fetched.result(timeout=30) == "token-CANARY-0000"
    try:
        assert os.read(started, 1) == b"x"
        assert not is_flocked(sqlite_store._lock_file(KEY))
    finally:
        os.write(tell, b"x")
        for fd in (told, tell, started, start):
            os.close(fd)
        assert os.waitpid(child, 0)[1] == 0


def test_the_default_path_is_in_the_users_cache_directory_unless_the_variable_names_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PIGGY_AUTH_TOKEN_STORE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/is/ignored")
    assert SQLiteTokenStore().path == tmp_path / ".cache/requests-piggy-auth/tokens.sqlite3"
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert SQLiteTokenStore().path == Path("/xdg/requests-piggy-auth/tokens.sqlite3")
    monkeypatch.setenv("PIGGY_AUTH_TOKEN_STORE", " ~/tokens.db\n")
    assert SQLiteTokenStore().path == tmp_path / "tokens.db"


def test_it_pickles_with_its_settings_and_fresh_from_failures(
    sqlite_store: SQLiteTokenStore, path: Path, endpoint: Endpoint, logs: Any
) -> None:
    path.parent.mkdir(parents=True)
    path.parent.chmod(0o777)
    process(sqlite_store).get(KEY, endpoint)  # fails: refused
    path.parent.chmod(0o700)

    copy = pickle.loads(pickle.dumps(sqlite_store))

    assert (copy.path, copy.wait_timeout, copy.poll_interval, copy.retry_interval) == (
        path,
        30.0,
        0.05,
        30.0,
    )
    assert process(copy).get(KEY, endpoint) == "token-CANARY-0001"  # it used the file
    assert [entry[1] for entry in stored(path)] == ["token-CANARY-0001"]
    assert len(logs.records) == 1


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"wait_timeout": -1}, "must be >= 0"),
        ({"retry_interval": -1}, "must be >= 0"),
        ({"poll_interval": 0}, "poll_interval must be above 0"),
    ],
)
def test_bad_sqlite_settings_are_refused(options: dict[str, Any], said: str) -> None:
    with pytest.raises(ValueError, match=said):
        SQLiteTokenStore("tokens.sqlite3", **options)


def test_the_sqlite_repr_names_the_file(tmp_path: Path) -> None:
    store = SQLiteTokenStore(tmp_path / "t.db")
    assert repr(store) == f"SQLiteTokenStore(path={str(tmp_path / 't.db')!r})"


def test_a_cache_on_the_sqlite_store_pickles_too(sqlite_store: SQLiteTokenStore) -> None:
    copy = pickle.loads(pickle.dumps(TokenCache(store=sqlite_store)))
    assert isinstance(copy.store, SQLiteTokenStore)
    assert copy.store.path == sqlite_store.path
