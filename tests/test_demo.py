"""``piggy-auth demo``: a short run, counted at the server, and its report."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from rich.console import Console

from requests_piggy_auth.demo import CLIENT_ID, Summary, demo, report, run, status_table
from requests_piggy_auth.testing import Drop, FakePiggy, Fault, Status

WORKERS, CALLS = 3, 6


@pytest.fixture
def demo_piggy(fake_piggy: FakePiggy) -> FakePiggy:
    fake_piggy.add_client(CLIENT_ID, "demo-secret")
    return fake_piggy


def test_every_call_succeeds_through_the_revocation(demo_piggy: FakePiggy) -> None:
    halfway: list[int] = []

    summary = run(
        demo_piggy,
        "demo-secret",
        workers=WORKERS,
        requests_per_worker=CALLS,
        pause=0,
        halfway=lambda: halfway.append(demo_piggy.stats().resource_requests),
    )

    stats = demo_piggy.stats()
    assert (summary.requests, summary.succeeded) == (WORKERS * CALLS, WORKERS * CALLS)
    assert stats.resource_requests == WORKERS * CALLS + summary.recovered
    # One token before the revocation and one after it: the tokens live an hour here.
    assert summary.token_requests == stats.token_requests == 2
    # Every 401 the server sent was recovered from, and at least the next call got one.
    assert summary.recovered == stats.unauthorized >= 1
    assert len(halfway) == 1
    assert len(summary.latencies) == WORKERS * CALLS
    assert summary.latencies == sorted(summary.latencies)
    methods = [entry.method for entry in demo_piggy.log("resource") if entry.status != 401]
    assert methods.count("POST") == methods.count("GET") == WORKERS * CALLS // 2


@pytest.mark.parametrize("fault", [Status(500), Drop()], ids=["500", "dropped"])
def test_a_failed_call_is_counted(demo_piggy: FakePiggy, fault: Fault) -> None:
    demo_piggy.fault_resources(fault, times=1)

    summary = run(demo_piggy, "demo-secret", workers=1, requests_per_worker=4, pause=0)

    assert (summary.requests, summary.succeeded) == (4, 3)


def summary(succeeded: int) -> Summary:
    latencies = [n / 1000 for n in range(1, 101)]
    return Summary(100, succeeded, 5, 2, latencies, seconds=5.25)


def output(summary: Summary) -> tuple[int, str]:
    console = Console(file=io.StringIO(), width=80)
    code = report(summary, console)
    return code, console.file.getvalue()  # type: ignore[attr-defined]


def test_the_report_shows_the_summary_table() -> None:
    code, text = output(summary(100))

    assert code == 0
    rows = {
        line.strip("│ ").split("│")[0].strip(): line.split("│")[2].strip()
        for line in text.splitlines()
        if line.count("│") == 3
    }
    assert rows == {
        "requests": "100",
        "successes": "100",
        "token requests": "5",
        "401s recovered": "2",
        "p50 latency": "50.0 ms",
        "p99 latency": "99.0 ms",
    }
    assert "Every call succeeded in 5.2 s, with 5 token requests for 100 calls." in text


def test_the_report_fails_when_a_call_failed() -> None:
    code, text = output(summary(97))

    assert code == 1
    assert "3 of 100 calls failed." in text


def test_percentiles_by_nearest_rank() -> None:
    one = Summary(1, 1, 1, 0, [0.25], seconds=1)

    assert one.percentile(50) == one.percentile(99) == 0.25
    assert summary(100).percentile(99.5) == 0.1


def test_the_demo_runs_in_process() -> None:
    console = Console(file=io.StringIO(), width=100)

    code = demo(workers=2, requests_per_worker=4, token_lifetime=3600, pause=0, console=console)

    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert code == 0
    assert "2 workers × 4 calls" in text
    assert "Every token revoked after 4 calls" in text
    assert "Every call succeeded" in text
    [row] = [line.split() for line in text.splitlines() if line.startswith(f" {CLIENT_ID} ")]
    assert row[1] == "cached"  # the status view, as the run ended
    assert (row[6], row[9], row[10]) == ("success", "0", "—")


def test_the_status_view_shows_each_client() -> None:
    rows = [
        {
            "client_id": "warm",
            "token_url": "https://api.piggy.eu/oauth/token",
            "token_cached": True,
            "stale_in": 12.34,
            "expires_in": 42.0,
            "last_fetch": {"outcome": "success", "duration": 0.0125},
            "failures_in_a_row": 0,
            "cooling_down_for": None,
        },
        {
            "client_id": "down",
            "token_url": "https://api.piggy.eu/oauth/token",
            "token_cached": False,
            "stale_in": None,
            "expires_in": None,
            "last_fetch": {"outcome": "error", "duration": 2.0},
            "failures_in_a_row": 3,
            "cooling_down_for": 3.95,
        },
        {
            "client_id": "new",
            "token_url": "https://api.piggy.eu/oauth/token",
            "token_cached": False,
            "stale_in": None,
            "expires_in": None,
            "last_fetch": None,
            "failures_in_a_row": 0,
            "cooling_down_for": None,
        },
    ]
    console = Console(file=io.StringIO(), width=100)
    console.print(status_table(rows))
    text = console.file.getvalue()  # type: ignore[attr-defined]

    rows_shown = [line.split() for line in text.splitlines()[4:] if line.strip()]
    lines = {row[0]: row[1:] for row in rows_shown}
    assert lines == {
        "warm": ["cached", "12.3", "s", "42.0", "s", "success", "12.5", "ms", "0", "—"],
        "down": ["none", "—", "—", "error", "2000.0", "ms", "3", "4.0", "s"],
        "new": ["none", "—", "—", "—", "0", "—"],
    }


def test_the_command_runs_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "requests_piggy_auth", "demo", "--workers", "2", "--requests", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Summary" in result.stdout
    assert "401s recovered" in result.stdout
