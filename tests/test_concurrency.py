"""Threads and processes share one token: counted at the server."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import requests
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.testing import FakePiggy, Status

from .conftest import API, CLIENT_ID, CLIENT_SECRET, invalid_token

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
