"""The SQLite token store: see :mod:`requests_piggy_auth.stores`."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._sharing import Shared, Wanted, attempt, digest, gave_up_waiting, shared_token, stored_times
from .cache import CachedToken, CacheKey, Clock
from .oauth import MAX_LIFETIME

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    _FLOCK = False
else:
    _FLOCK = True

#: Names another database file for ``SQLiteTokenStore()`` and the ``piggy-auth`` command.
STORE_VARIABLE = "PIGGY_AUTH_TOKEN_STORE"

#: What a store's database holds: each client's token (by key: no secret), and when each
#: rejected token (by hash) was first seen rejected.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tokens (key TEXT PRIMARY KEY,"
    " access_token TEXT, fetched_at REAL, stale_at REAL, expires_at REAL)",
    "CREATE TABLE IF NOT EXISTS rejections (key TEXT, digest TEXT,"
    " seen_at REAL, expires_at REAL, PRIMARY KEY (key, digest))",
)
_LOAD = "SELECT access_token, fetched_at, stale_at, expires_at FROM tokens WHERE key = ?"
_NOTE = """
INSERT INTO rejections VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key, digest) DO UPDATE
SET seen_at = ?3, expires_at = ?4 WHERE rejections.expires_at <= ?3
"""

#: The errors of a database that cannot do its job (and of its files and directory).
_FAILURES = (sqlite3.Error, OSError)

#: The settings a pickled store carries.
_SETTINGS = ("wait_timeout", "poll_interval", "retry_interval", "wall_clock", "timer", "sleep")

#: The longest that a short transaction under a key's lock waits for other processes'
#: once the call's wait is over.
_SHORT_WAIT = 1.0


def default_path() -> Path:
    """``$PIGGY_AUTH_TOKEN_STORE``, else ``tokens.sqlite3`` in the user's cache directory
    (``$XDG_CACHE_HOME``, else ``~/.cache``), under ``requests-piggy-auth``."""
    named = os.environ.get(STORE_VARIABLE, "").strip()
    if named:
        return Path(named).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "requests-piggy-auth" / "tokens.sqlite3"


class SQLiteTokenStore(Shared):
    """Tokens in an SQLite database file, shared by every process on the machine that uses it.

    The process that fetches a client's token holds that client's lock: an
    ``flock`` on a lock file of its own next to the database
    (``<database>-<hash>.lock``, one per client, kept). The others poll the
    lock (every ``poll_interval``) until it is free or their wait is over,
    then find the token; one whose wait is over makes its own token request
    (a warning, not a store failure). The database itself is locked only for
    short transactions, never during a token request, so a slow fetch for one
    client never delays another's, in this process or any other. The operating
    system frees the lock of a process that dies; a child forked while the lock
    is held closes its copy of the file at once. Where there is no ``flock``
    (Windows), the database's write lock (``BEGIN IMMEDIATE``) is held across
    the token request instead, and fetches for different clients take turns.

    The files are created ``0600`` in a directory made ``0700``; a directory
    that another user owns or can write to is refused. The database holds tokens, never
    secrets. A file that is corrupt, read-only or locked past the wait never
    fails a call (see :mod:`requests_piggy_auth.stores`).

    :param path: the database file (``None``: ``$PIGGY_AUTH_TOKEN_STORE``, else
        ``requests-piggy-auth/tokens.sqlite3`` in ``$XDG_CACHE_HOME`` or ``~/.cache``).
    :param wait_timeout: the longest a process waits for another process's
        fetch before fetching on its own.
    :param poll_interval: how often, in seconds, a waiting process tries the lock.
    :param retry_interval: after a database error, how many seconds to leave
        the file alone before trying it again.
    :param wall_clock: the clock, in seconds since the epoch, of the times stored.
    :param timer: a monotonic clock for waits and ``retry_interval``.
    :param sleep: how a waiting process pauses between tries, in seconds of ``timer``.
    :raises ValueError: for a negative ``wait_timeout`` or ``retry_interval``, or a
        ``poll_interval`` not above 0.
    """

    backend = "database"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        wait_timeout: float = 30.0,
        poll_interval: float = 0.05,
        retry_interval: float = 30.0,
        wall_clock: Clock = time.time,
        timer: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.path = default_path() if path is None else Path(path)
        super().__init__(
            wait_timeout=wait_timeout,
            retry_interval=retry_interval,
            poll_interval=poll_interval,
            wall_clock=wall_clock,
            timer=timer,
            sleep=sleep,
        )

    def __repr__(self) -> str:
        return f"SQLiteTokenStore(path={str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the settings: the copy starts fresh from any database failure."""
        settings = {name: getattr(self, name) for name in _SETTINGS}
        return (_rebuilt, (type(self), self.path, settings))

    def _lock_file(self, key: CacheKey) -> Path:
        """The file whose ``flock`` is ``key``'s lock: next to the database, named by a hash."""
        return Path(f"{self.path}-{digest(_name(key))[:32]}.lock")

    def _shared(
        self, key: CacheKey, fetch: Callable[[], CachedToken], wanted: Wanted, wait: float
    ) -> CachedToken:
        """:meth:`get` through the database file."""
        until = self.timer() + wait
        try:
            db = self._connect(wait)
        except _FAILURES as exc:
            self._unavailable(exc)
            return fetch()
        lock = _KEY_LOCK(self, db, key)
        try:
            shared = self._load(db, lock.name, wanted)
            self._recovered()  # it answered; no lock is held yet
            locked = shared is None and lock.acquire(until)
        except _FAILURES as exc:
            db.close()
            self._unavailable(exc)
            return fetch()
        if shared is not None:
            db.close()
            return shared
        if not locked:
            db.close()
            gave_up_waiting(wait, key)
            return fetch()
        return self._through(lock, fetch, wanted, until)

    def _through(
        self, lock: _Lock, fetch: Callable[[], CachedToken], wanted: Wanted, until: float
    ) -> CachedToken:
        """:meth:`get` holding ``lock``: the token stored meanwhile, else ``fetch()``'s,
        stored. Each look and the storing are short transactions; the fetch runs in none.
        The lock is released before anything is logged."""
        try:
            with lock.transaction(until):
                shared = self._noted(lock.db, lock.name, wanted)
        except _FAILURES as exc:
            lock.release()
            self._unavailable(exc)
            return fetch()
        failure = None
        try:
            cached = shared if shared is not None else fetch()
            if shared is None:
                failure = attempt(_FAILURES, self._store, lock, cached, wanted.clock, until)
        finally:
            failure = lock.release() or failure
        if failure is not None:
            self._unavailable(failure)
        return cached

    def _noted(self, db: sqlite3.Connection, name: str, wanted: Wanted) -> CachedToken | None:
        """In a write transaction: make the tables of a new file, note and delete the
        ``rejected`` tokens, and return the stored token if it is (now) ``wanted``."""
        for statement in _SCHEMA:
            db.execute(statement)
        if wanted.rejected:
            wanted = wanted.since(self._first_rejection(db, name, wanted.rejected, wanted.clock))
        return self._load(db, name, wanted)  # stored before the lock, or now wanted

    def _store(self, lock: _Lock, cached: CachedToken, clock: Clock, until: float) -> None:
        with lock.transaction(until):
            self._save(lock.db, lock.name, cached, clock)

    def _connect(self, wait: float) -> sqlite3.Connection:
        """The database, its file made ``0600`` in a private directory if need be.

        :raises OSError: for a directory another user owns or can write to, or a path
            that is no regular file (a FIFO would block) or one another user owns.
        """
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(directory)
        _make_private_file(self.path)
        return sqlite3.connect(self.path, timeout=wait, isolation_level=None)

    def _load(self, db: sqlite3.Connection, name: str, wanted: Wanted) -> CachedToken | None:
        """The stored token, on ``wanted.clock``, if it is fresh and ``wanted``; else ``None``."""
        try:
            rows = db.execute(_LOAD, (name,)).fetchall()  # all: the statement ends, unlocking
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("no such table"):
                raise
            return None  # a new file
        if not rows:
            return None
        return shared_token(rows[0][0], rows[0][1:], wanted, self.wall_clock)

    def _first_rejection(
        self, db: sqlite3.Connection, name: str, rejected: Collection[str], clock: Clock
    ) -> float:
        """Delete each ``rejected`` token if it is still stored; return, on ``clock``, when
        the first sharer saw one of them rejected."""
        now = self.wall_clock()
        offset = clock() - now
        first = now
        for access_token in rejected:
            noted = (name, digest(access_token), now, now + MAX_LIFETIME)
            db.execute(_NOTE, noted)
            db.execute(
                "DELETE FROM tokens WHERE key = ? AND access_token = ?", (name, access_token)
            )
            (seen,) = db.execute(
                "SELECT seen_at FROM rejections WHERE key = ? AND digest = ?", noted[:2]
            ).fetchone()
            first = min(first, seen)
        return first + offset

    def _save(self, db: sqlite3.Connection, name: str, cached: CachedToken, clock: Clock) -> None:
        """Store ``cached`` with wall-clock times, unless it has expired; forget what has."""
        if cached.expires_at <= clock():
            return
        times = stored_times(cached, clock, self.wall_clock)
        now = self.wall_clock()
        db.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM rejections WHERE expires_at <= ?", (now,))
        db.execute(
            "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?)",
            (name, cached.access_token, *times.values()),
        )


def _name(key: CacheKey) -> str:
    """How ``key`` is named in the database: no secret, its fingerprint only."""
    return json.dumps(key, separators=(",", ":"))


def _begin(db: sqlite3.Connection, until: float, timer: Clock) -> None:
    """Take the database's write lock, waiting for it until ``until`` on ``timer``.

    :raises sqlite3.OperationalError: ("database is locked") when it is not free by then.
    """
    db.execute(f"PRAGMA busy_timeout = {max(0, round((until - timer()) * 1000))}")
    db.execute("BEGIN IMMEDIATE")


class _Lock:
    """One key's lock, for one call: an ``flock`` on the key's own lock file, polled.

    Two opens of the file exclude each other even in one process (an ``flock``
    belongs to the open file), and the operating system frees the lock of a
    process that dies. While it is held, each look and the storing are short
    transactions on ``db``.
    """

    def __init__(self, store: SQLiteTokenStore, db: sqlite3.Connection, key: CacheKey) -> None:
        self.store, self.db, self.name = store, db, _name(key)
        self.path = store._lock_file(key)
        self.fd = -1

    def acquire(self, until: float) -> bool:
        """Take the lock, trying until ``until`` on the store's timer; false if it never was free.

        :raises OSError: when the lock file cannot be made or locked.
        """
        fd = _open_lock_file(self.path)
        try:
            while not _flocked(fd):
                remaining = until - self.store.timer()
                if remaining <= 0:
                    _close_lock_file(fd)
                    return False
                self.store.sleep(min(self.store.poll_interval, remaining))
        except BaseException:
            _close_lock_file(fd)
            raise
        self.fd = fd
        return True

    @contextmanager
    def transaction(self, until: float) -> Iterator[None]:
        """A short write transaction, committed if its body returns (else left to
        :meth:`release`, which rolls it back). Other processes' transactions are short
        too: it waits for them until ``until``, and a little (``_SHORT_WAIT``) even once
        that is past, as when the lock came late or the fetch took long."""
        timer = self.store.timer
        short = min(self.store.wait_timeout, _SHORT_WAIT)
        _begin(self.db, max(until, timer() + short), timer)
        yield
        self.db.commit()

    def release(self) -> Exception | None:
        """Close the database (rolling back a transaction cut short), then free the lock."""
        self.db.close()
        _close_lock_file(self.fd)
        return None


#: The lock files open in this process. A forked child closes its copies: an ``flock`` is
#: the open file's, so a child's copy would keep a lock its parent has freed.
_open_locks: set[int] = set()
_open_locks_lock = threading.Lock()


def _open_lock_file(path: Path) -> int:
    """:func:`_open_private`, the file counted among ``_open_locks``."""
    with _open_locks_lock:
        fd = _open_private(path)
        _open_locks.add(fd)
    return fd


def _close_lock_file(fd: int) -> None:
    """Close a lock file (freeing its lock), no longer counted among ``_open_locks``."""
    with _open_locks_lock:
        _open_locks.discard(fd)
        os.close(fd)


def _before_fork() -> None:
    _open_locks_lock.acquire()


def _after_fork_in_parent() -> None:
    _open_locks_lock.release()


def _after_fork_in_child() -> None:
    """Close the child's copies of the lock files (the threads that held them are gone)."""
    global _open_locks_lock
    for fd in _open_locks:
        os.close(fd)
    _open_locks.clear()
    _open_locks_lock = threading.Lock()


def _flocked(fd: int) -> bool:
    """Whether this takes the ``flock`` on ``fd`` (false: another open of the file has it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _DatabaseLock(_Lock):  # pragma: no cover - Windows
    """Where there is no ``flock`` (Windows): the database's write lock, taken in
    :meth:`acquire` and held across the fetch, the looks and the storing in it."""

    def acquire(self, until: float) -> bool:
        _begin(self.db, until, self.store.timer)  # past the wait: a store failure
        return True

    @contextmanager
    def transaction(self, until: float) -> Iterator[None]:
        yield  # the one begun in acquire

    def release(self) -> Exception | None:
        failure = attempt(_FAILURES, self.db.commit)  # the notes, deletions and token
        self.db.close()
        return failure


#: The kind of lock a key gets here.
_KEY_LOCK: type[_Lock] = _Lock if _FLOCK else _DatabaseLock


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _make_private_file(path: Path) -> None:
    """Create ``path`` ``0600`` if need be, without blocking; one of this user's that others
    could read is made ``0600``.

    :raises OSError: for anything but a regular file, or one another user owns.
    """
    os.close(_open_private(path))


def _open_private(path: Path) -> int:
    """:func:`_make_private_file`, returning the file open for reading.

    :raises OSError: for anything but a regular file, or one another user owns.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW, 0o600)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{path} is not a regular file")
        if hasattr(os, "getuid") and status.st_mode & 0o077:  # Windows: no modes to fix
            if status.st_uid != os.getuid():
                raise PermissionError(f"{path} is another user's")
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_private(directory: Path) -> None:
    """:raises PermissionError: unless only this user can write to ``directory``."""
    status = directory.stat()
    # Windows has neither owners nor modes to check here: its ACLs keep a profile private.
    shared = hasattr(os, "getuid") and (
        status.st_uid != os.getuid() or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )
    if shared:
        raise PermissionError(
            f"{directory} is not private: another user owns it or can write to it"
        )


def _rebuilt(cls: type[SQLiteTokenStore], path: Path, settings: dict[str, Any]) -> SQLiteTokenStore:
    """A store on ``path`` with ``settings`` (how a pickled store comes back)."""
    return cls(path, **settings)


if _FLOCK:  # pragma: no branch - Windows has neither flock nor fork
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
