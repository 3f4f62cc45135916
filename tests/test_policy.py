"""The core's policies without an HTTP library: a personal access token on an injected clock."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from requests_piggy_auth import TokenExpiredError
from requests_piggy_auth.policy import PersonalAccessTokenPolicy

PAT = "1|pat-CANARY-0123456789abcdef"
EXPIRY = datetime(2027, 1, 31, 12, tzinfo=timezone.utc)


def test_a_personal_access_token_expires_by_the_injected_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [EXPIRY - timedelta(days=30)]
    policy = PersonalAccessTokenPolicy(
        PAT, expires_at=EXPIRY, base_url=None, allowed_origins=(), now=lambda: now[0]
    )

    assert policy.lease().authorization == f"Bearer {PAT}"
    assert caplog.records == []
    now[0] = EXPIRY - timedelta(days=2)
    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        assert policy.lease().access_token == PAT
    assert ["expires in 2.0 days" in r.getMessage() for r in caplog.records] == [True]
    now[0] = EXPIRY
    with pytest.raises(TokenExpiredError, match="2027-01-31 12:00"):
        policy.lease()


def test_a_policy_says_no_new_token_cures_a_personal_access_token() -> None:
    policy = PersonalAccessTokenPolicy(PAT, expires_at=None, base_url=None, allowed_origins=())
    lease = policy.lease()

    assert not policy.renewable
    assert not policy.rejected(lease, 'Bearer error="invalid_token"', b"")
