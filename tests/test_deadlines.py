"""Every wait has a deadline: a token endpoint that trickles holds no caller, key or exit.

The endpoint here sends its status line and headers a byte at a time, each
byte well within the read timeout, for ever: no socket timeout ever fires.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
import requests

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    RetryPolicy,
    TokenCache,
    responses,
)
from requests_piggy_auth import cache as cache_module
from requests_piggy_auth.errors import TokenRequestError
from requests_piggy_auth.testing import FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, BrokenServer, EchoServer, MakeAuth, MakeEndless
from .test_responses import OTHER, STALE, broken_auth, broken_http

#: Connect and read timeouts, and a budget: one acquisition may take 0.2 + 0.3 s.
TIMEOUT, BUDGET = (0.2, 0.5), 0.3


def trickled_auth(server: EchoServer, cache: TokenCache) -> ClientCredentialsAuth:
    return ClientCredentialsAuth(
        "client-1",
        "s3cret",
        base_url=server.url,
        cache=cache,
        timeout=TIMEOUT,
        retry=RetryPolicy(total=0, budget=BUDGET),
    )


@pytest.mark.parametrize("adapter", ["requests", "urllib3"])
def test_a_trickling_token_endpoint_holds_each_caller_only_until_the_deadline(
    echo_server: EchoServer, adapter: str
) -> None:
    echo_server.mode = "trickle"
    auth = trickled_auth(echo_server, TokenCache(cooldown=CoolDown(first=0)))
    http = AuthorizedHttp(auth)
    sends: dict[str, Callable[[], str]] = {
        "requests": auth.token,
        "urllib3": partial(auth.token, http._send),
    }
    token = sends[adapter]
    callers = 8
    together = threading.Barrier(callers)

    def call() -> BaseException | None:
        together.wait(10)
        try:
            token()
        except TokenRequestError as exc:
            return exc
        return None

    with ThreadPoolExecutor(callers) as pool:
        calls = [pool.submit(call) for _ in range(callers)]
        # 10 s is no speed limit: before the deadline existed, these calls never returned.
        errors = [future.result(timeout=10) for future in calls]

    assert all(isinstance(error, TokenRequestError) for error in errors)
    assert all("abandoned" in str(error) for error in errors)
    assert echo_server.requests == 1  # single-flight held

    echo_server.mode = "token"  # the endpoint recovers: the key is not wedged
    assert token() == "tok-from-echo-server"
    assert echo_server.requests == 2


def test_a_caller_that_gives_up_early_leaves_the_fetch_to_its_own_deadline(
    echo_server: EchoServer,
) -> None:
    echo_server.mode = "trickle"
    cache = TokenCache(cooldown=CoolDown(first=0))
    auth = trickled_auth(echo_server, cache)
    key = auth._key
    with ThreadPoolExecutor(1) as pool:
        leader = pool.submit(auth.token)
        with pytest.raises(TokenRequestError, match="gave up waiting"):
            cache.get(key, lambda: pytest.fail("a second fetch"), timeout=0)
        with pytest.raises(TokenRequestError, match="abandoned"):
            leader.result(timeout=10)
    assert echo_server.requests == 1


# Gets a token, then lets a refresh-ahead start against an endpoint that now
# trickles, and returns from the main code while the refresh is stuck.
EXIT_DURING_A_STUCK_REFRESH = """
import sys, threading
from requests_piggy_auth import ClientCredentialsAuth, RetryPolicy, TokenCache
from requests_piggy_auth.testing import FakeClock

clock = FakeClock()
auth = ClientCredentialsAuth(
    "client-1", "s3cret", base_url=sys.argv[1], timeout=(0.2, 0.5),
    retry=RetryPolicy(total=0, budget=0.3),
    cache=TokenCache(clock=clock, jitter=lambda: 0.0),
)
first = auth.token()
print("fetched", flush=True)
sys.stdin.readline()
clock.advance(3565)  # at the refresh point: a hit starts a refresh in the background
assert auth.token() == first
stuck = [t for t in threading.enumerate() if t.name == "piggy-auth-refresh"]
print("exiting with", len(stuck), "refresh", flush=True)
"""


def test_the_interpreter_exits_while_a_refresh_is_stuck(echo_server: EchoServer) -> None:
    echo_server.mode = "token"
    command = [sys.executable, "-X", "dev", "-W", "error", "-c", EXIT_DURING_A_STUCK_REFRESH]
    with subprocess.Popen(
        [*command, echo_server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        assert process.stdout.readline() == "fetched\n"
        echo_server.mode = "trickle"
        process.stdin.write("go\n")
        process.stdin.flush()
        # 20 s is no speed limit: before, the process never exited.
        stdout, stderr = process.communicate(timeout=20)

    assert (process.returncode, stdout, stderr) == (0, "exiting with 1 refresh\n", "")
    assert echo_server.requests == 2


@pytest.mark.parametrize("adapter", ["requests", "urllib3"])
def test_a_401_body_that_trickles_is_judged_on_what_came_in_time(
    piggy: FakePiggy,
    make_auth: MakeAuth,
    endless_401: MakeEndless,
    monkeypatch: pytest.MonkeyPatch,
    adapter: str,
) -> None:
    monkeypatch.setattr(responses, "MAX_JUDGE_SECONDS", 0.2)
    auth = make_auth()
    auth.token()
    piggy.revoke_all()
    stale = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    piggy.fault_resources(endless_401(b'{"error": "invalid_token", "pad": "', stale, True), times=1)
    statuses: list[int] = []

    def call() -> None:
        if adapter == "requests":
            statuses.append(requests.get(piggy.url + API, auth=auth, stream=True).status_code)
        else:
            with AuthorizedHttp(auth) as http:
                response = http.request("GET", piggy.url + API, preload_content=False)
                statuses.append(response.status)

    caller = threading.Thread(target=call, daemon=True)  # a daemon: a hang fails, not blocks
    caller.start()
    caller.join(30)  # no speed limit: before, the hook read the trickle for hours

    assert not caller.is_alive()
    assert statuses == [200]  # judged stale by its header, resent with a new token
    assert piggy.stats().token_requests == 2


def test_fetches_held_past_their_deadlines_pile_up_to_a_limit_then_calls_fail_fast(
    echo_server: EchoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each abandoned fetch's thread lives while the server holds it: no more than a few."""
    monkeypatch.setattr(cache_module, "MAX_STUCK_FETCHES", 2)
    echo_server.mode = "trickle"
    auth = ClientCredentialsAuth(
        "client-1",
        "s3cret",
        base_url=echo_server.url,
        cache=TokenCache(cooldown=CoolDown(first=0)),
        timeout=(0.05, 0.5),
        retry=RetryPolicy(total=0, budget=0.05),  # a deadline of 0.1 s
    )
    failures = []
    for _ in range(3):
        with pytest.raises(TokenRequestError) as raised:
            auth.token()
        failures.append(str(raised.value))

    assert ["abandoned" in failure for failure in failures] == [True, True, False]
    assert "2 token requests are still held past their deadlines" in failures[2]
    assert echo_server.requests == 2


def call_in_time(call: Callable[[], object]) -> list[object]:
    """What ``call`` returned, run in a daemon thread given 30 s: a hang fails, not blocks."""
    returned: list[object] = []
    caller = threading.Thread(target=lambda: returned.append(call()), daemon=True)
    caller.start()
    caller.join(30)  # no speed limit: before, a call waited for the body for ever
    assert not caller.is_alive()
    return returned


def streamed_get(adapter: str, server: BrokenServer) -> tuple[int, bytes]:
    """A streamed GET without a timeout, as requests and urllib3 send by default."""
    url, auth = server.url + "/api", broken_auth(server)
    if adapter == "requests":
        response = requests.get(url, auth=auth, stream=True, verify=server.verify)
        return response.status_code, response.content
    sent = broken_http(server, auth).request("GET", url, preload_content=False)
    return sent.status, sent.read()


@pytest.mark.parametrize("adapter", ["requests", "urllib3"])
def test_a_stale_401_whose_body_never_comes_is_judged_in_time_and_resent(
    broken_server: BrokenServer, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    monkeypatch.setattr(responses, "MAX_JUDGE_SECONDS", 0.2)
    broken_server.break_off("401 Unauthorized", STALE, b"", "stall", faults=1)

    assert call_in_time(partial(streamed_get, adapter, broken_server)) == [(200, b"ok")]
    assert broken_server.authorizations == ["Bearer tok-1", "Bearer tok-2"]


@pytest.mark.parametrize("adapter", ["requests", "urllib3"])
def test_a_401_body_that_pauses_past_the_judging_is_handed_back_readable(
    broken_server: BrokenServer, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    monkeypatch.setattr(responses, "MAX_JUDGE_SECONDS", 0.2)
    start, rest = b'{"error": "invalid_request", "pad": "', b'x" }'
    headers = OTHER.replace(b"100", b"%d" % len(start + rest))
    broken_server.break_off("401 Unauthorized", headers, start, "pause", faults=1, rest=rest)

    # Judged on what came by 0.2 s; the rest comes at 0.5 s, read as the caller reads it.
    assert call_in_time(partial(streamed_get, adapter, broken_server)) == [(401, start + rest)]


@pytest.mark.parametrize("adapter", ["requests", "urllib3"])
def test_a_stale_401_on_a_kept_alive_connection_is_resent(
    broken_server: BrokenServer, adapter: str
) -> None:
    """The commonest 401 of all: a whole body, its length said, the connection kept."""
    body = b'{"error": "invalid_token"}'
    headers = b'WWW-Authenticate: Bearer error="invalid_token"\r\nContent-Length: %d\r\n' % len(
        body
    )
    broken_server.break_off("401 Unauthorized", headers, body, "keep", faults=1)

    assert call_in_time(partial(streamed_get, adapter, broken_server)) == [(200, b"ok")]
    assert broken_server.authorizations == ["Bearer tok-1", "Bearer tok-2"]
