"""Acquisition under asyncio: one token for tasks and threads, an event loop that runs on.

The token requests of async callers go out through a tiny asyncio HTTP
client (:func:`send`) to the fake Piggy: one request per connection.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.events import CooldownStarted, Event, FetchFailed
from requests_piggy_auth.failures import token_request_failed
from requests_piggy_auth.httpx import HttpxAuth
from requests_piggy_auth.oauth import Token, TokenRequest, TokenResponse
from requests_piggy_auth.stores import RedisTokenStore
from requests_piggy_auth.testing import FakeClock, FakePiggy, Status

from .conftest import CLIENT_ID, CLIENT_SECRET, EchoServer, MakeAuth, Ticks
from .redis_server import RedisServer


async def send(request: TokenRequest) -> TokenResponse:
    """POST ``request`` over asyncio streams and read the answer to the end."""
    url = urlsplit(request.url)
    try:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
    except OSError as exc:
        failure = token_request_failed(request.url, exc)
    else:
        return await exchange(reader, writer, request)
    raise failure


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: TokenRequest
) -> TokenResponse:
    url = urlsplit(request.url)
    try:
        head = [
            f"POST {url.path} HTTP/1.1",
            f"Host: {url.netloc}",
            f"Content-Length: {len(request.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in request.headers.items()),
        ]
        writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + request.body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = status_head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return TokenResponse(int(status_line.split()[1]), headers, body)


@pytest.fixture
def auth(make_auth: MakeAuth) -> ClientCredentialsAuth:
    """The client on a cache of its own, on the real clock."""
    return make_auth(cache=TokenCache())


def test_200_tasks_and_8_threads_cold_make_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def tasks() -> list[str]:
        leases = [asyncio.create_task(auth.alease(send)) for _ in range(200)]
        await asyncio.to_thread(hold.release_on_arrival)  # the loop runs on meanwhile
        return [(await lease).access_token for lease in leases]

    with ThreadPoolExecutor(8) as pool:
        threads = [pool.submit(auth.token) for _ in range(8)]
        tokens = asyncio.run(tasks()) + [thread.result(30) for thread in threads]

    assert tokens == [piggy.tokens()[0]] * 208
    assert piggy.stats().token_requests == 1


@pytest.mark.parametrize("leader", ["a task", "a thread"])
def test_the_loop_runs_on_while_a_token_request_is_held(
    piggy: FakePiggy, auth: ClientCredentialsAuth, leader: str
) -> None:
    ticks = Ticks()
    piggy.fault_token_endpoint(ticks.hold, times=1)

    async def ticking() -> str:
        if leader == "a thread":
            threading.Thread(target=auth.token, daemon=True).start()
            assert await asyncio.to_thread(ticks.holding.wait, 30)
        lease = asyncio.ensure_future(auth.alease(send))
        await ticks.tick(lease)
        return (await lease).access_token

    assert asyncio.run(ticking()) == piggy.tokens()[0]
    assert ticks.counted == ticks.enough  # a blocked loop would count none during the hold
    assert piggy.stats().token_requests == 1


def test_cancelling_the_task_that_leads_a_fetch_leaves_it_to_the_others(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def cancelled_leader() -> list[str]:
        leader = asyncio.create_task(auth.alease(send))
        await asyncio.to_thread(hold.arrived.wait, 30)
        followers = [asyncio.create_task(auth.alease(send)) for _ in range(5)]
        await asyncio.sleep(0)  # each follower has joined the flight
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        hold.release()
        return [(await follower).access_token for follower in followers]

    tokens = asyncio.run(cancelled_leader())

    assert tokens == [piggy.tokens()[0]] * 5
    assert piggy.stats().token_requests == 1
    assert asyncio.run(auth.alease(send)).access_token == piggy.tokens()[0]  # not wedged: a hit


def test_async_callers_share_a_fleets_token_through_the_store(
    piggy: FakePiggy, redis_server: RedisServer
) -> None:
    """The store's Redis I/O runs in a thread; its token request still goes out on the loop."""
    store = RedisTokenStore(redis_server.client())

    def process() -> ClientCredentialsAuth:
        return ClientCredentialsAuth(
            CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache(store=store)
        )

    async def fleet() -> list[str]:
        leases = [process().alease(send) for _ in range(3)]
        return [lease.access_token for lease in await asyncio.gather(*leases)]

    assert asyncio.run(fleet()) == [piggy.tokens()[0]] * 3
    assert piggy.stats().token_requests == 1


def test_an_outage_is_retried_then_cools_async_callers_down(
    piggy: FakePiggy, make_auth: MakeAuth
) -> None:
    auth = make_auth(cache=TokenCache(), retry=RetryPolicy(total=1, backoff_factor=0.01))
    piggy.fault_token_endpoint(Status(503))

    async def twice() -> list[str]:
        errors = []
        for _ in range(2):
            with pytest.raises(TokenRequestError) as raised:
                await auth.alease(send)
            errors.append(str(raised.value))
        return errors

    first, second = asyncio.run(twice())

    assert "HTTP 503" in first
    assert second.startswith("no token request for client")  # cooling down: no request
    assert piggy.stats().token_requests == 2  # the first attempt and its one retry


def test_a_fetch_past_its_deadline_is_abandoned_for_async_callers(
    piggy: FakePiggy, make_auth: MakeAuth
) -> None:
    auth = make_auth(cache=TokenCache(), timeout=(0.1, 5), retry=RetryPolicy(total=0, budget=0.2))
    released = threading.Event()

    def held(request: Request) -> Response:
        released.wait(30)
        return Status(503)(request)  # issues no token that a later test could see

    piggy.fault_token_endpoint(held, times=1)

    async def abandoned() -> str:
        with pytest.raises(TokenRequestError) as raised:
            await auth.alease(send)
        return str(raised.value)

    try:
        assert "abandoned" in asyncio.run(abandoned())
    finally:
        released.set()


def test_a_personal_access_token_is_leased_without_a_request(piggy: FakePiggy) -> None:
    pat = PersonalAccessTokenAuth("pat-1234", base_url=piggy.url)

    assert asyncio.run(pat.alease(send)).access_token == "pat-1234"
    assert piggy.stats().token_requests == 0


def test_an_async_hit_past_the_refresh_point_refreshes_in_a_task_and_keeps_the_token(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    # The leeway becomes 2 s, a tenth of the lifetime, and the margin its floor, a tenth
    # of the usable 18 s: the refresh point is at 16.2 s, stale at 18.
    piggy.token_lifetime = 20
    auth = make_auth(cache=TokenCache(clock=clock, jitter=lambda: 0.0))

    async def refreshing() -> list[str]:
        first = await auth.alease(send)
        hold = piggy.hold()
        clock.advance(16.2)
        kept = await auth.alease(send)  # starts the refresh, a task on this loop
        clock.advance(1.8)  # stale: this one waits for that refresh, held at the server
        renewed, _ = await asyncio.gather(
            auth.alease(send), asyncio.to_thread(hold.release_on_arrival)
        )
        return [first.access_token, kept.access_token, renewed.access_token]

    first, kept, renewed = asyncio.run(refreshing())

    assert (first, kept, renewed) == (piggy.tokens()[0], piggy.tokens()[0], piggy.tokens()[1])
    assert piggy.stats().token_requests == 2


def test_an_async_token_request_that_gets_no_answer_is_retried(
    make_auth: MakeAuth, unreachable: str
) -> None:
    auth = make_auth(
        base_url=unreachable, cache=TokenCache(), retry=RetryPolicy(total=1, backoff_factor=0.01)
    )

    with pytest.raises(TokenRequestError, match="connection error") as raised:
        asyncio.run(auth.alease(send))
    assert raised.value.status is None


def test_a_loop_that_ends_with_its_fetch_pending_tells_the_other_waiters_in_our_terms(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    """A caller gives up (``wait_for``) and its loop ends, cancelling the fetch it led:
    a thread waiting on that fetch gets a ``TokenRequestError``, not a ``CancelledError``."""
    hold = piggy.hold()
    waiting = threading.Event()
    outcomes: list[object] = []

    def thread_waits() -> None:
        waiting.set()
        try:
            outcomes.append(auth.token())
        except TokenRequestError as exc:
            outcomes.append(exc)

    waiter = threading.Thread(target=thread_waits, daemon=True)

    async def gives_up() -> None:
        leader = asyncio.create_task(asyncio.wait_for(auth.alease(send), 0.5))
        assert await asyncio.to_thread(hold.arrived.wait, 30)
        waiter.start()
        assert await asyncio.to_thread(waiting.wait, 30)
        with pytest.raises(asyncio.TimeoutError):
            await leader

    try:
        asyncio.run(gives_up())  # ends the loop, and with it the fetch task
    finally:
        hold.release()
    waiter.join(30)

    assert len(outcomes) == 1
    assert isinstance(outcomes[0], (str, TokenRequestError))  # never a CancelledError


KEY = ("https://api.piggy.eu/oauth/token", "client")


def test_a_fetch_task_cancelled_before_it_ran_leaves_no_flight_behind() -> None:
    """``asyncio.run`` cancels the tasks left when it ends, a fetch that never ran
    included: its key is free at once for the next caller, in any thread."""
    cache = TokenCache()

    async def fetch() -> Token:
        return Token("one", expires_in=100)

    async def main() -> None:
        me = asyncio.current_task()
        assert me is not None

        async def lead() -> None:
            await me  # woken in the loop's last turn, after main has ended
            await cache.alease(KEY, fetch, timeout=5)

        leader = asyncio.create_task(lead())
        await asyncio.sleep(0)
        assert not leader.done()

    asyncio.run(main())

    with ThreadPoolExecutor(1) as pool:
        later = pool.submit(cache.get, KEY, lambda: Token("two", expires_in=100), timeout=30)
        assert later.result(timeout=60) == "two"


def test_an_async_fetch_past_its_deadline_is_cancelled_not_left_running(
    echo_server: EchoServer,
) -> None:
    """A token endpoint that trickles its answer holds no task past the fetch's deadline."""
    echo_server.mode = "trickle"
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=echo_server.url,
        cache=TokenCache(),
        retry=RetryPolicy(total=0, budget=1),
        timeout=(1, 1),
    )

    async def main() -> list[asyncio.Task[object]]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            with pytest.raises(TokenRequestError, match="abandoned"):
                await client.get(echo_server.url + "/api")
            me = asyncio.current_task()
            others = [task for task in asyncio.all_tasks() if task is not me]
            if others:  # a bound for the cancellation to land, not a synchronisation
                await asyncio.wait(others, timeout=5)
            return [task for task in others if not task.done()]

    assert asyncio.run(main()) == []


@pytest.mark.parametrize("first", ["the waiter", "the fetch"])
def test_an_async_fetch_past_its_deadline_is_told_once(clock: FakeClock, first: str) -> None:
    """Whether its waiter gives it up first (the cache's clock past the deadline at the
    waiter's second look, half a second in) or its own timeout ends it (a second in)."""
    cache = TokenCache(clock=clock)
    heard: list[Event] = []
    cache.add_listener(heard.append)

    async def main() -> None:
        never = asyncio.Event()

        async def hanging() -> Token:
            if first == "the waiter":
                clock.advance(20)  # past the flight's deadline, as a held request would be
            await never.wait()
            raise AssertionError("never set")

        with pytest.raises(TokenRequestError, match="abandoned"):
            await cache.alease(KEY, hanging, timeout=1)  # its waits: half a second each
        await asyncio.wait_for(asyncio.gather(*cache._tasks, return_exceptions=True), 30)

    asyncio.run(main())
    assert [type(event) for event in heard] == [FetchFailed, CooldownStarted]
