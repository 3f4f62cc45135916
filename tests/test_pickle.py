"""Auth objects and the sessions holding them survive pickle and deepcopy, as configuration.

No lock, flight or token crosses: an unpickled auth object uses its own
process's cache. Spawn-started process pools (macOS, Windows) depend on it.
"""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from datetime import datetime, timedelta, timezone

import pytest
import requests

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    PersonalAccessTokenAuth,
    TokenCache,
    shared_cache,
)
from requests_piggy_auth.testing import FakePiggy

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth

COPIES = {
    "pickle": lambda value: pickle.loads(pickle.dumps(value)),
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("copied", COPIES.values(), ids=COPIES)
def test_an_auth_on_the_shared_cache_comes_back_on_this_processs_shared_cache(
    piggy: FakePiggy, copied: object
) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url)
    token = auth.token()
    again = copied(auth)  # type: ignore[operator]

    assert again.cache is shared_cache()
    assert again.token() == token
    assert pickle.dumps(auth).find(token.encode()) == -1


@pytest.mark.parametrize("copied", COPIES.values(), ids=COPIES)
def test_an_auth_on_its_own_cache_comes_back_with_an_empty_cache_like_it(
    piggy: FakePiggy, make_auth: MakeAuth, copied: object
) -> None:
    cache = TokenCache(maxsize=7, leeway=12, cooldown=CoolDown(first=0))
    auth = make_auth(cache=cache)
    token = auth.token()
    again = copied(auth)  # type: ignore[operator]

    assert again.cache is not cache
    assert (again.cache.maxsize, again.cache.leeway, again.cache.cooldown) == (
        7,
        12,
        cache.cooldown,
    )
    assert len(again.cache) == 0
    assert again.token() != token  # its own token: nothing crossed
    assert piggy.stats().token_requests == 2


@pytest.mark.parametrize("copied", COPIES.values(), ids=COPIES)
def test_a_session_holding_an_auth_pickles(piggy: FakePiggy, copied: object) -> None:
    session = requests.Session()
    session.auth = PersonalAccessTokenAuth(
        "pat-CANARY",
        expires_at=datetime.now(timezone.utc) + timedelta(days=3),
        base_url=piggy.url,
    )
    piggy.add_personal_access_token("pat-CANARY")
    again = copied(session)  # type: ignore[operator]

    for _ in range(2):  # warns once (about the expiry), on a lock of its own
        assert again.get(piggy.url + API).status_code == 200


def _status_in_a_spawned_process(auth: ClientCredentialsAuth, url: str) -> int:
    return requests.get(url, auth=auth, timeout=30).status_code


def test_a_spawn_started_process_pool_takes_an_auth(piggy: FakePiggy, make_auth: MakeAuth) -> None:
    auth = make_auth()
    assert auth.token()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        status = pool.apply(_status_in_a_spawned_process, (auth, piggy.url + API))

    assert status == 200
    assert piggy.stats().token_requests == 2  # the child fetched its own token
