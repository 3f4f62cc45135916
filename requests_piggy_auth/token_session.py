"""The library's own :class:`requests.Session` for token requests, one per process.

A ``requests.Session`` applies the environment's proxy and CA-bundle settings
and pools connections. It keeps no cookies, so one client's token response
never leaks into another's request. A forked child gets a new session rather
than sharing its parent's sockets; the session is closed at exit.
"""

from __future__ import annotations

import atexit
import os
import threading
from http.cookiejar import DefaultCookiePolicy

import requests

_lock = threading.Lock()
_session: requests.Session | None = None


def token_session() -> requests.Session:
    """This process's session for token requests, created on first use."""
    global _session
    with _lock:
        if _session is None:
            _session = requests.Session()
            _session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return _session


def close_token_session() -> None:
    """Close this process's token session; the next token request opens a new one."""
    global _session
    with _lock:
        if _session is not None:
            _session.close()
            _session = None


def _after_fork_in_child() -> None:
    """Drop the parent's session without closing it: closing takes its pools' locks,
    which a thread of the parent may have held at fork time. The child makes its own."""
    global _lock, _session
    _lock = threading.Lock()
    _session = None


atexit.register(close_token_session)
os.register_at_fork(after_in_child=_after_fork_in_child)
