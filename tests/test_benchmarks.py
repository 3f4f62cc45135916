"""The benchmark suite's smoke run: every library and scenario, and the facts that must hold.

No timings are asserted: only what the server counted and what the callers saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import otel_cost
from benchmarks.aio import ASYNC_LIBRARIES
from benchmarks.clients import LIBRARIES
from benchmarks.report import ASYNC_SCENARIOS, SCENARIOS
from benchmarks.scenarios import BASIC, SMOKE, STATIC
from benchmarks.suite import main


def cells(markdown: str, n: int = 0) -> list[list[str]]:
    """The rows of the ``n``-th Markdown table, split into cells."""
    table = markdown.split("\n\n")[n]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


def test_the_smoke_run_writes_a_row_per_library_and_a_column_per_scenario(
    tmp_path: Path,
) -> None:
    output = tmp_path / "results.md"

    assert main(["--smoke", "--output", str(output)]) == 0

    markdown = output.read_text(encoding="utf-8")
    header, rule, *rows = cells(markdown)
    assert header == ["library", *SCENARIOS]
    assert rule == ["---"] * (len(SCENARIOS) + 1)
    assert [row[0] for row in rows] == [library.name for library in LIBRARIES]
    assert all(len(row) == len(header) for row in rows)
    for name in [*(library.name for library in LIBRARIES), BASIC, STATIC]:
        assert f"\n| {name} | " in markdown.split("\n\n")[1]

    ours = dict(zip(header, rows[0], strict=True))
    n = SMOKE.storm_threads
    assert ours["cold start"].startswith("1 token request, 0 failed, ")
    assert ours["shared session"].startswith("1 token request, 0 failed, ")
    assert ours["expiry under load"].split(";")[0].endswith(", 0 × 401, 0 exceptions")
    assert ours["revocation storm"] == f"1 token request; seen: 200 × {n}"
    for row in rows:
        assert "token request" in row[1]
        assert row[-1].endswith("× HTTPBasicAuth)")

    header, rule, *rows = cells(markdown, 2)
    assert header == ["async library (httpx.AsyncClient)", *ASYNC_SCENARIOS]
    assert [row[0] for row in rows] == [library.name for library in ASYNC_LIBRARIES]
    ours = dict(zip(header, rows[0], strict=True))
    assert ours["cold storm"].startswith("1 token request, 0 failed, ")
    assert ours["expiry under load"].split(";")[0].endswith(", 0 × 401, 0 exceptions")
    assert ours["revocation storm"] == f"1 token request; seen: 200 × {SMOKE.revocation_tasks}"
    assert all(row[-1].endswith("× httpx BasicAuth)") for row in rows)
    assert "\n| httpx BasicAuth | " in markdown.split("\n\n")[3]


def test_the_instrumentation_cost_is_measured_on_and_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert otel_cost.main(["--smoke"]) == 0

    out = capsys.readouterr().out
    rows = [line.split(" | ")[0].lstrip("| ") for line in out.splitlines()[2:] if line]
    assert rows[:5] == [otel_cost.OFF, otel_cost.ON, BASIC, otel_cost.PLAIN, otel_cost.WATCHED]
    assert "Added to each token request: " in out
