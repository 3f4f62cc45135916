"""Issue 16: Piggy's numeric client ids."""

from __future__ import annotations

import pytest
import requests

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
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
