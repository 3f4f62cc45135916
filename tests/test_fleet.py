"""A fleet of processes on one Redis, or on one SQLite file, shares one token: counted at
the server.

Four worker processes of eight threads each, a real redis-server or a database file,
and the local Piggy; every round starts in all 32 threads at once.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from requests_piggy_auth import ClientCredentialsAuth, TokenCache, TokenStore
from requests_piggy_auth.stores import RedisTokenStore, SQLiteTokenStore
from requests_piggy_auth.testing import FakePiggy

from .conftest import API, CLIENT_ID, CLIENT_SECRET
from .fleet import CLIENT_NAME, TIMEOUT, Fleet, Outcome, Worker
from .redis_server import RedisServer
from .test_concurrency import reject_together

PROCESSES, THREADS = 4, 8
CALLS = PROCESSES * THREADS


@pytest.fixture(autouse=True)
def _workers_without_coverage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers start faster untraced; the library code they run is measured in this process."""
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)


def worker(piggy: FakePiggy, redis_server: RedisServer, **options: Any) -> Worker:
    return Worker(
        redis_server.url, piggy.url + API, piggy.url, CLIENT_ID, CLIENT_SECRET, THREADS, **options
    )


def on_one_file(piggy: FakePiggy, path: Path, **options: Any) -> Worker:
    return Worker(
        f"sqlite:{path}", piggy.url + API, piggy.url, CLIENT_ID, CLIENT_SECRET, THREADS, **options
    )


def wait_until(condition: Callable[[], bool]) -> None:
    """Wait for something another process does, which no event reports."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.005)


def tokens(outcomes: list[Outcome]) -> set[str]:
    return {token for _, _, token in outcomes}


def test_a_cold_fleet_makes_one_token_request(piggy: FakePiggy, redis_server: RedisServer) -> None:
    hold = piggy.hold()
    watcher = redis_server.client()

    def workers_in_redis() -> int:
        return len({c["name"] for c in watcher.client_list() if c["name"].startswith(CLIENT_NAME)})

    with Fleet(worker(piggy, redis_server), PROCESSES) as fleet:
        fleet.go()
        # One worker's token request is held at the server until every worker has
        # asked Redis for the token, so the others must wait for it there.
        assert hold.arrived.wait(TIMEOUT)
        wait_until(lambda: workers_in_redis() == PROCESSES)
        hold.released.set()
        outcomes = fleet.outcomes()

    assert [status for status, _, _ in outcomes] == [200] * CALLS
    assert piggy.stats().token_requests == 1
    assert len(tokens(outcomes)) == 1


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_revocation_seen_by_the_whole_fleet_makes_one_token_request(
    piggy: FakePiggy, request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    twice = (
        worker(piggy, request.getfixturevalue("redis_server"), rounds=2)
        if kind == "redis"
        else on_one_file(piggy, tmp_path / "tokens.sqlite3", rounds=2)
    )
    with Fleet(twice, PROCESSES) as fleet:
        first = fleet.round()
        piggy.revoke_all()
        reject_together(piggy, CALLS)  # each 401 only once all 32 calls hold the token
        second = fleet.round()

    assert len(tokens(first)) == 1
    assert [(status, history) for status, history, _ in second] == [(200, (401,))] * CALLS
    assert piggy.stats().unauthorized == CALLS
    assert piggy.stats().token_requests == 2
    assert len(tokens(second)) == 1
    assert tokens(first).isdisjoint(tokens(second))


def test_without_redis_each_process_falls_back_and_picks_redis_up_again(
    piggy: FakePiggy, redis_server: RedisServer
) -> None:
    # A worker tries Redis again on its next miss, and may evict a token each round.
    flaky = worker(piggy, redis_server, rounds=3, retry_interval=0, min_evict_interval=0)
    with Fleet(flaky, PROCESSES) as fleet:
        shared = fleet.round()
        redis_server.kill()
        piggy.revoke_all()
        alone = fleet.round()
        redis_server.start()
        piggy.revoke_all()
        shared_again = fleet.round()

    assert len(tokens(shared)) == 1
    # Redis down: every call still succeeds, each process with a token of its own.
    assert [status for status, _, _ in alone] == [200] * CALLS
    assert len(tokens(alone)) == PROCESSES
    # Redis back: every call succeeds and tokens go through Redis again. Each process
    # held a token of its own, so one whose 401 came after another's renewal was
    # requested cannot tell that renewal from one made before the revocation: it may
    # make its own (a resend never gets a token that may predate a revocation).
    assert [status for status, _, _ in shared_again] == [200] * CALLS
    (stored,) = redis_server.client().keys("piggy-auth:token:*")
    entry = json.loads(redis_server.client().get(stored))  # type: ignore[arg-type]
    assert f"Bearer {entry['access_token']}" in tokens(shared_again)
    assert len(tokens(shared_again)) <= PROCESSES
    assert piggy.stats().token_requests <= 1 + PROCESSES + PROCESSES


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_lock_owner_that_dies_mid_fetch_blocks_the_others_only_until_its_lock_expires(
    piggy: FakePiggy,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    """Redis's lock expires after ``lock_timeout``; the operating system frees a dead
    process's lock on an SQLite file at once."""
    path = tmp_path / "tokens.sqlite3"
    redis_server = request.getfixturevalue("redis_server") if kind == "redis" else None
    hold = piggy.hold()
    owner_worker = (
        on_one_file(piggy, path)
        if redis_server is None
        else worker(piggy, redis_server, lock_timeout=0.5)
    )
    with Fleet(owner_worker, processes=1) as owner:
        owner.go()
        assert hold.arrived.wait(TIMEOUT)  # it holds the lock and waits for its token
        owner.processes[0].kill()
        owner.processes[0].join()
    # This process would wait far longer than the lock lives (wait_timeout).
    store: TokenStore = (
        SQLiteTokenStore(path, wait_timeout=TIMEOUT * 10)
        if redis_server is None
        else RedisTokenStore(redis_server.client(), lock_timeout=0.5, wait_timeout=TIMEOUT)
    )
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache(store=store)
    )
    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        response = requests.get(piggy.url + API, auth=auth, timeout=TIMEOUT)
    hold.released.set()

    assert response.status_code == 200
    assert piggy.stats().token_requests == 2
    assert caplog.messages == []  # it took the freed lock; it did not give up waiting


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_workers_forked_from_a_preloaded_app_share_its_store(
    piggy: FakePiggy, redis_server: RedisServer
) -> None:
    # Like gunicorn --preload: the app is built, and has used Redis, before the fork.
    store = RedisTokenStore(redis_server.client(), poll_interval=0.01)
    auth = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache(store=store)
    )
    assert requests.get(piggy.url + API, auth=auth, timeout=TIMEOUT).status_code == 200
    piggy.revoke_all()
    fork = multiprocessing.get_context("fork")
    statuses = fork.SimpleQueue()

    def serve() -> None:
        statuses.put(requests.get(piggy.url + API, auth=auth, timeout=TIMEOUT).status_code)

    workers = [fork.Process(target=serve) for _ in range(PROCESSES)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(TIMEOUT)

    assert [process.exitcode for process in workers] == [0] * PROCESSES
    assert [statuses.get() for _ in workers] == [200] * PROCESSES
    assert piggy.stats().token_requests == 2


def test_a_cold_machine_on_one_sqlite_file_makes_one_token_request(
    piggy: FakePiggy, tmp_path: Path
) -> None:
    hold = piggy.hold()
    with Fleet(on_one_file(piggy, tmp_path / "tokens.sqlite3"), PROCESSES) as fleet:
        fleet.go()
        # One worker's token request is held at the server, its process holding the
        # client's lock, until every worker has asked the file for the token.
        assert hold.arrived.wait(TIMEOUT)
        assert {fleet.asked.get(timeout=TIMEOUT) for _ in range(PROCESSES)} == {
            process.pid for process in fleet.processes
        }
        hold.released.set()
        outcomes = fleet.outcomes()

    assert [status for status, _, _ in outcomes] == [200] * CALLS
    assert piggy.stats().token_requests == 1
    assert len(tokens(outcomes)) == 1
