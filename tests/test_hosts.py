"""Issue 16: api.piggy.eu and api.piggy.nl (older docs, the PHP SDK) never share a token
unless allowed."""

from __future__ import annotations

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    PiggyAuth,
    TokenCache,
)
from requests_piggy_auth.testing import FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import API, CLIENT_ID, CLIENT_SECRET, answer, seen_authorization

EU, NL = "https://api.piggy.eu", "https://api.piggy.nl"
CONTACTS = "/api/v3/oauth/clients/contacts"


def auths(base_url: str | None, allowed: tuple[str, ...] = ()) -> list[PiggyAuth]:
    return [
        ClientCredentialsAuth("4711", "secret", base_url=base_url, allowed_origins=allowed),
        PersonalAccessTokenAuth("pat", base_url=base_url, allowed_origins=allowed),
    ]


@pytest.mark.parametrize(
    ("base_url", "allowed", "gets_it"),
    [
        (None, (), {EU}),
        (EU, (), {EU}),
        (NL, (), {NL}),
        (EU, (NL,), {EU, NL}),
        (NL, (EU,), {EU, NL}),
    ],
    ids=["default", "eu", "nl", "eu-allows-nl", "nl-allows-eu"],
)
def test_a_token_goes_to_the_other_host_only_when_allowed(
    monkeypatch: pytest.MonkeyPatch,
    base_url: str | None,
    allowed: tuple[str, ...],
    gets_it: set[str],
) -> None:
    monkeypatch.delenv("PIGGY_BASE_URL", raising=False)
    for auth in auths(base_url, allowed):
        assert {host for host in (EU, NL) if auth.sends_token_to(host + CONTACTS)} == gets_it
        assert not auth.sends_token_to("http://api.piggy.nl" + CONTACTS)  # never plain http


def test_the_token_endpoint_follows_the_base_url() -> None:
    assert ClientCredentialsAuth("4711", "secret", base_url=NL).token_url == NL + "/oauth/token"


@pytest.mark.parametrize("transport", ["requests", "urllib3"])
@pytest.mark.parametrize("allowed", [False, True])
def test_a_redirect_to_the_other_host_never_carries_the_token(
    piggy: FakePiggy, other: HTTPServer, allowed: bool, transport: str
) -> None:
    """The fake Piggy plays one host, ``other`` the second. A redirect between them drops
    the token even when the second is allowed (as requests drops ``Authorization``); a
    call straight to an allowed host carries it."""
    other.expect_request(CONTACTS).respond_with_json({"data": []})
    piggy.fault_resources(answer(Response("", 302, {"Location": other.url_for(CONTACTS)})))
    allowed_origins = [other.url_for("/")] if allowed else []
    auth = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=piggy.url,
        allowed_origins=allowed_origins,
        cache=TokenCache(),
    )

    if transport == "requests":
        statuses = [
            requests.get(url, auth=auth).status_code
            for url in (piggy.url + API, other.url_for(CONTACTS))
        ]
    else:
        with AuthorizedHttp(auth) as http:
            statuses = [
                http.request("GET", url).status
                for url in (piggy.url + API, other.url_for(CONTACTS))
            ]

    assert statuses == [200, 200]
    sent = f"Bearer {piggy.tokens()[0]}"
    assert seen_authorization(other) == [None, sent if allowed else None]
