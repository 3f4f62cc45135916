"""``FakePiggy``: Piggy's token endpoint and resource routes on a real local HTTP server."""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import unquote_plus

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response
from werkzeug.datastructures import Headers

from .contacts import API_PREFIX, Contact, Contacts
from .faults import ConnectionDroppedError, Fault, Hold, json_response

#: How a 401 for an unknown, expired or revoked token looks. ``"rfc6750"``:
#: ``WWW-Authenticate: Bearer error="invalid_token"`` and a JSON body with
#: ``"error": "invalid_token"``; ``"header-only"``: the header and an empty body;
#: ``"body-only"``: the JSON body without the header; ``"bare"``:
#: ``{"message": "Unauthenticated."}`` (Laravel's) without the header.
UnauthorizedStyle = Literal["rfc6750", "header-only", "body-only", "bare"]
Route = Literal["token", "resource"]
Clock = Callable[[], float]
F = TypeVar("F", bound=Fault)

_UNAUTHENTICATED = {"message": "Unauthenticated."}


class _HTTPServer(HTTPServer):
    """pytest-httpserver's server, stopping within 50 ms rather than 500."""

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.05)


@dataclass
class LoggedRequest:
    """One request the server saw, in order of arrival.

    :param route: ``"token"`` or ``"resource"``.
    :param method: the HTTP method.
    :param path: the URL path.
    :param query: the query string, as sent.
    :param headers: the request headers.
    :param body: the request body as sent.
    :param fields: a token request's form or JSON fields (the secret included).
    :param status: the status answered; ``None`` while in flight or when the
        connection was dropped.
    """

    route: Route
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes = field(repr=False)
    fields: Mapping[str, str] = field(default_factory=dict, repr=False)
    status: int | None = None

    @property
    def client_id(self) -> str | None:
        """The client a token request named."""
        return self.fields.get("client_id")


@dataclass(frozen=True)
class Stats:
    """Counts of what the server saw.

    :param token_requests: requests to the token endpoint.
    :param token_requests_by_client: those that named a client, by client id.
    :param resource_requests: requests to the resource routes.
    :param unauthorized: 401s answered on the resource routes.
    """

    token_requests: int
    token_requests_by_client: Mapping[str, int]
    resource_requests: int
    unauthorized: int


@dataclass(frozen=True)
class _Credential:
    """An access token the server accepts until ``expires_at`` on its clock."""

    client_id: str | None
    expires_at: float
    revoked: bool = False


@dataclass
class _Rule:
    """A fault for the next ``remaining`` requests to ``route`` before ``until``."""

    fault: Fault
    route: Route
    remaining: float
    until: float
    client_id: str | None

    def take(self, route: Route, client_id: str | None, now: float) -> bool:
        if self.route != route or self.remaining <= 0 or now >= self.until:
            return False
        if self.client_id is not None and self.client_id != client_id:
            return False
        self.remaining -= 1
        return True


class FakePiggy:
    """A fake Piggy API on a threaded HTTP server on loopback, for tests and demos.

    ``POST /oauth/token`` runs the client credentials grant (JSON or form
    body; the client's id and secret in the body or, as ``client_secret_basic``,
    in an HTTP Basic ``Authorization`` header) for the clients added with
    :meth:`add_client`; the contact routes
    under ``/api/v3/oauth/clients/`` (see :class:`~.contacts.Contacts`) accept
    the tokens it issued and the personal access tokens added with
    :meth:`add_personal_access_token`. Faults injected with
    :meth:`fault_token_endpoint` and :meth:`fault_resources` make it misbehave;
    :meth:`stats` and :meth:`log` tell what it saw. Every method is thread-safe.

    Use it as a context manager (or call :meth:`start` and :meth:`stop`)::

        with FakePiggy() as piggy:
            piggy.add_client("id", "secret")
            auth = ClientCredentialsAuth("id", "secret", base_url=piggy.url)

    :param token_lifetime: the ``expires_in`` of new tokens, in seconds; ``None``
        sends no ``expires_in`` and the tokens never expire.
    :param unauthorized_style: how a 401 for a bad token looks (:data:`UnauthorizedStyle`).
    :param clock: the server's clock, in seconds since the epoch; tests pass a
        :class:`~.clock.FakeClock` to expire tokens and end fault windows.
    :param host: the address to listen on.
    :param port: the port; 0 picks a free one.
    """

    def __init__(
        self,
        *,
        token_lifetime: float | None = 3600,
        unauthorized_style: UnauthorizedStyle = "rfc6750",
        clock: Clock = time.time,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.server: HTTPServer = _HTTPServer(host=host, port=port, threaded=True)
        self._defaults = (token_lifetime, unauthorized_style, clock)
        self.token_lifetime, self.unauthorized_style, self.clock = self._defaults
        self.contacts = Contacts()
        self._lock = threading.Lock()
        self._clients: dict[str, str] = {}
        self._credentials: dict[str, _Credential] = {}
        self._rules: list[_Rule] = []
        self._log: list[LoggedRequest] = []

    def __repr__(self) -> str:
        return f"<FakePiggy {self.url} running={self.server.is_running()}>"

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:8123``."""
        return self.server.url_for("").rstrip("/")

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return self.url + "/oauth/token"

    @property
    def api_url(self) -> str:
        """The base of the resource routes (``…/api/v3/oauth/clients``)."""
        return self.url + API_PREFIX

    def start(self) -> None:
        """Start serving in a background thread."""
        self._route()
        self.server.start()

    def stop(self) -> None:
        """Remove every fault, releasing held requests, and stop serving."""
        self.clear_faults()
        self.server.stop()

    def __enter__(self) -> FakePiggy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to a new server's state: no clients, tokens, contacts, faults or log.

        Restores the constructor's settings, then releases every held request
        (which is answered as the new server would).
        """
        with self._lock:
            self.token_lifetime, self.unauthorized_style, self.clock = self._defaults
            self._clients.clear()
            self._credentials.clear()
            self._log.clear()
            rules, self._rules = self._rules, []
        self.contacts.clear()
        self.server.clear()
        self._route()
        _release_holds(rules)

    # -- what the server knows ------------------------------------------------

    def add_client(self, client_id: str, client_secret: str) -> None:
        """Accept ``client_id`` with ``client_secret`` at the token endpoint."""
        with self._lock:
            self._clients[client_id] = client_secret

    def add_personal_access_token(self, token: str, expires_at: datetime | None = None) -> None:
        """Accept ``token`` on the resource routes, until ``expires_at`` if given."""
        expiry = math.inf if expires_at is None else expires_at.timestamp()
        with self._lock:
            self._credentials[token] = _Credential(None, expiry)

    def issue_personal_access_token(self, expires_at: datetime | None = None) -> str:
        """A new personal access token, accepted until ``expires_at`` if given, as the
        Business Dashboard creates one."""
        token = "pat-" + secrets.token_urlsafe(32)
        self.add_personal_access_token(token, expires_at)
        return token

    def revoke(self, token: str) -> None:
        """Revoke one token: a personal access token or one the server issued.

        :raises KeyError: for a token the server does not know.
        """
        self._update_credential(token, lambda c: replace(c, revoked=True))

    def expire(self, token: str) -> None:
        """Expire one token now: a personal access token or one the server issued.

        :raises KeyError: for a token the server does not know.
        """
        now = self.clock()
        self._update_credential(token, lambda c: replace(c, expires_at=min(c.expires_at, now)))

    def rotate_client_secret(self, client_id: str, new_secret: str | None = None) -> str:
        """Give ``client_id`` a new secret (``None``: a random one) and return it.

        The old secret is refused (``invalid_client``) from now on; tokens issued
        with it stay valid, as a rotation in the Business Dashboard leaves them.

        :raises KeyError: for a client the server does not know.
        """
        secret = secrets.token_urlsafe(24) if new_secret is None else new_secret
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"no client {client_id!r}")
            self._clients[client_id] = secret
        return secret

    def add_contact(self, email: str, **fields: Any) -> Contact:
        """Store a contact with ``email`` and any other ``fields``; returns it with its ``uuid``."""
        return self.contacts.add(email, **fields)

    def revoke_all(self) -> None:
        """Revoke every token issued so far and every personal access token."""
        self._update_credentials(lambda c: replace(c, revoked=True))

    def expire_all(self) -> None:
        """Expire every token issued so far and every personal access token, now."""
        now = self.clock()
        self._update_credentials(lambda c: replace(c, expires_at=min(c.expires_at, now)))

    def tokens(self, client_id: str | None = None) -> list[str]:
        """The access tokens issued (to ``client_id``), oldest first, revoked ones too."""
        with self._lock:
            return [
                token
                for token, credential in self._credentials.items()
                if credential.client_id is not None and client_id in (None, credential.client_id)
            ]

    # -- faults ---------------------------------------------------------------

    def fault_token_endpoint(
        self,
        fault: F,
        *,
        times: int | None = None,
        seconds: float | None = None,
        client_id: str | None = None,
    ) -> F:
        """Apply ``fault`` to token requests.

        :param fault: a fault from :mod:`~.faults`, or any callable taking the
            request and returning a response (or ``None`` to answer normally).
        :param times: for the next this many requests; ``None``: no limit.
        :param seconds: for this many seconds on the server's clock; ``None``: no limit.
        :param client_id: only for requests naming this client.
        :returns: ``fault``, so ``hold = piggy.fault_token_endpoint(Hold())`` reads well.
        """
        return self._add_rule(fault, "token", times, seconds, client_id)

    def fault_resources(
        self, fault: F, *, times: int | None = None, seconds: float | None = None
    ) -> F:
        """Apply ``fault`` to requests to the resource routes.

        ``times`` and ``seconds`` limit it as for :meth:`fault_token_endpoint`.
        """
        return self._add_rule(fault, "resource", times, seconds, None)

    def hold(self, client_id: str | None = None) -> Hold:
        """Hold the next token request (naming ``client_id``) until the hold is released."""
        return self.fault_token_endpoint(Hold(), times=1, client_id=client_id)

    def clear_faults(self) -> None:
        """Remove every fault, releasing held requests."""
        with self._lock:
            rules, self._rules = self._rules, []
        _release_holds(rules)

    # -- what the server saw --------------------------------------------------

    def log(self, route: Route | None = None) -> list[LoggedRequest]:
        """The requests seen (to ``route``), in order of arrival."""
        with self._lock:
            return [entry for entry in self._log if route in (None, entry.route)]

    def stats(self) -> Stats:
        """Counts of the requests seen so far."""
        with self._lock:
            token = [entry for entry in self._log if entry.route == "token"]
            resource = [entry for entry in self._log if entry.route == "resource"]
        return Stats(
            token_requests=len(token),
            token_requests_by_client=Counter(e.client_id for e in token if e.client_id),
            resource_requests=len(resource),
            unauthorized=sum(entry.status == 401 for entry in resource),
        )

    # -- serving --------------------------------------------------------------

    def _route(self) -> None:
        self.server.no_handler_status_code = 404
        self.server.expect_request("/oauth/token").respond_with_handler(self._token_endpoint)
        self.server.expect_request(re.compile(f"{API_PREFIX}/.*")).respond_with_handler(
            self._resource
        )

    def _token_endpoint(self, request: Request) -> Response:
        fields = _token_fields(request)
        logged = fields if isinstance(fields, dict) else {}
        return self._serve("token", request, logged, lambda: self._grant(request, fields))

    def _resource(self, request: Request) -> Response:
        return self._serve(
            "resource",
            request,
            {},
            lambda: self._authenticate(request) or self.contacts.handle(request),
        )

    def _serve(
        self,
        route: Route,
        request: Request,
        fields: Mapping[str, str],
        answer: Callable[[], Response],
    ) -> Response:
        """Log the request, apply a fault if one is due, else answer it."""
        entry = LoggedRequest(
            route,
            request.method,
            request.path,
            request.query_string.decode("latin-1"),
            Headers(request.headers),
            request.get_data(),
            fields,
        )
        with self._lock:
            self._log.append(entry)
            now = self.clock()
            rule = next(
                (r for r in self._rules if r.take(route, entry.client_id, now)),
                None,
            )
        try:
            response = rule.fault(request) if rule is not None else None
        except ConnectionDroppedError:
            return Response()  # never sent: the socket is closed
        if response is None:
            response = answer()
        with self._lock:
            entry.status = response.status_code
        return response

    def _grant(self, request: Request, fields: Mapping[str, str] | str) -> Response:
        if request.method != "POST":
            return json_response({"message": "The token endpoint takes POST."}, 405)
        if isinstance(fields, str):
            return _oauth_error(400, "invalid_request", fields)
        missing = [
            name for name in ("grant_type", "client_id", "client_secret") if not fields.get(name)
        ]
        if missing:
            return _oauth_error(400, "invalid_request", f"Missing {', '.join(missing)}.")
        if fields["grant_type"] != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", "Only client_credentials is supported."
            )
        client_id = fields["client_id"]
        with self._lock:
            secret = self._clients.get(client_id)
            if secret is None or not secrets.compare_digest(secret, fields["client_secret"]):
                return _oauth_error(401, "invalid_client", "Client authentication failed")
            token, lifetime = secrets.token_urlsafe(32), self.token_lifetime
            expiry = math.inf if lifetime is None else self.clock() + lifetime
            self._credentials[token] = _Credential(client_id, expiry)
        payload: dict[str, object] = {"token_type": "Bearer", "access_token": token}
        if lifetime is not None:
            payload["expires_in"] = lifetime
        return json_response(payload)

    def _authenticate(self, request: Request) -> Response | None:
        """``None`` when the request carries a good token, else the 401 to send."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return json_response(
                _UNAUTHENTICATED, 401, {"WWW-Authenticate": 'Bearer realm="Piggy"'}
            )
        with self._lock:
            credential = self._credentials.get(token)
            now = self.clock()
        if credential is None:
            problem = "The access token is unknown."
        elif credential.revoked:
            problem = "The access token was revoked."
        elif now >= credential.expires_at:
            problem = "The access token expired."
        else:
            return None
        return self._unauthorized(problem)

    def _unauthorized(self, description: str) -> Response:
        header = {
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'
        }
        body = {"error": "invalid_token", "error_description": description}
        style = self.unauthorized_style
        if style == "rfc6750":
            return json_response(body, 401, header)
        if style == "header-only":
            return Response(b"", 401, header)
        if style == "body-only":
            return json_response(body, 401)
        return json_response(_UNAUTHENTICATED, 401)

    def _add_rule(
        self,
        fault: F,
        route: Route,
        times: int | None,
        seconds: float | None,
        client_id: str | None,
    ) -> F:
        with self._lock:
            until = math.inf if seconds is None else self.clock() + seconds
            remaining = math.inf if times is None else times
            self._rules.append(_Rule(fault, route, remaining, until, client_id))
        return fault

    def _update_credential(self, token: str, change: Callable[[_Credential], _Credential]) -> None:
        with self._lock:
            if token not in self._credentials:
                raise KeyError("no such token")  # never the token itself: it may be a real one
            self._credentials[token] = change(self._credentials[token])

    def _update_credentials(self, change: Callable[[_Credential], _Credential]) -> None:
        with self._lock:
            for token, credential in self._credentials.items():
                self._credentials[token] = change(credential)


def _release_holds(rules: list[_Rule]) -> None:
    for rule in rules:
        if isinstance(rule.fault, Hold):
            rule.fault.release()


def _token_fields(request: Request) -> dict[str, str] | str:
    """A token request's string fields, HTTP Basic client credentials included; else what is wrong.

    The Basic credentials are form-urlencoded before encoding (RFC 6749, section 2.3.1).
    """
    fields = _body_fields(request)
    basic = request.authorization
    if fields is None:
        return "The body must be a JSON object or a form."
    if basic is None or basic.type != "basic":
        return fields
    if "client_secret" in fields:
        return "Use one client authentication method: the body or HTTP Basic."
    client_id = unquote_plus(basic.username or "")
    if fields.setdefault("client_id", client_id) != client_id:
        return "The client_id in the body is not the one in the Authorization header."
    fields["client_secret"] = unquote_plus(basic.password or "")
    return fields


def _body_fields(request: Request) -> dict[str, str] | None:
    """A token request's string fields from its JSON or form body; ``None`` if unreadable."""
    if not request.is_json:
        return dict(request.form)
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return None
    return {name: value for name, value in payload.items() if isinstance(value, str)}


def _oauth_error(status: int, error: str, description: str) -> Response:
    return json_response({"error": error, "error_description": description}, status)
