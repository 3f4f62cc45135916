"""The client credentials grant, sans-IO: build the token request, parse the answer.

Adapters move the bytes with their own HTTP library; everything about what
the bytes mean lives here.
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeGuard
from urllib.parse import urlencode

from ._version import __version__
from .errors import InvalidClientError, TokenRequestError, TokenResponseError, shown

#: Token lifetimes are capped at one day; a longer one is simply renewed daily.
MAX_LIFETIME = 86_400.0
#: Token endpoint bodies are read up to this many bytes, never more.
MAX_BODY = 1024 * 1024
USER_AGENT = f"requests-piggy-auth/{__version__} Python/{platform.python_version()}"

_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
_NOT_PRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")
_EXCERPT_LENGTH = 200
#: An OAuth ``error`` code worth repeating: a short word such as ``invalid_client``.
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_WITHHELD = "withheld: it could hold a secret or a token"


def is_valid_token(token: object) -> TypeGuard[str]:
    """Whether ``token`` can go into an ``Authorization`` header unchanged.

    A non-empty string of visible ASCII: no whitespace, CR, LF or control
    characters, so it can never inject a header.
    """
    return isinstance(token, str) and _VISIBLE_ASCII.fullmatch(token) is not None


@dataclass(frozen=True)
class Token:
    """An access token and how long it lives (``None``: the server did not say)."""

    access_token: str = field(repr=False)
    expires_in: float | None = None


@dataclass(frozen=True)
class TokenRequest:
    """An HTTP request for a token, ready to send. The body holds the secret."""

    url: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class TokenResponse:
    """What the token endpoint answered: status, headers and at most ``MAX_BODY`` bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


#: Sends a token request with some HTTP library and returns the answer, whatever
#: its status. When no answer arrives (connection error, timeout) it raises
#: :class:`TokenRequestError` with ``status=None``, which the retry policy retries.
TokenSender = Callable[[TokenRequest], TokenResponse]
#: A :data:`TokenSender` for asyncio: it awaits the answer, blocking no event loop.
AsyncTokenSender = Callable[[TokenRequest], Awaitable[TokenResponse]]


@dataclass(frozen=True)
class ClientCredentials:
    """The client credentials grant for one client at one token endpoint.

    :param token_url: the token endpoint.
    :param client_id: the OAuth client id.
    :param client_secret: the OAuth client secret (never shown by ``repr``).
    :param request_format: ``"json"`` (Piggy's docs) or ``"form"`` (the PHP SDK).
    """

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    request_format: Literal["json", "form"] = "json"

    def __post_init__(self) -> None:
        if self.request_format not in ("json", "form"):
            raise ValueError(
                f"token_request_format must be 'json' or 'form', got {self.request_format!r}"
            )
        for name in ("client_id", "client_secret"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")

    def token_request(self) -> TokenRequest:
        """The request that asks the token endpoint for a new token."""
        fields = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if self.request_format == "json":
            content_type, body = "application/json", json.dumps(fields).encode()
        else:
            content_type, body = "application/x-www-form-urlencoded", urlencode(fields).encode()
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
        }
        return TokenRequest(self.token_url, headers, body)

    def parse(self, response: TokenResponse) -> Token:
        """Turn the token endpoint's answer into a :class:`Token`.

        :raises InvalidClientError: a 400 or 401 naming an OAuth error.
        :raises TokenRequestError: any other answer that is not 2xx.
        :raises TokenResponseError: a 2xx answer without a usable token.
        """
        payload = self._payload(response)
        status = response.status
        access_token = self._access_token(payload, status)
        expires_in = payload.get("expires_in")
        try:
            return Token(access_token, _lifetime(expires_in))
        except ValueError:
            said = self._shown(str(expires_in)[:40], access_token)
            raise TokenResponseError(
                f"token endpoint answered expires_in={said or _describe(expires_in)!r}; it "
                "must be a positive number of seconds",
                status=status,
            ) from None

    def _payload(self, response: TokenResponse) -> dict[str, object]:
        """The JSON object of a 2xx answer.

        :raises TokenRequestError: (or a subclass) for any other answer.
        """
        status = response.status
        if 300 <= status < 400:
            location = self._shown(response.headers.get("Location", "nowhere"))
            raise TokenRequestError(
                f"token endpoint {self.token_url} answered HTTP {status} (a redirect to "
                f"{location or 'a location ' + _WITHHELD}); token requests never follow "
                "redirects, so check base_url",
                status=status,
            )
        if len(response.body) > MAX_BODY:
            raise TokenResponseError(
                f"token endpoint answered HTTP {status} with a body over {MAX_BODY} bytes; "
                "stopped reading it",
                status=status,
            )
        payload = json_value(response.body)
        if not 200 <= status < 300:
            raise self._refusal(response, payload)
        if not isinstance(payload, dict):
            raise TokenResponseError(
                f"token endpoint answered HTTP {status} with {self._describe_body(response)}"
                ", expected a JSON object with an access_token",
                status=status,
            )
        return payload

    def _access_token(self, payload: dict[str, object], status: int) -> str:
        """The usable Bearer token that ``payload`` holds.

        :raises TokenResponseError: when it holds none.
        """
        access_token = payload.get("access_token")
        known = (access_token,) if isinstance(access_token, str) else ()
        token_type = payload.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            kind = _describe(token_type)
            if isinstance(token_type, str):
                kind = repr(self._shown(token_type, *known) or f"{kind}, {_WITHHELD}")
            raise TokenResponseError(
                f"token endpoint answered token_type {kind}, expected 'Bearer'", status=status
            )
        if "access_token" not in payload:
            raise TokenResponseError(
                "token endpoint answered without an access_token", status=status
            )
        if not is_valid_token(access_token):
            raise TokenResponseError(
                f"token endpoint answered an unusable access_token, {_describe(access_token)}; "
                "it must be a non-empty string of visible ASCII characters",
                status=status,
            )
        return access_token

    def _refusal(self, response: TokenResponse, payload: object) -> TokenRequestError:
        """A non-2xx answer, told by its status and the fields that can be checked.

        The body is never excerpted: only an OAuth ``error`` code that is a
        short word, Piggy's numeric ``code`` and ``status_code``, and server
        text (``error_description``, ``message``) that :func:`shown` lets through.
        """
        status = response.status
        fields = payload if isinstance(payload, dict) else {}
        error, description = fields.get("error"), fields.get("error_description")
        code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None
        code = code and self._shown(code)
        if status == 401 and not response.body:
            code = "invalid_client"  # RFC 6749 5.2: the client's authentication failed
        if status in (400, 401) and code:
            return self._invalid_client(status, code, description)
        details = [
            (f"OAuth error {code}" if code else "an unrecognised OAuth error")
            if isinstance(error, str)
            else None,
            self._said("error_description", description),
            *(
                f"{name} {fields[name]}"
                for name in ("code", "status_code")
                if _other(fields.get(name), status)
            ),
            self._said("message", fields.get("message")),
        ]
        said = "; ".join(detail for detail in details if detail)
        return TokenRequestError(
            f"token endpoint answered HTTP {status} "
            + (f"({said})" if said else f"with {self._describe_body(response, 'no error')}"),
            status=status,
        )

    def _invalid_client(self, status: int, code: str, description: object) -> InvalidClientError:
        """A 400 or 401 naming the OAuth error ``code``."""
        text = self._shown(description) if isinstance(description, str) else None
        said = self._said("error_description", description)
        return InvalidClientError(
            f"token endpoint refused client {self.client_id!r}: HTTP {status} {code}"
            + (f" ({text or said})" if said else ""),
            status=status,
            error=code,
            error_description=text,
        )

    def _said(self, name: str, text: object) -> str | None:
        """What to say of server text ``text`` in field ``name``; ``None`` if there is none."""
        if not isinstance(text, str) or not text.strip():
            return None
        checked = self._shown(text)
        return f"{name} {_WITHHELD}" if checked is None else f"{name} {checked!r}"

    def _shown(self, text: str, *tokens: str) -> str | None:
        """``text`` on one line, or ``None`` if it could hold the secret or a token."""
        return _printable(text) if shown(text, *tokens, secrets=[self.client_secret]) else None

    def _describe_body(self, response: TokenResponse, instead: str = "an object") -> str:
        """What the body is, without showing it: ``instead`` is what a JSON one lacks."""
        payload = json_value(response.body)
        if not response.body.strip():
            return "an empty body"
        if payload is NOT_JSON:
            content_type = self._shown(response.headers.get("Content-Type", "no content type"))
            return (
                f"a body that is not JSON ({content_type or 'a content type ' + _WITHHELD}, "
                f"{len(response.body)} bytes)"
            )
        if isinstance(payload, dict):
            return f"a JSON object with {instead}"
        kind = "a JSON string" if isinstance(payload, str) else _describe(payload)
        return f"{kind} instead of an object"


#: What :func:`json_value` returns for a body that is not JSON.
NOT_JSON = object()


def json_value(body: bytes) -> object:
    """The JSON value in ``body``, or :data:`NOT_JSON`; never raises."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # also bad UTF-8, huge integers, deep nesting
        return NOT_JSON


def _printable(text: str) -> str:
    """``text`` on one line without control characters, at most ``_EXCERPT_LENGTH`` long."""
    text = " ".join(_NOT_PRINTABLE.sub(" ", text).split())
    return text if len(text) <= _EXCERPT_LENGTH else text[: _EXCERPT_LENGTH - 3] + "..."


_JSON_TYPES = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}


def _describe(value: object) -> str:
    """Say what kind of JSON value arrived without showing it (it may be a secret)."""
    if isinstance(value, str):
        if not value:
            return "an empty string"
        visible = "" if is_valid_token(value) else " with whitespace, control or non-ASCII ones"
        return f"a string of {len(value)} character{'s' * (len(value) > 1)}{visible}"
    return "JSON null" if value is None else f"a JSON {_JSON_TYPES[type(value)]}"


def _other(number: object, status: int) -> bool:
    """Whether ``number`` is an integer (not a boolean) other than ``status``."""
    return type(number) is int and number != status


def _lifetime(expires_in: object) -> float | None:
    """``expires_in`` as seconds, capped at a day; ``ValueError`` unless it is positive."""
    if expires_in is None:
        return None
    seconds = _seconds(expires_in)
    if not seconds > 0:  # also false for NaN
        raise ValueError("expires_in must be a positive number of seconds")
    return min(seconds, MAX_LIFETIME)


def _seconds(value: object) -> float:
    """``value`` (a JSON number or numeric string) as seconds; NaN if it is neither."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, int):  # may be far beyond a float's range
        return float(max(-1, min(value, MAX_LIFETIME)))
    if isinstance(value, (float, str)):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan
