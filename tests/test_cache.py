"""TokenCache on its own: expiry, single-flight, compare-and-evict, bounds."""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from requests_piggy_auth import CoolDown, Lease, RefreshMargin, TokenCache, TokenRequestError
from requests_piggy_auth import cache as cache_module
from requests_piggy_auth.cache import FETCH_THREAD
from requests_piggy_auth.oauth import Token
from requests_piggy_auth.testing import FakeClock

from .test_cooldown import fails
from .test_refresh_ahead import REFRESH_POINT, refreshed

KEY = ("https://api.piggy.eu/oauth/token", "client")
T = TypeVar("T")


def test_a_token_without_expires_in_gets_the_default_lifetime(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock, refresh_ahead=False)
    assert cache.get(KEY, lambda: Token("one")) == "one"
    clock.advance(300 - 30 - 0.001)
    assert cache.get(KEY, lambda: Token("two")) == "one"
    clock.advance(0.001)
    assert cache.get(KEY, lambda: Token("two")) == "two"


def test_lifetime_counts_from_when_the_request_was_sent(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock, refresh_ahead=False)

    def slow_fetch() -> Token:
        clock.advance(50)  # the token endpoint took 50 s to answer
        return Token("one", expires_in=1000)

    cache.get(KEY, slow_fetch)
    clock.advance(1000 - 50 - 30 - 0.001)
    assert cache.get(KEY, lambda: Token("two")) == "one"
    clock.advance(0.001)
    assert cache.get(KEY, lambda: Token("two")) == "two"


def test_concurrent_misses_share_one_fetch_and_its_error(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    started, release = threading.Event(), threading.Event()
    calls = []

    def failing_fetch() -> Token:
        calls.append(1)
        started.set()
        release.wait(30)
        raise RuntimeError("endpoint down")

    def get() -> str:
        return cache.get(KEY, failing_fetch)

    with ThreadPoolExecutor(8) as pool:
        leader = pool.submit(get)
        assert started.wait(30)
        waiters = [pool.submit(get) for _ in range(7)]
        # Waiters that arrive while the fetch is in flight join it.
        while sum(1 for w in waiters if w.running()) < 7:
            pass
        release.set()
        errors = [f.exception(30) for f in [leader, *waiters]]

    assert all(isinstance(e, RuntimeError) for e in errors)
    assert len(calls) <= 8
    assert len(cache) == 0
    clock.advance(1)  # past the cool-down
    assert cache.get(KEY, lambda: Token("fresh")) == "fresh"


def test_evict_compares_before_it_evicts(cache: TokenCache, clock: FakeClock) -> None:
    cache.get(KEY, lambda: Token("one"))

    assert cache.evict(KEY, "someone-elses-token") is True
    assert cache.get(KEY, lambda: Token("two")) == "one"
    assert cache.evict(KEY, "one") is True
    assert cache.get(KEY, lambda: Token("two")) == "two"


def test_a_renewal_rejected_before_it_was_ever_accepted_is_renewed_once_per_interval(
    cache: TokenCache, clock: FakeClock
) -> None:
    first = cache.lease(KEY, lambda: Token("one"))
    assert cache.reject(KEY, first) is True
    renewed = cache.lease(KEY, lambda: Token("two"), after=first)

    clock.advance(4.9)
    assert cache.reject(KEY, renewed) is False  # the server rejects every token
    assert cache.get(KEY, lambda: Token("three")) == "two"

    clock.advance(0.1)
    assert cache.reject(KEY, renewed) is True
    assert cache.get(KEY, lambda: Token("three")) == "three"


def test_a_renewal_the_server_accepted_is_renewed_at_its_next_rejection(
    cache: TokenCache, clock: FakeClock
) -> None:
    first = cache.lease(KEY, lambda: Token("one"))
    assert cache.reject(KEY, first) is True
    renewed = cache.lease(KEY, lambda: Token("two"), after=first)
    renewed.answered(200)

    clock.advance(0.1)  # revoked again, well within min_evict_interval
    assert cache.reject(KEY, renewed) is True
    assert cache.lease(KEY, lambda: Token("three"), after=renewed).access_token == "three"


def test_an_empty_key_may_be_retried(cache: TokenCache) -> None:
    assert cache.evict(KEY, "never-cached") is True


def test_the_cache_is_bounded(clock: FakeClock) -> None:
    cache = TokenCache(maxsize=2, clock=clock)
    for client in "abc":
        cache.get(("url", client), lambda: Token("t"))

    assert len(cache) == 2
    assert repr(cache) == "<TokenCache clients=2 maxsize=2>"


def test_clear_forgets_every_token(cache: TokenCache) -> None:
    cache.get(KEY, lambda: Token("one"))
    cache.clear()
    assert cache.get(KEY, lambda: Token("two")) == "two"


@pytest.mark.parametrize(
    "options",
    [{"leeway": -1}, {"default_lifetime": 0}, {"min_evict_interval": -0.5}],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenCache(1024, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True, "10"])
def test_a_size_that_could_hold_no_token_is_refused(maxsize: object) -> None:
    with pytest.raises(ValueError, match=r"maxsize must be a whole number of at least 1, got"):
        TokenCache(maxsize)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("leeway", math.nan),
        ("default_lifetime", math.nan),
        ("default_lifetime", math.inf),
        ("min_evict_interval", math.nan),
    ],
)
def test_nan_settings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenCache(**{name: value})  # type: ignore[arg-type]


class Interrupted(BaseException):
    pass


def once(error: BaseException, then: Callable[[], T]) -> Callable[[], T]:
    """A callable that raises ``error`` the first time, then calls ``then``."""
    raised: list[BaseException] = []

    def call() -> T:
        if not raised:
            raised.append(error)
            raise error
        return then()

    return call


@pytest.mark.parametrize(
    ("settings", "fetch", "expected"),
    [
        ({}, once(Interrupted(), lambda: Token("never")), Interrupted),
        ({}, lambda: None, AttributeError),  # not a Token at all
        ({"jitter": once(ZeroDivisionError(), lambda: 0.5)}, lambda: Token("t"), ZeroDivisionError),
    ],
    ids=["interrupted", "not-a-token", "jitter-fails"],
)
def test_no_failure_on_any_path_leaves_the_key_wedged(
    clock: FakeClock,
    settings: dict[str, Any],
    fetch: Callable[[], Token],
    expected: type[BaseException],
) -> None:
    cache = TokenCache(clock=clock, cooldown=CoolDown(first=0), **settings)
    with pytest.raises(expected):
        cache.get(KEY, fetch)
    # The flight was resolved: the next caller fetches anew rather than waiting for ever.
    assert cache.get(KEY, lambda: Token("fresh"), timeout=30) == "fresh"


def test_a_401_while_a_fetch_is_in_flight_takes_a_token_requested_after_it(
    clock: FakeClock,
) -> None:
    cache = TokenCache(maxsize=1, clock=clock)
    old = cache.lease(KEY, lambda: Token("old"))
    cache.get(("url", "another client"), lambda: Token("other"))  # KEY's record goes
    fetching, answer = threading.Event(), threading.Event()

    def requested_before_the_401() -> Token:
        fetching.set()
        answer.wait(30)
        return Token("requested-before-the-401")

    with ThreadPoolExecutor(1) as pool:
        cold = pool.submit(cache.lease, KEY, requested_before_the_401)
        assert fetching.wait(30)
        assert cache.reject(KEY, old) is True
        answer.set()
        assert cold.result(30).access_token == "requested-before-the-401"  # its caller's

    renewed = cache.lease(KEY, lambda: Token("after"), after=old)
    assert renewed.access_token == "after"
    assert "after" not in repr(renewed)


@pytest.mark.parametrize("jitter", [math.nan, -0.5, 1.5])
def test_a_jitter_outside_zero_to_one_adds_no_random_part_to_the_margin(
    clock: FakeClock, jitter: float
) -> None:
    fetched = []

    def fetch() -> Token:
        fetched.append(1)
        return Token(f"t{len(fetched)}", 3600)

    cache = TokenCache(clock=clock, jitter=lambda: jitter)
    cache.get(KEY, fetch)
    clock.advance(REFRESH_POINT - 1)  # just before the margin's floor: a plain hit
    for _ in range(3):
        assert cache.get(KEY, fetch) == "t1"
    assert len(fetched) == 1
    clock.advance(1)
    assert cache.get(KEY, fetch) == "t1"
    refreshed()
    assert len(fetched) == 2


def test_a_clock_that_uses_the_cache_never_deadlocks_it() -> None:
    """The caller's clock (a metrics gauge, say) runs outside the cache's lock."""
    inside = threading.local()
    cache: TokenCache | None = None

    def clock() -> float:
        if cache is not None and not getattr(inside, "now", False):
            inside.now = True
            try:
                len(cache)
            finally:
                inside.now = False
        return time.monotonic()

    cache = TokenCache(clock=clock)

    def failing() -> Token:
        raise TokenRequestError("down")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get(KEY, failing, timeout=5)
        except TokenRequestError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call, daemon=True)  # a daemon: a hang fails, not blocks
    caller.start()
    caller.join(30)  # no speed limit: before, the completion asked the clock under the lock
    assert not caller.is_alive()
    assert [str(error) for error in errors] == ["down"]
    assert len(cache) == 0


def test_an_interrupt_before_the_fetch_thread_runs_leaves_no_flight_behind(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C landing as the fetch's thread starts: the next caller fetches anew."""
    cache = TokenCache(clock=clock)
    interrupted = []

    def start(self: threading.Thread) -> None:
        interrupted.append(self.name)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", start)
        with pytest.raises(KeyboardInterrupt):
            cache.get(KEY, lambda: Token("never"))
    assert interrupted == [FETCH_THREAD]
    assert cache.get(KEY, lambda: Token("fresh"), timeout=5) == "fresh"


@pytest.mark.parametrize(
    ("status", "accepted"),
    [
        (200, True),
        (204, True),
        (404, True),
        (403, True),
        (301, False),
        (304, False),
        (101, False),
        (401, False),
        (429, False),
        (503, False),
        (407, False),
        (500, False),
    ],
)
def test_only_an_answer_an_authenticated_request_gets_counts_as_accepted(
    status: int, accepted: bool
) -> None:
    lease = Lease("t")
    lease.answered(status)
    assert lease.accepted is accepted


def test_a_401_for_a_token_replaced_before_another_revocation_renews_past_it(
    clock: FakeClock,
) -> None:
    """A slow request carried A; A was refreshed to B; B alone was revoked and renewed to C;
    then A and C were revoked at once: A's first 401 needs a token requested after it."""
    cache = TokenCache(clock=clock, jitter=lambda: 0.0)
    a = cache.lease(KEY, lambda: Token("A", 3600))
    clock.advance(REFRESH_POINT)
    assert cache.get(KEY, lambda: Token("B", 3600)) == "A"  # refreshes to B in the background
    refreshed()
    b = cache.lease(KEY, lambda: pytest.fail("a hit"))
    assert cache.reject(KEY, b) is True
    assert cache.lease(KEY, lambda: Token("C", 3600), after=b).access_token == "C"

    assert cache.reject(KEY, a) is True
    assert cache.lease(KEY, lambda: Token("D", 3600), after=a).access_token == "D"


def test_a_new_call_that_takes_the_renewal_gets_a_renewal_lease(clock: FakeClock) -> None:
    """Whoever asks first after a 401, the token that replaces the rejected one is guarded."""
    cache = TokenCache(clock=clock)
    first = cache.lease(KEY, lambda: Token("one"))
    assert cache.reject(KEY, first) is True
    fresh = cache.lease(KEY, lambda: Token("two"))  # a new call, not the resend

    clock.advance(1)
    assert fresh.renewal
    assert cache.reject(KEY, fresh) is False  # rejected before ever accepted: no third token


def test_a_refresh_held_past_its_deadline_is_abandoned_by_the_next_hit_and_tried_again(
    clock: FakeClock,
) -> None:
    cache = TokenCache(
        clock=clock,
        jitter=lambda: 0.0,
        cooldown=CoolDown(first=0),
        refresh_margin=RefreshMargin(floor=60),
    )
    issued: list[str] = []
    arrived, answer = threading.Event(), threading.Event()

    def held() -> Token:
        arrived.set()
        answer.wait(30)
        return Token("held", 3600)

    def fetch() -> Token:
        issued.append(f"t{len(issued)}")
        return Token(issued[-1], 3600)

    assert cache.get(KEY, fetch, timeout=10) == "t0"
    clock.advance(3600 - 30 - 60)  # at the refresh point, 60 s before the leeway point
    assert cache.get(KEY, held, timeout=10) == "t0"  # the refresh, held by the server
    assert arrived.wait(30)
    clock.advance(11)  # past the refresh's deadline, still fresh
    try:
        assert cache.get(KEY, fetch, timeout=10) == "t0"  # abandons it, keeps the token
        assert cache.get(KEY, fetch, timeout=10) == "t0"  # starts a new refresh
    finally:
        answer.set()  # the held one ends too, unseen
    refreshed()
    assert cache.get(KEY, fetch, timeout=10) == "t1"
    assert issued == ["t0", "t1"]


def test_no_thread_for_a_fetch_is_a_token_request_error(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    cache = TokenCache(clock=clock, cooldown=CoolDown(first=0))
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", start)
        with pytest.raises(TokenRequestError, match="no thread could start"):
            cache.get(KEY, lambda: Token("never"))
    assert cache.get(KEY, lambda: Token("fresh"), timeout=5) == "fresh"


def test_exit_waits_for_no_fetch_without_a_deadline(clock: FakeClock) -> None:
    """What interpreter exit runs: it waits for each fetch until its deadline, and for
    one without a deadline (``timeout=None``) not at all."""
    cache = TokenCache(clock=clock)
    fetching, answer = threading.Event(), threading.Event()

    def held() -> Token:
        fetching.set()
        answer.wait(30)
        return Token("late")

    with ThreadPoolExecutor(1) as pool:
        caller = pool.submit(cache.get, KEY, held)  # no deadline
        assert fetching.wait(30)
        cache_module._workers.join()  # returns at once rather than waiting for it
        assert not caller.done()
        answer.set()
        assert caller.result(30) == "late"


def test_a_status_read_changes_no_clients_place_in_line_for_eviction(clock: FakeClock) -> None:
    cache = TokenCache(maxsize=2, clock=clock)
    a, b, c = ("u", "a", "f"), ("u", "b", "f"), ("u", "c", "f")
    first = cache.lease(a, lambda: Token("a1", expires_in=1000))
    cache.lease(b, lambda: Token("b1", expires_in=1000))
    assert cache.reject(a, first)
    cache.lease(a, lambda: Token("a2", expires_in=1000), after=first)  # A used last
    cache.status()  # a health check
    cache.lease(c, lambda: Token("c1", expires_in=1000))  # one client must go: B

    assert sorted(row["client_id"] for row in cache.status()) == ["a", "c"]


#: A token in use, not to be seen (a constant: no local of the test's frame holds it).
LIVE = "live-token-0123456789abcdef"


def test_a_failed_refresh_shows_no_token_in_the_locals_of_its_traceback(
    clock: FakeClock,
) -> None:
    """A failed refresh is the cause of later cool-down errors: error reporters that show
    a traceback's locals (Sentry, ``--showlocals``) see the fetch's record of it."""
    cache = TokenCache(
        clock=clock, jitter=lambda: 0.0, cooldown=CoolDown(first=60, maximum=60, jitter=0)
    )
    assert cache.get(KEY, lambda: Token(LIVE, expires_in=3600)) == LIVE
    clock.advance(REFRESH_POINT)
    assert cache.get(KEY, lambda: fails(TokenRequestError("HTTP 503", status=503))) == LIVE
    refreshed()
    clock.advance(3600 - REFRESH_POINT + 1)  # expired, still cooling down
    with pytest.raises(TokenRequestError) as raised:
        cache.get(KEY, lambda: Token("never"))

    report = traceback.TracebackException.from_exception(raised.value, capture_locals=True)
    text = "".join(report.format())
    assert "_run" in text  # the refresh thread's frame, with its locals
    assert LIVE not in text
