"""OpenTelemetry: the counts match what the fake server saw, spans hang under the caller's."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from requests_piggy_auth import ClientCredentialsAuth, TokenCache, TokenRequestError, shared_cache
from requests_piggy_auth.cache import aobserved, observed
from requests_piggy_auth.events import Event, FetchFailed, TokenFetched
from requests_piggy_auth.httpx import HttpxAuth
from requests_piggy_auth.oauth import TokenRequest, TokenResponse
from requests_piggy_auth.otel import (
    COOLDOWNS,
    RESENDS,
    SPAN_NAME,
    TOKEN_REQUEST_DURATION,
    TOKEN_REQUESTS,
    instrument,
    uninstrument,
)
from requests_piggy_auth.testing import Drop, FakeClock, FakePiggy, Status

from .conftest import API, CLIENT_ID
from .test_events import Heard

THREADS = 16


class Telemetry:
    """In-memory metrics and spans, from providers of their own (the global ones can be
    set only once per process)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.tracers.get_tracer("the caller")

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def counts(self, name: str, *keys: str) -> Counter[tuple[Any, ...]]:
        """The counter ``name``'s values by the attributes ``keys``."""
        counts: Counter[tuple[Any, ...]] = Counter()
        for point in self.points(name):
            value = point.count if isinstance(point, HistogramDataPoint) else point.value
            counts[tuple(point.attributes[key] for key in keys)] += value
        return counts

    def requests(self) -> Counter[tuple[Any, ...]]:
        """Token requests by client, outcome and reason."""
        return self.counts(TOKEN_REQUESTS, "piggy_auth.client_id", "outcome", "reason")

    def spans(self, name: str = SPAN_NAME) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]


@pytest.fixture
def telemetry(cache: TokenCache) -> Iterator[Telemetry]:
    telemetry = Telemetry()
    instrument(telemetry.meters, telemetry.tracers, cache=cache)
    yield telemetry
    uninstrument(cache)
    telemetry.meters.shutdown()
    telemetry.tracers.shutdown()


def storm(telemetry: Telemetry, call: Callable[[], int]) -> list[int]:
    """``call`` from :data:`THREADS` threads at once, each in a span of its own."""
    barrier = threading.Barrier(THREADS)

    def one(n: int) -> int:
        with telemetry.tracer.start_as_current_span(f"caller {n}"):
            barrier.wait(30)
            return call()

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(THREADS)))


def served(piggy: FakePiggy) -> Counter[str]:
    """The token requests the server saw, by outcome."""
    return Counter("success" if entry.status == 200 else "error" for entry in piggy.log("token"))


def test_a_cold_storm_and_a_revocation_storm_count_what_the_server_saw(
    piggy: FakePiggy, auth: ClientCredentialsAuth, telemetry: Telemetry
) -> None:
    def call() -> int:
        return requests.get(piggy.url + API, auth=auth, timeout=10).status_code

    assert storm(telemetry, call) == [200] * THREADS
    piggy.revoke_all()
    assert storm(telemetry, call) == [200] * THREADS

    assert served(piggy) == {"success": 2}
    assert telemetry.requests() == {
        (CLIENT_ID, "success", "cold"): 1,
        (CLIENT_ID, "success", "rejected"): 1,
    }
    duration = telemetry.counts(TOKEN_REQUEST_DURATION, "outcome", "reason")
    assert duration == {("success", "cold"): 1, ("success", "rejected"): 1}
    resends = telemetry.counts(RESENDS, "outcome", "piggy_auth.adapter")
    assert resends == {("success", "requests"): piggy.stats().unauthorized}
    assert piggy.stats().unauthorized >= 1

    callers = {
        span.context.span_id: span
        for span in telemetry.exporter.get_finished_spans()
        if span.name.startswith("caller") and span.context
    }
    for span in telemetry.spans():
        assert span.parent is not None
        assert span.parent.span_id in callers  # the caller that led the fetch
        assert span.attributes is not None
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["http.response.status_code"] == 200
        assert "error.type" not in span.attributes
    assert len(telemetry.spans()) == 2


def test_an_outage_counts_each_failed_request_and_the_cool_down(
    piggy: FakePiggy, auth: ClientCredentialsAuth, telemetry: Telemetry, clock: FakeClock
) -> None:
    heard = Heard()  # after the instrumentation's listener: told after it
    auth.cache.add_listener(heard)
    piggy.fault_token_endpoint(Drop(), times=1)
    piggy.fault_token_endpoint(Status(503))

    def call() -> int:
        try:
            return requests.get(piggy.url + API, auth=auth, timeout=10).status_code
        except TokenRequestError:
            return 0

    assert storm(telemetry, call) == [0] * THREADS  # one fetch, retried, for every caller
    clock.advance(60)  # the cool-down is over
    piggy.clear_faults()
    assert call() == 200
    heard.wait(4)  # failed, cool-down started; fetched, cool-down ended

    assert served(piggy) == {"error": 4, "success": 1}  # 3 retries, then the one after
    assert telemetry.requests() == {
        (CLIENT_ID, "error", "cold"): 4,
        (CLIENT_ID, "success", "cold"): 1,
    }
    assert telemetry.counts(COOLDOWNS, "piggy_auth.client_id") == {(CLIENT_ID,): 1}
    [failed_fetch] = [e for e in heard if isinstance(e, FetchFailed)]
    [fetched] = [e for e in heard if isinstance(e, TokenFetched)]
    assert (failed_fetch.attempts, failed_fetch.status, fetched.attempts) == (4, 503, 1)
    failed = [span for span in telemetry.spans() if span.status.status_code is StatusCode.ERROR]
    assert [span.attributes for span in failed] == [
        {
            "piggy_auth.client_id": CLIENT_ID,
            "reason": "cold",
            "server.address": "127.0.0.1",
            "error.type": "TokenRequestError",  # dropped: no answer
        },
        *[
            {
                "piggy_auth.client_id": CLIENT_ID,
                "reason": "cold",
                "server.address": "127.0.0.1",
                "http.response.status_code": 503,
                "error.type": "503",
            }
        ]
        * 3,
    ]
    assert all(span.status.description is None for span in failed)


def test_an_async_fetch_is_a_child_of_the_awaiting_callers_span(
    piggy: FakePiggy, auth: ClientCredentialsAuth, telemetry: Telemetry
) -> None:
    async def call() -> int:
        with telemetry.tracer.start_as_current_span("caller"):
            async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
                return (await client.get(piggy.url + API)).status_code

    assert asyncio.run(call()) == 200
    piggy.revoke_all()
    assert asyncio.run(call()) == 200

    [cold, renewal] = telemetry.spans()
    callers = telemetry.spans("caller")
    assert [cold.parent, renewal.parent] == [caller.context for caller in callers]
    assert telemetry.requests() == {
        (CLIENT_ID, "success", "cold"): 1,
        (CLIENT_ID, "success", "rejected"): 1,
    }
    assert telemetry.counts(RESENDS, "outcome", "piggy_auth.adapter") == {("success", "httpx"): 1}


def test_a_refresh_ahead_is_counted_as_one(
    piggy: FakePiggy, auth: ClientCredentialsAuth, telemetry: Telemetry, clock: FakeClock
) -> None:
    heard = Fetched()
    auth.cache.add_listener(heard)
    auth.token()
    clock.advance(3566)  # past the hour-long token's refresh point, before it goes stale
    auth.token()
    assert heard.wait(2)

    assert served(piggy) == {"success": 2}
    assert telemetry.requests() == {
        (CLIENT_ID, "success", "cold"): 1,
        (CLIENT_ID, "success", "refresh_ahead"): 1,
    }


class Fetched:
    """A listener: :meth:`wait` until ``n`` tokens were fetched (the metric comes first)."""

    def __init__(self) -> None:
        self.fetched = threading.Semaphore(0)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TokenFetched):
            self.fetched.release()

    def wait(self, n: int) -> bool:
        return all(self.fetched.acquire(timeout=30) for _ in range(n))


def test_off_again_nothing_is_counted_and_the_cache_is_as_before(
    piggy: FakePiggy, auth: ClientCredentialsAuth, cache: TokenCache
) -> None:
    telemetry = Telemetry()
    listeners = cache._listeners
    instrument(telemetry.meters, telemetry.tracers, cache=cache)
    instrument(telemetry.meters, telemetry.tracers, cache=cache)  # again: replaces, not adds
    assert len(cache._listeners) == len(listeners) + 1
    auth.token()
    uninstrument(cache)
    uninstrument(cache)  # not on: nothing
    piggy.revoke_all()
    assert requests.get(piggy.url + API, auth=auth, timeout=10).status_code == 200

    assert cache._listeners == listeners
    assert cache.observer is None
    assert served(piggy) == {"success": 2}
    assert telemetry.requests() == {(CLIENT_ID, "success", "cold"): 1}
    assert telemetry.counts(RESENDS, "outcome") == {}


def test_by_default_the_shared_cache_and_the_global_providers() -> None:
    listeners = shared_cache()._listeners
    instrument()
    try:
        assert shared_cache().observer is not None
        assert len(shared_cache()._listeners) == len(listeners) + 1
    finally:
        uninstrument()
    assert shared_cache().observer is None
    assert shared_cache()._listeners == listeners


def test_outside_a_fetch_a_sender_goes_as_it_is() -> None:
    def send(request: TokenRequest) -> TokenResponse:
        raise AssertionError("not sent")

    async def asend(request: TokenRequest) -> TokenResponse:
        raise AssertionError("not sent")

    assert observed(send) is send  # as ClientCredentialsAuth.fetch_token() sends
    assert aobserved(asend) is asend
