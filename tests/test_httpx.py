"""HttpxAuth beyond the contract suite: asyncio storms, a loop that runs on, cancellation.

What every adapter promises, httpx.Client and httpx.AsyncClient included, is in
tests/test_contract.py; here is what only asyncio and httpx have.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import os
import signal
import ssl
import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    RetryPolicy,
    TokenCache,
)
from requests_piggy_auth.errors import TokenRequestError
from requests_piggy_auth.events import Event, TokenFetched
from requests_piggy_auth.failures import describe_failure
from requests_piggy_auth.httpx import MAX_ORIGINS, HttpxAuth
from requests_piggy_auth.stores import RedisTokenStore
from requests_piggy_auth.testing import FakeClock, FakePiggy, Hold, Status
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_ID, BrokenServer, MakeAuth, Ticks, invalid_token
from .redis_server import RedisServer
from .test_responses import OTHER, STALE


@pytest.fixture
def auth(make_auth: MakeAuth) -> ClientCredentialsAuth:
    """The client on a cache of its own, on the real clock."""
    return make_auth(cache=TokenCache())


def test_500_tasks_cold_make_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def tasks() -> list[int]:
        # A small pool: httpcore's work per queued request grows with the pool's size.
        limits = httpx.Limits(max_connections=10)
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60, limits=limits) as client:
            calls = [asyncio.create_task(client.get(piggy.url + API)) for _ in range(500)]
            await asyncio.to_thread(hold.release_on_arrival)  # the loop runs on meanwhile
            return [(await call).status_code for call in calls]

    assert asyncio.run(tasks()) == [200] * 500
    assert piggy.stats().token_requests == 1
    assert piggy.stats().unauthorized == 0


def test_a_revocation_seen_by_100_tasks_makes_one_new_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    everyone_rejected = threading.Barrier(100)

    def rejected(request: Request) -> Response:
        everyone_rejected.wait(30)  # every task holds the revoked token
        return invalid_token(request)

    async def tasks() -> list[httpx.Response]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            assert (await client.get(piggy.url + API)).status_code == 200
            piggy.revoke_all()
            piggy.fault_resources(rejected, times=100)
            return await asyncio.gather(*(client.get(piggy.url + API) for _ in range(100)))

    responses = asyncio.run(tasks())

    assert [r.status_code for r in responses] == [200] * 100
    assert [[h.status_code for h in r.history] for r in responses] == [[401]] * 100
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == 100


def test_tasks_on_two_loops_threads_requests_and_urllib3_cold_share_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()
    started = threading.Barrier(2 + 8 + 2 + 1)  # two loops, requests, urllib3, httpx, this

    async def tasks() -> list[int]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            calls = [asyncio.create_task(client.get(piggy.url + API)) for _ in range(50)]
            await asyncio.to_thread(started.wait, 30)
            return [(await call).status_code for call in calls]

    def loop() -> list[int]:
        return asyncio.run(tasks())

    def with_requests() -> list[int]:
        started.wait(30)
        return [requests.get(piggy.url + API, auth=auth, timeout=30).status_code]

    def with_urllib3() -> list[int]:
        with AuthorizedHttp(auth) as http:
            started.wait(30)
            return [http.request("GET", piggy.url + API).status for _ in range(4)]

    def with_httpx() -> list[int]:
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            started.wait(30)
            return [client.get(piggy.url + API).status_code]

    with ThreadPoolExecutor(12) as pool:
        callers = [pool.submit(loop) for _ in range(2)]
        callers += [pool.submit(with_requests) for _ in range(8)]
        callers += [pool.submit(with_urllib3), pool.submit(with_httpx)]
        started.wait(30)
        hold.release_on_arrival()
        statuses = [status for caller in callers for status in caller.result(60)]

    assert statuses == [200] * (2 * 50 + 8 + 4 + 1)
    assert piggy.stats().token_requests == 1


# The loop runs on while the token endpoint is slow


def test_the_loop_runs_on_during_a_cold_fetch_led_by_a_task(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    ticks = Ticks()
    piggy.fault_token_endpoint(ticks.hold, times=1)

    async def cold() -> int:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            call = asyncio.ensure_future(client.get(piggy.url + API))
            await ticks.tick(call)
            return (await call).status_code

    assert asyncio.run(cold()) == 200
    assert ticks.counted == ticks.enough
    assert piggy.stats().token_requests == 1


def test_the_loop_runs_on_while_it_waits_for_a_fetch_led_by_a_thread(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    ticks = Ticks()
    piggy.fault_token_endpoint(ticks.hold, times=1)

    async def follower() -> int:
        with ThreadPoolExecutor(1) as thread:
            led = thread.submit(auth.token)
            assert await asyncio.to_thread(ticks.holding.wait, 30)
            async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
                call = asyncio.ensure_future(client.get(piggy.url + API))
                await ticks.tick(call)
                assert led.result(30) == piggy.tokens()[0]
                return (await call).status_code

    assert asyncio.run(follower()) == 200
    assert ticks.counted == ticks.enough
    assert piggy.stats().token_requests == 1


def refresh_point(piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock) -> ClientCredentialsAuth:
    """Auth on ``clock``, for 20 s tokens: the leeway a tenth of that, 2 s, and the margin its
    floor, a tenth of the usable 18 s, so a hit at 16.2 s starts a refresh ahead."""
    piggy.token_lifetime = 20
    return make_auth(cache=TokenCache(clock=clock, jitter=lambda: 0.0))


def test_the_loop_runs_on_during_a_refresh_ahead(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = refresh_point(piggy, make_auth, clock)
    ticks = Ticks()

    async def refreshing() -> list[str | None]:
        fetched: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            first = await client.get(piggy.url + API)
            auth.cache.add_listener(fetched.set_result)  # told once: the refresh
            piggy.fault_token_endpoint(ticks.hold, times=1)
            clock.advance(16.2)
            kept = await client.get(piggy.url + API)  # starts the refresh, keeps the token
            await ticks.tick(fetched)
            assert isinstance(await fetched, TokenFetched)
            renewed = await client.get(piggy.url + API)
        return [r.request.headers["Authorization"] for r in (first, kept, renewed)]

    old, kept, renewed = asyncio.run(refreshing())

    assert ticks.counted == ticks.enough
    assert (old, kept, renewed) == (f"Bearer {piggy.tokens()[0]}",) * 2 + (
        f"Bearer {piggy.tokens()[1]}",
    )


def test_the_loop_runs_on_while_redis_is_stalled(
    piggy: FakePiggy, make_auth: MakeAuth, redis_server: RedisServer
) -> None:
    """The store's Redis I/O runs in a thread (``asyncio.to_thread``), never on the loop."""
    auth = make_auth(cache=TokenCache(store=RedisTokenStore(redis_server.client())))
    assert redis_server.process is not None
    pid, ticks = redis_server.process.pid, Ticks()

    def stall() -> None:
        os.kill(pid, signal.SIGSTOP)
        try:
            ticks.hold()
        finally:
            os.kill(pid, signal.SIGCONT)

    async def stalled() -> int:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            with ThreadPoolExecutor(1) as thread:
                thread.submit(stall)
                assert await asyncio.to_thread(ticks.holding.wait, 30)
                call = asyncio.ensure_future(client.get(piggy.url + API))
                await ticks.tick(call)
            return (await call).status_code

    assert asyncio.run(stalled()) == 200
    assert ticks.counted == ticks.enough
    assert piggy.stats().token_requests == 1


# Cancellation


def test_cancelling_the_task_that_leads_a_fetch_leaves_it_to_the_others(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def cancelled_leader() -> list[int]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            leader = asyncio.create_task(client.get(piggy.url + API))
            assert await asyncio.to_thread(hold.arrived.wait, 30)
            followers = [asyncio.create_task(client.get(piggy.url + API)) for _ in range(5)]
            await asyncio.sleep(0)  # each follower has joined the flight
            leader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leader
            hold.release()
            statuses = [(await follower).status_code for follower in followers]
            statuses.append((await client.get(piggy.url + API)).status_code)
            return statuses

    assert asyncio.run(cancelled_leader()) == [200] * 6
    assert piggy.stats().token_requests == 1


def test_cancelling_a_task_that_waits_for_a_fetch_leaves_it_to_the_others(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def cancelled_waiter() -> list[int]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            leader = asyncio.create_task(client.get(piggy.url + API))
            assert await asyncio.to_thread(hold.arrived.wait, 30)
            waiter, other = (asyncio.create_task(client.get(piggy.url + API)) for _ in range(2))
            await asyncio.sleep(0)  # both wait for the leader's fetch
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            hold.release()
            return [(await call).status_code for call in (leader, other)]

    assert asyncio.run(cancelled_waiter()) == [200, 200]
    assert asyncio.run(auth.alease(send_nothing)).access_token == piggy.tokens()[0]  # a hit
    assert piggy.stats().token_requests == 1


async def send_nothing(request: object) -> Any:
    raise AssertionError("a hit sends no token request")


@pytest.mark.parametrize("where", ["awaiting its new token", "resent"])
def test_cancelling_a_task_on_its_way_to_a_resend_leaves_the_key_working(
    piggy: FakePiggy, auth: ClientCredentialsAuth, where: str
) -> None:
    held = Hold()

    async def cancelled() -> list[int]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            assert (await client.get(piggy.url + API)).status_code == 200
            piggy.revoke_all()
            if where == "resent":
                piggy.fault_resources(invalid_token, times=1)
                piggy.fault_resources(held, times=1)
            else:
                piggy.fault_token_endpoint(held, times=1)
            call = asyncio.create_task(client.get(piggy.url + API))
            assert await asyncio.to_thread(held.arrived.wait, 30)
            other = asyncio.create_task(client.get(piggy.url + API))
            await asyncio.sleep(0)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            held.release()
            return [(await other).status_code, (await client.get(piggy.url + API)).status_code]

    assert asyncio.run(cancelled()) == [200, 200]
    assert piggy.stats().token_requests == 2
    new = f"Bearer {piggy.tokens()[1]}"
    assert [entry.headers["Authorization"] for entry in piggy.log("resource")][-2:] == [new] * 2


def test_a_refresh_ahead_pending_when_its_loop_closes_leaves_no_task_and_no_warning(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    auth = refresh_point(piggy, make_auth, clock)
    hold = Hold()

    async def closing() -> int:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            assert (await client.get(piggy.url + API)).status_code == 200
            piggy.fault_token_endpoint(hold, times=1)
            clock.advance(16.2)
            status = (await client.get(piggy.url + API)).status_code  # starts the refresh
            assert await asyncio.to_thread(hold.arrived.wait, 30)
            return status

    assert asyncio.run(closing()) == 200  # closes the loop, the refresh still held
    clock.advance(1.8)  # stale: the next call waits for a new fetch, on a new loop
    try:
        renewed = get(auth, piggy.url + API)
    finally:
        hold.release()

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert renewed.request.headers["Authorization"] == f"Bearer {piggy.tokens()[1]}"
    assert piggy.stats().token_requests == 3  # the first, the one cut short, the new one


def get(auth: ClientCredentialsAuth, url: str, mode: str = "async") -> httpx.Response:
    """GET ``url`` with ``auth`` on an ``httpx.Client`` (``mode="sync"``) or an
    ``AsyncClient`` on a loop of its own."""
    if mode == "sync":
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            return client.get(url)

    async def aget() -> httpx.Response:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            return await client.get(url)

    return asyncio.run(aget())


# Bodies httpx can replay, and those it cannot


class Chunks:
    """An async byte stream that iterates anew each time, as httpx can replay it."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield b'{"name": '
        yield b'"stream"}'


def sync_chunks() -> Iterator[bytes]:
    yield b'{"name": '
    yield b'"stream"}'


REPLAYABLE: dict[str, Any] = {
    "a list of chunks": lambda: [b'{"name": ', b'"stream"}'],
    "a file at its start": lambda: io.BytesIO(b'{"name": "stream"}'),
    "an async iterable": Chunks,
}


@pytest.mark.parametrize("body", list(REPLAYABLE))
def test_a_byte_stream_httpx_can_replay_is_resent(
    piggy: FakePiggy, auth: ClientCredentialsAuth, body: str
) -> None:
    piggy.fault_resources(invalid_token, times=1)
    content = REPLAYABLE[body]()

    if body == "an async iterable":

        async def post() -> httpx.Response:
            async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
                return await client.post(piggy.url + API, content=content)

        response = asyncio.run(post())
    else:
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            response = client.post(piggy.url + API, content=content)

    assert response.status_code == 201
    assert [entry.body for entry in piggy.log("resource")] == [b'{"name": "stream"}'] * 2


@pytest.mark.parametrize("body", ["an iterator", "a multipart upload"])
def test_a_stream_httpx_cannot_replay_is_not_resent(
    piggy: FakePiggy, auth: ClientCredentialsAuth, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    piggy.fault_resources(invalid_token, times=1)
    with httpx.Client(auth=HttpxAuth(auth)) as client:
        if body == "an iterator":
            response = client.post(piggy.url + API, content=iter([b"{}"]))
        else:
            response = client.post(piggy.url + API, files={"f": io.BytesIO(b"{}")})

    assert response.status_code == 401
    assert piggy.stats().resource_requests == 1
    assert "cannot be replayed" in caplog.text


# What only httpx has


def test_repr_names_the_wrapped_auth(piggy: FakePiggy) -> None:
    pat = PersonalAccessTokenAuth("pat-123", base_url=piggy.url)
    assert repr(HttpxAuth(pat)).startswith("HttpxAuth(PersonalAccessTokenAuth(")


def test_the_decision_by_origin_holds_past_the_origins_remembered(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    httpx_auth = HttpxAuth(auth)
    others = [httpx.URL(f"https://host-{n}.example/") for n in range(MAX_ORIGINS + 1)]
    api = httpx.URL(piggy.url + API)

    decisions = [httpx_auth._sends_token_to(url) for url in [api, *others, api]]

    assert decisions == [True] + [False] * (MAX_ORIGINS + 1) + [True]
    assert len(httpx_auth._origins) <= MAX_ORIGINS


def test_a_token_request_that_times_out_says_so(piggy: FakePiggy, make_auth: MakeAuth) -> None:
    released = threading.Event()

    def held(request: Request) -> Response:
        released.wait(30)
        return Status(503)(request)  # issues no token that a later test could see

    piggy.fault_token_endpoint(held, times=1)
    auth = make_auth(cache=TokenCache(), retry=RetryPolicy(total=0), timeout=0.2)
    try:
        with (
            pytest.raises(TokenRequestError, match=r"timed out .*ReadTimeout"),
            httpx.Client(auth=HttpxAuth(auth)) as client,
        ):
            client.get(piggy.url + API)
    finally:
        released.set()


def test_failures_are_told_without_httpx_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "httpx")
    assert describe_failure(ValueError()) == "failed (ValueError)"


# Token requests through the user's client


def test_token_requests_go_through_the_client_given(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    """The client's event hooks see the token request; with this very auth on it, the
    token request carries no token and goes through no flow of ours."""
    seen: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [seen.append]}) as client:
        client.auth = HttpxAuth(auth, client=client)
        assert client.get(piggy.url + API).status_code == 200

    assert [str(request.url) for request in seen] == [piggy.token_url, piggy.url + API]
    assert "Authorization" not in seen[0].headers
    assert piggy.stats().token_requests == 1


def test_async_token_requests_go_through_the_async_client_given(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    seen: list[httpx.Request] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request)

    async def main() -> int:
        async with httpx.AsyncClient(event_hooks={"request": [hook]}) as client:
            client.auth = HttpxAuth(auth, async_client=client)
            return (await client.get(piggy.url + API)).status_code

    assert asyncio.run(main()) == 200
    assert [str(request.url) for request in seen] == [piggy.token_url, piggy.url + API]
    assert piggy.stats().token_requests == 1


# A 401's body: judged from at most a MiB of it as sent


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_compressed_401_is_judged_from_a_bounded_read_and_handed_back_whole(
    piggy: FakePiggy, auth: ClientCredentialsAuth, mode: str
) -> None:
    """64 MiB of zeros gzipped to 64 KiB: judged without holding them, then streamed."""
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    headers = {"Content-Encoding": "gzip", "WWW-Authenticate": 'Bearer error="invalid_request"'}
    piggy.fault_resources(lambda request: Response(bomb, 401, headers), times=1)
    auth.token()  # the token request's own allocations are not the 401's
    peak = 0

    def peak_at_hand_back() -> int:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    async def astreamed() -> tuple[int, int]:
        nonlocal peak
        async with (
            httpx.AsyncClient(auth=HttpxAuth(auth)) as client,
            client.stream("GET", piggy.url + API) as response,
        ):
            peak = peak_at_hand_back()
            return response.status_code, len(await anext(aiter(response.aiter_bytes())))

    tracemalloc.start()

    if mode == "sync":
        with (
            httpx.Client(auth=HttpxAuth(auth)) as client,
            client.stream("GET", piggy.url + API) as response,
        ):
            peak = peak_at_hand_back()
            status, first = response.status_code, len(next(response.iter_bytes()))
    else:
        status, first = asyncio.run(astreamed())

    assert (status, first > 0) == (401, True)
    assert peak < 16 * 1024 * 1024  # what judging took, before the caller reads
    assert piggy.stats().token_requests == 1  # invalid_request: not judged stale


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_chunked_401_that_says_invalid_token_in_its_body_is_resent(
    piggy: FakePiggy, auth: ClientCredentialsAuth, mode: str
) -> None:
    def chunked(request: Request) -> Response:
        body = iter([b'{"error": ', b'"invalid_token"}'])
        return Response(body, 401, {"Content-Type": "application/json"})

    auth.token()
    piggy.fault_resources(chunked, times=1)

    assert get(auth, piggy.url + API, mode).status_code == 200
    assert piggy.stats().token_requests == 2


def broken_outcome(server: BrokenServer, mode: str, *, with_auth: bool) -> tuple[object, ...]:
    """The status and body of a GET to ``server``, or the type of what was raised; with
    ``with_auth``, token requests go through the same client (which trusts the server)."""
    verify: ssl.SSLContext | bool = True
    if server.cert is not None:
        verify = ssl.create_default_context(cafile=server.cert)
    auth = ClientCredentialsAuth(
        "client-1", "s3cret", base_url=server.url, cache=TokenCache(), retry=RetryPolicy(total=0)
    )
    url = server.url + "/api"

    async def aget() -> httpx.Response:
        async with httpx.AsyncClient(verify=verify) as client:
            if with_auth:
                client.auth = HttpxAuth(auth, async_client=client)
            return await client.get(url, timeout=5)

    try:
        if mode == "async":
            response = asyncio.run(aget())
        else:
            with httpx.Client(verify=verify) as client:
                if with_auth:
                    client.auth = HttpxAuth(auth, client=client)
                response = client.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return (type(exc),)
    return response.status_code, response.content


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("ending", ["close", "reset"])
def test_a_stale_401_that_breaks_off_is_judged_on_what_came_and_resent(
    broken_server: BrokenServer, ending: str, mode: str
) -> None:
    broken_server.break_off("401 Unauthorized", STALE, b'{"error": "', ending, faults=1)

    assert broken_outcome(broken_server, mode, with_auth=True) == (200, b"ok")
    assert broken_server.authorizations == ["Bearer tok-1", "Bearer tok-2"]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("ending", ["close", "reset"])
def test_a_401_that_breaks_off_and_is_handed_back_fails_as_it_would_without_auth(
    broken_server: BrokenServer, ending: str, mode: str
) -> None:
    broken_server.break_off("401 Unauthorized", OTHER, b'{"error": "', ending, faults=2)

    without = broken_outcome(broken_server, mode, with_auth=False)

    assert broken_outcome(broken_server, mode, with_auth=True) == without
    assert broken_server.authorizations == [None, "Bearer tok-1"]


# Token requests that fail in httpx's own ways


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_client_hook_that_raises_for_status_still_gives_our_refusal(
    piggy: FakePiggy, mode: str
) -> None:
    """The hook httpx's docs show, on the client token requests go through: a refusal is
    still our error, with its status and no secret (httpx closed its body unread)."""
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        "wrong-secret-CANARY",
        base_url=piggy.url,
        cache=TokenCache(),
        retry=RetryPolicy(total=0),
    )

    def hook(response: httpx.Response) -> None:
        response.raise_for_status()

    async def ahook(response: httpx.Response) -> None:
        response.raise_for_status()

    async def aget() -> None:
        async with httpx.AsyncClient(event_hooks={"response": [ahook]}) as client:
            client.auth = HttpxAuth(auth, async_client=client)
            await client.get(piggy.url + API)

    def sget() -> None:
        with httpx.Client(event_hooks={"response": [hook]}) as client:
            client.auth = HttpxAuth(auth, client=client)
            client.get(piggy.url + API)

    with pytest.raises(TokenRequestError) as raised:
        sget() if mode == "sync" else asyncio.run(aget())
    assert raised.value.status == 401
    assert "CANARY" not in str(raised.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_token_answer_that_cannot_be_decoded_is_our_error_without_the_secret(
    piggy: FakePiggy, mode: str
) -> None:
    piggy.fault_token_endpoint(
        lambda request: Response(b"this is not gzip", 200, {"Content-Encoding": "gzip"})
    )
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        "s3cret-CANARY",
        base_url=piggy.url,
        cache=TokenCache(),
        retry=RetryPolicy(total=0),
    )
    piggy.add_client(CLIENT_ID, "s3cret-CANARY")

    with pytest.raises(TokenRequestError, match="DecodingError") as raised:
        get(auth, piggy.url + API, mode)
    error: BaseException | None = raised.value
    while error is not None:
        assert "CANARY" not in repr(error)
        error = error.__cause__ or error.__context__
