"""Origins: which URLs a token may be sent to."""

from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


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

    :raises ValueError: if ``url`` is not an absolute http(s) URL, or is plain
        http to a host other than loopback.
    """
    origin = Origin.of(url)
    if origin is None:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {url!r}")
    if origin.scheme != "https" and not origin.is_loopback:
        raise ValueError(
            f"{what} must use https (plain http is allowed only for localhost and "
            f"loopback addresses), got {url!r}"
        )
    return origin


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
