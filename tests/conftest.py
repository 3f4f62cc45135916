"""Test helpers: the shipped fake Piggy (the plugin's ``fake_piggy``), a clock, a second origin.

A real redis-server comes from ``tests.redis_server``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.testing import (
    API_PREFIX,
    FakeClock,
    FakePiggy,
    UnauthorizedStyle,
    json_response,
)

# The plugin is registered here rather than by its entry point (see pyproject.toml).
pytest_plugins = ["pytester", "requests_piggy_auth.pytest_plugin", "tests.redis_server"]

API = API_PREFIX + "/contacts"
CLIENT_ID, CLIENT_SECRET = "client-1", "s3cret-CANARY-5ecret"
#: The 401s that may mean a stale token, each worth a new token: every style the fake has.
STALE_TOKEN_401S: list[UnauthorizedStyle] = ["rfc6750", "header-only", "body-only", "bare"]


def authorizations(piggy: FakePiggy) -> list[str | None]:
    """The ``Authorization`` header of each request to the resource routes."""
    return [entry.headers.get("Authorization") for entry in piggy.log("resource")]


def invalid_token(request: Request) -> Response:
    """A fault: the 401 for a stale token, whatever the token."""
    return json_response(
        {"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


@pytest.fixture
def piggy(fake_piggy: FakePiggy) -> FakePiggy:
    """The plugin's fake Piggy, knowing ``CLIENT_ID``."""
    fake_piggy.add_client(CLIENT_ID, CLIENT_SECRET)
    return fake_piggy


@pytest.fixture
def unreachable() -> str:
    """The URL of a port nobody listens on."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


@pytest.fixture(scope="session")
def other_server() -> Iterator[HTTPServer]:
    with HTTPServer(host="127.0.0.1", threaded=True) as server:
        yield server


@pytest.fixture
def other(other_server: HTTPServer) -> Iterator[HTTPServer]:
    """A second origin: same host, another port."""
    yield other_server
    other_server.clear()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> TokenCache:
    return TokenCache(clock=clock)


@pytest.fixture
def auth(piggy: FakePiggy, cache: TokenCache) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
