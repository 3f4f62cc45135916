"""Where a credential that can change comes from: a file, read when asked.

A source is a zero-argument callable that returns the current value; a policy
calls it at construction and again only when the server refused the value in
use, never per request.
"""

from __future__ import annotations

import os
import stat

from .errors import ConfigurationError
from .oauth import is_valid_token

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
