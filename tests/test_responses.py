"""Judging a 401 from its first MiB: the body decoded boundedly, or not at all."""

from __future__ import annotations

import gzip
import zlib

import pytest

from requests_piggy_auth.oauth import MAX_BODY
from requests_piggy_auth.responses import decoded

BODY = b'{"error": "insufficient_scope"}'


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "sent"),
    [
        ("", BODY),
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("X-GZIP", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),
        ("deflate", raw_deflate(BODY)),
    ],
)
def test_a_body_is_decoded_as_its_content_encoding_says(encoding: str, sent: bytes) -> None:
    assert decoded({"Content-Encoding": encoding}, sent) == BODY


@pytest.mark.parametrize(
    ("encoding", "sent"),
    [("br", b"\x8b\x02\x80"), ("gzip, gzip", gzip.compress(gzip.compress(BODY))), ("gzip", BODY)],
    ids=["unknown", "several", "corrupt"],
)
def test_a_body_that_cannot_be_decoded_here_is_judged_by_the_headers_alone(
    encoding: str, sent: bytes
) -> None:
    assert decoded({"Content-Encoding": encoding}, sent) == b""


def test_a_compressed_body_is_decoded_to_at_most_the_limit() -> None:
    bomb = gzip.compress(b"0" * (64 * MAX_BODY))

    assert len(bomb) < MAX_BODY
    assert decoded({"Content-Encoding": "gzip"}, bomb) == b"0" * (MAX_BODY + 1)
