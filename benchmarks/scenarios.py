"""The scenarios: each runs one library against a fresh fake Piggy and counts what happened.

Threads are lined up with a ``threading.Barrier`` and released together; the
server counts token requests; every call's outcome is its final status code
or the name of the exception the caller saw.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests
from requests.auth import HTTPBasicAuth

from requests_piggy_auth.testing import Delay, FakePiggy, Status

from .clients import (
    CLIENT_ID,
    CLIENT_SECRET,
    Client,
    Library,
    Setup,
    Signer,
    reset_requests_auth,
)


@dataclass(frozen=True)
class Settings:
    """Sizes and times of a run; :data:`FULL` is the issue's, :data:`SMOKE` a short check.

    :param storm_threads: threads in the cold start, shared-session and revocation storms.
    :param token_delay: seconds the token endpoint takes in the storms and under expiry.
    :param lifetime: the token lifetime, in seconds, under expiry and in the outage.
    :param load_threads: threads under expiry and in the outage.
    :param expiry_seconds: how long the expiry scenario runs.
    :param warmup: seconds of load before the outage starts.
    :param outage: seconds the token endpoint is down.
    :param recovery_limit: seconds after the outage to wait for every thread to succeed.
    :param overhead_calls: calls per timing of the overhead benchmark.
    :param overhead_repeats: timings of each signer; the best and the median are kept.
    :param tasks: tasks in the async cold storm.
    :param revocation_tasks: tasks in the async revocation storm.
    :param load_tasks: tasks under expiry in the async scenarios.
    :param async_seconds: how long the async expiry scenario runs.
    """

    storm_threads: int = 32
    token_delay: float = 0.3
    lifetime: float = 3.0
    load_threads: int = 8
    expiry_seconds: float = 9.0
    warmup: float = 1.0
    outage: float = 3.0
    recovery_limit: float = 15.0
    overhead_calls: int = 5000
    overhead_repeats: int = 41
    tasks: int = 500
    revocation_tasks: int = 100
    load_tasks: int = 8
    async_seconds: float = 9.0

    @property
    def leeway(self) -> float:
        """The peers' early-expiry margin: a third of the lifetime (1 s for 3 s tokens)."""
        return self.lifetime / 3


FULL = Settings()
SMOKE = Settings(
    storm_threads=4,
    token_delay=0.05,
    lifetime=1.0,
    load_threads=2,
    expiry_seconds=1.2,
    warmup=0.3,
    outage=0.5,
    recovery_limit=1.0,
    overhead_calls=200,
    overhead_repeats=3,
    tasks=20,
    revocation_tasks=10,
    load_tasks=4,
    async_seconds=0.5,
)


@dataclass
class Calls:
    """What the callers saw: each call's latency in seconds and its outcome.

    ``later`` holds the latencies of the calls that were not their thread's first.
    """

    latencies: list[float] = field(default_factory=list)
    later: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def call(self, do: Callable[[], requests.Response], *, first: bool = True) -> str:
        """Run one call, record it, return its outcome."""
        start = time.perf_counter()
        try:
            outcome = str(do().status_code)
        except Exception as exc:
            outcome = type(exc).__name__
        latency = time.perf_counter() - start
        with self._lock:
            self.latencies.append(latency)
            if not first:
                self.later.append(latency)
            self.outcomes[outcome] += 1
        return outcome

    @property
    def errors(self) -> Counter[str]:
        """The outcomes other than a 2xx."""
        return Counter({k: n for k, n in self.outcomes.items() if not k.startswith("2")})

    @property
    def failures(self) -> int:
        """Calls that did not end in a 2xx."""
        return self.errors.total()


@dataclass(frozen=True)
class Storm:
    """A burst of concurrent calls: token requests the server saw, the calls, the wall time."""

    token_requests: int
    calls: Calls
    seconds: float


@dataclass(frozen=True)
class Expiry:
    """Steady load across token expiries.

    :param first_max: the slowest call that was not its thread's first.
    """

    token_requests: int
    calls: Calls
    first_max: float

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile latency (nearest rank), in seconds."""
        ordered = sorted(self.calls.latencies)
        return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


@dataclass(frozen=True)
class Outage:
    """The token endpoint down under load.

    :param hits: token requests during the outage (all answered 503).
    :param recovery: seconds from the outage's end until every thread had a
        successful call; ``None`` if not within the recovery limit.
    """

    hits: int
    calls: Calls
    recovery: float | None


@dataclass(frozen=True)
class Overhead:
    """Nanoseconds per signing of a prepared request on a cache hit: best and median timing."""

    best: float
    median: float


@contextmanager
def fake_piggy(lifetime: float = 3600, token_delay: float = 0.0) -> Iterator[FakePiggy]:
    """A fresh fake Piggy knowing the benchmark client, with a slow token endpoint if asked."""
    reset_requests_auth()
    with FakePiggy(token_lifetime=lifetime) as piggy:
        piggy.add_client(CLIENT_ID, CLIENT_SECRET)
        if token_delay:
            piggy.fault_token_endpoint(Delay(token_delay))
        yield piggy


def together(threads: int, work: Callable[[int], object]) -> float:
    """Run ``work(i)`` on ``threads`` threads released at once; seconds from release to the end."""
    released: list[float] = []
    barrier = threading.Barrier(threads, action=lambda: released.append(time.perf_counter()))

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(threads)))
    return time.perf_counter() - released[0]


def cold_start(library: Library, settings: Settings) -> Storm:
    """Each thread sets up its own client and makes one call, all at once, on a slow endpoint."""
    calls = Calls()
    with fake_piggy(token_delay=settings.token_delay) as piggy:
        setup = Setup(piggy, settings.leeway)
        url = piggy.api_url + "/contacts"
        seconds = together(
            settings.storm_threads, lambda _: calls.call(lambda: library.connect(setup).get(url))
        )
        return Storm(piggy.stats().token_requests, calls, seconds)


def shared_session(library: Library, settings: Settings) -> Storm:
    """One client, set up first, then one call from each thread, all at once."""
    calls = Calls()
    with fake_piggy(token_delay=settings.token_delay) as piggy:
        url = piggy.api_url + "/contacts"
        start = time.perf_counter()
        client = library.connect(Setup(piggy, settings.leeway))
        together(settings.storm_threads, lambda _: calls.call(lambda: client.get(url)))
        seconds = time.perf_counter() - start
        return Storm(piggy.stats().token_requests, calls, seconds)


class LazyClient:
    """A thread's client, set up on its first call (and on the next if the setup failed)."""

    def __init__(self, library: Library, setup: Setup) -> None:
        self.library = library
        self.setup = setup
        self.client: Client | None = None

    def get(self, url: str) -> requests.Response:
        if self.client is None:
            self.client = self.library.connect(self.setup)
        return self.client.get(url)


def expiry_under_load(library: Library, settings: Settings) -> Expiry:
    """Threads with their own clients call back to back while short-lived tokens expire."""
    calls = Calls()
    with fake_piggy(settings.lifetime, settings.token_delay) as piggy:
        setup = Setup(piggy, settings.leeway)
        url = piggy.api_url + "/contacts"
        deadline = time.perf_counter() + settings.expiry_seconds

        def work(_: int) -> None:
            client = LazyClient(library, setup)
            calls.call(lambda: client.get(url))
            while time.perf_counter() < deadline:
                calls.call(lambda: client.get(url), first=False)

        together(settings.load_threads, work)
        return Expiry(piggy.stats().token_requests, calls, max(calls.later, default=0.0))


def revocation_storm(library: Library, settings: Settings) -> Storm:
    """Every thread's client has a token; all are revoked; every thread calls at once."""
    calls = Calls()
    with fake_piggy() as piggy:
        setup = Setup(piggy, settings.leeway)
        url = piggy.api_url + "/contacts"
        clients = [library.connect(setup) for _ in range(settings.storm_threads)]
        for client in clients:
            client.get(url).raise_for_status()
        before = piggy.stats().token_requests
        piggy.revoke_all()
        seconds = together(
            settings.storm_threads, lambda i: calls.call(lambda: clients[i].get(url))
        )
        return Storm(piggy.stats().token_requests - before, calls, seconds)


def outage(library: Library, settings: Settings) -> Outage:
    """Under load, the token endpoint answers 503 for a while, as every token runs out."""
    calls = Calls()
    with fake_piggy(settings.lifetime) as piggy:
        setup = Setup(piggy, settings.leeway)
        url = piggy.api_url + "/contacts"
        stop = threading.Event()
        outage_over = threading.Event()
        # Thread number: when its first call started after the outage succeeded.
        recovered_at: dict[int, float] = {}
        everyone_back = threading.Event()

        def work(i: int) -> None:
            client = LazyClient(library, setup)
            while not stop.is_set():
                after = outage_over.is_set()
                ok = calls.call(lambda: client.get(url)).startswith("2")
                if ok and after and i not in recovered_at:
                    recovered_at[i] = time.perf_counter()
                    if len(recovered_at) == settings.load_threads:
                        everyone_back.set()

        with ThreadPoolExecutor(settings.load_threads) as pool:
            for i in range(settings.load_threads):
                pool.submit(work, i)
            time.sleep(settings.warmup)
            piggy.fault_token_endpoint(Status(503), seconds=settings.outage)
            time.sleep(settings.outage)
            outage_end = time.perf_counter()
            outage_over.set()
            back = everyone_back.wait(settings.recovery_limit)
            stop.set()
        hits = sum(entry.status == 503 for entry in piggy.log("token"))
        recovery = max(recovered_at.values()) - outage_end if back else None
        return Outage(hits, calls, recovery)


def overheads(libraries: list[Library], settings: Settings) -> dict[str, Overhead]:
    """Nanoseconds per signing on a cache hit: each library, HTTPBasicAuth and a static header.

    All sign the same prepared request (to the fake's API, so every library
    sends its token), its response hooks emptied after each call; the timings
    take turns so that the machine's noise falls on all alike.
    """
    with fake_piggy() as piggy:
        prepared = requests.Request("GET", piggy.api_url + "/contacts").prepare()
        signers: dict[str, Signer] = {}
        for library in libraries:
            signers[library.name] = library.signer(library.connect(Setup(piggy, settings.leeway)))
        signers[BASIC] = HTTPBasicAuth(CLIENT_ID, CLIENT_SECRET)
        signers[STATIC] = static_header
        hooks = prepared.hooks["response"]
        for sign in signers.values():
            sign(prepared)  # every token is cached from here on
            hooks.clear()
        timers = {
            name: timeit.Timer(
                "sign(r); del hooks[:]", globals={"sign": sign, "r": prepared, "hooks": hooks}
            )
            for name, sign in signers.items()
        }
        baseline = timeit.Timer("del hooks[:]", globals={"hooks": hooks})
        n = settings.overhead_calls
        times: dict[str, list[float]] = {name: [] for name in timers}
        for _ in range(settings.overhead_repeats):
            empty = baseline.timeit(n)
            for name, timer in timers.items():
                times[name].append((timer.timeit(n) - empty) / n * 1e9)
    return {name: Overhead(min(t), statistics.median(t)) for name, t in times.items()}


BASIC = "requests HTTPBasicAuth"
STATIC = "static header callable"


def static_header(r: requests.PreparedRequest) -> requests.PreparedRequest:
    """The least an auth can do: set a fixed Authorization header."""
    r.headers["Authorization"] = "Bearer 0123456789abcdef"
    return r
