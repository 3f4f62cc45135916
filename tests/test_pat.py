"""Issue 16: Piggy's numeric client ids."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
import requests

from requests_piggy_auth import ClientCredentialsAuth, Lease, PersonalAccessTokenAuth, TokenCache
from requests_piggy_auth.policy import AuthPolicy
from requests_piggy_auth.testing import FakePiggy


def test_int_and_str_client_ids_are_one_client() -> None:
    cache = TokenCache()
    by_int = ClientCredentialsAuth(4711, "secret", base_url="https://api.piggy.eu", cache=cache)
    by_str = ClientCredentialsAuth("4711", "secret", base_url="https://api.piggy.eu", cache=cache)
    assert by_int.client_id == by_str.client_id == "4711"
    assert by_int._key == by_str._key  # one cache key: one token for both


@pytest.mark.parametrize("client_id", [True, 47.11, None])
def test_other_client_ids_are_refused(client_id: object) -> None:
    with pytest.raises(TypeError, match="client_id must be an int or a str"):
        ClientCredentialsAuth(client_id, "secret")  # type: ignore[arg-type]


def test_int_and_str_client_ids_share_one_token(fake_piggy: FakePiggy) -> None:
    fake_piggy.add_client("4711", "secret")
    cache = TokenCache()
    for client_id in (4711, "4711"):
        auth = ClientCredentialsAuth(client_id, "secret", base_url=fake_piggy.url, cache=cache)
        assert requests.get(fake_piggy.api_url + "/contacts", auth=auth).status_code == 200
    assert fake_piggy.stats().token_requests_by_client == {"4711": 1}


def test_a_rotated_callable_pat_is_resent_once(fake_piggy: FakePiggy) -> None:
    fake_piggy.add_personal_access_token("old-token")
    current = ["old-token"]
    auth = PersonalAccessTokenAuth(lambda: current[0], base_url=fake_piggy.url)
    assert requests.get(fake_piggy.api_url + "/contacts", auth=auth).status_code == 200
    fake_piggy.revoke_all()
    fake_piggy.add_personal_access_token("new-token")
    current[0] = "new-token"
    response = requests.get(fake_piggy.api_url + "/contacts", auth=auth)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert requests.get(fake_piggy.api_url + "/contacts", auth=auth).history == []


def test_one_warning_for_a_revoked_pat_under_1000_calls(
    fake_piggy: FakePiggy, caplog: pytest.LogCaptureFixture
) -> None:
    fake_piggy.add_personal_access_token("the-token")
    auth = PersonalAccessTokenAuth(lambda: "the-token", base_url=fake_piggy.url)
    fake_piggy.revoke_all()
    with caplog.at_level(logging.WARNING, logger="requests_piggy_auth"), requests.Session() as s:
        statuses = {
            s.get(fake_piggy.api_url + "/contacts", auth=auth).status_code for _ in range(1000)
        }
    assert statuses == {401}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "revoked" in warnings[0].getMessage()
    assert "the-token" not in caplog.text


def test_the_warning_names_a_known_expiry_and_other_401s_are_not_judged() -> None:
    expiry = datetime(2030, 1, 2, 3, 4, tzinfo=timezone.utc)
    auth = PersonalAccessTokenAuth(lambda: "tok", expires_at=expiry)
    assert not auth.rejected(Lease("tok"), 'Basic realm="x"', b"")
    assert not auth.rejected(Lease("tok"), 'Bearer error="invalid_token"', b"")
    assert not auth.rejected(Lease("tok"), 'Bearer error="invalid_token"', b"")
    assert not PersonalAccessTokenAuth("tok").renewable


def test_a_policy_that_cannot_renew_judges_no_401_curable() -> None:
    policy = AuthPolicy(base_url="https://api.piggy.eu", allowed_origins=())
    assert not policy.rejected(Lease("tok"), 'Bearer error="invalid_token"', b"")
