"""Issue 16: personal access tokens from a string, a callable or a file; Piggy's numeric ids."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import pickle
import threading
import traceback
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import requests

from requests_piggy_auth import (
    ClientCredentialsAuth,
    ConfigurationError,
    Lease,
    PersonalAccessTokenAuth,
    TokenCache,
    policy,
)
from requests_piggy_auth.httpx import HttpxAuth
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


@pytest.mark.parametrize("interval", [policy.REREAD_INTERVAL, 0.0])
def test_one_warning_for_a_revoked_pat_under_1000_calls(
    fake_piggy: FakePiggy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    interval: float,
) -> None:
    """Asked again each time or not (the interval), the source is warned about once."""
    monkeypatch.setattr(policy, "REREAD_INTERVAL", interval)
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


@pytest.mark.parametrize("rotated", ["new-token\n", "", None, b"new-token"])
def test_a_source_that_gives_an_unusable_token_after_a_401_is_a_configuration_error(
    fake_piggy: FakePiggy, rotated: object
) -> None:
    """A rotation script that writes the new token with a newline, or a source that gives
    nothing or bytes: a typed error that does not show what it gave, and the token kept."""
    fake_piggy.add_personal_access_token("old-token")
    current: list[object] = ["old-token"]
    auth = PersonalAccessTokenAuth(lambda: current[0], base_url=fake_piggy.url)  # type: ignore[arg-type,return-value]
    with requests.Session() as session:
        assert session.get(fake_piggy.api_url + "/contacts", auth=auth).status_code == 200
        fake_piggy.revoke_all()
        current[0] = rotated
        with pytest.raises(ConfigurationError) as caught:
            session.get(fake_piggy.api_url + "/contacts", auth=auth)

    assert "new-token" not in str(caught.value)
    assert auth.lease().access_token == "old-token"


def test_a_rotation_drops_the_expiry_of_the_old_token() -> None:
    current = ["old-token"]
    expiry = datetime(2030, 1, 2, tzinfo=timezone.utc)
    auth = PersonalAccessTokenAuth(lambda: current[0], expires_at=expiry)
    current[0] = "new-token"
    assert auth.rejected(Lease("old-token"), 'Bearer error="invalid_token"', b"")
    assert (auth.token(), auth.expires_at) == ("new-token", None)
    # A late 401 for the old token: the source gives the token in use, worth a resend.
    assert auth.rejected(Lease("old-token"), 'Bearer error="invalid_token"', b"")


# -- a token file ----------------------------------------------------------------


def write_atomically(path: Path, content: str) -> None:
    """Replace ``path`` as an operator should: write another file, rename it over."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)


def test_a_token_file_is_read_once_stripped_and_not_per_request(
    fake_piggy: FakePiggy, tmp_path: Path
) -> None:
    token = fake_piggy.issue_personal_access_token()
    path = tmp_path / "token"
    path.write_text(f"{token}\n", encoding="utf-8")
    auth = PersonalAccessTokenAuth.from_file(path, base_url=fake_piggy.url)
    path.write_text("not-read-until-a-401\n", encoding="utf-8")
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(fake_piggy.api_url + "/contacts", auth=auth).ok
    assert {entry.headers["Authorization"] for entry in fake_piggy.log()} == {f"Bearer {token}"}
    assert "FileSource" in repr(auth._source)
    assert str(path) in repr(auth._source)


@pytest.mark.parametrize(
    ("content", "problem"),
    [("", "is empty"), (" \n", "is empty"), ("two words", "holds a character no token has")],
)
def test_a_token_file_without_a_token_is_a_configuration_error(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "token"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=problem) as raised:
        PersonalAccessTokenAuth.from_file(path)
    assert str(path) in str(raised.value)
    assert "words" not in str(raised.value)


@pytest.mark.parametrize(
    "make", [lambda p: None, lambda p: p.mkdir(), lambda p: p.write_bytes(b"\xff")]
)
def test_an_unreadable_token_file_is_a_configuration_error(tmp_path: Path, make: object) -> None:
    path = tmp_path / "token"
    make(path)  # type: ignore[operator]
    with pytest.raises(ConfigurationError, match="cannot read the personal access token file"):
        PersonalAccessTokenAuth.from_file(path)


def test_a_token_file_emptied_before_a_401_gives_the_error_and_keeps_the_token(
    fake_piggy: FakePiggy, tmp_path: Path
) -> None:
    token = fake_piggy.issue_personal_access_token()
    path = tmp_path / "token"
    path.write_text(token, encoding="utf-8")
    auth = PersonalAccessTokenAuth.from_file(path, base_url=fake_piggy.url)
    fake_piggy.revoke(token)
    path.write_text("", encoding="utf-8")  # a writer that truncates first, caught midway
    with pytest.raises(ConfigurationError, match="is empty"):
        requests.get(fake_piggy.api_url + "/contacts", auth=auth)
    assert auth.token() == token  # nothing taken from the empty file


def test_a_kubernetes_secret_volume_swap_is_followed(fake_piggy: FakePiggy, tmp_path: Path) -> None:
    """The kubelet writes a new timestamped folder and switches the ``..data`` symlink."""
    old, new = fake_piggy.issue_personal_access_token(), fake_piggy.issue_personal_access_token()
    for folder, token in (("..2026_12_01", old), ("..2026_12_07", new)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "token").write_text(token + "\n", encoding="utf-8")
    (tmp_path / "..data").symlink_to("..2026_12_01")
    (tmp_path / "token").symlink_to("..data/token")
    auth = PersonalAccessTokenAuth.from_file(tmp_path / "token", base_url=fake_piggy.url)
    assert requests.get(fake_piggy.api_url + "/contacts", auth=auth).ok

    (tmp_path / "..data_tmp").symlink_to("..2026_12_07")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic swap
    fake_piggy.revoke(old)
    response = requests.get(fake_piggy.api_url + "/contacts", auth=auth)

    assert response.ok
    assert [r.status_code for r in response.history] == [401]
    assert response.request.headers["Authorization"] == f"Bearer {new}"


def test_a_file_auth_survives_pickle_and_deepcopy(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("pat-1", encoding="utf-8")
    auth = PersonalAccessTokenAuth.from_file(path)
    path.write_text("pat-2", encoding="utf-8")
    for copied in (pickle.loads(pickle.dumps(auth)), copy.deepcopy(auth)):
        assert copied.token() == "pat-1"
        assert copied.rejected(Lease("pat-1"), 'Bearer error="invalid_token"', b"")
        assert copied.token() == "pat-2"


WORKERS, CALLS, ROTATE_AFTER = 16, 12, 4


def test_a_token_file_rewritten_under_16_threads_fails_no_call(
    fake_piggy: FakePiggy, tmp_path: Path
) -> None:
    """Acceptance 1: every call succeeds; each thread sees at most one 401, for the old token."""
    old = fake_piggy.issue_personal_access_token()
    path = tmp_path / "token"
    path.write_text(old + "\n", encoding="utf-8")
    auth = PersonalAccessTokenAuth.from_file(path, base_url=fake_piggy.url)
    start, rotated = threading.Barrier(WORKERS), threading.Event()
    new: list[str] = []

    def rotate() -> None:  # issue the new token, rewrite the file, revoke the old one
        new.append(fake_piggy.issue_personal_access_token())
        write_atomically(path, new[0] + "\n")
        fake_piggy.revoke(old)
        rotated.set()

    def work(worker: int) -> list[int]:
        start.wait()
        statuses = []
        with requests.Session() as session:
            session.headers["X-Worker"] = str(worker)
            for call in range(CALLS):
                if call == ROTATE_AFTER and worker == 0:
                    rotate()
                if call == CALLS - 2:
                    assert rotated.wait(30)  # every thread's last calls come after the rotation
                statuses.append(
                    session.get(fake_piggy.api_url + "/contacts", auth=auth).status_code
                )
        return statuses

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(work, range(WORKERS)))

    assert results == [[200] * CALLS] * WORKERS
    seen: dict[str, list[tuple[str, int | None]]] = {}
    for entry in fake_piggy.log("resource"):
        token = entry.headers["Authorization"].removeprefix("Bearer ")
        seen.setdefault(entry.headers["X-Worker"], []).append((token, entry.status))
    assert len(seen) == WORKERS
    unauthorized = [
        (token, status) for sent in seen.values() for token, status in sent if status == 401
    ]
    assert unauthorized
    assert {token for token, _ in unauthorized} == {old}
    for sent in seen.values():
        assert sum(status == 401 for _, status in sent) <= 1
        tokens = [token for token, _ in sent]
        first_new = tokens.index(new[0])  # the file was re-read: the old token never again
        assert set(tokens[first_new:]) == {new[0]}


def test_a_token_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """Opening a FIFO would wait for a writer for ever."""
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    with ThreadPoolExecutor(1) as pool:
        made = pool.submit(PersonalAccessTokenAuth.from_file, fifo, base_url="http://127.0.0.1:1")
        with pytest.raises(ConfigurationError, match="not a regular file"):
            made.result(timeout=10)


def test_a_huge_token_file_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "token"
    with open(big, "wb") as file:
        file.truncate(64 * 1024 * 1024)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(ConfigurationError, match="larger than"):
            PersonalAccessTokenAuth.from_file(big, base_url="http://127.0.0.1:1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


#: A 401's ``WWW-Authenticate`` for a token that is no good.
INVALID = 'Bearer error="invalid_token"'


def test_callers_that_get_a_401_while_the_source_is_read_share_the_read() -> None:
    """One read at a time: a slow one is joined, never raced by a second."""
    reads = iter(["T1-initial", "T2-newer"])
    read_started, go_on = threading.Event(), threading.Event()
    calls = []

    def source() -> str:
        calls.append(1)
        token = next(reads)
        if token == "T2-newer":  # a secret manager that answers late
            read_started.set()
            assert go_on.wait(30)
        return token

    auth = PersonalAccessTokenAuth(source, base_url="http://127.0.0.1:1")
    rejected = Lease("T1-initial")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(auth.rejected, rejected, INVALID, b"")
        assert read_started.wait(30)
        second = pool.submit(auth.rejected, rejected, INVALID, b"")
        go_on.set()
        assert first.result(timeout=30)
        assert second.result(timeout=30)

    assert len(calls) == 2  # at construction, and the one read after the 401s
    assert auth.lease().access_token == "T2-newer"


def test_a_source_that_hangs_after_a_401_holds_no_caller_past_its_wait(
    fake_piggy: FakePiggy,
) -> None:
    revoked = fake_piggy.issue_personal_access_token()
    fake_piggy.revoke(revoked)
    release = threading.Event()
    calls = []

    def source() -> str:
        calls.append(1)
        if len(calls) > 1:
            assert release.wait(30)  # a secret manager that hangs
        return revoked

    auth = PersonalAccessTokenAuth(source, base_url=fake_piggy.url)
    auth.source_wait = 0.2
    try:
        with (
            requests.Session() as session,
            pytest.raises(ConfigurationError, match=r"within 0\.2 s"),
        ):
            session.get(fake_piggy.api_url + "/contacts", auth=auth, timeout=10)
    finally:
        release.set()


def test_a_source_that_raises_after_a_401_is_our_error_without_its_text(
    fake_piggy: FakePiggy,
) -> None:
    old = fake_piggy.issue_personal_access_token()
    fake_piggy.revoke(old)
    calls = []

    def source() -> str:
        calls.append(1)
        if len(calls) == 1:
            return old
        raise RuntimeError(f"vault sealed; it held {old}")

    auth = PersonalAccessTokenAuth(source, base_url=fake_piggy.url)
    with requests.Session() as session, pytest.raises(ConfigurationError) as raised:
        session.get(fake_piggy.api_url + "/contacts", auth=auth, timeout=10)

    assert str(raised.value) == "the personal access token's source failed (RuntimeError)"
    assert old not in "".join(traceback.format_exception(raised.value))


def test_a_server_that_refuses_the_token_the_source_still_gives_costs_no_read_per_call(
    fake_piggy: FakePiggy,
) -> None:
    revoked = fake_piggy.issue_personal_access_token()
    fake_piggy.revoke(revoked)
    calls = []

    def source() -> str:
        calls.append(1)
        return revoked  # not rotated yet

    auth = PersonalAccessTokenAuth(source, base_url=fake_piggy.url)
    with requests.Session() as session:
        statuses = [
            session.get(fake_piggy.api_url + "/contacts", auth=auth, timeout=10).status_code
            for _ in range(10)
        ]

    assert statuses == [401] * 10
    assert len(calls) == 2  # at construction, and once within the interval


def test_an_async_client_reads_the_token_source_off_the_event_loop(
    fake_piggy: FakePiggy,
) -> None:
    old, new = fake_piggy.issue_personal_access_token(), fake_piggy.issue_personal_access_token()
    fake_piggy.revoke(old)
    on_the_loop: list[bool] = []

    def source() -> str:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            on_the_loop.append(False)
        else:
            on_the_loop.append(True)
        return old if len(on_the_loop) == 1 else new

    auth = PersonalAccessTokenAuth(source, base_url=fake_piggy.url)

    async def main() -> int:
        async with httpx.AsyncClient(auth=HttpxAuth(auth)) as client:
            return (await client.get(fake_piggy.api_url + "/contacts")).status_code

    assert asyncio.run(main()) == 200
    assert on_the_loop == [False, False]  # built outside a loop; read again off it
