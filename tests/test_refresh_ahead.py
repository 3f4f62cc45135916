"""Refresh-ahead: a token near its end is renewed in the background while callers keep using it."""

from __future__ import annotations

import contextvars
import logging
import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import requests

from requests_piggy_auth import ClientCredentialsAuth, CoolDown, TokenCache, TokenRequestError
from requests_piggy_auth.cache import FETCH_THREAD, REFRESH_THREAD
from requests_piggy_auth.oauth import Token
from requests_piggy_auth.testing import FakeClock, FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_SECRET, MakeAuth, authorizations
from .test_concurrency import run_together

KEY = ("https://api.piggy.eu/oauth/token", "client-1")
LIFETIME, LEEWAY = 3600.0, 30.0
#: With the default window (half the usable lifetime) and no jitter: where refreshing starts.
WINDOW_START = (LIFETIME - LEEWAY) / 2
STALE, EXPIRED = LIFETIME - LEEWAY, LIFETIME


class Endpoint:
    """A token endpoint: numbered tokens, counted, each request held while ``gate`` is closed.

    ``arrived`` is set when a request comes; ``threads`` names the thread of each.
    """

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.threads: list[str] = []
        self.failures: list[Exception] = []
        self.arrived = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self) -> Token:
        self.threads.append(threading.current_thread().name)
        self.arrived.set()
        assert self.gate.wait(30)
        if self.failures:
            raise self.failures.pop(0)
        self.issued.append(f"token-CANARY-{len(self.issued)}")
        return Token(self.issued[-1], LIFETIME)

    def hold(self) -> None:
        """Hold the next requests until :meth:`release`."""
        self.arrived.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()


def refreshed() -> None:
    """Wait for the background refreshes in flight to end."""
    for thread in threading.enumerate():
        if thread.name == REFRESH_THREAD:
            thread.join(30)
            assert not thread.is_alive()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    endpoint = Endpoint()
    yield endpoint
    endpoint.release()
    refreshed()


@pytest.fixture
def cache(clock: FakeClock) -> TokenCache:
    """A cache whose refresh point is the start of the window."""
    return TokenCache(clock=clock, leeway=LEEWAY, jitter=lambda: 0.0)


def test_many_threads_in_the_window_start_one_refresh_and_keep_the_old_token(
    cache: TokenCache, clock: FakeClock, endpoint: Endpoint
) -> None:
    assert cache.get(KEY, endpoint) == "token-CANARY-0"
    clock.advance(WINDOW_START - 0.001)
    assert cache.get(KEY, endpoint) == "token-CANARY-0"
    assert endpoint.threads == [FETCH_THREAD]

    clock.advance(0.001)
    endpoint.hold()
    assert run_together(32, lambda: cache.get(KEY, endpoint)) == ["token-CANARY-0"] * 32
    assert endpoint.arrived.wait(30)
    clock.advance(STALE - WINDOW_START - 0.001)  # the refresh is held up to the leeway point
    assert run_together(32, lambda: cache.get(KEY, endpoint)) == ["token-CANARY-0"] * 32
    endpoint.release()
    refreshed()

    assert endpoint.threads == [FETCH_THREAD, REFRESH_THREAD]
    assert cache.get(KEY, endpoint) == "token-CANARY-1"


@pytest.mark.parametrize(
    ("failures", "late_caller_gets"),
    [([], "token-CANARY-1"), ([TokenRequestError("503")], "token-CANARY-0")],
    ids=["refreshed", "failed"],
)
def test_a_caller_past_the_leeway_point_waits_for_the_refresh_in_flight(
    clock: FakeClock, endpoint: Endpoint, failures: list[Exception], late_caller_gets: str
) -> None:
    cache = TokenCache(clock=clock, cooldown=CoolDown(first=10, jitter=0), jitter=lambda: 0.0)
    cache.get(KEY, endpoint)
    clock.advance(WINDOW_START)
    endpoint.failures.extend(failures)
    endpoint.hold()
    cache.get(KEY, endpoint)
    assert endpoint.arrived.wait(30)
    clock.advance(STALE - WINDOW_START)

    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(cache.get, KEY, endpoint)
        endpoint.release()
        assert late.result(30) == late_caller_gets  # a failure leaves the stale, valid token
    assert endpoint.threads == [FETCH_THREAD, REFRESH_THREAD]  # one request for both


def test_keys_refresh_each_on_their_own(
    cache: TokenCache, clock: FakeClock, endpoint: Endpoint
) -> None:
    other = ("https://api.piggy.eu/oauth/token", "client-2")
    cache.get(KEY, endpoint)
    cache.get(other, endpoint)
    clock.advance(WINDOW_START)
    endpoint.hold()
    cache.get(KEY, endpoint)
    assert endpoint.arrived.wait(30)
    assert cache.get(other, endpoint) == "token-CANARY-1"  # its refresh waits for no other
    endpoint.release()
    refreshed()

    assert endpoint.threads == [FETCH_THREAD] * 2 + [REFRESH_THREAD] * 2
    assert {cache.get(KEY, endpoint), cache.get(other, endpoint)} == {
        "token-CANARY-2",
        "token-CANARY-3",
    }


def test_fetches_run_in_daemon_threads_that_carry_the_callers_context(
    cache: TokenCache, clock: FakeClock, endpoint: Endpoint
) -> None:
    """Exit never hangs on a fetch (it waits for each until its deadline, see test_deadlines)."""
    caller = contextvars.ContextVar("caller", default="none")
    seen = []

    def fetch() -> Token:
        seen.append((threading.current_thread().daemon, caller.get()))
        return endpoint()

    caller.set("the caller")
    cache.get(KEY, fetch)
    clock.advance(WINDOW_START)
    cache.get(KEY, fetch)
    refreshed()
    assert seen == [(True, "the caller")] * 2


def test_a_token_past_its_expiry_is_fetched_by_the_caller(
    cache: TokenCache, clock: FakeClock, endpoint: Endpoint
) -> None:
    cache.get(KEY, endpoint)
    clock.advance(EXPIRED)

    assert cache.get(KEY, endpoint) == "token-CANARY-1"
    assert endpoint.threads == [FETCH_THREAD, FETCH_THREAD]


def test_a_failed_refresh_is_logged_cools_down_and_is_tried_again(
    clock: FakeClock, endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(clock=clock, cooldown=CoolDown(first=10, jitter=0), jitter=lambda: 0.0)
    cache.get(KEY, endpoint)
    clock.advance(WINDOW_START)
    endpoint.failures.append(TokenRequestError("token endpoint answered 503"))

    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        assert cache.get(KEY, endpoint) == "token-CANARY-0"
        refreshed()
    assert [(record.levelname, record.threadName) for record in caplog.records] == [
        ("WARNING", REFRESH_THREAD)
    ]
    assert "503" in caplog.text
    assert "CANARY" not in caplog.text

    clock.advance(9.999)
    assert cache.get(KEY, endpoint) == "token-CANARY-0"  # cooling down: no new request
    assert len(endpoint.threads) == 2
    clock.advance(0.001)
    assert cache.get(KEY, endpoint) == "token-CANARY-0"
    refreshed()
    assert endpoint.threads == [FETCH_THREAD, REFRESH_THREAD, REFRESH_THREAD]
    assert cache.get(KEY, endpoint) == "token-CANARY-1"


def test_no_refresh_ahead_when_it_is_off(clock: FakeClock, endpoint: Endpoint) -> None:
    cache = TokenCache(clock=clock, refresh_ahead=False, jitter=lambda: 0.0)
    cache.get(KEY, endpoint)
    clock.advance(STALE - 0.001)
    assert cache.get(KEY, endpoint) == "token-CANARY-0"
    clock.advance(0.001)
    assert cache.get(KEY, endpoint) == "token-CANARY-1"

    assert endpoint.threads == [FETCH_THREAD, FETCH_THREAD]


@pytest.mark.parametrize(
    ("window", "jitter", "refresh_point"),
    [
        (0.5, 0.0, WINDOW_START),
        (0.5, 0.5, WINDOW_START + STALE / 8),
        (0.5, 1.0, WINDOW_START + STALE / 4),
        (1.0, 0.0, 0.0),
        (0.1, 0.5, STALE * 0.9 + STALE * 0.1 / 4),
    ],
)
def test_the_refresh_point_lies_in_the_first_half_of_the_window_by_jitter(
    clock: FakeClock, endpoint: Endpoint, window: float, jitter: float, refresh_point: float
) -> None:
    cache = TokenCache(clock=clock, refresh_window=window, jitter=lambda: jitter)
    start = clock()
    cache.get(KEY, endpoint)
    clock.now = start + refresh_point - 0.001
    cache.get(KEY, endpoint)
    assert len(endpoint.threads) == 1

    clock.now = start + refresh_point
    cache.get(KEY, endpoint)
    refreshed()
    assert endpoint.threads == [FETCH_THREAD, REFRESH_THREAD]


def test_jitter_spreads_a_fleets_refresh_points(endpoint: Endpoint) -> None:
    clock = FakeClock()
    fleet = [TokenCache(clock=clock, jitter=partial(float, j)) for j in (0.0, 0.25, 0.5, 0.75)]
    for cache in fleet:
        cache.get(KEY, endpoint)
    refreshes = []
    for step in range(4):
        clock.now = 1000 + WINDOW_START + step * STALE / 16
        for cache in fleet:
            cache.get(KEY, endpoint)
        refreshed()
        refreshes.append(len(endpoint.issued) - len(fleet))

    assert refreshes == [1, 2, 3, 4]  # one more process each step, never all at once


@pytest.mark.parametrize("window", [0, -0.5, 1.001])
def test_a_bad_refresh_window_is_refused(window: float) -> None:
    with pytest.raises(ValueError, match="refresh_window"):
        TokenCache(refresh_window=window)


@pytest.mark.parametrize("adapter", ["requests", "urllib3"])
def test_the_adapters_keep_sending_the_old_token_while_it_is_refreshed(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock, adapter: str
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, jitter=lambda: 0.0))
    http = AuthorizedHttp(auth)
    call: Callable[[], Any] = {
        "requests": lambda: requests.get(piggy.url + API, auth=auth, timeout=30).status_code,
        "urllib3": lambda: http.request("GET", piggy.url + API).status,
    }[adapter]
    assert call() == 200
    (first,) = piggy.tokens()
    clock.advance(WINDOW_START)
    hold = piggy.hold()
    try:
        assert call() == 200
        assert hold.arrived.wait(30)
        assert call() == 200
    finally:
        hold.release()
    refreshed()
    assert call() == 200

    assert piggy.stats().token_requests == 2
    second = next(token for token in piggy.tokens() if token != first)
    assert authorizations(piggy) == [f"Bearer {first}"] * 3 + [f"Bearer {second}"]


def _child_past_the_leeway_point(
    auth: ClientCredentialsAuth, clock: FakeClock, results: Any
) -> None:
    clock.advance(STALE)  # the parent's refresh is held; the child fetches its own token
    results.put(auth.token())


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_child_forked_during_a_refresh_does_not_wait_for_it(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, jitter=lambda: 0.0))
    first = auth.token()
    clock.advance(WINDOW_START)
    hold = piggy.hold()
    fork = multiprocessing.get_context("fork")
    results = fork.SimpleQueue()
    try:
        assert auth.token() == first
        assert hold.arrived.wait(30)
        child = fork.Process(target=_child_past_the_leeway_point, args=(auth, clock, results))
        child.start()
        child.join(30)
    finally:
        hold.release()
    refreshed()

    assert child.exitcode == 0
    childs = results.get()
    assert piggy.stats().token_requests == 3
    assert len({first, childs, auth.token()}) == 3


# Starts a refresh held at the server and ends the main thread while it is in
# flight. The interpreter waits for it; then, at exit, a hit in the new token's
# window starts no refresh.
EXIT_DURING_A_REFRESH = f"""
import atexit, sys, threading
from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.testing import FakeClock

url, secret = sys.argv[1:]
clock = FakeClock()
auth = ClientCredentialsAuth(
    "client-1", secret, base_url=url, cache=TokenCache(clock=clock, jitter=lambda: 0.0)
)
first = auth.token()

def at_exit():
    refreshed = auth.token()
    clock.advance({WINDOW_START})
    again = auth.token()
    threads = [thread.name for thread in threading.enumerate() if thread.name != "MainThread"]
    print(refreshed != first, again == refreshed, threads)

atexit.register(at_exit)
print("fetched", flush=True)
sys.stdin.readline()
clock.advance({WINDOW_START})
assert auth.token() == first
print("exiting", flush=True)
"""


def test_the_interpreter_exits_after_a_refresh_in_flight_and_starts_none_at_exit(
    piggy: FakePiggy,
) -> None:
    command = [sys.executable, "-X", "dev", "-W", "error", "-c", EXIT_DURING_A_REFRESH]
    with subprocess.Popen(
        [*command, piggy.url, CLIENT_SECRET],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        assert process.stdout.readline() == "fetched\n"
        hold = piggy.hold()
        try:
            process.stdin.write("go\n")
            process.stdin.flush()
            assert hold.arrived.wait(30)
            assert process.stdout.readline() == "exiting\n"
        finally:
            hold.release()
        stdout, stderr = process.communicate(timeout=60)

    assert (process.returncode, stdout, stderr) == (0, "True True []\n", "")
    assert [entry.status for entry in piggy.log("token")] == [200, 200]
