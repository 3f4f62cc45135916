"""A 401's body, for both adapters: judged from its first MiB, handed back whole.

Both work on a urllib3 ``HTTPResponse`` (which is also ``requests.Response.raw``).
For one whose body has not been read, :func:`read_head` reads at most
``MAX_BODY + 1`` bytes of it as sent, for at most ``MAX_JUDGE_SECONDS``,
:func:`decoded` decodes them boundedly for judging, and :func:`replayed` hands
the response back with those bytes followed by the rest, still unread, so a
streamed 401 stays streamable however long its body is. A preloaded one is
judged from :func:`preloaded`. :class:`Answered401` is what both thread drivers
share of stepping :func:`~.replay.replay` through such a 401.
"""

from __future__ import annotations

import functools
import io
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util.wait import wait_for_read

from .oauth import MAX_BODY
from .replay import Answer

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer
    from urllib3 import BaseHTTPResponse

_CHUNK = 64 * 1024
#: How long a 401's body is read, at most, to judge it: a server that trickles it
#: holds a call this long (and one read timeout) before it is judged on what came.
MAX_JUDGE_SECONDS = 2.0
#: The zlib ``wbits`` to try for each ``Content-Encoding`` judged by its body
#: ("deflate" is zlib-wrapped or raw, as urllib3 reads it).
_WBITS = {"gzip": (31,), "x-gzip": (31,), "deflate": (15, -15)}


class Head(NamedTuple):
    """What :func:`read_head` read of a body."""

    #: At most ``MAX_BODY + 1`` bytes of it, as sent.
    sent: bytes
    #: The read error that ended it early, if any: :func:`replayed` raises it
    #: where the rest would be read.
    error: HTTPError | None = None


def read_head(response: BaseHTTPResponse) -> Head:
    """Up to ``MAX_BODY + 1`` bytes of ``response``'s body, as sent (still encoded).

    Each read takes what one socket read brings, and only once the socket has
    something before ``MAX_JUDGE_SECONDS`` are up, so reading stops in time
    however slowly the body comes, if ever, and leaves the rest readable. A
    read error stops it too.
    """
    read1 = _read1(response)
    reader: Any = getattr(getattr(response, "_original_response", None), "fp", None)
    sock: socket.socket | None = getattr(getattr(reader, "raw", None), "_sock", None)
    deadline = time.monotonic() + MAX_JUDGE_SECONDS
    head = bytearray()
    try:
        while len(head) <= MAX_BODY and (left := deadline - time.monotonic()) > 0:
            if sock is not None and not _readable(response, reader, sock, left):
                break
            chunk = read1(min(_CHUNK, MAX_BODY + 1 - len(head)))
            if not chunk:
                break
            head += chunk
    except HTTPError as exc:  # urllib3 closed the connection
        return Head(bytes(head), exc)
    return Head(bytes(head))


def _readable(
    response: BaseHTTPResponse, reader: io.BufferedReader, sock: socket.socket, timeout: float
) -> bool:
    """Whether ``response``'s body has bytes (or its end) to read within ``timeout`` seconds.

    Looks without blocking at what ``reader`` holds or ``sock`` brings, then
    waits for ``sock``: a socket timeout would leave the body unreadable.
    """
    if reader.closed or sock.fileno() == -1:  # the body has ended (the connection may be reused)
        return True
    blocking = sock.gettimeout()
    with response._error_catcher():  # type: ignore[attr-defined]  # fails as urllib3 fails
        sock.settimeout(0)
        try:
            if reader.peek(1):
                return True
        except ssl.SSLWantReadError:  # nothing yet over TLS
            pass
        finally:
            sock.settimeout(blocking)  # before an error closes it
    return wait_for_read(sock, timeout)


def _read1(response: BaseHTTPResponse) -> Callable[[int], bytes]:
    """One read of at most so many bytes of ``response``'s body as sent: what is there."""
    if hasattr(response, "read1"):  # urllib3 2
        return functools.partial(response.read1, decode_content=False)
    return functools.partial(_read1_fp, response)  # pragma: no cover - urllib3 1.26


def _read1_fp(response: BaseHTTPResponse, amt: int) -> bytes:  # pragma: no cover - urllib3 1.26
    """``read1`` of ``response``'s ``http.client`` response, failing as urllib3's reads fail."""
    with response._error_catcher():  # type: ignore[attr-defined]
        return response._fp.read1(amt)  # type: ignore[attr-defined,no-any-return]


def preloaded(response: BaseHTTPResponse) -> bytes:
    """At most ``MAX_BODY + 1`` bytes of the body of ``response``, preloaded, decoded."""
    data = response.data[: MAX_BODY + 1]
    return data if response.decode_content else decoded(response.headers, data)


def decoded(headers: Mapping[str, str], head: bytes) -> bytes:
    """At most ``MAX_BODY + 1`` bytes of ``head`` decoded as ``Content-Encoding`` says.

    ``b""`` for an encoding that cannot be decoded here (``br``, several
    encodings, a corrupt stream): the 401 is then judged by its headers alone.
    """
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return head
    for wbits in _WBITS.get(encoding, ()):
        try:
            return zlib.decompressobj(wbits).decompress(head, MAX_BODY + 1)
        except zlib.error:
            pass
    return b""


def replayed(response: BaseHTTPResponse, head: Head, url: str) -> urllib3.HTTPResponse:
    """``response`` again, its body ``head`` (read from it) and then the rest, unread.

    Its content decoding is ``response``'s; closing it closes ``response``
    and releases its connection.

    :param url: the URL it answered.
    """
    return urllib3.HTTPResponse(
        body=_Rest(head, response),
        headers=response.headers,
        status=response.status,
        version=response.version,
        reason=response.reason,
        preload_content=False,
        decode_content=response.decode_content,
        original_response=getattr(response, "_original_response", None),
        retries=response.retries,
        enforce_content_length=False,
        request_url=url,
    )


class _Rest(io.RawIOBase):
    """A body read from ``head`` and then from ``response``, as sent."""

    def __init__(self, head: Head, response: BaseHTTPResponse) -> None:
        super().__init__()
        self._head = memoryview(head.sent)
        self._error = head.error
        self._response = response

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size], self._head = self._head[:size], self._head[size:]
            return size
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        data = self._response.read(len(view), decode_content=False)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._response.close()  # a no-op once read to the end: the connection is back
        self._response.release_conn()
        super().close()


def answer(response: BaseHTTPResponse) -> Answer:
    """The :class:`~.replay.Answer` that ``response`` is."""
    return Answer(response.status, response.headers.get("WWW-Authenticate"))


class Answered401:
    """A 401 being judged: its body read once, then closed for a resend or handed back.

    :param response: the 401, its body unread unless ``preload_content``.
    """

    def __init__(self, response: BaseHTTPResponse, *, preload_content: bool = False) -> None:
        self.response = response
        self._preloaded = preload_content
        self._head: Head | None = None
        #: What was judged of its body: at most ``MAX_BODY + 1`` bytes, decoded.
        self.body = b""

    def read_body(self) -> bytes:
        """At most ``MAX_BODY + 1`` bytes of the body, decoded (see :func:`read_head`)."""
        if self._preloaded:
            self.body = preloaded(self.response)
        else:
            self._head = read_head(self.response)
            self.body = decoded(self.response.headers, self._head.sent)
        return self.body

    def close(self) -> None:
        """Close the 401 rather than drain it (its body may never end), to resend it."""
        self.response.close()
        self.response.release_conn()

    def handed_back(self, url: str) -> BaseHTTPResponse:
        """The 401 to hand back: :func:`replayed` if its body was read here, else as it is.

        :param url: the URL it answered.
        """
        if self._head is None:
            return self.response
        return replayed(self.response, self._head, url)
