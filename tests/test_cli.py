"""The ``piggy-auth`` command, run as a subprocess against the fake Piggy."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from requests_piggy_auth import PersonalAccessTokenAuth
from requests_piggy_auth.cli import main, parser
from requests_piggy_auth.testing import FakePiggy, Malformed

from .conftest import API, CLIENT_ID, CLIENT_SECRET, authorizations

ROOT = Path(__file__).resolve().parent.parent
PAT = "pat-CANARY-0123456789abcdef"


def piggy_auth(
    *args: str, env: dict[str, str], script: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``piggy-auth`` (the console script or ``python -m``), with ``env``'s PIGGY_ variables."""
    command = (
        [str(Path(sys.executable).with_name("piggy-auth"))]
        if script
        else [sys.executable, "-m", "requests_piggy_auth"]
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIGGY_")}
    return subprocess.run(
        [*command, *args],
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def cache_home(tmp_path: Path) -> Path:
    """The user's cache directory in every run here (see conftest.py): never the real one."""
    return tmp_path / "cache"


@pytest.fixture
def client_env(piggy: FakePiggy) -> dict[str, str]:
    return {
        "PIGGY_BASE_URL": piggy.url,
        "PIGGY_CLIENT_ID": CLIENT_ID,
        "PIGGY_CLIENT_SECRET": CLIENT_SECRET,
    }


def test_token_shows_type_expiry_and_a_masked_token(
    piggy: FakePiggy, client_env: dict[str, str]
) -> None:
    result = piggy_auth("token", env=client_env, script=True)

    token = piggy.tokens()[0]
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"base URL:     {piggy.url}",
        "credential:   client credentials (PIGGY_CLIENT_ID, PIGGY_CLIENT_SECRET)",
        f"client:       {CLIENT_ID}",
        "token type:   Bearer",
        "expires in:   3600 s",
        f"access token: ********{token[-4:]}  (--show prints it)",
    ]
    assert token[:-4] not in result.stdout + result.stderr
    assert piggy.stats().token_requests == 1


def test_token_show_prints_the_token(piggy: FakePiggy, client_env: dict[str, str]) -> None:
    piggy.token_lifetime = None

    result = piggy_auth("token", "--show", "--no-cache", env=client_env)

    assert result.returncode == 0, result.stderr
    assert "expires in:   not stated" in result.stdout
    assert f"access token: {piggy.tokens()[0]}\n" in result.stdout


def test_token_with_a_personal_access_token(piggy: FakePiggy) -> None:
    result = piggy_auth(
        "token", env={"PIGGY_BASE_URL": piggy.url, "PIGGY_PERSONAL_ACCESS_TOKEN": PAT}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"base URL:     {piggy.url}",
        "credential:   personal access token (PIGGY_PERSONAL_ACCESS_TOKEN)",
        "token type:   personal access token (Bearer)",
        "expires at:   not known: the Business Dashboard shows it",
        f"access token: ********{PAT[-4:]}  (--show prints it)",
    ]
    assert PAT[:-4] not in result.stdout
    assert piggy.log() == []


def test_token_with_a_personal_access_token_file_names_the_file(
    piggy: FakePiggy, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(PAT + "\n", encoding="utf-8")
    env = {"PIGGY_BASE_URL": piggy.url, "PIGGY_PERSONAL_ACCESS_TOKEN_FILE": str(path)}

    result = piggy_auth("token", env=env)

    assert result.returncode == 0, result.stderr
    assert (
        f"credential:   personal access token (the file {path} in "
        "PIGGY_PERSONAL_ACCESS_TOKEN_FILE)\n" in result.stdout
    )
    assert PAT[:-4] not in result.stdout


def test_token_shows_a_known_expiry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expiry = datetime(2027, 6, 30, 12, 0, tzinfo=timezone.utc)
    auth = PersonalAccessTokenAuth(PAT, expires_at=expiry)
    monkeypatch.setattr("requests_piggy_auth.cli.from_env", lambda: auth)

    assert main(["token"]) == 0
    assert "expires at:   2027-06-30 12:00 UTC\n" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["token"], ["get", API]])
def test_bad_credentials_exit_1_with_a_clear_message_and_no_secret(
    piggy: FakePiggy, command: list[str]
) -> None:
    secret = "wrong-CANARY-secret"
    env = {"PIGGY_BASE_URL": piggy.url, "PIGGY_CLIENT_ID": CLIENT_ID, "PIGGY_CLIENT_SECRET": secret}

    result = piggy_auth(*command, env=env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"piggy-auth: token endpoint refused client {CLIENT_ID!r}: HTTP 401 invalid_client "
        "(Client authentication failed); check PIGGY_CLIENT_ID and PIGGY_CLIENT_SECRET\n"
    )
    assert secret not in result.stderr


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "PIGGY_CLIENT_ID, PIGGY_CLIENT_SECRET"),
        ({"PIGGY_CLIENT_ID": CLIENT_ID}, "PIGGY_CLIENT_SECRET"),
    ],
    ids=["nothing", "no-secret"],
)
@pytest.mark.parametrize("command", [["token"], ["get", API]])
def test_missing_variables_exit_2_and_say_what_to_set(
    env: dict[str, str], missing: str, command: list[str]
) -> None:
    result = piggy_auth(*command, env=env)

    assert result.returncode == 2
    assert result.stderr == (
        "piggy-auth: no Piggy credentials in the environment: set PIGGY_PERSONAL_ACCESS_TOKEN "
        "(or PIGGY_PERSONAL_ACCESS_TOKEN_FILE), or set "
        f"PIGGY_CLIENT_ID and PIGGY_CLIENT_SECRET (missing: {missing})\n"
    )


def test_an_unreachable_api_exits_1_and_points_at_the_base_url(unreachable: str) -> None:
    url = unreachable
    env = {"PIGGY_BASE_URL": url, "PIGGY_CLIENT_ID": "a", "PIGGY_CLIENT_SECRET": "CANARY-b"}

    result = piggy_auth("token", env=env)

    assert result.returncode == 1
    assert result.stderr.startswith(f"piggy-auth: token request to {url}/oauth/token failed")
    assert result.stderr.endswith("; check PIGGY_BASE_URL and that the API can be reached\n")
    assert "CANARY-b" not in result.stderr


def test_an_unreachable_api_with_a_personal_access_token_exits_1(unreachable: str) -> None:
    url = unreachable
    env = {"PIGGY_BASE_URL": url, "PIGGY_PERSONAL_ACCESS_TOKEN": PAT}

    result = piggy_auth("get", "/api/v3/oauth/clients/contacts", env=env)

    assert result.returncode == 1
    assert result.stderr == (
        f"piggy-auth: GET {url}/api/v3/oauth/clients/contacts failed: connection error "
        "(ConnectionError: MaxRetryError: NewConnectionError: ConnectionRefusedError); "
        "check PIGGY_BASE_URL and that the API can be reached\n"
    )
    assert PAT not in result.stderr


def test_get_prints_the_json_answer(piggy: FakePiggy, client_env: dict[str, str]) -> None:
    contact = piggy.add_contact("ada@example.com")

    result = piggy_auth("get", f"{API}/{contact['uuid']}", env=client_env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"data": contact, "meta": {}}
    assert result.stdout.startswith('{\n  "data": {\n')
    assert piggy.log("resource")[0].headers["Accept"] == "application/json"


def test_get_an_error_exits_1_after_printing_the_answer(
    piggy: FakePiggy, client_env: dict[str, str]
) -> None:
    url = f"{piggy.url}{API}/no-such-contact"

    result = piggy_auth("get", url, env=client_env)

    assert result.returncode == 1
    assert json.loads(result.stdout)["message"] == "Contact not found."
    assert result.stderr == f"piggy-auth: GET {url} answered HTTP 404 Not Found\n"


def test_get_prints_a_body_that_is_not_json_as_it_is(
    piggy: FakePiggy, client_env: dict[str, str]
) -> None:
    piggy.fault_resources(Malformed("html"))

    result = piggy_auth("get", "api/v3/oauth/clients/contacts", env=client_env)

    assert result.returncode == 0
    assert result.stdout.startswith("<!doctype html>")


def test_token_and_get_need_only_the_core_dependencies(
    piggy: FakePiggy, client_env: dict[str, str]
) -> None:
    blocked = ["werkzeug", "pytest_httpserver", "rich", "pytest"]
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}));"
        "from requests_piggy_auth.cli import main;"
        f"sys.exit(main(['token']) or main(['get', {API!r}]))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIGGY_")}

    result = subprocess.run(
        [sys.executable, "-c", code],
        env=environ | client_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert piggy.stats().resource_requests == 1


def uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``package`` look not installed in this test; our modules that import it reload."""
    importers = ("requests_piggy_auth.demo", "requests_piggy_auth.testing")
    for name in list(sys.modules):
        if name.partition(".")[0] == package or name.startswith(importers):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)


def test_the_demo_without_its_extra_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uninstall(monkeypatch, "rich")

    assert main(["demo"]) == 2
    assert capsys.readouterr().err == (
        "piggy-auth: the demo needs the demo extra (missing: rich); install it with "
        "pip install 'requests-piggy-auth[demo]'\n"
    )


def test_the_testing_package_without_its_extra_says_which_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uninstall(monkeypatch, "pytest_httpserver")
    monkeypatch.delitem(sys.modules, "requests_piggy_auth.pytest_plugin")

    with pytest.raises(ImportError, match=r"pip install 'requests-piggy-auth\[testing\]'"):
        import requests_piggy_auth.testing  # noqa: F401
    # The plugin, loaded by its entry point in every pytest run, still imports.
    assert importlib.import_module("requests_piggy_auth.pytest_plugin").CLIENT_ID == "test-client"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["demo", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
        (["demo", "--token-lifetime", "0"], "argument --token-lifetime: must be more than 0"),
        (["demo", "--pause", "-1"], "argument --pause: must be 0 or more, got -1"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)

    assert raised.value.code == 2
    assert says in capsys.readouterr().err


def test_every_command_in_the_docs_parses() -> None:
    text = "".join(
        (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/cli.md")
    )
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    commands = [
        shlex.split(line, comments=True)
        for block in blocks
        for line in block.splitlines()
        if line.startswith("piggy-auth ")
    ]

    assert len(commands) >= 7
    for command in commands:
        parser().parse_args(command[1:])


def test_two_get_runs_make_one_token_request_in_all(
    piggy: FakePiggy, client_env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "elsewhere" / "tokens.sqlite3"
    env = client_env | {"PIGGY_AUTH_TOKEN_STORE": str(store)}

    runs = [piggy_auth("get", API, env=env) for _ in range(2)]

    assert [run.returncode for run in runs] == [0, 0], runs[1].stderr
    assert [run.stderr for run in runs] == ["", ""]
    assert piggy.stats().token_requests == 1
    [first, second] = authorizations(piggy)
    assert first == second == f"Bearer {piggy.tokens()[0]}"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def test_token_reuses_the_token_in_the_users_cache_directory(
    piggy: FakePiggy, client_env: dict[str, str], cache_home: Path
) -> None:
    first = piggy_auth("token", "--show", env=client_env)
    second = piggy_auth("token", "--show", env=client_env, script=True)

    assert first.returncode == second.returncode == 0, second.stderr
    assert piggy.stats().token_requests == 1
    assert f"access token: {piggy.tokens()[0]}\n" in second.stdout
    expires_in = re.search(r"^expires in: +(\d+) s$", second.stdout, re.MULTILINE)
    assert expires_in is not None
    assert 3000 < int(expires_in.group(1)) <= 3600  # what is left of the same token
    assert (cache_home / "requests-piggy-auth" / "tokens.sqlite3").exists()


@pytest.mark.parametrize("command", [["token"], ["get", API]])
def test_no_cache_requests_a_token_each_run_and_keeps_it_from_the_store(
    piggy: FakePiggy, client_env: dict[str, str], cache_home: Path, command: list[str]
) -> None:
    store = cache_home / "requests-piggy-auth" / "tokens.sqlite3"
    runs = [piggy_auth(*command, "--no-cache", env=client_env) for _ in range(2)]
    assert not store.exists()
    runs.append(piggy_auth(*command, env=client_env))

    assert [run.returncode for run in runs] == [0, 0, 0]
    assert piggy.stats().token_requests == 3  # nothing stored: the third run made its own
    assert store.exists()


def test_a_cached_token_revoked_between_runs_is_renewed_once(
    piggy: FakePiggy, client_env: dict[str, str]
) -> None:
    assert piggy_auth("get", API, env=client_env).returncode == 0
    piggy.revoke_all()

    result = piggy_auth("get", API, env=client_env)
    again = piggy_auth("get", API, env=client_env)

    assert (result.returncode, again.returncode) == (0, 0), result.stderr
    assert piggy.stats().token_requests == 2
    assert piggy.stats().unauthorized == 1
    assert authorizations(piggy)[-1] == f"Bearer {piggy.tokens()[1]}"
