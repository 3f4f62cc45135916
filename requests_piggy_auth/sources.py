"""Where a credential that can change comes from: a file, read when asked.

A source is a zero-argument callable that returns the current value; a policy
calls it at construction and again only when the server refused the value in
use, never per request.
"""

from __future__ import annotations

import os

from .errors import ConfigurationError
from .oauth import is_valid_token


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

        :raises ConfigurationError: when the file cannot be read, or holds no
            usable value (empty, or with whitespace, control or non-ASCII
            characters inside); the message names the file, never its content.
        """
        try:
            with open(self.path, encoding="utf-8") as file:
                content = file.read().strip()
        except (OSError, UnicodeError) as exc:
            raise ConfigurationError(
                f"cannot read the {self.what} file {self.path!r} ({type(exc).__name__})"
            ) from None
        if not is_valid_token(content):
            problem = "is empty" if not content else "holds a character no token has"
            raise ConfigurationError(f"the {self.what} file {self.path!r} {problem}")
        return content
