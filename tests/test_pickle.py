"""Auth objects and the sessions holding them survive pickle and deepcopy, as configuration.

No lock, flight or token crosses: an unpickled auth object uses its own
process's cache, a Redis store its own Redis client, an SQLite store its own
connections to the same file. Spawn-started process
pools (macOS, Windows) depend on it.
"""

from __future__ import annotations

import base64
import copy
import multiprocessing
import pickle
import sqlite3
import ssl
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.cache import CacheConfig
from redis.retry import Retry

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    PersonalAccessTokenAuth,
    TokenCache,
    shared_cache,
)
from requests_piggy_auth.stores import RedisTokenStore, SQLiteTokenStore
from requests_piggy_auth.testing import FakePiggy

from .conftest import API, CLIENT_ID, CLIENT_SECRET, MakeAuth
from .redis_server import RedisServer

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


TIMEOUTS: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}

#: Ways to make a client for the test server's port.
CLIENTS: dict[str, Callable[[int], redis.Redis]] = {
    "Redis(host, port)": lambda port: redis.Redis("127.0.0.1", port, db=1, **TIMEOUTS),
    "from_url": lambda port: redis.Redis.from_url(
        f"redis://127.0.0.1:{port}/1", retry=Retry(NoBackoff(), 1), **TIMEOUTS
    ),
    "BlockingConnectionPool": lambda port: redis.Redis(
        connection_pool=redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
            port=port, db=1, max_connections=4, **TIMEOUTS
        )
    ),
}
CONNECTION = ("connection_class", "host", "port", "db", *TIMEOUTS)


@pytest.mark.parametrize("make_client", CLIENTS.values(), ids=CLIENTS)
@pytest.mark.parametrize("copied", COPIES.values(), ids=COPIES)
def test_an_auth_on_a_redis_store_comes_back_on_a_client_of_its_own_sharing_tokens(
    piggy: FakePiggy,
    make_auth: MakeAuth,
    redis_server: RedisServer,
    copied: Callable[[object], object],
    make_client: Callable[[int], redis.Redis],
) -> None:
    client = make_client(redis_server.port)
    store = RedisTokenStore(client, namespace="fleet", lock_timeout=7)
    session = requests.Session()
    session.auth = auth = make_auth(cache=TokenCache(store=store))
    token = auth.token()
    store._unavailable(redis.ConnectionError("lost"))  # a state that stays behind
    again = copied(session)

    assert isinstance(again, requests.Session)
    assert isinstance(again.auth, ClientCredentialsAuth)
    assert again.get(piggy.url + API).status_code == 200
    assert again.auth.token() == token  # through Redis: the copy's cache started empty
    assert piggy.stats().token_requests == 1
    copy_store = again.auth.cache.store
    assert isinstance(copy_store, RedisTokenStore)
    assert (copy_store.namespace, copy_store.lock_timeout, copy_store.health.failing) == (
        "fleet",
        7,
        False,
    )
    assert copy_store.redis is not client
    pool, original = copy_store.redis.connection_pool, client.connection_pool
    assert pool is not original
    assert (type(pool), pool.max_connections) == (type(original), original.max_connections)
    settings = {"connection_class": pool.connection_class, **pool.connection_kwargs}
    before = {"connection_class": original.connection_class, **original.connection_kwargs}
    assert {name: settings.get(name) for name in CONNECTION} == {
        name: before.get(name) for name in CONNECTION
    }
    pickled = pickle.dumps(session)
    for encoded in (
        token.encode(),
        token.encode().hex().encode(),
        base64.b64encode(token.encode()),
    ):
        assert encoded not in pickled


def _token_in_a_spawned_process(auth: ClientCredentialsAuth, url: str) -> tuple[int, str]:
    return requests.get(url, auth=auth, timeout=30).status_code, auth.token()


def test_a_spawn_started_process_pool_child_gets_the_token_through_redis(
    piggy: FakePiggy, make_auth: MakeAuth, redis_server: RedisServer
) -> None:
    auth = make_auth(cache=TokenCache(store=RedisTokenStore(redis_server.client())))
    token = auth.token()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        status, child_token = pool.apply(_token_in_a_spawned_process, (auth, piggy.url + API))

    assert (status, child_token) == (200, token)
    assert piggy.stats().token_requests == 1


@pytest.mark.parametrize("copied", COPIES.values(), ids=COPIES)
def test_an_auth_on_a_sqlite_store_comes_back_sharing_the_files_tokens(
    piggy: FakePiggy, make_auth: MakeAuth, tmp_path: Path, copied: Callable[[object], object]
) -> None:
    store = SQLiteTokenStore(tmp_path / "tokens.sqlite3", wait_timeout=7)
    session = requests.Session()
    session.auth = auth = make_auth(cache=TokenCache(store=store))
    token = auth.token()
    store._unavailable(sqlite3.DatabaseError("file is not a database"))  # stays behind
    again = copied(session)

    assert isinstance(again, requests.Session)
    assert isinstance(again.auth, ClientCredentialsAuth)
    assert again.get(piggy.url + API).status_code == 200
    assert again.auth.token() == token  # through the file: the copy's cache started empty
    assert piggy.stats().token_requests == 1
    copy_store = again.auth.cache.store
    assert isinstance(copy_store, SQLiteTokenStore)
    assert (copy_store.path, copy_store.wait_timeout, copy_store.health.failing) == (
        store.path,
        7,
        False,
    )
    pickled = pickle.dumps(session)
    for encoded in (token.encode(), base64.b64encode(token.encode())):
        assert encoded not in pickled


def test_a_spawn_started_process_pool_child_gets_the_token_through_the_sqlite_file(
    piggy: FakePiggy, make_auth: MakeAuth, tmp_path: Path
) -> None:
    auth = make_auth(cache=TokenCache(store=SQLiteTokenStore(tmp_path / "tokens.sqlite3")))
    token = auth.token()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        status, child_token = pool.apply(_token_in_a_spawned_process, (auth, piggy.url + API))

    assert (status, child_token) == (200, token)
    assert piggy.stats().token_requests == 1


class _LockedCredentials(redis.CredentialProvider):
    """Credentials behind a lock, as a refreshing provider has: it does not pickle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def get_credentials(self) -> tuple[str, str]:
        return "user", "pw-CANARY"


class _CustomPool(redis.ConnectionPool):
    """A pool whose own arguments cannot be seen."""


UNCARRIABLE: dict[str, tuple[Callable[[], redis.Redis], str]] = {
    "credential provider": (
        lambda: redis.Redis(credential_provider=_LockedCredentials(), **TIMEOUTS),
        "its credential_provider cannot be carried",
    ),
    "ssl context": (
        lambda: redis.Redis(ssl=True, ssl_ocsp_context=ssl.create_default_context(), **TIMEOUTS),
        "its ssl_ocsp_context cannot be carried",
    ),
    "pool class": (
        lambda: redis.Redis(connection_pool=_CustomPool(password="pw-CANARY", **TIMEOUTS)),
        "its connection pool, a _CustomPool, cannot be carried",
    ),
    "client-side cache": (
        lambda: redis.Redis(protocol=3, cache_config=CacheConfig(), **TIMEOUTS),
        "its client-side cache cannot be carried",
    ),
}


@pytest.mark.parametrize(("make_client", "reason"), UNCARRIABLE.values(), ids=UNCARRIABLE)
@pytest.mark.parametrize("copied", COPIES.values(), ids=COPIES)
def test_a_redis_store_whose_client_cannot_be_rebuilt_says_what_and_what_to_do(
    make_auth: MakeAuth,
    copied: Callable[[object], object],
    make_client: Callable[[], redis.Redis],
    reason: str,
) -> None:
    auth = make_auth(cache=TokenCache(store=RedisTokenStore(make_client())))

    with pytest.raises(TypeError, match="make the store there instead") as raised:
        copied(auth)
    assert reason in str(raised.value)
    assert "CANARY" not in str(raised.value)
