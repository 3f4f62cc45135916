"""Where a credential that can change comes from: a file, read when asked.

A source is a zero-argument callable that returns the current value; a policy
calls it at construction and again only when the server refused the value in
use, never per request.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Any, Generic, TypeVar

from .errors import ConfigurationError
from .oauth import is_valid_token

T = TypeVar("T")

#: The name of the threads that read a credential's source again.
SOURCE_THREAD = "piggy-auth-source"

#: The most a credential file is read of: no token is longer, and a file that is
#: (``/dev/zero``, a log written to the wrong path) is refused, not loaded.
MAX_FILE_SIZE = 64 * 1024


class FileSource:
    """The content of a file, stripped of surrounding whitespace (a trailing newline).

    The file is opened anew on every call, so a file replaced in place, renamed
    over, or reached through a symlink that was switched (a Kubernetes secret
    volume's ``..data``) gives its current content.

    :param path: the file's path.
    :param what: what the file holds, for error messages.
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = os.fspath(path)
        self.what = what

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __call__(self) -> str:
        """The file's current content.

        :raises ConfigurationError: when the file cannot be read, is no regular
            file (a FIFO would block), is larger than :data:`MAX_FILE_SIZE`, or
            holds no usable value (empty, or with whitespace, control or
            non-ASCII characters inside); the message names the file, never its
            content.
        """
        reason: str | None = None
        try:
            content = _read_regular_file(self.path).decode("utf-8").strip()
        except _UnusableFileError as exc:
            reason = str(exc)
        except (OSError, UnicodeError) as exc:
            reason = type(exc).__name__
        if reason is not None:
            raise ConfigurationError(f"cannot read the {self.what} file {self.path!r} ({reason})")
        if not is_valid_token(content):
            problem = "is empty" if not content else "holds a character no token has"
            raise ConfigurationError(f"the {self.what} file {self.path!r} {problem}")
        return content


class _UnusableFileError(ValueError):
    """A file that cannot hold a token: what it is, in words of our own."""


def _read_regular_file(path: str) -> bytes:
    """At most :data:`MAX_FILE_SIZE` bytes of the regular file at ``path``, opened without
    blocking (a FIFO's open waits for a writer).

    :raises _UnusableFileError: for anything but a regular file, or one that is too large.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _UnusableFileError("not a regular file")
        content = file.read(MAX_FILE_SIZE + 1)
    if len(content) > MAX_FILE_SIZE:
        raise _UnusableFileError(f"larger than {MAX_FILE_SIZE} bytes")
    return content


class Reading(Generic[T]):
    """Reads of a credential's source (the user's code), one at a time, each in a thread of
    its own: a caller that asks while one is in flight shares it, and waits for it no
    longer than its own timeout, so a source that hangs holds no caller longer and
    starts no second thread.

    :param read: what to do in the thread: call the source, check what it gives.
    :param what: what the source gives, for error messages.
    """

    def __init__(self, read: Callable[[], T], what: str) -> None:
        self.read, self.what = read, what
        self._lock = threading.Lock()
        self._current: Future[T] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.read, self.what))

    def start(self) -> Future[T]:
        """The read in flight, or a new one."""
        with self._lock:
            if self._current is not None and not self._current.done():
                return self._current
            read: Future[T] = Future()
            self._current = read
        threading.Thread(target=self._run, args=(read,), name=SOURCE_THREAD, daemon=True).start()
        return read

    def _run(self, read: Future[T]) -> None:
        try:
            read.set_result(self.read())
        except ConfigurationError as exc:  # ours: its text is ours
            read.set_exception(exc)
        except Exception as exc:  # the user's code: its text may hold a secret
            failed = f"the {self.what}'s source failed ({type(exc).__name__})"
            read.set_exception(ConfigurationError(failed))

    def value(self, read: Future[T]) -> T:
        """What ``read``, done, gave.

        :raises ConfigurationError: a new one for each caller, when the source failed.
        """
        try:
            return read.result(0)
        except ConfigurationError as exc:
            failure = str(exc)
        raise ConfigurationError(failure)


def finished(read: Future[Any], timeout: float) -> bool:
    """Whether ``read`` is done within ``timeout`` seconds."""
    return bool(wait([read], timeout).done)


async def afinished(read: Future[Any], timeout: float) -> bool:
    """:func:`finished`, awaited: the event loop runs on and no thread waits."""
    waiting = asyncio.wrap_future(read)
    waiting.add_done_callback(lambda done: done.cancelled() or done.exception())  # read
    await asyncio.wait([waiting], timeout=timeout)
    return read.done()
