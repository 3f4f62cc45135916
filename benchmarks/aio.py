"""The async scenarios: tasks on one event loop, each library on an ``httpx.AsyncClient``.

Each library is set up as its documentation shows: this one's :class:`HttpxAuth`
on an ``AsyncClient``, authlib's ``AsyncOAuth2Client`` (with ``token_endpoint`` and
the grant type, so it renews, after the ``fetch_token()`` its docs start with) and
httpx-auth's ``OAuth2ClientCredentials`` on an ``AsyncClient``. Besides what the
server counts, a ticker task measures the longest the loop stood still: what a
library that blocks the loop costs every other task.
"""

from __future__ import annotations

import asyncio
import time
import timeit
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from httpx_auth import OAuth2, OAuth2ClientCredentials

with warnings.catch_warnings():  # authlib 1.7+ prefers httpx2, falling back to httpx
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from requests_piggy_auth import ClientCredentialsAuth
from requests_piggy_auth.httpx import HttpxAuth

from .clients import CLIENT_ID, CLIENT_SECRET, TIMEOUT, Setup
from .scenarios import Calls, Expiry, Overhead, Settings, Storm, fake_piggy

#: Makes a connected client (peers fetch their first token here, as their docs show).
Connect = Callable[[Setup], Awaitable[httpx.AsyncClient]]


@dataclass(frozen=True)
class AsyncLibrary:
    """An async library under test: how to connect, and its ``httpx.Auth`` once connected."""

    name: str
    connect: Connect
    auth: Callable[[httpx.AsyncClient], httpx.Auth]


async def piggy_auth(setup: Setup) -> httpx.AsyncClient:
    """This library: ``HttpxAuth(ClientCredentialsAuth(...))`` on an ``AsyncClient``."""
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=setup.piggy.url, cache=setup.cache
    )
    return httpx.AsyncClient(auth=HttpxAuth(auth), timeout=TIMEOUT)


async def authlib(setup: Setup) -> httpx.AsyncClient:
    """authlib: ``AsyncOAuth2Client`` with ``token_endpoint`` and ``grant_type``, then
    ``fetch_token()``; it renews in ``ensure_active_token``, under an asyncio lock."""
    client = AsyncOAuth2Client(
        CLIENT_ID,
        CLIENT_SECRET,
        token_endpoint=setup.piggy.token_url,
        grant_type="client_credentials",
        leeway=setup.leeway,
        timeout=TIMEOUT,
    )
    await client.fetch_token()
    connected: httpx.AsyncClient = client
    return connected


async def httpx_auth(setup: Setup) -> httpx.AsyncClient:
    """httpx-auth: ``OAuth2ClientCredentials`` on an ``AsyncClient``; tokens in its global cache."""
    auth = OAuth2ClientCredentials(
        setup.piggy.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        early_expiry=setup.leeway,
    )
    return httpx.AsyncClient(auth=auth, timeout=TIMEOUT)


def _auth(client: httpx.AsyncClient) -> httpx.Auth:
    """The auth a client was given, which its every request runs."""
    assert client.auth is not None
    return client.auth


def _authlib_auth(client: httpx.AsyncClient) -> httpx.Auth:
    """The ``OAuth2Auth`` that authlib's client attaches to each request."""
    assert isinstance(client, AsyncOAuth2Client)
    auth: httpx.Auth = client.token_auth
    return auth


ASYNC_LIBRARIES = [
    AsyncLibrary("requests-piggy-auth", piggy_auth, _auth),
    AsyncLibrary("authlib", authlib, _authlib_auth),
    AsyncLibrary("httpx-auth", httpx_auth, _auth),
]
BASIC = "httpx BasicAuth"


class Stall:
    """A task that measures the longest the loop stood still between its 1 ms sleeps."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    async def stop(self) -> float:
        """Stop ticking; the longest stall, in seconds."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return self.longest


@dataclass(frozen=True)
class AsyncStorm(Storm):
    """:class:`Storm`, and the longest the loop stood still, in seconds."""

    stall: float = 0.0


@dataclass(frozen=True)
class AsyncExpiry(Expiry):
    """:class:`Expiry`, and the longest the loop stood still, in seconds."""

    stall: float = 0.0


async def call(calls: Calls, client: httpx.AsyncClient, url: str, *, first: bool = True) -> None:
    """One call, its latency and outcome recorded (``Calls.call`` for a coroutine)."""
    start = time.perf_counter()
    try:
        outcome = str((await client.get(url)).status_code)
    except Exception as exc:
        outcome = type(exc).__name__
    latency = time.perf_counter() - start
    calls.latencies.append(latency)
    if not first:
        calls.later.append(latency)
    calls.outcomes[outcome] += 1


def cold_storm(library: AsyncLibrary, settings: Settings) -> AsyncStorm:
    """One client, set up as the docs show, then every task calls at once, on a slow endpoint."""
    OAuth2.token_cache.clear()
    calls = Calls()
    with fake_piggy(token_delay=settings.token_delay) as piggy:
        url = piggy.api_url + "/contacts"

        async def storm() -> AsyncStorm:
            stall, start = Stall(), time.perf_counter()
            client = await library.connect(Setup(piggy, settings.leeway))
            await asyncio.gather(*(call(calls, client, url) for _ in range(settings.tasks)))
            await client.aclose()
            seconds = time.perf_counter() - start
            return AsyncStorm(piggy.stats().token_requests, calls, seconds, await stall.stop())

        return asyncio.run(storm())


def expiry_under_load(library: AsyncLibrary, settings: Settings) -> AsyncExpiry:
    """Tasks call back to back on one client while short-lived tokens expire."""
    OAuth2.token_cache.clear()
    calls = Calls()
    with fake_piggy(settings.lifetime, settings.token_delay) as piggy:
        url = piggy.api_url + "/contacts"

        async def load() -> AsyncExpiry:
            stall = Stall()
            deadline = time.perf_counter() + settings.async_seconds

            async def work(client: httpx.AsyncClient) -> None:
                await call(calls, client, url)
                while time.perf_counter() < deadline:
                    await call(calls, client, url, first=False)

            client = await library.connect(Setup(piggy, settings.leeway))
            await asyncio.gather(*(work(client) for _ in range(settings.load_tasks)))
            await client.aclose()
            first_max = max(calls.later, default=0.0)
            tokens = piggy.stats().token_requests
            return AsyncExpiry(tokens, calls, first_max, await stall.stop())

        return asyncio.run(load())


def revocation_storm(library: AsyncLibrary, settings: Settings) -> AsyncStorm:
    """The client has a token; the server revokes it; every task calls at once."""
    OAuth2.token_cache.clear()
    calls = Calls()
    with fake_piggy() as piggy:
        url = piggy.api_url + "/contacts"

        async def storm() -> AsyncStorm:
            client = await library.connect(Setup(piggy, settings.leeway))
            (await client.get(url)).raise_for_status()
            before = piggy.stats().token_requests
            piggy.revoke_all()
            stall, start = Stall(), time.perf_counter()
            tasks = settings.revocation_tasks
            await asyncio.gather(*(call(calls, client, url) for _ in range(tasks)))
            seconds = time.perf_counter() - start
            await client.aclose()
            tokens = piggy.stats().token_requests - before
            return AsyncStorm(tokens, calls, seconds, await stall.stop())

        return asyncio.run(storm())


def overheads(settings: Settings) -> dict[str, Overhead]:
    """Nanoseconds per async auth flow's first step on a hit: each library and ``BasicAuth``.

    That step is what an ``AsyncClient`` awaits before each request; the
    timings take turns, minus the same loop without the flow.
    """
    OAuth2.token_cache.clear()
    with fake_piggy() as piggy:
        request = httpx.Request("GET", piggy.api_url + "/contacts")

        async def measure() -> dict[str, Overhead]:
            auths: dict[str, httpx.Auth] = {}
            for library in ASYNC_LIBRARIES:
                client = await library.connect(Setup(piggy, settings.leeway))
                await client.get(request.url)  # every token is cached from here on
                await client.aclose()
                auths[library.name] = library.auth(client)
            auths[BASIC] = httpx.BasicAuth(CLIENT_ID, CLIENT_SECRET)
            return await _timed(auths, request, settings)

        return asyncio.run(measure())


async def _timed(
    auths: dict[str, httpx.Auth], request: httpx.Request, settings: Settings
) -> dict[str, Overhead]:
    """Each auth's first flow step, timed in turns (best and median of the repeats)."""
    n = settings.overhead_calls

    async def flows(auth: httpx.Auth | None) -> float:
        start = timeit.default_timer()
        for _ in range(n):
            if auth is not None:
                flow = auth.async_auth_flow(request)
                await flow.__anext__()
                await flow.aclose()
        return timeit.default_timer() - start

    times: dict[str, list[float]] = {name: [] for name in auths}
    for _ in range(settings.overhead_repeats):
        empty = await flows(None)
        for name, auth in auths.items():
            times[name].append((await flows(auth) - empty) / n * 1e9)
    return {name: Overhead(min(t), sorted(t)[len(t) // 2]) for name, t in times.items()}
