"""What OpenTelemetry instrumentation costs: a cache hit with it off and on, and the
bookkeeping it adds to one token request.

``python -m benchmarks.otel_cost [--smoke]`` prints a Markdown table. A hit is
timed as the suite's overhead scenario times it (``auth(prepared_request)`` on
a cached token, best of many runs); a token request's bookkeeping as its sender
with and without the instrumentation's wrapper (span, counter, histogram, on
the OpenTelemetry SDK, spans exported to nowhere), its answer given at once: what
instrumentation adds to each token request, whose network round trip it does
not count.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence

import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from requests.auth import HTTPBasicAuth

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.oauth import TokenRequest, TokenResponse
from requests_piggy_auth.otel import instrument, uninstrument

from .clients import CLIENT_ID, CLIENT_SECRET
from .scenarios import BASIC, fake_piggy

OFF, ON = "cache hit, instrumentation off", "cache hit, instrumentation on"
PLAIN, WATCHED = "token request sender, plain", "token request sender, instrumented"
ANSWER = TokenResponse(200, {}, b'{"access_token": "t", "expires_in": 3600}')


class Dropped(SpanExporter):
    """Exports spans to nowhere: what a span costs the thread that makes it, no more."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def best_ns(timers: dict[str, timeit.Timer], calls: int, repeats: int) -> dict[str, float]:
    """Each timer's best nanoseconds per call, taking turns so noise falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            times[name].append(timer.timeit(calls) / calls * 1e9)
    return {name: min(each) for name, each in times.items()}


def hits(
    calls: int, repeats: int, tracers: TracerProvider, meters: MeterProvider
) -> dict[str, float]:
    """A cache hit off and on, and requests' ``HTTPBasicAuth``, in ns per call."""
    with fake_piggy() as piggy:
        prepared = requests.Request("GET", piggy.api_url + "/contacts").prepare()
        hooks = prepared.hooks["response"]
        watched = TokenCache()
        instrument(meters, tracers, cache=watched)
        signers: dict[str, Callable[[requests.PreparedRequest], object]] = {
            OFF: ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url),
            ON: ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=watched),
            BASIC: HTTPBasicAuth(CLIENT_ID, CLIENT_SECRET),
        }
        for sign in signers.values():
            sign(prepared)  # the token is cached from here on
            hooks.clear()
        timers = {
            name: timeit.Timer(
                "sign(r); del hooks[:]", globals={"sign": s, "r": prepared, "hooks": hooks}
            )
            for name, s in signers.items()
        }
        try:
            return best_ns(timers, calls, repeats)
        finally:
            uninstrument(watched)


def senders(
    calls: int, repeats: int, tracers: TracerProvider, meters: MeterProvider
) -> dict[str, float]:
    """One token request's sender, plain and instrumented, answered at once, in ns per call."""
    cache = TokenCache()
    instrument(meters, tracers, cache=cache)
    assert cache.observer is not None
    request = TokenRequest("https://api.piggy.eu/oauth/token", {}, b"")

    def send(request: TokenRequest) -> TokenResponse:
        return ANSWER

    watched = cache.observer.sender(send, CLIENT_ID, "cold")
    timers = {
        name: timeit.Timer("send(request)", globals={"send": s, "request": request})
        for name, s in {PLAIN: send, WATCHED: watched}.items()
    }
    try:
        return best_ns(timers, calls, repeats)
    finally:
        uninstrument(cache)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.otel_cost", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="short run: few calls")
    args = parser.parse_args(argv)
    calls, repeats = (200, 3) if args.smoke else (5000, 41)
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(Dropped()))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    measured = {**hits(calls, repeats, tracers, meters)}
    measured |= senders(calls // 5, repeats, tracers, meters)
    basic = measured[BASIC]
    print("| measured | best ns/call | vs HTTPBasicAuth |")
    print("| --- | ---: | ---: |")
    for name, ns in measured.items():
        ratio = "—" if name in (PLAIN, WATCHED) else f"{ns / basic:.2f}×"
        print(f"| {name} | {ns:.0f} | {ratio} |")
    print(f"\nAdded to each token request: {(measured[WATCHED] - measured[PLAIN]) / 1000:.1f} µs")
    tracers.shutdown()
    meters.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
