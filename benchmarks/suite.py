"""Run every scenario against every library; print the table and write it as Markdown."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from . import aio
from .clients import LIBRARIES
from .report import AsyncRow, Row, async_table, table
from .scenarios import (
    FULL,
    SMOKE,
    Settings,
    cold_start,
    expiry_under_load,
    outage,
    overheads,
    revocation_storm,
    shared_session,
)

RESULTS = Path(__file__).with_name("results.md")
PACKAGES = [
    "requests-piggy-auth",
    "authlib",
    "requests-oauthlib",
    "requests-auth",
    "requests",
    "httpx-auth",
    "httpx",
]


def run(settings: Settings, only: str | None = None) -> str:
    """Every scenario for every library (``only``: the sync or the async ones), as Markdown."""
    parts = [] if only == "async" else [run_sync(settings)]
    if only != "sync":
        parts.append(run_async(settings))
    return "\n".join([*parts, f"Settings: {settings}", "", f"Machine: {machine()}", ""])


def run_async(settings: Settings) -> str:
    """Every async scenario for every async library, as Markdown tables."""
    timings = aio.overheads(settings)
    rows = []
    for library in aio.ASYNC_LIBRARIES:
        print(f"{library.name} (async) ...", file=sys.stderr, flush=True)
        rows.append(
            AsyncRow(
                library.name,
                cold_storm=aio.cold_storm(library, settings),
                expiry=aio.expiry_under_load(library, settings),
                revocation=aio.revocation_storm(library, settings),
                overhead=timings[library.name],
            )
        )
    return async_table(rows, timings, aio.BASIC)


def run_sync(settings: Settings) -> str:
    """Every sync scenario for every library, as Markdown tables."""
    timings = overheads(LIBRARIES, settings)
    rows = []
    for library in LIBRARIES:
        print(f"{library.name} ...", file=sys.stderr, flush=True)
        rows.append(
            Row(
                library.name,
                cold_start=cold_start(library, settings),
                shared_session=shared_session(library, settings),
                expiry=expiry_under_load(library, settings),
                revocation=revocation_storm(library, settings),
                outage=outage(library, settings),
                overhead=timings[library.name],
            )
        )
    return table(rows, timings)


def machine() -> str:
    """Python, the platform, the CPU count and the measured libraries' versions."""
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    return (
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {versions}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks [--smoke] [--output PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="short run: fewer threads, seconds")
    parser.add_argument(
        "--only", choices=["sync", "async"], help="run only the sync or the async scenarios"
    )
    parser.add_argument(
        "--output", type=Path, help=f"where to write the Markdown (default: {RESULTS.name})"
    )
    args = parser.parse_args(argv)
    # The libraries' retry warnings and the server's access log would drown the table.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    markdown = run(SMOKE if args.smoke else FULL, args.only)
    print(markdown)
    output = args.output or (None if args.smoke or args.only else RESULTS)
    if output is not None:
        output.write_text(markdown, encoding="utf-8")
    return 0
