"""How a token request that got no answer is told: from exception types, never their text.

The drivers (requests, urllib3, httpx) turn their libraries' exceptions into a
:class:`~requests_piggy_auth.errors.TokenRequestError` here.
"""

from __future__ import annotations

import sys

import urllib3.exceptions

from .errors import TokenRequestError

# requests' exceptions wrap urllib3's, which the chain reaches.
_TIMEOUTS = (TimeoutError, urllib3.exceptions.TimeoutError)
_CONNECTION = (
    ConnectionError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.NewConnectionError,
)


def describe_failure(exc: BaseException) -> str:
    """How a request got no answer, from exception types alone, never their text.

    Their text can quote what a hostile server sent back (the request itself,
    with its secret or token), so only class names show, outermost first:
    ``"timed out (ReadTimeout: ReadTimeoutError)"`` or
    ``"failed: connection error (ConnectionError: ProtocolError: BadStatusLine)"``.
    """
    chain = _chain(exc)
    names = ": ".join(dict.fromkeys(type(link).__name__ for link in chain))
    timeouts, connection = _httpx_types()
    if any(_timed_out(link) or isinstance(link, timeouts) for link in chain):
        return f"timed out ({names})"
    if any(isinstance(link, (*_CONNECTION, *connection)) for link in chain):
        return f"failed: connection error ({names})"
    return f"failed ({names})"


def _httpx_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """httpx's timeout and connection error types, if httpx is imported (never importing it)."""
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return (), ()
    return (httpx.TimeoutException,), (httpx.NetworkError, httpx.RemoteProtocolError)


def _timed_out(exc: BaseException) -> bool:
    # urllib3's NewConnectionError is a ConnectTimeoutError for history's sake only.
    return isinstance(exc, _TIMEOUTS) and not isinstance(exc, urllib3.exceptions.NewConnectionError)


def token_request_failed(url: str, exc: BaseException) -> TokenRequestError:
    """The error for a token request to ``url`` that got no answer: ``exc`` says why.

    Raise it after the ``except`` block that caught ``exc``, not in it: as its
    cause or its context, ``exc`` would carry its text, and for requests the
    request with its body, along with our error.
    """
    return TokenRequestError(f"token request to {url} {describe_failure(exc)}")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: urllib3's ``reason``, an exception in ``args``, the
    cause, the context unless suppressed (as a traceback would show it)."""
    chain = [exc]
    while True:
        link = chain[-1]
        context = None if link.__suppress_context__ else link.__context__
        inner = [getattr(link, "reason", None), *link.args, link.__cause__, context]
        found = next((e for e in inner if isinstance(e, BaseException) and e not in chain), None)
        if found is None:
            return chain
        chain.append(found)
