"""Issue 16: a client secret that rotates without a restart (a callable ``client_secret``)."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests
from werkzeug import Request, Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    ConfigurationError,
    CoolDown,
    InvalidClientError,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
)
from requests_piggy_auth.httpx import HttpxAuth
from requests_piggy_auth.sources import SOURCE_THREAD
from requests_piggy_auth.testing import FakeClock, FakePiggy, json_response

from .conftest import API, CLIENT_ID, CLIENT_SECRET
from .test_httpx import get as httpx_get


class Secret:
    """A secret manager: ``value`` is the secret it hands out; ``reads`` counts the calls."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> str:
        self.reads += 1
        return self.value


def secret_of(entry: Any) -> str:
    return str(entry.fields["client_secret"])


@pytest.fixture
def secret() -> Secret:
    return Secret(CLIENT_SECRET)


@pytest.fixture
def rotating(
    piggy: FakePiggy, cache: TokenCache, clock: FakeClock, secret: Secret
) -> ClientCredentialsAuth:
    """The test client with a callable secret, retrying on the fake clock."""
    retry = RetryPolicy(sleep=clock.sleep, clock=clock)
    return ClientCredentialsAuth(CLIENT_ID, secret, base_url=piggy.url, cache=cache, retry=retry)


def test_a_rotated_secret_gets_a_token_at_once_without_a_cool_down(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret, clock: FakeClock
) -> None:
    """Acceptance 2: rotated on the server and in the callable, the next token request
    succeeds in the same call, the clock never moved."""
    old_key = rotating._key
    assert requests.get(piggy.url + API, auth=rotating).ok
    secret.value = piggy.rotate_client_secret(CLIENT_ID)
    piggy.revoke_all()  # the next call needs a new token

    response = requests.get(piggy.url + API, auth=rotating)

    assert response.ok
    assert [r.status_code for r in response.history] == [401]
    log = piggy.log("token")
    assert [(secret_of(e), e.status) for e in log] == [
        (CLIENT_SECRET, 200),
        (CLIENT_SECRET, 401),
        (secret.value, 200),
    ]
    assert (secret.reads, clock.sleeps, clock.now) == (2, [], FakeClock().now)
    assert rotating._key != old_key  # a new secret, a new key: no cool-down of the old one
    assert rotating.grant.client_secret == secret.value


def test_a_wrong_secret_that_stays_wrong_still_cools_down(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret, clock: FakeClock
) -> None:
    piggy.rotate_client_secret(CLIENT_ID)  # the callable keeps the old one

    with pytest.raises(InvalidClientError):
        rotating.token()
    with pytest.raises(TokenRequestError, match="for another") as cooling:
        rotating.token()

    assert isinstance(cooling.value.__cause__, InvalidClientError)
    assert piggy.stats().token_requests == 1
    assert secret.reads == 2  # construction, and once for that refusal: not per call
    clock.advance(1)
    with pytest.raises(InvalidClientError):
        rotating.token()
    assert (piggy.stats().token_requests, secret.reads) == (2, 3)


def test_a_new_secret_that_is_wrong_too_is_tried_once(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret
) -> None:
    piggy.rotate_client_secret(CLIENT_ID)
    secret.value = "also-wrong"

    with pytest.raises(InvalidClientError):
        rotating.token()

    assert [secret_of(e) for e in piggy.log("token")] == [CLIENT_SECRET, "also-wrong"]


def test_a_refusal_seen_in_a_cool_down_reads_the_secret(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret
) -> None:
    """A refusal that went to no caller of the auth (a background refresh's) is read for
    when its cool-down turns a caller away."""
    secret.value = piggy.rotate_client_secret(CLIENT_ID)
    with pytest.raises(InvalidClientError):  # past the auth: no read
        rotating.cache.lease(rotating._key, rotating._credentials.fetch)

    assert rotating.token() == piggy.tokens()[0]
    assert (secret.reads, piggy.stats().token_requests) == (2, 2)


def test_16_threads_on_one_refused_request_read_the_secret_once(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret
) -> None:
    secret.value = piggy.rotate_client_secret(CLIENT_ID)
    hold = piggy.hold()
    everyone = threading.Barrier(16)

    def call() -> str:
        everyone.wait()
        return rotating.token()

    with ThreadPoolExecutor(16) as pool:
        calls = [pool.submit(call) for _ in range(16)]
        hold.release_on_arrival()
        tokens = {call.result() for call in calls}

    assert tokens == set(piggy.tokens())
    assert len(tokens) == 1
    assert [(secret_of(e), e.status) for e in piggy.log("token")] == [
        (CLIENT_SECRET, 401),
        (secret.value, 200),
    ]
    assert secret.reads == 2


class BlockedSecret(Secret):
    """A secret manager whose reads after the first wait for ``release``."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.reading, self.release = threading.Event(), threading.Event()

    def __call__(self) -> str:
        if self.reads:
            self.reading.set()
            assert self.release.wait(30)
        return super().__call__()


@pytest.fixture
def blocked_secret() -> Iterator[BlockedSecret]:
    secret = BlockedSecret(CLIENT_SECRET)
    yield secret
    secret.release.set()


def test_a_caller_waits_for_the_read_no_longer_than_its_deadline(
    piggy: FakePiggy, blocked_secret: BlockedSecret
) -> None:
    secret = blocked_secret
    retry = RetryPolicy(total=0, budget=0.5)
    auth = ClientCredentialsAuth(
        CLIENT_ID, secret, base_url=piggy.url, cache=TokenCache(), retry=retry, timeout=(0.5, 5)
    )
    secret.value = piggy.rotate_client_secret(CLIENT_ID)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(auth.token)
        assert secret.reading.wait(30)
        with pytest.raises(TokenRequestError, match="for another"):
            auth.token()  # the same refusal, its read still going: this caller gets it
        with pytest.raises(InvalidClientError):
            first.result(timeout=30)  # the caller that started the read waits no longer
    secret.release.set()  # the secret manager answers at last

    assert auth.token() == piggy.tokens()[0]  # the read it gave is in use


def test_a_secret_source_that_fails_fails_the_callers_of_that_refusal(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret
) -> None:
    piggy.rotate_client_secret(CLIENT_ID)
    secret.value = ""  # a secret manager that hands out nothing

    with pytest.raises(ConfigurationError, match=r"gave no usable secret \(str\)"):
        rotating.token()
    with pytest.raises(ConfigurationError, match=r"gave no usable secret \(str\)"):
        rotating.token()  # cooling down after the same refusal: the same outcome
    assert secret.reads == 2


class RaisingSecret(Secret):
    """A secret manager whose reads after the first fail, quoting what it holds."""

    def __call__(self) -> str:
        if self.reads:
            raise RuntimeError(f"vault sealed; last value {self.value}")
        return super().__call__()


def test_a_secret_source_that_raises_is_our_error_naming_only_its_type(
    piggy: FakePiggy, cache: TokenCache
) -> None:
    secret = RaisingSecret(CLIENT_SECRET)
    auth = ClientCredentialsAuth(CLIENT_ID, secret, base_url=piggy.url, cache=cache)
    secret.value = piggy.rotate_client_secret(CLIENT_ID)

    with pytest.raises(ConfigurationError) as raised:
        auth.token()
    assert str(raised.value) == "the client secret's source failed (RuntimeError)"
    told = "".join(traceback.format_exception(raised.value))
    assert "vault sealed" not in told
    assert secret.value not in told


def test_a_caller_that_comes_after_the_rotation_uses_it(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret
) -> None:
    stale = rotating._credentials
    secret.value = piggy.rotate_client_secret(CLIENT_ID)
    with pytest.raises(InvalidClientError) as refused:
        rotating.cache.lease(stale.key, stale.fetch)
    assert rotating.token() == piggy.tokens()[0]

    assert rotating._reading(stale, refused.value) is True  # already rotated: no read
    assert secret.reads == 2
    current = rotating._credentials
    late: Future[str] = Future()  # a slow read that ends after the rotation
    late.set_result("read-for-an-older-refusal")
    assert rotating._switched(stale, late, 0)
    assert rotating._credentials is current  # the first new secret stays in use


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_httpx_clients_rotate_too(
    piggy: FakePiggy, rotating: ClientCredentialsAuth, secret: Secret, mode: str
) -> None:
    secret.value = piggy.rotate_client_secret(CLIENT_ID)

    assert httpx_get(rotating, piggy.url + API, mode).status_code == 200
    assert [e.status for e in piggy.log("token")] == [401, 200]


def test_a_fixed_secret_is_never_read_again(piggy: FakePiggy, cache: TokenCache) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    piggy.rotate_client_secret(CLIENT_ID)
    with pytest.raises(InvalidClientError):
        auth.token()
    assert piggy.stats().token_requests == 1


def module_secret() -> str:
    return CLIENT_SECRET


def test_an_auth_with_a_callable_secret_survives_pickle_and_deepcopy(
    piggy: FakePiggy,
) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, module_secret, base_url=piggy.url, cache=TokenCache())
    for copied in (pickle.loads(pickle.dumps(auth)), copy.deepcopy(auth)):
        assert copied._key == auth._key
        assert copied._reread is None
        assert copied.token()


def test_a_source_that_hangs_gets_one_thread_however_many_refusals_come(
    piggy: FakePiggy, clock: FakeClock, blocked_secret: BlockedSecret
) -> None:
    secret = blocked_secret
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        secret,
        base_url=piggy.url,
        cache=TokenCache(clock=clock, cooldown=CoolDown(first=5, jitter=0)),
        retry=RetryPolicy(total=0, budget=0.1),
        timeout=(0.1, 5),
    )
    piggy.rotate_client_secret(CLIENT_ID)
    for _ in range(3):
        with pytest.raises(InvalidClientError):
            auth.token()  # each a refusal of its own; the read of the first still hangs
        clock.advance(60)  # past the cool-down

    assert [t.name for t in threading.enumerate()].count(SOURCE_THREAD) == 1
    assert secret.reading.is_set()  # the one read, in flight


def test_each_caller_gets_an_error_of_its_own_from_a_failing_source(
    piggy: FakePiggy, cache: TokenCache
) -> None:
    """Not one object raised again and again, its traceback growing with each caller."""
    secret = RaisingSecret(CLIENT_SECRET)
    auth = ClientCredentialsAuth(CLIENT_ID, secret, base_url=piggy.url, cache=cache)
    piggy.rotate_client_secret(CLIENT_ID)
    errors = []
    for _ in range(5):
        with pytest.raises(ConfigurationError) as raised:
            auth.token()  # one refusal, cooling down: one read, its failure told to each
        errors.append(raised.value)

    assert len({id(error) for error in errors}) == 5
    assert len({len(traceback.extract_tb(error.__traceback__)) for error in errors}) == 1


def test_a_refusal_that_took_the_whole_deadline_leaves_none_for_a_second_request(
    piggy: FakePiggy, cache: TokenCache, clock: FakeClock, secret: Secret
) -> None:
    """One deadline bounds the refused request, the read and the request with the new
    secret together."""
    auth = ClientCredentialsAuth(
        CLIENT_ID, secret, base_url=piggy.url, cache=cache, retry=RetryPolicy(total=0)
    )
    secret.value = piggy.rotate_client_secret(CLIENT_ID)

    def slow_refusal(request: Request) -> Response:
        clock.advance(60)  # the refusal took longer than the whole deadline
        return json_response({"error": "invalid_client"}, 401)

    piggy.fault_token_endpoint(slow_refusal, times=1)

    with pytest.raises(TokenRequestError):
        auth.token()  # with a new secret, but no time left to ask with it


def test_async_callers_wait_for_a_hanging_source_holding_no_thread_of_the_loop(
    piggy: FakePiggy, blocked_secret: BlockedSecret
) -> None:
    """20 refused tasks wait for one read that hangs: the loop's default executor stays
    free for everything else (the stores' work, the user's own)."""
    secret = blocked_secret
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        secret,
        base_url=piggy.url,
        cache=TokenCache(),
        retry=RetryPolicy(total=0, budget=30),
    )
    piggy.rotate_client_secret(CLIENT_ID)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            calls = [asyncio.create_task(client.get(piggy.url + API)) for _ in range(20)]
            with ThreadPoolExecutor(1) as waiter:
                assert await loop.run_in_executor(waiter, secret.reading.wait, 30)
            for _ in range(3):  # the refused tasks had the loop's turns to reach their waits
                await asyncio.sleep(0)
            await asyncio.wait_for(asyncio.to_thread(lambda: None), 10)  # a bound: free now
            assert not any(call.done() for call in calls)  # all still waiting for the read
            secret.release.set()
            await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(main())


def test_a_rotation_gets_in_through_a_client_hook_that_raises_for_the_status(
    piggy: FakePiggy, secret: Secret
) -> None:
    """httpx closes the refusal's body unread when a hook raises: a 401 from the token
    endpoint with no body is a refused client all the same (RFC 6749, 5.2)."""
    auth = ClientCredentialsAuth(CLIENT_ID, secret, base_url=piggy.url, cache=TokenCache())
    secret.value = piggy.rotate_client_secret(CLIENT_ID)

    def hook(response: httpx.Response) -> None:
        response.raise_for_status()

    with httpx.Client(event_hooks={"response": [hook]}) as client:
        client.auth = HttpxAuth(auth, client=client)
        assert client.get(piggy.url + API).status_code == 200
    assert [e.status for e in piggy.log("token")] == [401, 200]
