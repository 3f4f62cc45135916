"""HttpxAuth against the fake Piggy on loopback: httpx.Client and httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.failures import describe_failure
from requests_piggy_auth.httpx import HttpxAuth
from requests_piggy_auth.testing import Delay, FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, MakeAuth, invalid_token


@pytest.fixture
def auth(make_auth: MakeAuth) -> ClientCredentialsAuth:
    """The client on a cache of its own, on the real clock."""
    return make_auth(cache=TokenCache())


def get(auth: ClientCredentialsAuth, url: str, mode: str) -> httpx.Response:
    """GET ``url`` with ``auth`` on an ``httpx.Client`` (``mode="sync"``) or an ``AsyncClient``."""
    if mode == "sync":
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            return client.get(url)

    async def aget() -> httpx.Response:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            return await client.get(url)

    return asyncio.run(aget())


def reject_together(piggy: FakePiggy, n: int) -> None:
    """Answer the next ``n`` requests 401 only once all have come, so all hold the revoked token."""
    everyone_rejected = threading.Barrier(n)

    def rejected(request: Request) -> Response:
        everyone_rejected.wait(30)
        return invalid_token(request)

    piggy.fault_resources(rejected, times=n)


def test_a_client_sends_the_token_and_fetches_it_once(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    with httpx.Client(auth=HttpxAuth(auth)) as client:
        responses = [client.get(piggy.url + API) for _ in range(3)]

    assert [r.status_code for r in responses] == [200] * 3
    assert piggy.stats().token_requests == 1
    assert {e.headers["Authorization"] for e in piggy.log("resource")} == {
        f"Bearer {piggy.tokens()[0]}"
    }


def test_500_tasks_cold_make_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def tasks() -> list[int]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            calls = [asyncio.create_task(client.get(piggy.url + API)) for _ in range(500)]
            await asyncio.to_thread(hold.release_on_arrival)  # the loop runs on meanwhile
            return [(await call).status_code for call in calls]

    assert asyncio.run(tasks()) == [200] * 500
    assert piggy.stats().token_requests == 1
    assert piggy.stats().unauthorized == 0


def test_a_revocation_seen_by_100_tasks_makes_one_new_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    async def tasks() -> list[httpx.Response]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            assert (await client.get(piggy.url + API)).status_code == 200
            piggy.revoke_all()
            reject_together(piggy, 100)
            return await asyncio.gather(*(client.get(piggy.url + API) for _ in range(100)))

    responses = asyncio.run(tasks())

    assert [r.status_code for r in responses] == [200] * 100
    assert [[h.status_code for h in r.history] for r in responses] == [[401]] * 100
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == 100


def test_a_sync_client_storm_of_threads_makes_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()
    barrier = threading.Barrier(16)

    def call() -> int:
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            barrier.wait(30)
            return client.get(piggy.url + API).status_code

    with ThreadPoolExecutor(16) as pool:
        calls = [pool.submit(call) for _ in range(16)]
        hold.release_on_arrival()
        statuses = [c.result(30) for c in calls]

    assert statuses == [200] * 16
    assert piggy.stats().token_requests == 1


def test_the_loop_runs_on_while_a_token_request_takes_a_second(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    slow = Delay(1)
    piggy.fault_token_endpoint(slow, times=1)

    async def ticking() -> tuple[int, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        running = asyncio.create_task(ticker())
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            status = (await client.get(piggy.url + API)).status_code
        done.set()
        await running
        return status, ticks

    status, ticks = asyncio.run(ticking())

    assert status == 200
    assert piggy.stats().token_requests == 1
    assert ticks >= 10  # a blocked loop would not tick at all during the second


def test_cancelling_the_leading_task_does_not_wedge_the_key(
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


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_401_for_a_stale_token_gets_one_resend_with_a_new_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth, mode: str
) -> None:
    client = httpx.Client(auth=HttpxAuth(auth))
    assert client.get(piggy.url + API).status_code == 200
    piggy.revoke_all()

    if mode == "sync":
        response = client.post(piggy.url + API, content=b'{"email": "a@example.com"}')
    else:

        async def post() -> httpx.Response:
            async with httpx.AsyncClient(auth=HttpxAuth(auth)) as aclient:
                return await aclient.post(piggy.url + API, content=b'{"email": "a@example.com"}')

        response = asyncio.run(post())
    client.close()

    assert response.status_code != 401
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == 1
    posted = [e for e in piggy.log("resource") if e.method == "POST"]
    assert [e.headers["Authorization"] for e in posted] == [
        f"Bearer {piggy.tokens()[0]}",
        f"Bearer {piggy.tokens()[1]}",
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_401_that_keeps_coming_is_resent_once_and_handed_back(
    piggy: FakePiggy, auth: ClientCredentialsAuth, mode: str
) -> None:
    piggy.fault_resources(invalid_token)
    response = get(auth, piggy.url + API, mode)

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    assert piggy.stats().token_requests == 2
    assert len(piggy.log("resource")) == 2


def chunks() -> Iterator[bytes]:
    yield b'{"email": '
    yield b'"a@example.com"}'


async def achunks() -> object:
    yield b'{"email": '
    yield b'"a@example.com"}'


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_generator_body_is_not_resent_and_a_warning_says_so(
    piggy: FakePiggy,
    auth: ClientCredentialsAuth,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    piggy.fault_resources(invalid_token, times=1)
    if mode == "sync":
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            response = client.post(piggy.url + API, content=chunks())
    else:

        async def post() -> httpx.Response:
            async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
                return await client.post(piggy.url + API, content=achunks())  # type: ignore[arg-type]

        response = asyncio.run(post())

    assert response.status_code == 401
    assert len(piggy.log("resource")) == 1
    assert [r.levelno for r in caplog.records if "not resent" in r.getMessage()] == [
        logging.WARNING
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_token_goes_to_no_other_origin(
    piggy: FakePiggy, auth: ClientCredentialsAuth, other: HTTPServer, mode: str
) -> None:
    other.expect_request("/elsewhere").respond_with_data("ok")
    redirect = other.url_for("/elsewhere")
    piggy.fault_resources(
        lambda request: Response(status=302, headers={"Location": redirect}), times=2
    )

    def sent() -> list[str | None]:
        return [request.headers.get("Authorization") for request, _ in other.log]

    if mode == "sync":
        with httpx.Client(auth=HttpxAuth(auth), follow_redirects=True) as client:
            assert client.get(redirect).status_code == 200
            assert client.get(piggy.url + API).status_code == 200
    else:

        async def get() -> None:
            async with httpx.AsyncClient(auth=HttpxAuth(auth), follow_redirects=True) as client:
                assert (await client.get(redirect)).status_code == 200
                assert (await client.get(piggy.url + API)).status_code == 200

        asyncio.run(get())

    assert sent() == [None, None]
    assert piggy.stats().token_requests == 1  # the Piggy request had it


def test_a_401_that_carried_no_token_is_not_judged(
    piggy: FakePiggy, auth: ClientCredentialsAuth, other: HTTPServer
) -> None:
    other.expect_request("/elsewhere").respond_with_data("no", status=401)
    with httpx.Client(auth=HttpxAuth(auth)) as client:
        assert client.get(other.url_for("/elsewhere")).status_code == 401
    assert piggy.stats().token_requests == 0


def test_a_personal_access_token_is_sent_without_a_token_request(piggy: FakePiggy) -> None:
    piggy.add_personal_access_token("pat-123")
    pat = PersonalAccessTokenAuth("pat-123", base_url=piggy.url)
    with httpx.Client(auth=HttpxAuth(pat)) as client:
        assert client.get(piggy.url + API).status_code == 200
    assert piggy.stats().token_requests == 0
    assert repr(HttpxAuth(pat)).startswith("HttpxAuth(PersonalAccessTokenAuth(")


def test_a_401_of_unknown_length_is_judged_on_its_header(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    def streamed(request: Request) -> Response:
        response = invalid_token(request)
        response.response = iter([response.get_data()])  # no Content-Length: chunked
        del response.headers["Content-Length"]
        return response

    piggy.fault_resources(streamed, times=1)
    with httpx.Client(auth=HttpxAuth(auth)) as client:
        assert client.get(piggy.url + API).status_code == 200
    assert piggy.stats().token_requests == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_token_request_that_gets_no_answer_raises_in_our_terms(
    make_auth: MakeAuth, unreachable: str, mode: str
) -> None:
    auth = make_auth(base_url=unreachable, cache=TokenCache(), retry=RetryPolicy(total=0))
    with pytest.raises(TokenRequestError, match="connection error") as raised:
        get(auth, unreachable + API, mode)
    assert "ConnectError" in str(raised.value)


def test_a_token_request_that_times_out_says_so(piggy: FakePiggy, make_auth: MakeAuth) -> None:
    piggy.fault_token_endpoint(Delay(1), times=1)
    auth = make_auth(cache=TokenCache(), retry=RetryPolicy(total=0), timeout=0.2)
    with (
        pytest.raises(TokenRequestError, match=r"timed out .*ReadTimeout"),
        httpx.Client(auth=HttpxAuth(auth)) as client,
    ):
        client.get(piggy.url + API)


def test_failures_are_told_without_httpx_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "httpx")
    assert describe_failure(ValueError()) == "failed (ValueError)"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_oversized_token_response_is_read_no_further_than_needed(
    piggy: FakePiggy, make_auth: MakeAuth, mode: str
) -> None:
    huge = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    piggy.fault_token_endpoint(lambda request: Response(huge, 200), times=1)
    auth = make_auth(cache=TokenCache(), retry=RetryPolicy(total=0))
    with pytest.raises(TokenRequestError, match="a body over 1048576 bytes; stopped reading it"):
        get(auth, piggy.url + API, mode)


def test_tasks_threads_requests_and_urllib3_cold_share_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()

    async def tasks() -> list[int]:
        async with httpx.AsyncClient(auth=HttpxAuth(auth), timeout=60) as client:
            calls = [asyncio.create_task(client.get(piggy.url + API)) for _ in range(50)]
            await asyncio.to_thread(hold.release_on_arrival)
            return [(await call).status_code for call in calls]

    def with_requests() -> int:
        return requests.get(piggy.url + API, auth=auth, timeout=30).status_code

    def with_urllib3() -> int:
        with AuthorizedHttp(auth) as http:
            return http.request("GET", piggy.url + API).status

    def with_httpx() -> int:
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            return client.get(piggy.url + API).status_code

    with ThreadPoolExecutor(10) as pool:
        threads = [pool.submit(with_requests) for _ in range(8)]
        threads += [pool.submit(with_urllib3), pool.submit(with_httpx)]
        statuses = asyncio.run(tasks()) + [thread.result(30) for thread in threads]

    assert statuses == [200] * 60
    assert piggy.stats().token_requests == 1
