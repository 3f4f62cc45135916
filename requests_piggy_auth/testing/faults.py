"""Faults: what the fake Piggy does instead of, or before, answering as Piggy would.

A fault is any callable that takes the werkzeug ``Request`` and returns the
``Response`` to send instead of the normal answer, or ``None`` to go on and
answer normally (after a pause, say). The classes here cover what a real API
does on a bad day; write your own callable for anything else.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, NoReturn

from werkzeug import Request, Response

#: Sends a response instead of the normal answer, or returns ``None`` to let it through.
Fault = Callable[[Request], Response | None]

#: The kinds of malformed body :class:`Malformed` sends.
MalformedBody = Literal["html", "empty", "truncated-json", "no-access-token"]

_MALFORMED: dict[str, tuple[bytes, str]] = {
    "html": (b"<!doctype html><title>Bad Gateway</title><h1>502 Bad Gateway</h1>", "text/html"),
    "empty": (b"", "application/json"),
    "truncated-json": (b'{"token_type": "Bearer", "access_token": "3f9a', "application/json"),
    "no-access-token": (b'{"token_type": "Bearer", "expires_in": 3600}', "application/json"),
}


def json_response(
    payload: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response: ``payload`` encoded, with ``status`` and any other ``headers``."""
    return Response(json.dumps(payload), status, headers, content_type="application/json")


def piggy_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """An error in Piggy's format: ``{"status_code": …, "code": …, "message": …, "errors": {}}``."""
    body = {"status_code": status, "code": status, "message": message, "errors": {}}
    return json_response(body, status, headers)


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error status in Piggy's error format.

    :param status: the status, such as 503, 500 or 429.
    :param retry_after: seconds to send as ``Retry-After`` (with 429 or 503).
    """

    status: int
    retry_after: int | None = None

    def __call__(self, request: Request) -> Response:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return piggy_error(self.status, HTTPStatus(self.status).phrase, headers)


@dataclass(frozen=True)
class Malformed:
    """Answer with a body Piggy would never send.

    :param body: ``"html"`` (a proxy's error page), ``"empty"``, ``"truncated-json"``
        or ``"no-access-token"`` (valid JSON without an ``access_token``).
    :param status: the status to send it with.
    """

    body: MalformedBody
    status: int = 200

    def __call__(self, request: Request) -> Response:
        content, content_type = _MALFORMED[self.body]
        return Response(content, self.status, content_type=content_type)


class ConnectionDroppedError(Exception):
    """Raised by :class:`Drop` so that the server sends nothing."""


class Drop:
    """Close the connection without answering: the client sees a connection error."""

    def __call__(self, request: Request) -> NoReturn:
        request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        raise ConnectionDroppedError


class Hold:
    """Hold requests until :meth:`release` is called, then answer them normally.

    ``arrived`` is set when the first request comes; every held request goes on
    once ``released`` is set. The fake server releases every hold when it is
    reset or stopped, so no request is held forever.

    :param seconds: release held requests after this long even if not released.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        self.arrived = threading.Event()
        self.released = threading.Event()

    def __call__(self, request: Request) -> None:
        self.arrived.set()
        self.released.wait(self.seconds)

    def release(self) -> None:
        """Let every held request (and every later one) through."""
        self.released.set()

    def release_on_arrival(self, timeout: float = 30.0) -> None:
        """Wait until a request is held, then release it.

        :raises TimeoutError: when no request arrived within ``timeout`` seconds.
        """
        if not self.arrived.wait(timeout):
            raise TimeoutError(f"no request arrived at the hold within {timeout} s")
        self.release()


class Delay(Hold):
    """Answer normally after ``seconds`` (cut short when the server is reset or stopped)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
