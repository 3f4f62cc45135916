"""The results as Markdown tables: library × scenario, and the overhead in detail."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .scenarios import BASIC, Expiry, Outage, Overhead, Storm

if TYPE_CHECKING:
    from .aio import AsyncExpiry, AsyncStorm

SCENARIOS = [
    "cold start",
    "shared session",
    "expiry under load",
    "revocation storm",
    "outage",
    "overhead on a hit",
]


@dataclass(frozen=True)
class Row:
    """One library's results, a field per scenario."""

    library: str
    cold_start: Storm
    shared_session: Storm
    expiry: Expiry
    revocation: Storm
    outage: Outage
    overhead: Overhead


def table(rows: Sequence[Row], overheads: dict[str, Overhead]) -> str:
    """The library × scenario table, then the overhead table, as Markdown."""
    basic = overheads[BASIC].best
    lines = [
        _row(["library", *SCENARIOS]),
        _row(["---"] * (len(SCENARIOS) + 1)),
        *(_row([row.library, *_cells(row, basic)]) for row in rows),
        "",
        _row(["signer (cache hit)", "best ns/call", "median ns/call", "best vs HTTPBasicAuth"]),
        _row(["---", "---:", "---:", "---:"]),
        *(
            _row([name, f"{o.best:.0f}", f"{o.median:.0f}", f"{o.best / basic:.2f}×"])
            for name, o in overheads.items()
        ),
    ]
    return "\n".join(lines) + "\n"


ASYNC_SCENARIOS = ["cold storm", "expiry under load", "revocation storm", "overhead on a hit"]


@dataclass(frozen=True)
class AsyncRow:
    """One async library's results, a field per async scenario."""

    library: str
    cold_storm: AsyncStorm
    expiry: AsyncExpiry
    revocation: AsyncStorm
    overhead: Overhead


def async_table(rows: Sequence[AsyncRow], overheads: dict[str, Overhead], basic: str) -> str:
    """The async library × scenario table, then its overhead table, as Markdown."""
    base = overheads[basic].best
    lines = [
        _row(["async library (httpx.AsyncClient)", *ASYNC_SCENARIOS]),
        _row(["---"] * (len(ASYNC_SCENARIOS) + 1)),
        *(_row([row.library, *_async_cells(row, base, basic)]) for row in rows),
        "",
        _row(["async auth flow (cache hit)", "best ns/call", "median ns/call", f"best vs {basic}"]),
        _row(["---", "---:", "---:", "---:"]),
        *(
            _row([name, f"{o.best:.0f}", f"{o.median:.0f}", f"{o.best / base:.2f}×"])
            for name, o in overheads.items()
        ),
    ]
    return "\n".join(lines) + "\n"


def _async_cells(row: AsyncRow, base: float, basic: str) -> list[str]:
    expiry = row.expiry
    return [
        f"{_storm(row.cold_storm)}; loop stalled {_ms(row.cold_storm.stall)} at most",
        f"{_n(len(expiry.calls.latencies), 'call')}, {_n(expiry.token_requests, 'token request')}, "
        f"{expiry.calls.outcomes['401']} × 401, {_exceptions(expiry.calls.outcomes)} exceptions; "
        f"p50 {_ms(expiry.percentile(50))}, p99 {_ms(expiry.percentile(99))}, "
        f"max after first {_ms(expiry.first_max)}; loop stalled {_ms(expiry.stall)} at most",
        f"{_n(row.revocation.token_requests, 'token request')}; "
        f"seen: {_outcomes(row.revocation.calls.outcomes)}",
        f"{row.overhead.best:.0f} ns ({row.overhead.best / base:.2f}× {basic})",
    ]


def _cells(row: Row, basic: float) -> list[str]:
    expiry, outage = row.expiry, row.outage
    recovery = "not within limit" if outage.recovery is None else f"{outage.recovery:.2f} s"
    return [
        _storm(row.cold_start),
        _storm(row.shared_session),
        f"{_n(len(expiry.calls.latencies), 'call')}, {_n(expiry.token_requests, 'token request')}, "
        f"{expiry.calls.outcomes['401']} × 401, {_exceptions(expiry.calls.outcomes)} exceptions; "
        f"p50 {_ms(expiry.percentile(50))}, p99 {_ms(expiry.percentile(99))}, "
        f"max {_ms(max(expiry.calls.latencies))}, max after first {_ms(expiry.first_max)}",
        f"{_n(row.revocation.token_requests, 'token request')}; "
        f"seen: {_outcomes(row.revocation.calls.outcomes)}",
        f"{_n(outage.hits, 'endpoint hit')}; {outage.calls.failures} of "
        f"{_n(len(outage.calls.latencies), 'call')} failed: "
        f"{_outcomes(outage.calls.errors)}; recovery {recovery}",
        f"{row.overhead.best:.0f} ns ({row.overhead.best / basic:.2f}× HTTPBasicAuth)",
    ]


def _storm(storm: Storm) -> str:
    return (
        f"{_n(storm.token_requests, 'token request')}, {storm.calls.failures} failed, "
        f"{storm.seconds:.2f} s"
    )


def _exceptions(outcomes: Counter[str]) -> int:
    return sum(n for outcome, n in outcomes.items() if not outcome.isdigit())


def _outcomes(outcomes: Counter[str]) -> str:
    return ", ".join(f"{k} × {n}" for k, n in sorted(outcomes.items())) or "none"


def _n(count: int, what: str) -> str:
    return f"{count} {what}" + ("" if count == 1 else "s")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
