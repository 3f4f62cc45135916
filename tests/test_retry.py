"""Token requests are retried on outages, within one budget; refusals never are."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import urllib3
from werkzeug import Request, Response

from requests_piggy_auth import (
    InvalidClientError,
    RetryPolicy,
    TokenRequestError,
    TokenResponseError,
)
from requests_piggy_auth.failures import token_request_failed
from requests_piggy_auth.oauth import TokenRequest, TokenResponse, TokenSender
from requests_piggy_auth.testing import FakeClock, FakePiggy, Fault, Status, json_response

from .conftest import MakeAuth, answer


def retry_after(value: str) -> Fault:
    """A 503 whose ``Retry-After`` is ``value``, as sent."""
    return answer(Response("", 503, {"Retry-After": value}))


@pytest.fixture
def policy(clock: FakeClock) -> RetryPolicy:
    """Retries that wait the backoff ceiling exactly, on the fake clock."""
    return RetryPolicy(jitter=0, sleep=clock.sleep, clock=clock)


def test_5xx_is_retried_with_doubling_waits_until_a_token_comes(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    for status in (503, 502, 500):
        piggy.fault_token_endpoint(Status(status), times=1)

    assert make_auth(retry=policy).token() == piggy.tokens()[0]
    assert piggy.stats().token_requests == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_an_outage_longer_than_the_retries_is_a_token_request_error(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(Status(504))

    with pytest.raises(TokenRequestError, match="answered HTTP 504") as caught:
        make_auth(retry=policy).token()
    assert caught.value.status == 504
    assert piggy.stats().token_requests == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_429_with_retry_after_is_waited_out(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(Status(429, retry_after=1), times=1)

    assert make_auth(retry=policy).token()
    assert clock.sleeps == [1.0]
    assert piggy.stats().token_requests == 2


def test_retry_after_as_a_date_past_with_no_zone_said_waits_nothing(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(retry_after("Wed, 02 Dec 2020 16:00:00 -0000"), times=1)

    assert make_auth(retry=policy).token()
    assert clock.sleeps == [0.0]


def test_a_sender_that_fails_with_a_status_is_not_retried(clock: FakeClock) -> None:
    """A failure that came with an answer (its status) is a refusal, not a lost request."""
    attempts = []

    def refuses(request: TokenRequest) -> TokenResponse:
        attempts.append(request)
        raise TokenRequestError("refused", status=418)

    policy = RetryPolicy(sleep=clock.sleep, clock=clock)
    with pytest.raises(TokenRequestError, match="refused"):
        policy.send(refuses, TokenRequest("https://api.piggy.eu/oauth/token", {}, b""))
    assert (len(attempts), clock.sleeps) == (1, [])


def test_retry_after_as_an_http_date_is_honoured(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=3)
    piggy.fault_token_endpoint(retry_after(format_datetime(when, usegmt=True)), times=1)

    assert make_auth(retry=policy).token()
    assert len(clock.sleeps) == 1
    assert 1 <= clock.sleeps[0] <= 3


def test_retry_after_beyond_the_budget_ends_the_retries(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(Status(429, retry_after=60), times=1)

    with pytest.raises(TokenRequestError, match="HTTP 429") as caught:
        make_auth(retry=policy).token()
    assert caught.value.status == 429
    assert piggy.stats().token_requests == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("value", ["soon", "-1", "9" * 5000, "Mon, 99 Foo 2024"])
def test_an_unreadable_retry_after_falls_back_to_backoff(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock, value: str
) -> None:
    piggy.fault_token_endpoint(retry_after(value), times=1)

    assert make_auth(retry=policy).token()
    assert clock.sleeps == [0.5]


def test_the_budget_counts_attempts_and_waits(
    piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock
) -> None:
    def slow_outage(request: Request) -> Response:
        clock.advance(1.0)  # each attempt takes a second
        return Status(503)(request)

    piggy.fault_token_endpoint(slow_outage)
    policy = RetryPolicy(total=10, budget=3.0, jitter=0, sleep=clock.sleep, clock=clock)

    with pytest.raises(TokenRequestError, match="HTTP 503"):
        make_auth(retry=policy).token()
    # 1 s attempt, 0.5 s wait, 1 s attempt: 2.5 s; the next wait (1.0 s) would end past 3 s.
    assert clock.sleeps == [0.5]
    assert piggy.stats().token_requests == 2


@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        (json_response({"error": "invalid_client"}, 401), InvalidClientError),
        (json_response({"error": "invalid_grant"}, 400), InvalidClientError),
        (json_response({"message": "Forbidden"}, 403), TokenRequestError),
        (json_response({"message": "Not Found"}, 404), TokenRequestError),
        (Response("", 302, {"Location": "https://elsewhere.example/"}), TokenRequestError),
        (Response("<html>maintenance</html>", 200), TokenResponseError),
    ],
)
def test_refusals_and_bad_answers_are_never_retried(
    piggy: FakePiggy,
    make_auth: MakeAuth,
    policy: RetryPolicy,
    clock: FakeClock,
    refusal: Response,
    error: type[Exception],
) -> None:
    piggy.fault_token_endpoint(answer(refusal), times=1)

    with pytest.raises(error):
        make_auth(retry=policy).token()
    assert piggy.stats().token_requests == 1
    assert clock.sleeps == []


def test_connection_errors_are_retried_then_raised_as_ours(
    make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock, unreachable: str
) -> None:
    auth = make_auth(base_url=unreachable, retry=policy)

    with pytest.raises(TokenRequestError, match=r"token request to .* failed") as caught:
        auth.token()
    assert caught.value.status is None
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_a_timeout_is_retried(piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy) -> None:
    hold = piggy.hold()
    auth = make_auth(retry=policy, timeout=(5, 0.2))
    try:
        assert auth.token()
    finally:
        hold.release()
    assert piggy.stats().token_requests == 2


def urllib3_sender(pool: urllib3.PoolManager) -> TokenSender:
    """A token transport on urllib3, the way another adapter would write one."""

    def send(request: TokenRequest) -> TokenResponse:
        try:
            response = pool.request(
                "POST",
                request.url,
                body=request.body,
                headers=dict(request.headers),
                redirect=False,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise token_request_failed(request.url, exc) from None
        return TokenResponse(response.status, response.headers, response.data)

    return send


def test_every_transport_gets_the_same_retries(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, clock: FakeClock
) -> None:
    piggy.fault_token_endpoint(Status(503), times=1)
    piggy.fault_token_endpoint(Status(429, retry_after=2), times=1)

    with urllib3.PoolManager() as pool:
        assert make_auth(retry=policy).token(send=urllib3_sender(pool))
    assert clock.sleeps == [0.5, 2.0]
    assert piggy.stats().token_requests == 3


def test_real_waits_on_the_real_clock(piggy: FakePiggy, make_auth: MakeAuth) -> None:
    for fault in (Status(503), Status(429, retry_after=1), Status(502)):
        piggy.fault_token_endpoint(fault, times=1)

    assert make_auth(retry=RetryPolicy(backoff_factor=0.01)).token()
    assert piggy.stats().token_requests == 4


def test_each_retry_is_logged(
    piggy: FakePiggy, make_auth: MakeAuth, policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    piggy.fault_token_endpoint(Status(503), times=1)
    with caplog.at_level(logging.INFO, "requests_piggy_auth"):
        make_auth(retry=policy).token()
    assert [r.getMessage() for r in caplog.records if r.name == "requests_piggy_auth"] == [
        f"token request to {piggy.url}/oauth/token failed (HTTP 503); retry 1 of 3 in 0.50 s"
    ]


def test_full_jitter_waits_anywhere_up_to_the_ceiling() -> None:
    policy = RetryPolicy()
    waits = [policy.backoff(retry) for retry in range(6) for _ in range(50)]
    ceilings = [min(4.0, 0.5 * 2**retry) for retry in range(6) for _ in range(50)]

    assert all(0 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert len(set(waits)) == len(waits)
    assert RetryPolicy(jitter=0).backoff(10**6) == 4.0


@pytest.mark.parametrize(
    "options",
    [
        {"total": -1},
        {"budget": 0},
        {"budget": math.nan},
        {"budget": math.inf},
        {"backoff_factor": math.nan},
        {"backoff_factor": -0.1},
        {"backoff_max": -1},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_nonsense_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_total_zero_never_retries(piggy: FakePiggy, make_auth: MakeAuth, clock: FakeClock) -> None:
    piggy.fault_token_endpoint(Status(503), times=1)
    with pytest.raises(TokenRequestError, match="HTTP 503"):
        make_auth(retry=RetryPolicy(total=0, sleep=clock.sleep, clock=clock)).token()
    assert piggy.stats().token_requests == 1
