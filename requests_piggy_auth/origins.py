"""Origins: which URLs a token may be sent to."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


class Origin(NamedTuple):
    """The ``(scheme, host, port)`` of a URL, normalised for comparison."""

    scheme: str
    host: str
    port: int

    @staticmethod
    def of(url: str) -> Origin | None:
        """Return the origin of ``url``, or ``None`` if it has no http(s) origin."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        return _origin(parts.scheme, parts.netloc)

    @property
    def is_loopback(self) -> bool:
        """Whether the host is ``localhost`` or a loopback address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def prefix(self) -> str:
        """How URLs of this origin begin as requests and urllib3 write them.

        ``scheme://host/``, with ``:port`` only when it is not the default, so
        every URL that starts with it has this origin (not every URL of this
        origin starts with it).
        """
        port = "" if self.port == _DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{self._host}{port}/"

    @property
    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.scheme}://{self._host}:{self.port}"


def secure_origin(url: str, *, what: str) -> Origin:
    """Parse ``url`` into an origin that may carry a token.

    :raises ValueError: if ``url`` is not a :func:`plain_url`, not an absolute
        http(s) URL, or is plain http to a host other than loopback.
    """
    plain_url(url, what=what)
    origin = Origin.of(url)
    shown = "a URL not shown (it has an '@')" if "@" in url else repr(url)
    if origin is None:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {shown}")
    if origin.scheme != "https" and not origin.is_loopback:
        raise ValueError(
            f"{what} must use https (plain http is allowed only for localhost and "
            f"loopback addresses), got {shown}"
        )
    return origin


def plain_url(url: str, *, what: str) -> None:
    """Refuse a base URL that would break the URLs made from it.

    Whitespace or control characters (a newline from an environment file),
    a user name or password, a query or a fragment: ``base_url + "/oauth/token"``
    would not be the token endpoint. The message names the problem, never a
    password.

    :raises ValueError: naming what is wrong with ``url``.
    """
    bad = _CONTROL_OR_SPACE.search(url)
    if bad:
        raise ValueError(
            f"{what} must not contain whitespace or control characters "
            f"({bad.group()!r} at {bad.start()})"
        )
    authority = url.partition("//")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" in authority:
        raise ValueError(f"{what} must not hold a user name or password (user:pass@)")
    for mark, part in (("?", "query"), ("#", "fragment")):
        if mark in url:
            raise ValueError(f"{what} must not have a {part} (from {mark!r})")


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, netloc: str) -> Origin | None:
    """The origin of ``scheme://netloc``, cached: it is asked on every request."""
    parts = SplitResult(scheme, netloc, "", "", "")
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return Origin(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])
