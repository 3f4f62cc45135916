"""Events from the cache, its listeners and its status view."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import urllib3

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.cache import CachedToken, CacheKey
from requests_piggy_auth.events import (
    CooldownEnded,
    CooldownStarted,
    Event,
    FetchFailed,
    RequestResent,
    StoreFellBack,
    StoreHealth,
    StoreRecovered,
    TokenEvicted,
    TokenFetched,
)
from requests_piggy_auth.httpx import HttpxAuth
from requests_piggy_auth.oauth import Token
from requests_piggy_auth.stores import SQLiteTokenStore
from requests_piggy_auth.testing import Drop, FakeClock, FakePiggy, Status
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth, invalid_token

KEY = ("https://api.piggy.eu/oauth/token", "client")


class Heard(list[Event]):
    """A listener that keeps what it hears; :meth:`wait` for the fetching threads to tell."""

    def __init__(self) -> None:
        super().__init__()
        self._each = threading.Semaphore(0)

    def __call__(self, event: Event) -> None:
        self.append(event)
        self._each.release()

    def wait(self, count: int) -> None:
        for _ in range(count):
            assert self._each.acquire(timeout=30)


def test_a_cold_storm_and_a_revocation_tell_what_the_server_saw(
    piggy: FakePiggy, make_auth: MakeAuth, cache: TokenCache
) -> None:
    events = Heard()
    cache.add_listener(events)
    session = requests.Session()
    session.auth = make_auth()
    barrier = threading.Barrier(8)

    def call() -> int:
        barrier.wait(30)
        return session.get(piggy.url + API).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: call(), range(8))) == [200] * 8
    piggy.revoke_all()
    assert session.get(piggy.url + API).status_code == 200
    events.wait(3)

    fetched = [e for e in events if isinstance(e, TokenFetched)]
    assert len(fetched) == piggy.stats().token_requests == 2
    assert [(e.how, e.attempts) for e in fetched] == [("cold", 1), ("rejected", 1)]
    assert [e for e in events if isinstance(e, TokenEvicted)] == [TokenEvicted(CLIENT_ID)]
    status = json.dumps(cache.status())
    assert json.loads(status)[0]["token_cached"] is True
    for secret in [CLIENT_SECRET, *piggy.tokens()]:
        assert all(secret not in repr(e) for e in events)
        assert secret not in status


def test_an_outage_tells_each_failure_and_cool_down(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock, cooldown=CoolDown(first=5, jitter=0))
    events = Heard()
    cache.add_listener(events)

    def failing() -> Token:
        clock.advance(2)
        raise TokenRequestError("down", status=503)

    with pytest.raises(TokenRequestError):
        cache.get(KEY, failing)
    with pytest.raises(TokenRequestError):  # cooling down: no request, no event
        cache.get(KEY, failing)
    events.wait(2)
    assert events == [
        FetchFailed("client", "cold", 2.0, "TokenRequestError", 503),
        CooldownStarted("client", 5.0, 1),
    ]
    [row] = cache.status()
    assert row["failures_in_a_row"] == 1
    assert row["cooling_down_for"] == 5.0
    assert row["last_fetch"] == {"outcome": "error", "duration": 2.0}
    assert row["token_cached"] is False
    assert row["expires_in"] is None
    clock.advance(5)
    assert cache.get(KEY, lambda: Token("t", expires_in=100)) == "t"
    events.wait(2)
    assert events[-2:] == [TokenFetched("client", "cold", 0.0, 100.0), CooldownEnded("client", 1)]
    assert cache.status()[0]["cooling_down_for"] is None


def test_a_refresh_ahead_is_told_as_one(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock, jitter=lambda: 0.0)
    events = Heard()
    cache.add_listener(events)
    cache.get(KEY, lambda: Token("one", expires_in=100))
    events.wait(1)
    clock.advance(88)  # past the refresh point (85 s), before the leeway (90 s)
    assert cache.get(KEY, lambda: Token("two", expires_in=100)) == "one"
    events.wait(1)
    assert [e.how for e in events if isinstance(e, TokenFetched)] == ["cold", "refresh_ahead"]


def test_a_listener_that_raises_is_logged_once_and_never_fails_a_caller(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = TokenCache(clock=clock, refresh_ahead=False)
    heard = Heard()

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    cache.add_listener(broken)
    cache.add_listener(heard)
    with caplog.at_level(logging.DEBUG, "requests_piggy_auth"):
        for n in range(3):
            assert cache.get(KEY, functools.partial(Token, f"t{n}")) == f"t{n}"
            heard.wait(1)  # the fetching thread told it
            clock.advance(300)
    assert len(heard) == 3  # the next listener still hears every event
    assert [r.getMessage() for r in caplog.records if "listener" in r.getMessage()] == [
        f"a token cache listener {broken!r} raised RuntimeError"
    ]
    cache.remove_listener(broken)
    cache.remove_listener(broken)  # twice: nothing more
    assert len(cache._listeners) == 1


def test_a_listener_that_blocks_never_wedges_a_caller(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    entered, release = threading.Event(), threading.Event()

    def blocking(event: Event) -> None:
        entered.set()
        release.wait(30)

    cache.add_listener(blocking)
    # The caller has its token while the listener still blocks the fetching thread.
    assert cache.get(KEY, lambda: Token("one")) == "one"
    assert entered.wait(30)
    assert cache.get(KEY, lambda: Token("two")) == "one"  # a hit, with the lock free
    release.set()


def test_no_listener_no_events(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    assert cache.status() == []
    lease = cache.lease(KEY, lambda: Token("one"))
    assert cache.reject(KEY, lease)
    assert cache.status()[0]["last_fetch"]["outcome"] == "success"


def test_an_async_fetch_tells_its_listeners(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    events = Heard()
    cache.add_listener(events)

    async def fetch() -> Token:
        return Token("one", expires_in=100)

    assert asyncio.run(cache.alease(KEY, fetch)).access_token == "one"
    events.wait(1)
    assert events == [TokenFetched("client", "cold", 0.0, 100.0)]


def test_a_failure_of_a_cleared_flight_starts_no_cool_down(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock)
    events = Heard()
    cache.add_listener(events)

    def cleared_then_failed() -> Token:
        cache.clear()
        raise TokenRequestError("down")

    with pytest.raises(TokenRequestError):
        cache.get(KEY, cleared_then_failed)
    events.wait(1)
    assert events == [FetchFailed("client", "cold", 0.0, "TokenRequestError", None)]


def test_two_threads_rejecting_one_token_at_once_tell_one_eviction() -> None:
    both_read = threading.Barrier(2)
    lining_up = threading.Event()

    def clock() -> float:  # reject reads the clock before its lock: both line up there
        if lining_up.is_set():
            both_read.wait(30)
        return 0.0

    cache = TokenCache(clock=clock, refresh_ahead=False)
    lease = cache.lease(KEY, lambda: Token("one", expires_in=100))
    events = Heard()
    cache.add_listener(events)
    lining_up.set()
    with ThreadPoolExecutor(2) as pool:
        renewable = list(pool.map(lambda _: cache.reject(KEY, lease), range(2)))

    assert renewable == [True, True]
    assert events == [TokenEvicted("client")]


def test_remove_listener_compares_listeners_outside_the_cache_lock() -> None:
    """A listener's ``__eq__`` is user code: one that uses the cache must not deadlock it."""
    cache = TokenCache()

    class Listener:
        def __call__(self, event: Event) -> None:
            pass

        def __eq__(self, other: object) -> bool:
            len(cache)  # takes the cache's lock
            return self is other

        __hash__ = object.__hash__

    first, second = Listener(), Listener()
    cache.add_listener(first)
    cache.add_listener(second)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(cache.remove_listener, second).result(timeout=10)
    assert cache._listeners == (first,)


def sent_with(adapter: str, auth: ClientCredentialsAuth, url: str) -> int:
    """Send one GET through ``adapter`` with ``auth``; the status it came to."""
    if adapter == "requests":
        return requests.get(url, auth=auth, timeout=10).status_code
    if adapter == "urllib3":
        with AuthorizedHttp(auth, urllib3.PoolManager(retries=False)) as http:
            return http.request("GET", url).status
    if adapter == "httpx":
        with httpx.Client(auth=HttpxAuth(auth)) as client:
            return client.get(url).status_code

    async def get() -> int:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            return (await client.get(url)).status_code

    return asyncio.run(get())


ADAPTER_NAMES = {"requests": "requests", "urllib3": "urllib3", "httpx": "httpx", "async": "httpx"}
NO_ANSWER = (requests.ConnectionError, urllib3.exceptions.HTTPError, httpx.TransportError)


@pytest.mark.parametrize("adapter", list(ADAPTER_NAMES))
def test_each_resend_is_told_once_with_its_adapter_and_outcome(
    piggy: FakePiggy, make_auth: MakeAuth, cache: TokenCache, clock: FakeClock, adapter: str
) -> None:
    auth = make_auth()
    auth.token()
    heard = Heard()
    cache.add_listener(heard)
    piggy.revoke_all()
    assert sent_with(adapter, auth, piggy.url + API) == 200  # resent with a new token
    piggy.fault_resources(invalid_token, times=2)
    assert sent_with(adapter, auth, piggy.url + API) == 401  # resent, and refused again
    clock.advance(10)  # past min_evict_interval: the refused token may be revoked, not bad
    piggy.fault_resources(invalid_token, times=1)
    piggy.fault_resources(Drop())
    with pytest.raises(NO_ANSWER):
        sent_with(adapter, auth, piggy.url + API)  # resent, and no answer came

    name = ADAPTER_NAMES[adapter]
    resent = [e for e in heard if isinstance(e, RequestResent)]
    assert resent == [
        RequestResent(CLIENT_ID, name, "success"),
        RequestResent(CLIENT_ID, name, "rejected"),
        RequestResent(CLIENT_ID, name, "error"),
    ]
    assert piggy.stats().unauthorized == 4  # one per resend, and the refused resend's


def test_a_request_not_resent_tells_no_resend(
    piggy: FakePiggy, make_auth: MakeAuth, cache: TokenCache
) -> None:
    auth = make_auth(retry=RetryPolicy(total=0))
    auth.token()
    heard = Heard()
    cache.add_listener(heard)
    piggy.fault_resources(invalid_token, times=1)
    piggy.fault_token_endpoint(Status(503), times=1)
    with pytest.raises(TokenRequestError):  # the renewal failed: nothing was resent
        requests.get(piggy.url + API, auth=auth, timeout=10)
    assert not [e for e in heard if isinstance(e, RequestResent)]
    assert piggy.stats().resource_requests == 1


class FlakyStore:
    """A store whose backend is up or down, told through the hook every store calls."""

    def __init__(self) -> None:
        self.health = StoreHealth("flaky")
        self.up = False

    def get(self, key: CacheKey, fetch: Callable[[], CachedToken], *args: Any, **kw: Any) -> Any:
        if self.up:
            self.health.recovered()
        else:
            self.health.failed(ConnectionError("down"))
        return fetch()


def test_a_store_falling_back_and_recovering_is_told_once_each(clock: FakeClock) -> None:
    store = FlakyStore()
    cache = TokenCache(clock=clock, store=store, refresh_ahead=False)
    other = TokenCache(clock=clock, store=store)  # on the same store: hears the same news
    heard, told = Heard(), Heard()
    cache.add_listener(heard)
    other.add_listener(told)

    for n in range(4):
        store.up = n >= 2
        assert cache.get(KEY, functools.partial(Token, f"t{n}")) == f"t{n}"
        clock.advance(300)

    news = [StoreFellBack("flaky", "ConnectionError"), StoreRecovered("flaky")]
    assert [e for e in heard if not isinstance(e, TokenFetched)] == news
    assert told == news
    assert not store.health.failing


def test_a_listener_blocking_one_fetch_holds_up_no_other_key_thread_or_renewal(
    clock: FakeClock,
) -> None:
    cache = TokenCache(clock=clock)
    first, entered, release = threading.Lock(), threading.Event(), threading.Event()

    def blocking(event: Event) -> None:
        if first.acquire(blocking=False):  # the first event only: "a"'s token
            entered.set()
            release.wait(30)

    heard = Heard()
    cache.add_listener(blocking)
    cache.add_listener(heard)
    key_a = (KEY[0], "a")
    assert cache.get(key_a, functools.partial(Token, "a1")) == "a1"
    assert entered.wait(30)  # the fetching thread for "a" is held in the listener

    def other(n: int) -> str:
        return cache.get((KEY[0], f"other{n}"), functools.partial(Token, f"o{n}"))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(other, range(4))) == ["o0", "o1", "o2", "o3"]
    heard.wait(4)  # their fetches were told, while "a"'s still is not
    lease = cache.lease(key_a, functools.partial(Token, "a1"))
    assert cache.reject(key_a, lease)  # told in this thread: the listener lets it pass
    assert cache.lease(key_a, functools.partial(Token, "a2"), after=lease).access_token == "a2"
    heard.wait(2)
    assert [e for e in heard if e.client_id == "a"] == [  # type: ignore[union-attr]
        TokenEvicted("a"),
        TokenFetched("a", "rejected", 0.0, 300.0),
    ]
    release.set()
    heard.wait(1)
    assert heard[-1] == TokenFetched("a", "cold", 0.0, 300.0)


def test_a_listener_that_raises_in_the_callers_thread_never_fails_a_resend(
    piggy: FakePiggy, make_auth: MakeAuth, cache: TokenCache
) -> None:
    told: list[Event] = []

    def broken(event: Event) -> None:
        told.append(event)
        raise RuntimeError("listener bug")

    auth = make_auth()
    auth.token()
    cache.add_listener(broken)
    piggy.revoke_all()
    assert requests.get(piggy.url + API, auth=auth, timeout=10).status_code == 200
    assert TokenEvicted(CLIENT_ID) in told  # told in the caller's thread, and raised there
    assert RequestResent(CLIENT_ID, "requests", "success") in told


def test_an_abandoned_fetch_and_the_cool_down_it_starts_are_told(clock: FakeClock) -> None:
    cache = TokenCache(clock=clock, cooldown=CoolDown(first=5, jitter=0))
    events = Heard()
    cache.add_listener(events)
    release = threading.Event()

    def hanging() -> Token:
        clock.advance(20)  # past the caller's deadline, as a held request would be
        release.wait(30)
        return Token("late", expires_in=100)

    with pytest.raises(TokenRequestError, match="abandoned"):
        cache.get(KEY, hanging, timeout=10)
    release.set()
    events.wait(3)  # the late token, when the fetching thread ends at last

    assert cache.status()[0]["cooling_down_for"] is not None
    assert [type(e) for e in events] == [FetchFailed, CooldownStarted, TokenFetched]


def test_a_listener_added_while_another_is_removed_stays() -> None:
    cache = TokenCache()
    third = Heard()

    class Listener:
        def __call__(self, event: Event) -> None:
            pass

        def __eq__(self, other: object) -> bool:
            if not any(listener is third for listener in cache._listeners):
                cache.add_listener(third)  # while remove_listener compares
            return self is other

        __hash__ = object.__hash__

    first, second = Listener(), Listener()
    cache.add_listener(first)
    cache.add_listener(second)
    cache.remove_listener(second)

    assert cache._listeners == (first, third)


def test_a_store_keeps_no_cache_on_it_alive(tmp_path: Path) -> None:
    store = SQLiteTokenStore(tmp_path / "tokens.sqlite3")
    cache = TokenCache(store=store)
    gone = weakref.ref(cache)
    del cache
    gc.collect()

    assert gone() is None
    store.health.failed(ConnectionError("down"))  # tells no one, and fails nothing
