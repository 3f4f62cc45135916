"""The four libraries, each set up the way its own documentation shows.

A :class:`Library` turns a :class:`Setup` (the fake server, the client's
credentials) into a :class:`Client`: the few lines a user would write to make
authenticated GETs. The choices are written down in docs/performance.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from oauthlib.oauth2 import BackendApplicationClient, TokenExpiredError
from requests_auth import OAuth2, OAuth2ClientCredentials
from requests_oauthlib import OAuth2Session as OAuthlibSession

from requests_piggy_auth import ClientCredentialsAuth, TokenCache
from requests_piggy_auth.testing import FakePiggy

CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
#: Connect and read timeout, in seconds, of every API call and peer token request.
TIMEOUT = 10.0

#: Signs a prepared request on a cache hit: the step the overhead benchmark times.
Signer = Callable[[requests.PreparedRequest], object]


class Client(Protocol):
    """What a user's code does: GET a URL with the library's auth."""

    def get(self, url: str) -> requests.Response:
        """The response to an authenticated GET; exceptions propagate."""


@dataclass
class Setup:
    """What a client is made from: the server and how early to renew tokens.

    :param piggy: the running fake Piggy, knowing ``CLIENT_ID``.
    :param leeway: for the peers, seconds before expiry that a token counts as
        expired (their defaults, 30 or 60 s, exceed the benchmark's 3 s tokens).
    :param cache: this library's token cache for the scenario, shared by its
        clients like the process-wide default in a fresh process.
    """

    piggy: FakePiggy
    leeway: float
    cache: TokenCache = field(default_factory=TokenCache)


@dataclass(frozen=True)
class Library:
    """A library under test.

    :param name: how the table names it.
    :param connect: the user's setup code; makes a client (peers fetch their first token here).
    :param signer: the per-request step on a cache hit, from a connected client.
    """

    name: str
    connect: Callable[[Setup], Client]
    signer: Callable[[Client], Signer]


class SessionClient:
    """A ``requests.Session`` whose ``auth`` does all the work (ours, requests-auth)."""

    def __init__(self, auth: requests.auth.AuthBase) -> None:
        self.auth = auth
        self.session = requests.Session()
        self.session.auth = auth

    def get(self, url: str) -> requests.Response:
        return self.session.get(url, timeout=TIMEOUT)


def piggy_auth(setup: Setup) -> SessionClient:
    """This library: ``ClientCredentialsAuth`` on a Session, all defaults but the cache."""
    return SessionClient(
        ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=setup.piggy.url, cache=setup.cache)
    )


def requests_auth(setup: Setup) -> SessionClient:
    """requests-auth: ``OAuth2ClientCredentials`` on a Session; tokens in its global cache."""
    return SessionClient(
        OAuth2ClientCredentials(
            setup.piggy.token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            early_expiry=setup.leeway,
        )
    )


class AuthlibClient:
    """authlib: ``OAuth2Session`` with ``token_endpoint`` and the grant type, so it re-fetches."""

    def __init__(self, setup: Setup) -> None:
        self.session = AuthlibSession(
            CLIENT_ID,
            CLIENT_SECRET,
            token_endpoint=setup.piggy.token_url,
            grant_type="client_credentials",
            leeway=setup.leeway,
        )
        self.session.fetch_token(timeout=TIMEOUT)

    def get(self, url: str) -> requests.Response:
        response: requests.Response = self.session.get(url, timeout=TIMEOUT)
        return response


class OAuthlibClient:
    """requests-oauthlib: ``OAuth2Session`` with ``BackendApplicationClient``.

    It has no automatic renewal for client credentials (``auto_refresh_url``
    needs a refresh token), so, as its docs suggest for expiry, the user's code
    catches ``TokenExpiredError``, fetches a new token and tries again.
    """

    def __init__(self, setup: Setup) -> None:
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"  # the fake serves plain http on loopback
        self.token_url = setup.piggy.token_url
        self.session = OAuthlibSession(client=BackendApplicationClient(client_id=CLIENT_ID))
        self.fetch_token()

    def fetch_token(self) -> None:
        self.session.fetch_token(
            token_url=self.token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            timeout=TIMEOUT,
        )

    def get(self, url: str) -> requests.Response:
        try:
            response: requests.Response = self.session.get(url, timeout=TIMEOUT)
        except TokenExpiredError:
            self.fetch_token()
            response = self.session.get(url, timeout=TIMEOUT)
        return response


def _auth_signer(client: Client) -> Signer:
    assert isinstance(client, SessionClient)
    return client.auth


def _authlib_signer(client: Client) -> Signer:
    assert isinstance(client, AuthlibClient)
    signer: Signer = client.session.token_auth  # the AuthBase its request() attaches
    return signer


def _oauthlib_signer(client: Client) -> Signer:
    """What ``OAuth2Session.request`` does per call: ``add_token`` (it has no auth object)."""
    assert isinstance(client, OAuthlibClient)
    add_token = client.session._client.add_token

    def sign(r: requests.PreparedRequest) -> object:
        return add_token(r.url, http_method=r.method, body=r.body, headers=r.headers)

    return sign


def reset_requests_auth() -> None:
    """Empty requests-auth's process-wide token cache, as a fresh process has it."""
    OAuth2.token_cache.clear()  # type: ignore[no-untyped-call]


LIBRARIES = [
    Library("requests-piggy-auth", piggy_auth, _auth_signer),
    Library("authlib", AuthlibClient, _authlib_signer),
    Library("requests-oauthlib", OAuthlibClient, _oauthlib_signer),
    Library("requests-auth", requests_auth, _auth_signer),
]
