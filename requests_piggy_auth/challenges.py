"""What a 401 says: ``WWW-Authenticate`` challenges (RFC 9110 §11.6.1, RFC 6750 §3).

The parser is lenient: it returns every challenge it can read and stops at
the first thing it cannot, and never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .oauth import json_value

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_SCHEME = re.compile(rf"[ \t,]*({_TOKEN})(?=[ \t,]|$)")
_PARAM = re.compile(rf"[ \t]*({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})[ \t]*(?:,[ \t,]*|$)")
_TOKEN68 = re.compile(r"[ \t]+([A-Za-z0-9\-._~+/]+=*)[ \t]*(?:,[ \t,]*|$)")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Challenge:
    """One challenge: a scheme (lowercase) with its parameters or token68."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (several headers joined by commas).

    Schemes and parameter names are case-insensitive and returned lowercase;
    quoted values are unquoted.
    """
    challenges: list[Challenge] = []
    pos = 0
    while (scheme := _SCHEME.match(header, pos)) is not None:
        pos = scheme.end()
        params: dict[str, str] = {}
        token68 = None
        if (t68 := _TOKEN68.match(header, pos)) is not None and not _PARAM.match(header, pos):
            token68, pos = t68.group(1), t68.end()
        else:
            while (param := _PARAM.match(header, pos)) is not None:
                name, value = param.group(1).lower(), param.group(2)
                if value.startswith('"'):
                    value = _ESCAPE.sub(r"\1", value[1:-1])
                params.setdefault(name, value)
                pos = param.end()
        challenges.append(Challenge(scheme.group(1).lower(), params, token68))
    return challenges


def bearer_error(www_authenticate: str | None, body: bytes) -> str | None:
    """The OAuth ``error`` a 401 names, if any.

    Looks first at a ``Bearer`` challenge's ``error`` parameter, then at a
    JSON body's ``error`` field.
    """
    for challenge in parse_challenges(www_authenticate or ""):
        if challenge.scheme == "bearer" and "error" in challenge.params:
            return challenge.params["error"]
    return json_error(body)


def json_error(body: bytes) -> str | None:
    """The string ``error`` field of a JSON object body, or ``None``."""
    payload = json_value(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, str) else None


def token_rejected(www_authenticate: str | None, body: bytes) -> bool:
    """Whether a 401 may mean that the token is stale, so a new one could help.

    True for ``invalid_token`` and for a bare 401 that names no error (Piggy
    does not publish its 401 body); false when it names another error.
    """
    return bearer_error(www_authenticate, body) in (None, "invalid_token")
