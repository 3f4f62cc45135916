"""The exceptions this library raises.

Every exception is a :class:`PiggyAuthError`, which is a
:class:`requests.RequestException`, so code that already catches
``requests.RequestException`` catches ours too. No message ever carries a
client secret or a token.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Iterable
from urllib.parse import unquote, unquote_plus

import requests

#: Pieces of a secret this long or longer never show, so a cut-off echo is caught too.
SECRET_FRAGMENT = 6
#: Server text longer than this is never shown.
_MAX_TEXT = 1000
#: What looks like a token: 20 or more token characters, with a letter and a digit, or
#: letters of both cases (a random token of 43 characters has no digit once in about 1,400).
_TOKEN_LIKE = re.compile(
    r"(?=[\w.~+/=-]*(?:\d|[a-z][\w.~+/=-]*[A-Z]|[A-Z][\w.~+/=-]*[a-z]))"
    r"(?=[\w.~+/=-]*[A-Za-z])[\w.~+/=-]{20,}",
    re.ASCII,
)
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_JSON_CHARS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{8,}")


class PiggyAuthError(requests.RequestException):
    """Base class of every error raised by requests-piggy-auth."""


class ConfigurationError(PiggyAuthError, ValueError):
    """The configuration (for example the environment) is missing or invalid."""


class TokenRequestError(PiggyAuthError):
    """Getting an access token failed.

    :param message: what went wrong, free of secrets.
    :param status: the token endpoint's HTTP status, or ``None`` when no
        response arrived (a network failure or timeout).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidClientError(TokenRequestError):
    """The token endpoint refused the credentials with an OAuth error.

    Raised for a 400 or 401 answer that names an OAuth error such as
    ``invalid_client`` or ``invalid_grant``.

    :param message: what went wrong, free of secrets.
    :param status: the HTTP status (400 or 401).
    :param error: the OAuth ``error`` code.
    :param error_description: the server's ``error_description``, if any.
    """

    def __init__(
        self, message: str, *, status: int, error: str, error_description: str | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.error = error
        self.error_description = error_description


class TokenResponseError(TokenRequestError):
    """The token endpoint answered 2xx, but not with a usable token.

    For example: the body is not JSON, ``access_token`` is missing or holds
    whitespace, or ``expires_in`` is not a positive number. Takes the
    parameters of :class:`TokenRequestError`.
    """


class TokenExpiredError(PiggyAuthError):
    """A personal access token has passed its expiry date."""


def reveals(text: str, secrets: Iterable[str], *, fragment: int | None = SECRET_FRAGMENT) -> bool:
    """Whether ``text`` shows one of ``secrets`` in any encoding a server might apply.

    JSON escapes (``\\/``, ``\\uXXXX``), percent-encoding, ``+`` for a space,
    HTML entities and base64 are undone, in any combination. With
    ``fragment``, any piece of a secret that long counts (a cut-off echo);
    with ``None`` only a whole secret does.
    """
    pieces: set[str] = set()
    for secret in secrets:
        size = len(secret) if fragment is None else min(fragment, len(secret))
        pieces.update(secret[i : i + size] for i in range(len(secret) - size + 1))
    return any(piece in variant for variant in _decodings(text) for piece in pieces)


def shown(text: str, *tokens: str, secrets: Iterable[str] = ()) -> bool:
    """Whether server text may go into a message: short, without a secret or a token.

    Besides ``secrets`` (in pieces) and ``tokens`` (whole), anything that looks
    like a token (20 or more token characters with a letter and a digit, or letters
    of both cases) is refused: it may be an access token this code never saw.
    """
    return not (
        len(text) > _MAX_TEXT
        or reveals(text, secrets)
        or reveals(text, tokens, fragment=None)
        or any(_TOKEN_LIKE.search(variant) for variant in _decodings(text))
    )


def _decodings(text: str) -> set[str]:
    """``text`` and what it decodes to, one or two layers deep."""
    seen = {text}
    layer = {text}
    for _ in range(2):
        layer = {decoded for variant in layer for decoded in _decode(variant)} - seen
        seen |= layer
    return seen


def _decode(text: str) -> list[str]:
    return [
        _JSON_ESCAPE.sub(_json_char, text),
        unquote(text),
        unquote_plus(text),
        html.unescape(text),
        *(_base64(run) for run in _BASE64.findall(text)),
    ]


def _json_char(match: re.Match[str]) -> str:
    code, char = match.groups()
    return chr(int(code, 16)) if code else _JSON_CHARS.get(char, char)


def _base64(run: str) -> str:
    """``run`` decoded as base64 (either alphabet), its bytes as Latin-1."""
    padded = run.replace("-", "+").replace("_", "/") + "=" * (-len(run) % 4)
    try:
        return base64.b64decode(padded).decode("latin-1")
    except binascii.Error:  # a length no base64 has
        return ""
