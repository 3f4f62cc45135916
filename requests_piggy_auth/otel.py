"""OpenTelemetry metrics and traces of the token cache: ``pip install 'requests-piggy-auth[otel]'``.

:func:`instrument` turns them on for a cache (the shared one unless given
another), :func:`uninstrument` turns them off. Off, nothing of this module
runs: a cache hit costs what it always did. On, each token request (one HTTP
request to the token endpoint, each retry its own) is counted, timed and
traced in a span that is a child of the span current where the fetch started,
and current while the request is sent (so an instrumented HTTP library's span
for it is its child). Resends after a 401 and cool-downs are counted from the
cache's events. Metric and span attributes name a client by its id: never a
token or a secret.

It needs only ``opentelemetry-api``; an SDK (or any other implementation)
decides where the data goes.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from urllib.parse import urlsplit

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:
    raise ImportError(
        "requests_piggy_auth.otel needs opentelemetry-api: pip install 'requests-piggy-auth[otel]'"
    ) from exc

from ._version import __version__
from .cache import TokenCache, shared_cache
from .events import CooldownStarted, Event, How, RequestResent
from .oauth import AsyncTokenSender, TokenRequest, TokenResponse, TokenSender

__all__ = [
    "COOLDOWNS",
    "RESENDS",
    "SPAN_NAME",
    "TOKEN_REQUESTS",
    "TOKEN_REQUEST_DURATION",
    "instrument",
    "uninstrument",
]

#: Counter of token requests: ``piggy_auth.client_id``, ``outcome`` (``success``:
#: answered 2xx; ``error``: any other answer, or none) and ``reason``.
TOKEN_REQUESTS = "piggy_auth.token.requests"
#: Histogram of how long each token request took, in seconds (same attributes).
TOKEN_REQUEST_DURATION = "piggy_auth.token.request.duration"
#: Counter of requests resent after a 401: ``outcome``, ``piggy_auth.client_id``,
#: ``piggy_auth.adapter``.
RESENDS = "piggy_auth.resends"
#: Counter of cool-downs started: ``piggy_auth.client_id``.
COOLDOWNS = "piggy_auth.cooldowns"
#: The span of each token request.
SPAN_NAME = "piggy_auth token request"

_SCOPE = "requests_piggy_auth"

_lock = threading.Lock()
_instrumented: weakref.WeakKeyDictionary[TokenCache, _Instruments] = weakref.WeakKeyDictionary()


def instrument(
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    cache: TokenCache | None = None,
) -> None:
    """Turn metrics and traces on for ``cache`` (again: with these providers instead).

    :param meter_provider: where metrics go (``None``: the global meter provider).
    :param tracer_provider: where spans go (``None``: the global tracer provider).
    :param cache: the cache to watch (``None``: the shared cache, which auth
        objects made without ``cache=`` use).
    """
    cache = shared_cache() if cache is None else cache
    instruments = _Instruments(
        metrics.get_meter_provider() if meter_provider is None else meter_provider,
        trace.get_tracer_provider() if tracer_provider is None else tracer_provider,
    )
    with _lock:
        previous = _instrumented.pop(cache, None)
        _instrumented[cache] = instruments
        if previous is not None:
            cache.remove_listener(previous.heard)
        cache.add_listener(instruments.heard)
        cache.observer = instruments


def uninstrument(cache: TokenCache | None = None) -> None:
    """Turn metrics and traces off for ``cache`` (``None``: the shared cache); not on: nothing."""
    cache = shared_cache() if cache is None else cache
    with _lock:
        instruments = _instrumented.pop(cache, None)
        if instruments is not None:
            cache.remove_listener(instruments.heard)
            cache.observer = None


class _Instruments:
    """The meters and the tracer of one :func:`instrument` call: a cache's listener and
    its :class:`~requests_piggy_auth.cache.TokenRequestObserver`."""

    def __init__(
        self, meter_provider: metrics.MeterProvider, tracer_provider: trace.TracerProvider
    ) -> None:
        meter = meter_provider.get_meter(_SCOPE, __version__)
        self.tracer = tracer_provider.get_tracer(_SCOPE, __version__)
        self.requests = meter.create_counter(
            TOKEN_REQUESTS, unit="{request}", description="Requests to the token endpoint"
        )
        self.duration = meter.create_histogram(
            TOKEN_REQUEST_DURATION, unit="s", description="How long each token request took"
        )
        self.resends = meter.create_counter(
            RESENDS, unit="{request}", description="Requests resent after a 401"
        )
        self.cooldowns = meter.create_counter(
            COOLDOWNS, unit="{cooldown}", description="Cool-downs of a client's token requests"
        )

    def heard(self, event: Event) -> None:
        """Count a resend or a cool-down (the cache's listener)."""
        if isinstance(event, RequestResent):
            attributes = {
                "outcome": event.outcome,
                "piggy_auth.client_id": event.client_id,
                "piggy_auth.adapter": event.adapter,
            }
            self.resends.add(1, attributes)
        elif isinstance(event, CooldownStarted):
            self.cooldowns.add(1, {"piggy_auth.client_id": event.client_id})

    def sender(self, send: TokenSender, client_id: str, how: How) -> TokenSender:
        """``send`` with each request counted, timed and traced."""

        def sent(request: TokenRequest) -> TokenResponse:
            with _Watch(self, request, client_id, how) as watch:
                return watch.answered(send(request))

        return sent

    def async_sender(self, send: AsyncTokenSender, client_id: str, how: How) -> AsyncTokenSender:
        """:meth:`sender` for an async ``send``."""

        async def sent(request: TokenRequest) -> TokenResponse:
            with _Watch(self, request, client_id, how) as watch:
                return watch.answered(await send(request))

        return sent


class _Watch:
    """One token request: its span, current while it is sent, and its measurements."""

    def __init__(
        self, instruments: _Instruments, request: TokenRequest, client_id: str, how: How
    ) -> None:
        self.instruments = instruments
        self.labels = {"piggy_auth.client_id": client_id, "reason": how}
        self.span_context = instruments.tracer.start_as_current_span(
            SPAN_NAME,
            kind=SpanKind.CLIENT,
            attributes={**self.labels, "server.address": urlsplit(request.url).hostname or ""},
            record_exception=False,  # an exception's text is not ours to show
            set_status_on_exception=False,
        )
        self.status: int | None = None

    def __enter__(self) -> _Watch:
        self.span = self.span_context.__enter__()
        self.started = time.perf_counter()
        return self

    def answered(self, response: TokenResponse) -> TokenResponse:
        self.status = response.status
        return response

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        elapsed = time.perf_counter() - self.started
        status = self.status
        success = kind is None and status is not None and 200 <= status < 300
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        if not success:
            error = kind.__name__ if kind is not None else str(status)
            self.span.set_attribute("error.type", error)
            self.span.set_status(Status(StatusCode.ERROR))
        attributes: Mapping[str, str] = {**self.labels, "outcome": _outcome(success)}
        self.instruments.requests.add(1, attributes)
        self.instruments.duration.record(elapsed, attributes)
        self.span_context.__exit__(None, None, None)


def _outcome(success: bool) -> str:
    return "success" if success else "error"
