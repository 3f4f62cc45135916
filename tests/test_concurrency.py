"""Threads and processes share one token: counted at the server."""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import requests
from requests.adapters import HTTPAdapter
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    InvalidClientError,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.testing import FakeClock, FakePiggy, Status
from requests_piggy_auth.token_session import token_session

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth, invalid_token

THREADS = 32
T = TypeVar("T")


def run_together(n: int, task: Callable[[], T]) -> list[T]:
    """Run ``task`` in ``n`` threads released at once by a barrier."""
    barrier = threading.Barrier(n)

    def released() -> T:
        barrier.wait()
        return task()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: released(), range(n)))


def reject_together(piggy: FakePiggy, n: int) -> None:
    """Answer the next ``n`` requests 401 only once all have come, so all hold the revoked token."""
    everyone_rejected = threading.Barrier(n)

    def rejected(request: Request) -> Response:
        everyone_rejected.wait(30)
        return invalid_token(request)

    piggy.fault_resources(rejected, times=n)


def test_cold_start_with_own_sessions_makes_one_token_request(
    piggy: FakePiggy, cache: TokenCache
) -> None:
    hold = piggy.hold()

    def call() -> requests.Response:
        with requests.Session() as session:
            session.auth = ClientCredentialsAuth(
                CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache
            )
            return session.get(piggy.url + API)

    with ThreadPoolExecutor(1) as releaser:
        releaser.submit(hold.release_on_arrival)
        responses = run_together(THREADS, call)

    assert [r.status_code for r in responses] == [200] * THREADS
    assert piggy.stats().token_requests == 1
    assert len({r.request.headers["Authorization"] for r in responses}) == 1


def test_cold_start_with_one_shared_session_makes_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()
    with requests.Session() as session, ThreadPoolExecutor(1) as releaser:
        session.auth = auth
        releaser.submit(hold.release_on_arrival)
        responses = run_together(THREADS, lambda: session.get(piggy.url + API))

    assert [r.status_code for r in responses] == [200] * THREADS
    assert piggy.stats().token_requests == 1


def test_concurrent_401s_for_one_token_make_one_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    with requests.Session() as session:
        session.auth = auth
        assert session.get(piggy.url + API).status_code == 200
    piggy.revoke_all()
    reject_together(piggy, THREADS)

    def call() -> requests.Response:
        with requests.Session() as session:
            session.auth = auth
            return session.get(piggy.url + API)

    responses = run_together(THREADS, call)

    assert [r.status_code for r in responses] == [200] * THREADS
    assert [r.history[0].status_code for r in responses] == [401] * THREADS
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == THREADS


def test_a_slow_token_request_does_not_block_another_client(
    piggy: FakePiggy, cache: TokenCache
) -> None:
    piggy.add_client("client-b", "secret-b")
    hold = piggy.hold(CLIENT_ID)
    auth_a = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    auth_b = ClientCredentialsAuth("client-b", "secret-b", base_url=piggy.url, cache=cache)

    with ThreadPoolExecutor(1) as pool:
        pending_a = pool.submit(requests.get, piggy.url + API, auth=auth_a)
        assert hold.arrived.wait(30)
        response_b = requests.get(piggy.url + API, auth=auth_b)
        assert response_b.status_code == 200
        assert not pending_a.done()
        hold.released.set()
        assert pending_a.result().status_code == 200
    assert [r.client_id for r in piggy.log("token")] == [CLIENT_ID, "client-b"]


def _child_get(auth: ClientCredentialsAuth, url: str, results: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    for _ in range(2):  # the second call is a hit in the child's own cache
        response = requests.get(url, auth=auth, timeout=30)
        results.put((response.status_code, response.request.headers["Authorization"]))


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_child_forked_during_a_fetch_gets_its_own_token(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    hold = piggy.hold()
    fork = multiprocessing.get_context("fork")
    results = fork.SimpleQueue()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.get, piggy.url + API, auth=auth)
        assert hold.arrived.wait(30)
        child = fork.Process(target=_child_get, args=(auth, piggy.url + API, results))
        child.start()
        child.join(30)
        hold.release()
        parents = pending.result()

    assert child.exitcode == 0
    assert parents.status_code == 200
    (status, token), again = results.get(), results.get()
    assert status == 200
    assert again == (status, token)
    assert token != parents.request.headers["Authorization"]
    assert piggy.stats().token_requests == 2


# Uses the library against a real server (a retried outage, a refused client,
# requests and urllib3), then exits with the token session and pools still open.
CLEAN_EXIT = """
import sys
import requests
from requests_piggy_auth import ClientCredentialsAuth, RetryPolicy, TokenRequestError
from requests_piggy_auth.urllib3 import AuthorizedHttp

url, api, secret = sys.argv[1:]
quick = RetryPolicy(backoff_factor=0.01)
auth = ClientCredentialsAuth("client-1", secret, base_url=url, retry=quick)
session = requests.Session()
session.auth = auth
assert session.get(url + api).status_code == 200
assert AuthorizedHttp(auth).request("GET", url + api).status == 200
refused = ClientCredentialsAuth("unknown-client", "wrong", base_url=url)
for _ in range(3):
    try:
        requests.get(url + api, auth=refused)
    except TokenRequestError:
        pass
print("done")
"""


def test_the_interpreter_exits_cleanly(piggy: FakePiggy) -> None:
    piggy.fault_token_endpoint(Status(503), times=1)
    finished = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error",
            "-c",
            CLEAN_EXIT,
            piggy.url,
            API,
            CLIENT_SECRET,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (finished.returncode, finished.stdout, finished.stderr) == (0, "done\n", "")
    assert piggy.stats().token_requests == 3  # 503, retried to a token; the refusal cools down


def _child_token(auth: ClientCredentialsAuth, results: Any) -> None:
    results.put(auth.token())


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_child_forked_while_a_thread_holds_the_token_sessions_locks_does_not_hang(
    piggy: FakePiggy, make_auth: MakeAuth
) -> None:
    auth = make_auth()
    auth.token()  # the library's token session exists and has a pool
    adapter = token_session().get_adapter(piggy.url)
    assert isinstance(adapter, HTTPAdapter)
    pools = adapter.poolmanager.pools
    held, release = threading.Event(), threading.Event()

    def hold_the_pools_lock() -> None:
        with pools.lock:  # as a thread closing or using the session would
            held.set()
            release.wait(30)

    fork = multiprocessing.get_context("fork")
    results = fork.SimpleQueue()
    holder = threading.Thread(target=hold_the_pools_lock)
    holder.start()
    try:
        assert held.wait(30)
        child = fork.Process(target=_child_token, args=(make_auth(cache=TokenCache()), results))
        child.start()
        child.join(30)  # no speed limit: before, the child hung in its fork handler
    finally:
        release.set()
        holder.join()

    assert child.exitcode == 0
    assert results.get() in piggy.tokens()


def test_a_log_handler_that_uses_the_cache_never_deadlocks_it(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    """Error reporters format the caller's locals: here, repr and a lookup of the cache."""
    cache = TokenCache(clock=clock, refresh_ahead=False)
    auth = make_auth(cache=cache)
    seen: list[str] = []

    class Reporter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.getMessage()} {cache!r} {len(cache)}")

    reporter = Reporter()
    logger = logging.getLogger("requests_piggy_auth")
    logger.addHandler(reporter)
    try:
        auth.token()
        clock.advance(3600 - 30)  # stale, not expired: a failed renewal keeps the token
        piggy.fault_token_endpoint(Status(400))
        with ThreadPoolExecutor(1) as pool:
            renewal = pool.submit(auth.token)
            # no speed limit: before, the warning was logged under the lock and this hung
            assert renewal.result(timeout=30) == piggy.tokens()[0]
    finally:
        logger.removeHandler(reporter)

    assert len(seen) == 1
    assert "using the current token" in seen[0]
    assert seen[0].endswith("<TokenCache clients=1 maxsize=1024> 1")


def test_a_wrong_secret_never_gets_the_right_ones_token_or_delays_it(
    piggy: FakePiggy, make_auth: MakeAuth, cache: TokenCache
) -> None:
    right, wrong = (
        make_auth(),
        ClientCredentialsAuth(CLIENT_ID, "not-the-secret", base_url=piggy.url, cache=cache),
    )
    with pytest.raises(InvalidClientError):
        wrong.token()  # first: its cool-down is its own
    assert right.token() == piggy.tokens()[0]
    with pytest.raises(TokenRequestError):
        wrong.token()  # never handed the right client's cached token
    again = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    assert again.token() == right.token()
    assert piggy.stats().token_requests == 2
