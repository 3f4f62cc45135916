"""pytest fixtures for testing a Piggy integration, registered by the ``pytest11`` entry point.

- ``fake_piggy``: a running :class:`~requests_piggy_auth.testing.FakePiggy`, reset
  for each test (one server serves the whole session).
- ``piggy_auth``: a :class:`~requests_piggy_auth.ClientCredentialsAuth` for a client
  registered with ``fake_piggy``, with a :class:`~requests_piggy_auth.TokenCache`
  of its own so no token leaks between tests.
- ``piggy_httpx_auth``: ``piggy_auth`` as an :class:`~requests_piggy_auth.httpx.HttpxAuth`,
  for ``httpx.Client(auth=...)`` and ``httpx.AsyncClient(auth=...)`` (needs httpx).

The fake server (and pytest-httpserver) is imported only when a fixture is
used, so installing the library without the ``testing`` extra leaves every
other pytest run alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from requests_piggy_auth import ClientCredentialsAuth
    from requests_piggy_auth.httpx import HttpxAuth
    from requests_piggy_auth.testing import FakePiggy

#: The client ``piggy_auth`` authenticates as.
CLIENT_ID, CLIENT_SECRET = "test-client", "test-client-secret"


@pytest.fixture(scope="session")
def _fake_piggy_server() -> Iterator[FakePiggy]:
    from requests_piggy_auth.testing import FakePiggy

    with FakePiggy() as piggy:
        yield piggy


@pytest.fixture
def fake_piggy(_fake_piggy_server: FakePiggy) -> Iterator[FakePiggy]:
    """A running fake Piggy, as new: no clients, tokens, contacts or faults.

    After the test, an exception raised in one of its handlers (a fault of
    yours, say) is raised here, so it fails the test instead of passing silently.
    """
    _fake_piggy_server.reset()
    yield _fake_piggy_server
    try:
        _fake_piggy_server.server.check_handler_errors()
    finally:
        _fake_piggy_server.reset()


@pytest.fixture
def piggy_auth(fake_piggy: FakePiggy) -> ClientCredentialsAuth:
    """Client credentials auth for ``test-client``, registered with ``fake_piggy``."""
    from requests_piggy_auth import ClientCredentialsAuth, TokenCache

    fake_piggy.add_client(CLIENT_ID, CLIENT_SECRET)
    return ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=fake_piggy.url, cache=TokenCache()
    )


@pytest.fixture
def piggy_httpx_auth(piggy_auth: ClientCredentialsAuth) -> HttpxAuth:
    """``piggy_auth`` for ``httpx.Client`` and ``httpx.AsyncClient``: the same token."""
    from requests_piggy_auth.httpx import HttpxAuth

    return HttpxAuth(piggy_auth)
