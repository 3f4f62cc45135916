"""Refresh-ahead: a token near its end is renewed in the background while callers keep using it."""

from __future__ import annotations

import contextvars
import logging
import math
import multiprocessing
import random
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest
import requests

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    RefreshMargin,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.cache import FETCH_THREAD, REFRESH_THREAD
from requests_piggy_auth.oauth import Token
from requests_piggy_auth.testing import FakeClock, FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_SECRET, MakeAuth, authorizations, fetches_ended
from .test_concurrency import run_together

KEY = ("https://api.piggy.eu/oauth/token", "client-1")
LIFETIME, LEEWAY = 3600.0, 30.0
STALE, EXPIRED = LIFETIME - LEEWAY, LIFETIME
#: Where refreshing starts with no jitter and token requests that take no time on the
#: test's clock: the margin's floor before the leeway point.
REFRESH_POINT = STALE - RefreshMargin().floor


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
    fetches_ended(REFRESH_THREAD)


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


def test_many_threads_past_the_refresh_point_start_one_refresh_and_keep_the_old_token(
    cache: TokenCache, clock: FakeClock, endpoint: Endpoint
) -> None:
    assert cache.get(KEY, endpoint) == "token-CANARY-0"
    clock.advance(REFRESH_POINT - 0.001)
    assert cache.get(KEY, endpoint) == "token-CANARY-0"
    assert endpoint.threads == [FETCH_THREAD]

    clock.advance(0.001)
    endpoint.hold()
    assert run_together(32, lambda: cache.get(KEY, endpoint)) == ["token-CANARY-0"] * 32
    assert endpoint.arrived.wait(30)
    clock.advance(STALE - REFRESH_POINT - 0.001)  # the refresh is held up to the leeway point
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
    clock.advance(REFRESH_POINT)
    endpoint.failures.extend(failures)
    endpoint.hold()
    cache.get(KEY, endpoint)
    assert endpoint.arrived.wait(30)
    clock.advance(STALE - REFRESH_POINT)

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
    clock.advance(REFRESH_POINT)
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
    clock.advance(REFRESH_POINT)
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
    cache = TokenCache(clock=clock, cooldown=CoolDown(first=2, jitter=0), jitter=lambda: 0.0)
    cache.get(KEY, endpoint)
    clock.advance(REFRESH_POINT)
    endpoint.failures.append(TokenRequestError("token endpoint answered 503"))

    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        assert cache.get(KEY, endpoint) == "token-CANARY-0"
        refreshed()
    assert [(record.levelname, record.threadName) for record in caplog.records] == [
        ("WARNING", REFRESH_THREAD)
    ]
    assert "503" in caplog.text
    assert "CANARY" not in caplog.text

    clock.advance(1.999)
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


def timed(clock: FakeClock, seconds: float, lifetime: float = LIFETIME) -> Callable[[], Token]:
    """A token endpoint whose requests take ``seconds`` on ``clock``: it moves it on
    while the caller waits for the token."""

    def fetch() -> Token:
        clock.advance(seconds)
        return Token("token-CANARY-timed", lifetime)

    return fetch


@pytest.mark.parametrize(
    ("lifetime", "took", "options", "refresh_point"),
    [
        (LIFETIME, 0.0, {}, STALE - 5),  # nothing measured: the floor
        (LIFETIME, 10.0, {}, STALE - 20),  # twice the token request's 10 s
        (LIFETIME, 100.0, {}, STALE - 60),  # the ceiling
        (LIFETIME, 10.0, {"jitter": lambda: 0.5}, STALE - 22),  # a tenth more, at random
        (LIFETIME, 10.0, {"jitter": lambda: 1.0}, STALE - 24),
        (LIFETIME, 0.0, {"refresh_window": 0.001}, STALE * 0.999),  # never before the window
        (3.0, 0.3, {}, 2.7 - 0.6),  # the leeway a tenth of 3 s, the margin twice 0.3 s
        (3.0, 0.01, {}, 2.7 - 0.27),  # the floor, a tenth of the usable 2.7 s
        (3.0, 1.0, {}, 2.7 / 2),  # twice 1 s is more than the window allows
    ],
)
def test_the_refresh_point_is_the_measured_margin_before_the_leeway_point(
    clock: FakeClock,
    endpoint: Endpoint,
    lifetime: float,
    took: float,
    options: dict[str, Any],
    refresh_point: float,
) -> None:
    cache = TokenCache(clock=clock, **{"jitter": lambda: 0.0, **options})
    start = clock()
    cache.get(KEY, timed(clock, took, lifetime))
    clock.now = start + refresh_point - 1e-6
    assert cache.get(KEY, endpoint) == "token-CANARY-timed"
    assert endpoint.threads == []

    clock.now = start + refresh_point + 1e-6
    assert cache.get(KEY, endpoint) == "token-CANARY-timed"
    refreshed()
    assert endpoint.threads == [REFRESH_THREAD]


def test_the_margin_follows_the_keys_recent_token_requests(
    clock: FakeClock, endpoint: Endpoint
) -> None:
    """A key whose token requests slow down refreshes earlier, and later again once they
    are fast: one slow request in the last twenty is left out (the 95th percentile),
    two are not."""
    cache = TokenCache(clock=clock, jitter=lambda: 0.0)
    took = [1.0] * 19 + [30.0, 30.0] + [1.0] * 19
    margins = [5.0] * 20 + [60.0] * 19 + [5.0]  # each token's, its own request counted
    fetched_at = clock()
    cache.get(KEY, timed(clock, took[0]))
    for seconds, margin in zip(took[1:], margins, strict=False):
        clock.now = fetched_at + STALE - margin - 1e-6
        assert cache.get(KEY, endpoint) == "token-CANARY-timed"
        clock.now = fetched_at = fetched_at + STALE - margin + 1e-6
        assert cache.get(KEY, timed(clock, seconds)) == "token-CANARY-timed"
        refreshed()
    assert endpoint.threads == []  # no hit before a refresh point started one
    clock.now = fetched_at + STALE - margins[-1] + 1e-6
    cache.get(KEY, endpoint)
    refreshed()
    assert endpoint.threads == [REFRESH_THREAD]


@pytest.mark.parametrize(
    ("durations", "margin"),
    [
        ((), 5.0),
        ((1.0,), 5.0),
        ((4.0,), 8.0),
        ((1.0,) * 19 + (30.0,), 5.0),  # one slow request in twenty: the 95th percentile
        ((1.0,) * 18 + (30.0, 30.0), 60.0),  # two
        ((30.0,) + (1.0,) * 20, 5.0),  # the slow one is no longer among the last twenty
        ((50.0,), 60.0),  # the ceiling
    ],
)
def test_the_margin_is_a_high_percentile_of_recent_durations_twice_over(
    durations: tuple[float, ...], margin: float
) -> None:
    assert RefreshMargin().margin(durations, STALE, 0.0) == margin
    assert RefreshMargin().margin(durations, STALE, 1.0) == margin * 1.2


@pytest.mark.parametrize(
    "options",
    [
        {"factor": 0.5},
        {"percentile": 0},
        {"percentile": 1.5},
        {"samples": 0},
        {"samples": 2.5},
        {"samples": True},
        {"floor": -1},
        {"floor": 10, "ceiling": 5},
        {"ceiling": math.inf},
        {"ceiling": math.nan},
        {"jitter": -0.1},
        {"jitter": 1.1},
    ],
)
def test_a_nonsense_margin_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RefreshMargin needs"):
        RefreshMargin(**options)


def test_a_short_lived_token_is_used_for_nine_tenths_of_its_life(
    clock: FakeClock, endpoint: Endpoint
) -> None:
    """The leeway is clamped to a tenth of the lifetime: a 3 s token is stale after 2.7 s."""
    cache = TokenCache(clock=clock, refresh_ahead=False)
    start = clock()
    cache.get(KEY, timed(clock, 0.0, lifetime=3.0))
    clock.now = start + 2.7 - 1e-6
    assert cache.get(KEY, endpoint) == "token-CANARY-timed"
    clock.now = start + 2.7
    assert cache.get(KEY, endpoint) == "token-CANARY-0"


def test_jitter_spreads_a_fleets_refresh_points(endpoint: Endpoint) -> None:
    clock = FakeClock()
    fleet = [TokenCache(clock=clock, jitter=partial(float, j)) for j in (0.0, 0.25, 0.5, 0.75)]
    for cache in fleet:
        cache.get(KEY, endpoint)
    refreshes = []
    for step in range(4):  # the margins: 5 s plus 0.75, 0.5, 0.25 and 0 times a fifth of it
        clock.now = 1000 + STALE - 5.75 + step * 0.25
        for cache in fleet:
            cache.get(KEY, endpoint)
        refreshed()
        refreshes.append(len(endpoint.issued) - len(fleet))

    assert refreshes == [1, 2, 3, 4]  # one more process each step, never all at once


def test_a_day_of_one_hour_tokens_takes_at_most_26_token_requests_and_no_caller_waits(
    clock: FakeClock,
) -> None:
    """A call every simulated second for 24 hours; token requests take 1 to 6 s, the
    first 6 s. Every call after the first is a hit, while a refresh is in flight too."""
    took = random.Random(18)
    cache = TokenCache(clock=clock, jitter=random.Random(26).random)
    threads: list[str] = []
    arrived, gate = threading.Event(), threading.Event()

    def endpoint() -> Token:
        threads.append(threading.current_thread().name)
        if not threads[1:]:
            clock.advance(6)  # the first caller waits for the first token
        else:
            arrived.set()
            assert gate.wait(30)
        return Token(f"token-CANARY-{len(threads)}", LIFETIME)

    def call() -> None:
        clock.advance(1)
        assert clock() < stale  # else this call would wait for the refresh
        assert cache.get(KEY, endpoint) == current

    start = sent_at = clock()
    current, stale = cache.get(KEY, endpoint), sent_at + STALE
    while clock() < start + 24 * 3600:
        call()
        if any(thread.name == REFRESH_THREAD for thread in threading.enumerate()):
            assert arrived.wait(30)
            sent_at = clock()
            for _ in range(took.randint(1, 6)):  # calls go on while it is in flight
                call()
            gate.set()
            refreshed()
            arrived.clear()
            gate.clear()
            current, stale = f"token-CANARY-{len(threads)}", sent_at + STALE

    assert threads == [FETCH_THREAD] + [REFRESH_THREAD] * (len(threads) - 1)
    assert len(threads) <= 26


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
    clock.advance(REFRESH_POINT)
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
    clock.advance(REFRESH_POINT)
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
    clock.advance({REFRESH_POINT})
    again = auth.token()
    threads = [thread.name for thread in threading.enumerate() if thread.name != "MainThread"]
    print(refreshed != first, again == refreshed, threads)

atexit.register(at_exit)
print("fetched", flush=True)
sys.stdin.readline()
clock.advance({REFRESH_POINT})
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


def test_a_fetch_whose_key_was_cleared_meanwhile_still_gives_its_token(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)

    def fetch() -> Token:
        cache.clear()  # its record goes: its duration is noted nowhere
        return Token("t", expires_in=100)

    assert cache.get(KEY, fetch) == "t"
    assert len(cache) == 0
