"""from_env: the environment decides which auth."""

from __future__ import annotations

from pathlib import Path

import pytest

from requests_piggy_auth import (
    ClientCredentialsAuth,
    ConfigurationError,
    PersonalAccessTokenAuth,
    TokenCache,
    from_env,
)
from requests_piggy_auth.testing import FakePiggy

from .conftest import CLIENT_ID, CLIENT_SECRET


def test_a_personal_access_token_wins() -> None:
    auth = from_env(
        {"PIGGY_PERSONAL_ACCESS_TOKEN": "pat", "PIGGY_CLIENT_ID": "id", "PIGGY_CLIENT_SECRET": "s"}
    )
    assert isinstance(auth, PersonalAccessTokenAuth)
    assert auth.base_url == "https://api.piggy.eu"


def test_client_credentials_with_a_base_url_and_options() -> None:
    cache = TokenCache()
    auth = from_env(
        {
            "PIGGY_CLIENT_ID": "id",
            "PIGGY_CLIENT_SECRET": "s",
            "PIGGY_BASE_URL": "http://127.0.0.1:9",
        },
        cache=cache,
    )
    assert isinstance(auth, ClientCredentialsAuth)
    assert (auth.client_id, auth.base_url, auth.cache) == ("id", "http://127.0.0.1:9", cache)


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIGGY_PERSONAL_ACCESS_TOKEN", "pat")
    assert isinstance(from_env(), PersonalAccessTokenAuth)


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({}, "PIGGY_CLIENT_ID, PIGGY_CLIENT_SECRET"),
        ({"PIGGY_CLIENT_ID": "id"}, "missing: PIGGY_CLIENT_SECRET"),
        (
            {"PIGGY_CLIENT_SECRET": "s", "PIGGY_PERSONAL_ACCESS_TOKEN": ""},
            "missing: PIGGY_CLIENT_ID",
        ),
    ],
)
def test_missing_variables_are_named(environ: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigurationError, match="set PIGGY_PERSONAL_ACCESS_TOKEN") as raised:
        from_env(environ)
    assert missing in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_values_are_stripped(piggy: FakePiggy, cache: TokenCache) -> None:
    environ = {
        "PIGGY_BASE_URL": f" {piggy.url}/\n",
        "PIGGY_CLIENT_ID": f"{CLIENT_ID}\r\n",
        "PIGGY_CLIENT_SECRET": f"\t{CLIENT_SECRET} ",
        "PIGGY_PERSONAL_ACCESS_TOKEN": " \n",  # blank: not set
    }

    auth = from_env(environ, cache=cache)

    assert isinstance(auth, ClientCredentialsAuth)
    assert (auth.base_url, auth.client_id) == (piggy.url, CLIENT_ID)
    assert auth.token() == piggy.tokens()[0]
    pat = from_env({"PIGGY_PERSONAL_ACCESS_TOKEN": "pat\n"})
    assert pat.token() == "pat"


def test_blank_credentials_are_missing() -> None:
    with pytest.raises(ConfigurationError, match="missing: PIGGY_CLIENT_SECRET"):
        from_env({"PIGGY_CLIENT_ID": "id", "PIGGY_CLIENT_SECRET": " \n"})


def test_a_base_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigurationError, match="base_url must not hold a user name") as raised:
        from_env({"PIGGY_PERSONAL_ACCESS_TOKEN": "pat", "PIGGY_BASE_URL": "https://a:pa55@x.eu"})
    assert "pa55" not in str(raised.value)


def test_invalid_settings_are_a_configuration_error() -> None:
    with pytest.raises(
        ConfigurationError, match=r"invalid Piggy settings.*base_url must use https"
    ):
        from_env({"PIGGY_PERSONAL_ACCESS_TOKEN": "pat", "PIGGY_BASE_URL": "http://piggy.eu"})


def test_an_auth_made_without_a_base_url_strips_the_variable(
    piggy: FakePiggy, cache: TokenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIGGY_BASE_URL", f"{piggy.url}/\n")
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, cache=cache)

    assert auth.base_url == piggy.url
    assert auth.token() == piggy.tokens()[0]


def test_a_personal_access_token_file(fake_piggy: FakePiggy, tmp_path: Path) -> None:
    token = fake_piggy.issue_personal_access_token()
    path = tmp_path / "token"
    path.write_text(token + "\n", encoding="utf-8")
    environ = {
        "PIGGY_PERSONAL_ACCESS_TOKEN_FILE": f" {path}\n",
        "PIGGY_CLIENT_ID": "id",
        "PIGGY_CLIENT_SECRET": "s",
        "PIGGY_BASE_URL": fake_piggy.url,
    }

    auth = from_env(environ)

    assert isinstance(auth, PersonalAccessTokenAuth)
    assert auth.token() == token
    assert auth.base_url == fake_piggy.url


def test_a_token_and_a_token_file_are_one_too_many() -> None:
    environ = {"PIGGY_PERSONAL_ACCESS_TOKEN": "pat", "PIGGY_PERSONAL_ACCESS_TOKEN_FILE": "/x"}
    with pytest.raises(ConfigurationError, match="not both"):
        from_env(environ)


def test_an_empty_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"token file .* is empty"):
        from_env({"PIGGY_PERSONAL_ACCESS_TOKEN_FILE": str(path)})
