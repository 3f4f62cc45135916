"""One revocation never reaches a caller as a 401: every face of it, and a storm of them.

A resend after a 401 for token T goes out with a token requested after that
401 arrived; a token that may predate the revocation (a refresh in flight, a
newer token already cached) is not good enough.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from werkzeug import Request, Response

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.testing import FakeClock, FakePiggy, json_response

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth
from .test_refresh_ahead import REFRESH_POINT, refreshed


def test_a_refresh_that_brings_a_token_from_before_the_revocation_is_no_cure(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, jitter=lambda: 0.0))
    session = requests.Session()
    session.auth = auth
    assert session.get(piggy.url + API).status_code == 200
    # A token issued before the revocation, whose answer arrives after it.
    before = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache()
    ).token()
    arrived, answer = threading.Event(), threading.Event()

    def late_answer(request: Request) -> Response:
        arrived.set()
        answer.wait(30)
        return json_response({"token_type": "Bearer", "access_token": before, "expires_in": 3600})

    piggy.fault_token_endpoint(late_answer, times=1)
    clock.advance(REFRESH_POINT)
    assert session.get(piggy.url + API).status_code == 200  # starts the refresh
    assert arrived.wait(30)
    piggy.revoke_all()

    with ThreadPoolExecutor(1) as pool:
        revoked = pool.submit(session.get, piggy.url + API)
        answer.set()
        response = revoked.result(timeout=30)
    refreshed()
    later = [session.get(piggy.url + API).status_code for _ in range(10)]

    assert (response.status_code, [r.status_code for r in response.history]) == (200, [401])
    assert later == [200] * 10
    assert piggy.stats().token_requests == 4  # first, before, the refresh, one renewal


def test_a_401_for_an_older_token_is_not_resent_with_a_newer_one_from_before_it(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    auth = make_auth(cache=TokenCache(clock=clock, jitter=lambda: 0.0))
    session = requests.Session()
    session.auth = auth
    old = session.prepare_request(requests.Request("GET", piggy.url + API))  # carries T0
    clock.advance(REFRESH_POINT)
    assert session.get(piggy.url + API).status_code == 200  # refreshes ahead to T1
    refreshed()
    piggy.revoke_all()  # both

    response = session.send(old)

    assert (response.status_code, [r.status_code for r in response.history]) == (200, [401])
    tokens = piggy.tokens()
    assert response.request.headers["Authorization"] == f"Bearer {tokens[-1]}"
    assert len(tokens) == 3


THREADS = 64
REVOCATIONS = 5


def test_a_storm_of_revocations_under_64_threads_never_reaches_a_caller(
    piggy: FakePiggy,
) -> None:
    """1 s tokens, refresh-ahead on, the real clock; each revocation costs ≤ 2 token requests.

    The requests a revocation costs are the token requests the server saw
    between the revocation and its first successful API answer after it; the
    ones after are refreshes ahead of the new token's end.

    The server's clock runs at half speed, so it accepts a token for twice the
    second it announces: on a loaded machine a request that took its token just
    before the leeway (a tenth of a second here) may arrive after the token's
    end, and that 401 for an expired token, followed within one renewal by a
    revocation, would be two events reaching one caller. Every 401 here is a
    revocation.
    """
    piggy.token_lifetime = 1
    started = time.time()
    piggy.clock = lambda: started + (time.time() - started) / 2
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache())
    calls: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    progress = threading.Condition()
    stop = threading.Event()

    def worker(number: int) -> None:
        with requests.Session() as session:
            session.auth = auth
            while not stop.is_set():
                status = session.get(piggy.url + API, timeout=30).status_code
                with progress:
                    statuses[status] += 1
                    calls[number] += 1
                    progress.notify_all()

    def each_called(times: int) -> None:
        """Wait until every worker has made ``times`` more calls."""
        marks = dict(calls)
        with progress:
            assert progress.wait_for(
                lambda: all(calls[n] >= marks.get(n, 0) + times for n in range(THREADS)), 30
            )

    costs = []
    with ThreadPoolExecutor(THREADS) as pool:
        workers = [pool.submit(worker, n) for n in range(THREADS)]
        try:
            for _ in range(REVOCATIONS):
                each_called(5)
                seen = len(piggy.log())
                piggy.revoke_all()
                each_called(2)  # the second call of each was sent after the revocation
                after = piggy.log()[seen:]
                first_success = next(
                    i for i, e in enumerate(after) if e.route == "resource" and e.status == 200
                )
                costs.append(sum(1 for e in after[:first_success] if e.route == "token"))
        finally:
            stop.set()
        for done in workers:
            done.result(timeout=30)

    assert set(statuses) == {200}  # no caller ever saw a 401
    assert piggy.stats().unauthorized > 0  # the revocations did bite
    # 0 when a refresh in flight at the revocation came back after it, with a token it spared.
    assert all(cost <= 2 for cost in costs), costs
