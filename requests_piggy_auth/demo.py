"""``piggy-auth demo``: worker threads against an embedded fake Piggy.

Each worker has its own Session and auth object; all of them share one token
cache, so the whole pool makes one token request whenever a short-lived token
is due, and one more after every token is revoked halfway through the run.
The cache's status view (:meth:`TokenCache.status`) is shown live under the
progress bar. Needs the ``demo`` extra (the fake server and rich).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .auth import ClientCredentialsAuth
from .cache import TokenCache
from .testing import FakePiggy

CLIENT_ID = "demo-client"
#: Timeout, in seconds, for each of the demo's API requests.
TIMEOUT = 10.0


@dataclass(frozen=True)
class Summary:
    """What a demo run did.

    :param requests: API calls made.
    :param succeeded: those that ended in a 2xx answer.
    :param token_requests: requests the server saw at its token endpoint.
    :param recovered: calls that got a 401 for a stale token, and succeeded on the retry.
    :param latencies: seconds each call took, retry included, sorted.
    :param seconds: how long the run took.
    """

    requests: int
    succeeded: int
    token_requests: int
    recovered: int
    latencies: list[float] = field(repr=False)
    seconds: float

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile latency (nearest rank), in seconds."""
        rank = math.ceil(p / 100 * len(self.latencies))
        return self.latencies[max(rank, 1) - 1]


class Tally:
    """The calls' outcomes, counted across threads; runs ``halfway`` once, at the middle."""

    def __init__(self, total: int, halfway: Callable[[], None]) -> None:
        self.total = total
        self.halfway = halfway
        self.latencies: list[float] = []
        self.succeeded = 0
        self.recovered = 0
        self._lock = threading.Lock()

    def record(self, response: requests.Response | None, latency: float) -> None:
        """Count one call: its response (``None``: no answer) and how long it took."""
        ok = response is not None and response.ok
        history = [] if response is None else response.history
        with self._lock:
            self.latencies.append(latency)
            self.succeeded += ok
            self.recovered += ok and any(r.status_code == 401 for r in history)
            done = len(self.latencies)
        if done == self.total // 2:
            self.halfway()


def run(
    piggy: FakePiggy,
    client_secret: str,
    *,
    workers: int,
    requests_per_worker: int,
    pause: float,
    progress: Callable[[], None] = lambda: None,
    halfway: Callable[[], None] = lambda: None,
    cache: TokenCache | None = None,
) -> Summary:
    """Run the workers against ``piggy`` and revoke every token halfway.

    :param piggy: a running fake Piggy that knows ``demo-client`` with ``client_secret``.
    :param pause: seconds each worker waits between calls.
    :param progress: called after each call.
    :param halfway: called after the revocation.
    :param cache: the workers' token cache (``None``: a new one).
    """
    cache = TokenCache() if cache is None else cache
    contacts = piggy.api_url + "/contacts"

    def revoke() -> None:
        piggy.revoke_all()
        halfway()

    tally = Tally(workers * requests_per_worker, revoke)

    def work(worker: int) -> None:
        auth = ClientCredentialsAuth(CLIENT_ID, client_secret, base_url=piggy.url, cache=cache)
        with requests.Session() as session:
            session.auth = auth
            for n in range(requests_per_worker):
                started = time.perf_counter()
                try:
                    response: requests.Response | None = (
                        session.post(
                            contacts, json={"email": f"w{worker}.{n}@example.com"}, timeout=TIMEOUT
                        )
                        if n % 2 == 0
                        else session.get(contacts, params={"limit": 10}, timeout=TIMEOUT)
                    )
                except requests.RequestException:
                    response = None
                tally.record(response, time.perf_counter() - started)
                progress()
                time.sleep(pause)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers, thread_name_prefix="demo-worker") as pool:
        list(pool.map(work, range(workers)))
    return Summary(
        requests=len(tally.latencies),
        succeeded=tally.succeeded,
        token_requests=piggy.stats().token_requests,
        recovered=tally.recovered,
        latencies=sorted(tally.latencies),
        seconds=time.perf_counter() - started,
    )


def demo(
    *,
    workers: int = 8,
    requests_per_worker: int = 50,
    token_lifetime: float = 3.0,
    pause: float = 0.1,
    console: Console | None = None,
) -> int:
    """Run the demo with a progress bar and a summary table.

    :returns: the exit code: 0 only when every call succeeded.
    """
    console = console or Console()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    client_secret = secrets.token_urlsafe(24)
    total = workers * requests_per_worker
    cache = TokenCache()
    bar = Progress(
        TextColumn("[bold]API calls"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    )
    view = Group(bar, StatusView(cache), "")  # the status view, live under the bar
    with (
        FakePiggy(token_lifetime=token_lifetime) as piggy,
        Live(view, console=console, refresh_per_second=8),
    ):
        piggy.add_client(CLIENT_ID, client_secret)
        task = bar.add_task("calls", total=total)
        console.print(
            f"Fake Piggy at {piggy.url}: {workers} workers × {requests_per_worker} calls, "
            f"each worker with its own Session and auth object, {token_lifetime:g} s tokens"
        )
        summary = run(
            piggy,
            client_secret,
            workers=workers,
            requests_per_worker=requests_per_worker,
            pause=pause,
            progress=lambda: bar.advance(task),
            halfway=lambda: console.print(
                f"Every token revoked after {total // 2} calls: the next calls get a 401, "
                "renew the token once, and are resent."
            ),
            cache=cache,
        )
    return report(summary, console)


class StatusView:
    """The cache's status view, read again each time rich draws it."""

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache

    def __rich__(self) -> Table:
        return status_table(self.cache.status())


#: The status view's columns, after the client's.
STATUS_COLUMNS = ("token", "stale in", "expires", "last fetch", "fails", "cooling")


def status_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """:meth:`TokenCache.status` as a table: one row per client."""
    result = Table(title="Token cache status", box=box.SIMPLE_HEAD, pad_edge=False)
    result.add_column("client", no_wrap=True)
    for column in STATUS_COLUMNS:
        result.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        last = row["last_fetch"]
        result.add_row(
            row["client_id"],
            "cached" if row["token_cached"] else "none",
            _seconds(row["stale_in"]),
            _seconds(row["expires_in"]),
            "—" if last is None else f"{last['outcome']} {last['duration'] * 1000:.1f} ms",
            str(row["failures_in_a_row"]),
            _seconds(row["cooling_down_for"]),
        )
    return result


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def report(summary: Summary, console: Console) -> int:
    """Print the summary table and verdict; returns the exit code (0: every call succeeded)."""
    console.print(table(summary))
    failed = summary.requests - summary.succeeded
    if failed:
        console.print(f"[bold red]{failed} of {summary.requests} calls failed.")
        return 1
    console.print(
        f"[bold green]Every call succeeded[/] in {summary.seconds:.1f} s, "
        f"with {summary.token_requests} token requests for {summary.requests} calls."
    )
    return 0


def table(summary: Summary) -> Table:
    """The summary: one row per figure."""
    result = Table(title="Summary", show_header=False)
    result.add_column()
    result.add_column(justify="right")
    for name, value in {
        "requests": summary.requests,
        "successes": summary.succeeded,
        "token requests": summary.token_requests,
        "401s recovered": summary.recovered,
        "p50 latency": f"{summary.percentile(50) * 1000:.1f} ms",
        "p99 latency": f"{summary.percentile(99) * 1000:.1f} ms",
    }.items():
        result.add_row(name, str(value))
    return result
