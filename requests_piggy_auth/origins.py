"""Origins: which URLs a token may be sent to."""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple

_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
#: An absolute URL's scheme and authority, written so that every parser reads
#: them alike: an ASCII host name or a bracketed IPv6 address, digits for the
#: port, userinfo of RFC 3986 characters, and then nothing but the end or one
#: of ``/?#``. No backslash, whitespace, control or non-ASCII character, and
#: no ``@`` but the one ending the userinfo.
_AUTHORITY = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?:[A-Za-z0-9._~!$&'()*+,;=:%-]*@)?"
    r"([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::([0-9]{0,5}))?"
    r"(?=[/?#]|\Z)"
)


class Origin(NamedTuple):
    """The ``(scheme, host, port)`` of a URL, normalised for comparison."""

    scheme: str
    host: str
    port: int

    @staticmethod
    def of(url: str) -> Origin | None:
        """Return the origin of ``url``, or ``None`` if it has no http(s) origin.

        ``None`` too when parsers could read its authority differently (see
        ``_AUTHORITY``): such a URL never gets a token.
        """
        authority = _AUTHORITY.match(url)
        return None if authority is None else _origin(*authority.groups())

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


def keeps_token(old_url: str, new_url: str) -> bool:
    """Whether a redirect from ``old_url`` to ``new_url`` keeps the token, as requests decides.

    requests (``Session.should_strip_auth``) keeps the ``Authorization``
    header on a redirect to the same origin, and on one from http to https on
    the same host with the default ports; it drops it on any other.
    """
    old, new = Origin.of(old_url), Origin.of(new_url)
    if old is None or new is None:
        return False
    upgrade = (old.scheme, old.port, new.scheme, new.port) == ("http", 80, "https", 443)
    return old.host == new.host and (old == new or upgrade)


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: str, port: str | None) -> Origin | None:
    """The origin of ``scheme://host:port`` as ``_AUTHORITY`` matched it, cached."""
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS or (port and int(port) > 65535):
        return None
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return Origin(scheme, host.lower(), int(port) if port else _DEFAULT_PORTS[scheme])
