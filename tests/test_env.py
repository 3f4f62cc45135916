"""from_env: the environment decides which auth."""

from __future__ import annotations

import pytest

from requests_piggy_auth import (
    ClientCredentialsAuth,
    ConfigurationError,
    PersonalAccessTokenAuth,
    TokenCache,
    from_env,
)


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


def test_invalid_settings_are_a_configuration_error() -> None:
    with pytest.raises(
        ConfigurationError, match=r"invalid Piggy settings.*base_url must use https"
    ):
        from_env({"PIGGY_PERSONAL_ACCESS_TOKEN": "pat", "PIGGY_BASE_URL": "http://piggy.eu"})
