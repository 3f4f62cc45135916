"""After a failed fetch a client cools down: callers fail fast, the endpoint is spared."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    InvalidClientError,
    PiggyAuthError,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.oauth import Token
from requests_piggy_auth.testing import FakeClock, FakePiggy, Status

from .conftest import API, CLIENT_ID, MakeAuth, authorizations, fetch_held, fetches_ended

KEY = ("https://piggy.test/oauth/token", CLIENT_ID)
OTHER_KEY = ("https://piggy.test/oauth/token", "client-2")


@pytest.fixture
def cooling(clock: FakeClock) -> TokenCache:
    """A cache whose cool-downs are exactly 1, 2, 4, ... 30 s."""
    return TokenCache(cooldown=CoolDown(jitter=0), clock=clock)


def fails(error: Exception) -> Token:
    raise error


def test_an_outage_under_load_costs_a_few_token_requests_and_recovers(
    piggy: FakePiggy, make_auth: MakeAuth, cooling: TokenCache, clock: FakeClock
) -> None:
    """Acceptance 1: 8 threads call the API every 0.1 s; the endpoint is down for 2.5 s."""
    threads, ticks, start = 8, 36, clock.now
    retries: list[float] = []  # the retries' waits, recorded; time moves only per tick
    retry = RetryPolicy(total=2, jitter=0, sleep=retries.append, clock=clock)
    auth = make_auth(cache=cooling, retry=retry)
    go, done = threading.Barrier(threads + 1), threading.Barrier(threads + 1)
    outcomes: list[list[int | Exception]] = [[] for _ in range(ticks)]

    def caller() -> None:
        with requests.Session() as session:
            session.auth = auth
            for tick in range(ticks):
                go.wait(30)
                try:
                    outcome: int | Exception = session.get(piggy.url + API).status_code
                except Exception as exc:
                    outcome = exc
                outcomes[tick].append(outcome)
                done.wait(30)

    piggy.clock = clock
    piggy.fault_token_endpoint(Status(503), seconds=2.5)
    with ThreadPoolExecutor(threads) as pool:
        callers = [pool.submit(caller) for _ in range(threads)]
        for tick in range(ticks):
            clock.now = start + tick / 10
            go.wait(30)
            done.wait(30)
        for finished in callers:
            finished.result()

    # Fetches at 0 s (cool-down 1 s) and 1 s (2 s more), 3 attempts each; at 3 s one succeeds.
    assert piggy.stats().token_requests == 3 + 3 + 1
    assert retries == [0.5, 1.0] * 2
    recovered = 30
    failures = [outcome for tick in outcomes[:recovered] for outcome in tick]
    assert len(failures) == threads * recovered
    assert all(type(failure) is TokenRequestError for failure in failures)
    assert all(failure.status == 503 for failure in failures)  # type: ignore[union-attr]
    assert outcomes[recovered:] == [[200] * threads] * (ticks - recovered)
    assert piggy.stats().resource_requests == threads * (ticks - recovered)


def test_wrong_credentials_cool_down_too(
    piggy: FakePiggy, cooling: TokenCache, clock: FakeClock
) -> None:
    """Acceptance 3: 20 calls, 0.1 s apart, with a wrong secret."""
    auth = ClientCredentialsAuth(CLIENT_ID, "wrong", base_url=piggy.url, cache=cooling)
    errors: list[TokenRequestError] = []
    for _ in range(20):
        with pytest.raises(TokenRequestError) as caught:
            requests.get(piggy.url + API, auth=auth)
        errors.append(caught.value)
        clock.advance(0.1)

    assert piggy.stats().token_requests == 2  # at 0 s and after the 1 s cool-down
    first = errors[0]
    assert isinstance(first, InvalidClientError)
    assert first.error == "invalid_client"
    assert first.error_description == "Client authentication failed"
    assert all(isinstance(error.__cause__, InvalidClientError) for error in errors[1:10])
    assert all("Client authentication failed" in str(error) for error in errors)
    assert authorizations(piggy) == []


def test_the_cooldown_doubles_up_to_its_maximum() -> None:
    assert [CoolDown(jitter=0).pause(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert CoolDown(jitter=0).pause(10**6) == 30
    pauses = [CoolDown().pause(3) for _ in range(200)]
    assert all(2 <= pause <= 4 for pause in pauses)
    assert len(set(pauses)) == len(pauses)


@pytest.mark.parametrize(
    "options", [{"first": -1}, {"first": 5, "maximum": 1}, {"jitter": 2}, {"jitter": -1}]
)
def test_nonsense_cooldowns_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="CoolDown needs"):
        CoolDown(**options)


def test_callers_fail_fast_with_the_last_failure_chained(
    cooling: TokenCache, clock: FakeClock
) -> None:
    outage = TokenRequestError("token endpoint answered HTTP 503", status=503)
    with pytest.raises(TokenRequestError) as first:
        cooling.get(KEY, lambda: fails(outage))
    assert first.value is outage

    clock.advance(0.25)
    with pytest.raises(TokenRequestError) as fast:
        cooling.get(KEY, lambda: pytest.fail("fetched during the cool-down"))
    assert str(fast.value) == (
        f"no token request for client {CLIENT_ID!r} at {KEY[0]} for another 0.8 s, after 1 "
        "failed in a row; the last one: token endpoint answered HTTP 503"
    )
    assert fast.value.__cause__ is outage
    assert fast.value.status == 503


def test_each_failure_in_a_row_doubles_the_cooldown_and_one_success_ends_it(
    cooling: TokenCache, clock: FakeClock
) -> None:
    fetches: list[float] = []

    def outage() -> Token:
        fetches.append(clock.now - 1000)
        raise ConnectionError("down")

    for _ in range(80):  # a call every 0.1 s for 8 s
        with pytest.raises(Exception, match="down"):
            cooling.get(KEY, outage)
        clock.advance(0.1)
    assert fetches == pytest.approx([0, 1, 3, 7])

    clock.advance(8)
    assert cooling.get(KEY, lambda: Token("fresh-token", 0.5)) == "fresh-token"
    clock.advance(1)
    fetches.clear()
    with pytest.raises(ConnectionError):
        cooling.get(KEY, outage)
    clock.advance(1)  # the first failure since the success: 1 s again
    with pytest.raises(ConnectionError):
        cooling.get(KEY, outage)
    assert len(fetches) == 2


def test_a_token_not_yet_expired_outlives_a_failed_renewal(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(leeway=30, cooldown=CoolDown(jitter=0), clock=clock)
    outage = TokenRequestError("token endpoint answered HTTP 503", status=503)
    assert cache.get(KEY, lambda: Token("old-token", 600)) == "old-token"

    clock.advance(580)  # stale at 570 s, expires at 600 s
    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        assert cache.get(KEY, lambda: fails(outage)) == "old-token"
        fetches_ended()  # the fetch thread warns after its waiters have their token
    assert caplog.messages == [
        f"renewing the token for client {CLIENT_ID!r} failed (token endpoint answered HTTP "
        "503); using the current token, which expires in 20 s"
    ]
    clock.advance(0.5)
    assert cache.get(KEY, lambda: pytest.fail("fetched during the cool-down")) == "old-token"

    clock.advance(20)  # hard-expired: nothing to fall back on
    with pytest.raises(TokenRequestError) as caught:
        cache.get(KEY, lambda: fails(outage))
    assert caught.value is outage
    with pytest.raises(TokenRequestError, match="no token request"):
        cache.get(KEY, lambda: pytest.fail("fetched during the cool-down"))


def test_one_clients_cooldown_leaves_others_alone(cooling: TokenCache) -> None:
    with pytest.raises(TokenRequestError):
        cooling.get(KEY, lambda: fails(TokenRequestError("down")))

    assert cooling.get(OTHER_KEY, lambda: Token("other-token")) == "other-token"
    with pytest.raises(TokenRequestError, match="no token request"):
        cooling.get(KEY, lambda: Token("never"))


def test_clear_ends_every_cooldown(cooling: TokenCache) -> None:
    with pytest.raises(TokenRequestError):
        cooling.get(KEY, lambda: fails(TokenRequestError("down")))
    cooling.clear()
    assert cooling.get(KEY, lambda: Token("fresh-token")) == "fresh-token"


def test_a_zero_cooldown_retries_every_call(clock: FakeClock) -> None:
    cache = TokenCache(cooldown=CoolDown(first=0, maximum=0), clock=clock)
    calls = []

    def outage() -> Token:
        calls.append(1)
        raise TokenRequestError("down")

    for _ in range(3):
        with pytest.raises(TokenRequestError, match="down"):
            cache.get(KEY, outage)
    assert len(calls) == 3


class Interrupted(BaseException):
    pass


def test_an_interrupted_fetch_does_not_cool_down(cooling: TokenCache) -> None:
    with pytest.raises(Interrupted):
        cooling.get(KEY, lambda: fails(Interrupted()))  # type: ignore[arg-type]
    assert cooling.get(KEY, lambda: Token("fresh-token")) == "fresh-token"


def test_a_hung_token_endpoint_hangs_no_caller(piggy: FakePiggy, make_auth: MakeAuth) -> None:
    """The fetch gives up at its read timeout; a waiter gets that same failure."""
    auth = make_auth(timeout=(5, 0.5), retry=RetryPolicy(total=0, budget=0.2))
    with fetch_held(piggy, auth) as leader:
        with pytest.raises(TokenRequestError, match="timed out") as waiters:
            auth.token()
        with pytest.raises(TokenRequestError, match="timed out") as leaders:
            leader.result()
    assert waiters.value is leaders.value
    assert leaders.value.status is None
    assert isinstance(leaders.value, PiggyAuthError)
    assert piggy.stats().token_requests == 1


def test_a_fetch_past_its_deadline_is_abandoned_and_the_next_one_starts_anew(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = make_auth(retry=RetryPolicy(budget=1), cache=TokenCache(clock=clock))
    with fetch_held(piggy, auth) as leader, ThreadPoolExecutor(1) as pool:
        waiter = pool.submit(auth.token)
        clock.advance(1 + 3.05)  # the budget and one connect timeout: the deadline
        with pytest.raises(TokenRequestError, match="abandoned") as leaders:
            leader.result()
        with pytest.raises(TokenRequestError, match="abandoned") as waiters:
            waiter.result()
    assert waiters.value is leaders.value

    clock.advance(1)  # past the cool-down
    assert auth.token() == piggy.tokens()[-1]
    assert piggy.stats().token_requests == 2
