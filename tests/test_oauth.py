"""The sans-IO token request and parser."""

from __future__ import annotations

import json

import pytest

from requests_piggy_auth import PersonalAccessTokenAuth
from requests_piggy_auth.oauth import MAX_LIFETIME, ClientCredentials, Token, TokenResponse

GRANT = ClientCredentials("https://api.piggy.eu/oauth/token", "id", "secret")


def ok(payload: object) -> TokenResponse:
    return TokenResponse(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())


@pytest.mark.parametrize(
    ("payload", "token"),
    [
        ({"access_token": "a"}, Token("a", None)),
        ({"access_token": "a", "token_type": "bearer", "expires_in": 60}, Token("a", 60.0)),
        ({"access_token": "a", "expires_in": "3600"}, Token("a", 3600.0)),
        ({"access_token": "a", "expires_in": 1e12}, Token("a", MAX_LIFETIME)),
        ({"access_token": "1|sanctum~token", "expires_in": None}, Token("1|sanctum~token")),
    ],
)
def test_parse_accepts(payload: object, token: Token) -> None:
    assert GRANT.parse(ok(payload)) == token


def test_the_request_never_shows_the_secret() -> None:
    request = GRANT.token_request()

    assert b"secret" in request.body
    assert "secret" not in repr(request)
    assert "secret" not in repr(GRANT)
    assert "secret" not in repr(Token("secret"))


def test_a_personal_access_token_is_never_renewed() -> None:
    pat = PersonalAccessTokenAuth("pat")
    assert pat.rejected(pat.lease(), None, b"") is False
