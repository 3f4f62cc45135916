"""Personal access tokens: header, expiry before sending, the 7-day warning, 401 passed through."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
import requests

from requests_piggy_auth import PersonalAccessTokenAuth, TokenExpiredError
from requests_piggy_auth.testing import FakePiggy

from .conftest import API, authorizations

PAT = "1|pat-CANARY-0123456789abcdef"


def test_sends_the_token(piggy: FakePiggy) -> None:
    piggy.add_personal_access_token(PAT)
    auth = PersonalAccessTokenAuth(PAT, base_url=piggy.url)

    response = requests.get(piggy.url + API, auth=auth)

    assert response.status_code == 200
    assert authorizations(piggy) == [f"Bearer {PAT}"]
    assert piggy.stats().token_requests == 0


def test_an_expired_token_raises_before_sending(piggy: FakePiggy) -> None:
    auth = PersonalAccessTokenAuth(
        PAT, base_url=piggy.url, expires_at=datetime.now(timezone.utc) - timedelta(minutes=1)
    )

    with pytest.raises(TokenExpiredError, match="Apps → Integrations → Personal Access Tokens"):
        requests.get(piggy.url + API, auth=auth)
    assert piggy.stats().resource_requests == 0


def test_one_warning_a_week_before_expiry(
    piggy: FakePiggy, caplog: pytest.LogCaptureFixture
) -> None:
    piggy.add_personal_access_token(PAT)
    auth = PersonalAccessTokenAuth(
        PAT, base_url=piggy.url, expires_at=datetime.now(timezone.utc) + timedelta(days=3)
    )

    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        for _ in range(3):
            assert requests.get(piggy.url + API, auth=auth).status_code == 200

    warnings = [r for r in caplog.records if "expires in" in r.getMessage()]
    assert len(warnings) == 1
    assert "expires in 3.0 days" in warnings[0].getMessage()
    assert PAT not in caplog.text


def test_no_warning_with_more_than_a_week_left(
    piggy: FakePiggy, caplog: pytest.LogCaptureFixture
) -> None:
    piggy.add_personal_access_token(PAT)
    expires_at = datetime.now() + timedelta(days=30)  # naive: local time
    auth = PersonalAccessTokenAuth(PAT, base_url=piggy.url, expires_at=expires_at)

    with caplog.at_level(logging.WARNING, "requests_piggy_auth"):
        assert requests.get(piggy.url + API, auth=auth).status_code == 200

    assert caplog.records == []
    assert auth.expires_at == expires_at.astimezone(timezone.utc)


def test_a_401_is_passed_through(piggy: FakePiggy) -> None:
    auth = PersonalAccessTokenAuth(PAT, base_url=piggy.url)

    response = requests.get(piggy.url + API, auth=auth)

    assert response.status_code == 401
    assert response.history == []
    assert piggy.stats().resource_requests == 1


@pytest.mark.parametrize("token", ["", "has space", "line\nbreak", "tab\t", "nul\x00"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="without whitespace or control characters"):
        PersonalAccessTokenAuth(token)


def test_repr_shows_no_token() -> None:
    auth = PersonalAccessTokenAuth(PAT, expires_at=datetime(2027, 1, 2, 3, 4, tzinfo=timezone.utc))

    assert repr(auth) == (
        "PersonalAccessTokenAuth(base_url='https://api.piggy.eu', "
        "expires_at='2027-01-02T03:04:00+00:00')"
    )
    assert repr(PersonalAccessTokenAuth(PAT)) == (
        "PersonalAccessTokenAuth(base_url='https://api.piggy.eu')"
    )
