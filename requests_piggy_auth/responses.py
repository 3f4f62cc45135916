"""A 401's body, for both adapters: judged from its first MiB, handed back whole.

Both work on a urllib3 ``HTTPResponse`` (which is also ``requests.Response.raw``)
whose body has not been read: :func:`read_head` reads at most ``MAX_BODY + 1``
bytes of it as sent, for at most ``MAX_JUDGE_SECONDS``, :func:`decoded` decodes
them boundedly for judging, and :func:`replayed` hands the response back with
those bytes followed by the rest, still unread, so a streamed 401 stays
streamable however long its body is.
"""

from __future__ import annotations

import functools
import io
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import urllib3

from .oauth import MAX_BODY

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


def read_head(response: BaseHTTPResponse) -> bytes:
    """Up to ``MAX_BODY + 1`` bytes of ``response``'s body, as sent (still encoded).

    Each read takes what one socket read brings, so reading stops once
    ``MAX_JUDGE_SECONDS`` have passed, however slowly the body comes.
    """
    read1 = _read1(response)
    deadline = time.monotonic() + MAX_JUDGE_SECONDS
    head = bytearray()
    while len(head) <= MAX_BODY and time.monotonic() < deadline:
        chunk = read1(min(_CHUNK, MAX_BODY + 1 - len(head)))
        if not chunk:
            break
        head += chunk
    return bytes(head)


def _read1(response: BaseHTTPResponse) -> Callable[[int], bytes]:
    """One read of at most so many bytes of ``response``'s body as sent: what is there."""
    if hasattr(response, "read1"):  # urllib3 2
        return functools.partial(response.read1, decode_content=False)
    return response._fp.read1  # type: ignore[attr-defined,no-any-return]  # pragma: no cover - urllib3 1.26


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


def replayed(
    response: BaseHTTPResponse, head: bytes, url: str, *, preload_content: bool = False
) -> urllib3.HTTPResponse:
    """``response`` again, its body ``head`` (read from it) and then the rest, unread.

    Its content decoding is ``response``'s; closing it closes ``response``
    and releases its connection.

    :param url: the URL it answered.
    :param preload_content: read the whole body now, as urllib3 would have.
    """
    return urllib3.HTTPResponse(
        body=_Rest(head, response),
        headers=response.headers,
        status=response.status,
        version=response.version,
        reason=response.reason,
        preload_content=preload_content,
        decode_content=response.decode_content,
        original_response=getattr(response, "_original_response", None),
        retries=response.retries,
        enforce_content_length=False,
        request_url=url,
    )


class _Rest(io.RawIOBase):
    """A body read from ``head`` and then from ``response``, as sent."""

    def __init__(self, head: bytes, response: BaseHTTPResponse) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._response = response

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size], self._head = self._head[:size], self._head[size:]
            return size
        data = self._response.read(len(view), decode_content=False)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._response.close()  # a no-op once read to the end: the connection is back
        self._response.release_conn()
        super().close()
