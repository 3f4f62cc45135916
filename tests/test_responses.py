"""Judging a 401 from its first MiB: the body decoded boundedly, or not at all, or
what came of it before it broke off."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import pytest
import requests
import urllib3

from requests_piggy_auth import ClientCredentialsAuth, RetryPolicy, TokenCache
from requests_piggy_auth.oauth import MAX_BODY
from requests_piggy_auth.responses import decoded
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import BrokenServer

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


# A 401 whose body breaks off, on either adapter

STALE = b'WWW-Authenticate: Bearer error="invalid_token"\r\nContent-Length: 100\r\n'
OTHER = b'WWW-Authenticate: Bearer error="invalid_request"\r\nContent-Length: 100\r\n'
#: Whether urllib3 is 1.26 (its responses have no ``read1``).
urllib3_1 = not hasattr(urllib3.HTTPResponse, "read1")
#: Each way to call: the adapter and whether the body is streamed (not preloaded).
CALLS = [("requests", True), ("requests", False), ("urllib3", True), ("urllib3", False)]


def broken_auth(server: BrokenServer) -> ClientCredentialsAuth:
    session = requests.Session()
    session.verify, session.trust_env = server.verify, False  # REQUESTS_CA_BUNDLE would win
    return ClientCredentialsAuth(
        "client-1",
        "s3cret",
        base_url=server.url,
        cache=TokenCache(),
        retry=RetryPolicy(total=0),
        token_session=session,
    )


def broken_http(
    server: BrokenServer, auth: ClientCredentialsAuth | None
) -> urllib3.PoolManager | AuthorizedHttp:
    """A urllib3 pool that trusts ``server``: with ``auth``, wrapped in :class:`AuthorizedHttp`."""
    pool = urllib3.PoolManager(ca_certs=server.cert)
    return pool if auth is None else AuthorizedHttp(auth, pool)


def outcome(
    adapter: str, streamed: bool, server: BrokenServer, auth: ClientCredentialsAuth | None
) -> tuple[object, ...]:
    """The status and body of a GET, or the type of what was raised getting either."""
    url = server.url + "/api"
    read: Callable[[], bytes]
    try:
        if adapter == "requests":
            response = requests.get(
                url, auth=auth, stream=streamed, timeout=5, verify=server.verify
            )
            status, read = response.status_code, lambda: response.content
        else:
            http = broken_http(server, auth)
            sent = http.request("GET", url, preload_content=not streamed, retries=False, timeout=5)
            status, read = sent.status, sent.read
    except Exception as exc:
        return (type(exc),)
    try:
        return status, read()
    except Exception as exc:
        return status, type(exc)


@pytest.mark.parametrize("ending", ["close", "reset"])
@pytest.mark.parametrize(("adapter", "streamed"), [*CALLS[:2], CALLS[2]])
def test_a_stale_401_that_breaks_off_is_judged_by_its_headers_and_resent(
    broken_server: BrokenServer, adapter: str, streamed: bool, ending: str
) -> None:
    broken_server.break_off("401 Unauthorized", STALE, b'{"error": "', ending, faults=1)

    assert outcome(adapter, streamed, broken_server, broken_auth(broken_server)) == (200, b"ok")
    assert broken_server.authorizations == ["Bearer tok-1", "Bearer tok-2"]


@pytest.mark.parametrize("ending", ["close", "reset"])
@pytest.mark.parametrize(("adapter", "streamed"), CALLS)
def test_a_401_that_breaks_off_and_is_handed_back_fails_as_it_would_without_auth(
    broken_server: BrokenServer, adapter: str, streamed: bool, ending: str
) -> None:
    broken_server.break_off("401 Unauthorized", OTHER, b'{"error": "', ending, faults=2)

    without = outcome(adapter, streamed, broken_server, None)
    got = outcome(adapter, streamed, broken_server, broken_auth(broken_server))

    if got != without and urllib3_1 and (adapter, streamed) == CALLS[2]:
        # 1.26 ends a body cut short silently in read1 (so the judging) and read(amt)
        # (so requests), but raises in read(): the rest is then b"" for either.
        pytest.xfail("urllib3 1.26: a 401 cut short, read whole with read(), is not raised")
    assert got == without
    assert broken_server.authorizations == [None, "Bearer tok-1"]
