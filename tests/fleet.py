"""A fleet of worker processes sharing one Redis or one SQLite file, like gunicorn or Celery
workers.

Each worker builds what an application builds at import time (a Redis client and a
:class:`RedisTokenStore`, or a :class:`SQLiteTokenStore`; a :class:`TokenCache` on it;
one auth object), then,
round after round, calls the API from its threads. Every thread of every
worker, and the test, wait on one barrier before each round, so a round
starts everywhere at once. The test decides what happens between rounds. Each worker
tells the test (``Fleet.asked``) each time it asks its store.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from types import TracebackType
from typing import Any

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from requests_piggy_auth import ClientCredentialsAuth, TokenCache, TokenStore
from requests_piggy_auth.stores import RedisTokenStore, SQLiteTokenStore

#: Worker connections to Redis are named this, plus the worker's process id.
CLIENT_NAME = "fleet-worker-"
TIMEOUT = 60.0

#: What one call saw: its status, the statuses in its history, the token it sent last.
Outcome = tuple[int, tuple[int, ...], str]


@dataclass(frozen=True)
class Worker:
    """What each worker process is told."""

    #: The Redis to share, or ``sqlite:`` and the path of the database file.
    store_url: str
    api_url: str
    base_url: str
    client_id: str
    client_secret: str
    threads: int = 8
    rounds: int = 1
    lock_timeout: float = 10.0
    retry_interval: float = 30.0
    min_evict_interval: float = 5.0


class _Told(SQLiteTokenStore):
    """Tells the test when its process asks the file."""

    asked: Any

    def get(self, *args: Any, **options: Any) -> Any:
        self.asked.put(os.getpid())
        return super().get(*args, **options)


def make_store(worker: Worker, asked: Any) -> TokenStore:
    """The store a worker process shares."""
    if worker.store_url.startswith("sqlite:"):
        told = _Told(worker.store_url.removeprefix("sqlite:"), retry_interval=worker.retry_interval)
        told.asked = asked
        return told
    client = redis.Redis.from_url(
        worker.store_url,
        client_name=f"{CLIENT_NAME}{os.getpid()}",
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 1),
    )
    return RedisTokenStore(
        client,
        lock_timeout=worker.lock_timeout,
        poll_interval=0.01,
        retry_interval=worker.retry_interval,
    )


def work(worker: Worker, start: Barrier, results: Any, asked: Any) -> None:
    """A worker process's life: build the auth once, then call the API each round."""
    store = make_store(worker, asked)
    auth = ClientCredentialsAuth(
        worker.client_id,
        worker.client_secret,
        base_url=worker.base_url,
        cache=TokenCache(store=store, min_evict_interval=worker.min_evict_interval),
    )

    def call(_: int) -> Outcome:
        start.wait(TIMEOUT)
        with requests.Session() as session:
            response = session.get(worker.api_url, auth=auth, timeout=TIMEOUT)
        history = tuple(r.status_code for r in response.history)
        authorization = response.request.headers["Authorization"]
        assert isinstance(authorization, str)
        return response.status_code, history, authorization

    with ThreadPoolExecutor(worker.threads) as pool:
        for _ in range(worker.rounds):
            results.put(list(pool.map(call, range(worker.threads))))


class Fleet:
    """``processes`` fresh workers, forked from a server that has only imported this module."""

    def __init__(self, worker: Worker, processes: int = 4) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        self.start = context.Barrier(processes * worker.threads + 1)
        self.results = context.Queue()
        self.asked = context.Queue()
        self.processes = [
            context.Process(
                target=work, args=(worker, self.start, self.results, self.asked), daemon=True
            )
            for _ in range(processes)
        ]

    def __enter__(self) -> Fleet:
        for process in self.processes:
            process.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self.processes:
            process.join(TIMEOUT if kind is None else 0)
            if process.is_alive():
                process.kill()
                process.join()
        self.results.close()
        self.asked.close()

    def go(self) -> None:
        """Start a round: every thread of every worker calls the API at once."""
        self.start.wait(TIMEOUT)

    def outcomes(self) -> list[Outcome]:
        """Every call's outcome in the round that was started."""
        outcomes: list[Outcome] = []
        for _ in self.processes:
            outcomes += self.results.get(timeout=TIMEOUT)
        return outcomes

    def round(self) -> list[Outcome]:
        self.go()
        return self.outcomes()
