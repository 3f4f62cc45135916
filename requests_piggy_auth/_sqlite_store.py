"""The SQLite token store: see :mod:`requests_piggy_auth.stores`."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from ._sharing import Shared, Wanted, attempt, digest, shared_token, stored_times
from .cache import CachedToken, CacheKey, Clock
from .oauth import MAX_LIFETIME

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

#: The errors of a database that cannot do its job (and of its file and directory).
_FAILURES = (sqlite3.Error, OSError)


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

    The process that fetches holds the database's write lock (``BEGIN
    IMMEDIATE``) while its token request runs; the others wait for the lock,
    then find the token. The operating system frees the lock of a process
    that dies. Fetches for different clients in different processes take
    turns; within a process they never wait for each other.

    The file is created ``0600`` in a directory made ``0700``; a directory
    that another user owns or can write to is refused. It holds tokens, never
    secrets. A file that is corrupt, read-only or locked past the wait never
    fails a call (see :mod:`requests_piggy_auth.stores`).

    :param path: the database file (``None``: ``$PIGGY_AUTH_TOKEN_STORE``, else
        ``requests-piggy-auth/tokens.sqlite3`` in ``$XDG_CACHE_HOME`` or ``~/.cache``).
    :param wait_timeout: the longest a process waits for another process's
        fetch before fetching on its own.
    :param retry_interval: after a database error, how many seconds to leave
        the file alone before trying it again.
    :param wall_clock: the clock, in seconds since the epoch, of the times stored.
    :param timer: a monotonic clock for waits and ``retry_interval``.
    :raises ValueError: for a negative ``wait_timeout`` or ``retry_interval``.
    """

    backend = "database"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        wait_timeout: float = 30.0,
        retry_interval: float = 30.0,
        wall_clock: Clock = time.time,
        timer: Clock = time.monotonic,
    ) -> None:
        self.path = default_path() if path is None else Path(path)
        super().__init__(
            wait_timeout=wait_timeout,
            retry_interval=retry_interval,
            wall_clock=wall_clock,
            timer=timer,
        )

    def __repr__(self) -> str:
        return f"SQLiteTokenStore(path={str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the settings: the copy starts fresh from any database failure."""
        settings = {
            name: getattr(self, name)
            for name in ("wait_timeout", "retry_interval", "wall_clock", "timer")
        }
        return (_rebuilt, (type(self), self.path, settings))

    def _shared(
        self, key: CacheKey, fetch: Callable[[], CachedToken], wanted: Wanted, wait: float
    ) -> CachedToken:
        """:meth:`get` through the database file."""
        try:
            db = self._connect(wait)
        except _FAILURES as exc:
            self._unavailable(exc)
            return fetch()
        try:
            return self._through(db, key, fetch, wanted, wait)
        finally:
            db.close()

    def _through(
        self,
        db: sqlite3.Connection,
        key: CacheKey,
        fetch: Callable[[], CachedToken],
        wanted: Wanted,
        wait: float,
    ) -> CachedToken:
        """:meth:`get` on an open database: its token, or ``fetch()`` under its lock."""
        name = json.dumps(key, separators=(",", ":"))
        try:
            shared = self._token_or_lock(db, name, wanted, self.timer() + wait)
        except _FAILURES as exc:
            db.close()  # frees the lock before anything is logged
            self._unavailable(exc)
            return fetch()
        if shared is not None:
            return shared
        failure = None
        try:
            cached = fetch()
            failure = attempt(_FAILURES, self._save, db, name, cached, wanted.clock)
        finally:
            failure = attempt(_FAILURES, db.commit) or failure  # the notes and deletions too
            db.close()
        if failure is not None:
            self._unavailable(failure)
        return cached

    def _token_or_lock(
        self,
        db: sqlite3.Connection,
        name: str,
        wanted: Wanted,
        until: float,
    ) -> CachedToken | None:
        """A stored token that is ``wanted``; else ``None``, holding the write lock.

        :raises sqlite3.OperationalError: when the lock is not free by ``until`` (on ``timer``).
        """
        shared = self._load(db, name, wanted)
        self._recovered()  # it answered; no lock is held yet
        if shared is not None:
            return shared
        db.execute(f"PRAGMA busy_timeout = {max(0, round((until - self.timer()) * 1000))}")
        db.execute("BEGIN IMMEDIATE")  # held past the wait: "database is locked"
        for statement in _SCHEMA:  # a new file: made with the lock
            db.execute(statement)
        if wanted.rejected:
            wanted = wanted.since(self._first_rejection(db, name, wanted.rejected, wanted.clock))
        shared = self._load(db, name, wanted)  # stored before the lock, or now wanted
        if shared is not None:
            db.commit()
        return shared

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
            row = db.execute(_LOAD, (name,)).fetchone()
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("no such table"):
                raise
            return None  # a new file
        if row is None:
            return None
        return shared_token(row[0], row[1:], wanted, self.wall_clock)

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


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _make_private_file(path: Path) -> None:
    """Create ``path`` ``0600`` if need be, without blocking; one of this user's that others
    could read is made ``0600``.

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
    finally:
        os.close(fd)


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
