"""The shipped fake Piggy: its token endpoint, routes, 401 styles, faults, counters and log."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests

from requests_piggy_auth import (
    ClientCredentialsAuth,
    PersonalAccessTokenAuth,
    RetryPolicy,
    TokenCache,
    TokenRequestError,
    TokenResponseError,
)
from requests_piggy_auth.testing import (
    Delay,
    Drop,
    FakeClock,
    FakePiggy,
    Fault,
    Hold,
    Malformed,
    MalformedBody,
    Status,
    UnauthorizedStyle,
)

from .conftest import API, CLIENT_ID, CLIENT_SECRET

PAT = "pat-0123456789abcdef"


def token_request(piggy: FakePiggy, **fields: str) -> requests.Response:
    return requests.post(piggy.token_url, json=fields, timeout=10)


def get(
    piggy: FakePiggy,
    path: str = API,
    token: str = PAT,
    params: Mapping[str, str | int] | None = None,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(piggy.url + path, params=params, headers=headers, timeout=10)


@pytest.fixture
def pat(piggy: FakePiggy) -> FakePiggy:
    """The fake Piggy, accepting ``PAT``."""
    piggy.add_personal_access_token(PAT)
    return piggy


# -- the token endpoint --------------------------------------------------------


@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_a_known_client_gets_a_bearer_token(piggy: FakePiggy, form: bool) -> None:
    fields = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    if form:
        response = requests.post(piggy.token_url, data=fields, timeout=10)
    else:
        response = requests.post(piggy.token_url, json=fields, timeout=10)

    assert response.status_code == 200
    assert response.json() == {
        "token_type": "Bearer",
        "access_token": piggy.tokens(CLIENT_ID)[0],
        "expires_in": 3600,
    }
    assert piggy.log("token")[0].client_id == CLIENT_ID


@pytest.mark.parametrize("body", [{}, {"client_id": CLIENT_ID}], ids=["header-only", "both"])
def test_a_client_may_authenticate_with_http_basic(piggy: FakePiggy, body: dict[str, str]) -> None:
    piggy.add_client("id:with space", "p@ss word")
    fields = {"grant_type": "client_credentials", **body}
    basic = (CLIENT_ID, CLIENT_SECRET) if body else ("id%3Awith+space", "p%40ss+word")

    response = requests.post(piggy.token_url, data=fields, auth=basic, timeout=10)

    assert response.status_code == 200
    assert piggy.log("token")[0].client_id == (CLIENT_ID if body else "id:with space")
    assert response.json()["access_token"] in piggy.tokens()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"client_secret": CLIENT_SECRET}, "Use one client authentication method"),
        ({"client_id": "other"}, "The client_id in the body is not the one"),
    ],
)
def test_basic_credentials_must_agree_with_the_body(
    piggy: FakePiggy, body: dict[str, str], problem: str
) -> None:
    fields = {"grant_type": "client_credentials", **body}

    response = requests.post(
        piggy.token_url, data=fields, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"].startswith(problem)
    assert piggy.tokens() == []


def test_a_wrong_basic_secret_is_invalid_client(piggy: FakePiggy) -> None:
    response = requests.post(
        piggy.token_url,
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, "wrong"),
        timeout=10,
    )

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def test_each_token_is_new_and_opaque(piggy: FakePiggy) -> None:
    fields = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    tokens = [token_request(piggy, **fields, client_secret=CLIENT_SECRET).json() for _ in "ab"]

    assert tokens[0]["access_token"] != tokens[1]["access_token"]
    assert CLIENT_ID not in tokens[0]["access_token"]
    assert piggy.tokens() == [t["access_token"] for t in tokens]


def test_the_token_lifetime_is_configurable(piggy: FakePiggy) -> None:
    fields = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    piggy.token_lifetime = 5
    assert token_request(piggy, **fields, client_secret=CLIENT_SECRET).json()["expires_in"] == 5
    piggy.token_lifetime = None
    assert "expires_in" not in token_request(piggy, **fields, client_secret=CLIENT_SECRET).json()


@pytest.mark.parametrize(
    ("client_id", "secret"), [(CLIENT_ID, "wrong"), ("stranger", CLIENT_SECRET)]
)
def test_an_unknown_client_or_a_wrong_secret_is_invalid_client(
    piggy: FakePiggy, client_id: str, secret: str
) -> None:
    response = token_request(
        piggy, grant_type="client_credentials", client_id=client_id, client_secret=secret
    )

    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication failed",
    }
    assert piggy.tokens() == []


@pytest.mark.parametrize("missing", ["grant_type", "client_id", "client_secret"])
def test_a_missing_field_is_invalid_request(piggy: FakePiggy, missing: str) -> None:
    fields = {"grant_type": "client_credentials", "client_id": "a", "client_secret": "b"}
    del fields[missing]

    response = token_request(piggy, **fields)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": f"Missing {missing}.",
    }


def test_other_grants_and_bodies_are_refused(piggy: FakePiggy) -> None:
    grant = token_request(piggy, grant_type="password", client_id="a", client_secret="b")
    array = requests.post(piggy.token_url, json=["client_credentials"], timeout=10)
    get = requests.get(piggy.token_url, timeout=10)

    assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
    assert (array.status_code, array.json()["error"]) == (400, "invalid_request")
    assert get.status_code == 405
    assert piggy.stats().token_requests == 3


# -- resource routes -----------------------------------------------------------


def test_contacts_are_paginated_in_piggys_envelope(pat: FakePiggy) -> None:
    emails = [f"{n}@example.com" for n in range(5)]
    for email in emails:
        pat.add_contact(email)

    first = get(pat, params={"limit": 2}).json()
    last = get(pat, params={"limit": 2, "page": 3}).json()

    assert [c["email"] for c in first["data"]] == emails[:2]
    assert first["meta"] == {"page": 1, "limit": 2, "total": 5, "last_page": 3}
    assert [c["email"] for c in last["data"]] == emails[4:]
    assert get(pat).json()["meta"] == {"page": 1, "limit": 30, "total": 5, "last_page": 1}


@pytest.mark.parametrize("query", [{"page": 0}, {"limit": 0}, {"limit": 101}])
def test_a_bad_page_or_limit_is_a_validation_error(pat: FakePiggy, query: dict[str, int]) -> None:
    response = get(pat, params=query)

    assert response.status_code == 422
    assert response.json()["message"] == "page must be >= 1 and limit between 1 and 100"


def test_a_contact_is_found_by_email_and_by_uuid(pat: FakePiggy) -> None:
    contact = pat.add_contact("ada@example.com", firstname="Ada")

    by_email = get(pat, API + "/find-one-by", params={"email": "ada@example.com"})
    by_uuid = get(pat, f"{API}/{contact['uuid']}")

    assert by_email.json() == {"data": contact, "meta": {}}
    assert by_uuid.json() == {"data": contact, "meta": {}}
    assert contact["firstname"] == "Ada"


def test_what_is_not_there_is_not_found(pat: FakePiggy) -> None:
    nobody = get(pat, API + "/find-one-by", params={"email": "nobody@example.com"})
    no_uuid = get(pat, API + "/4ab8c0e4-0000-0000-0000-000000000000")
    no_route = get(pat, "/api/v3/oauth/clients/giftcards")
    outside = get(pat, "/elsewhere")

    assert [r.status_code for r in (nobody, no_uuid, no_route, outside)] == [404] * 4
    assert nobody.json() == {
        "status_code": 404,
        "code": 404,
        "message": "Contact not found.",
        "errors": {},
    }
    assert pat.stats().resource_requests == 3


def test_find_one_by_needs_an_email(pat: FakePiggy) -> None:
    assert get(pat, API + "/find-one-by").status_code == 422


def test_a_posted_contact_is_stored_and_echoed(pat: FakePiggy) -> None:
    headers = {"Authorization": f"Bearer {PAT}"}
    created = requests.post(
        pat.url + API, json={"email": "b@example.com", "tier": 2}, headers=headers, timeout=10
    )
    form = requests.post(
        pat.url + API, data={"email": "f@example.com"}, headers=headers, timeout=10
    )
    refused = requests.post(pat.url + API, data=b"[1]", headers=headers, timeout=10)
    wrong_method = requests.delete(pat.url + API, headers=headers, timeout=10)

    assert created.status_code == 201
    contact = created.json()["data"]
    assert contact == {"email": "b@example.com", "tier": 2, "uuid": contact["uuid"]}
    assert get(pat, f"{API}/{contact['uuid']}").json()["data"] == contact
    assert form.json()["data"]["email"] == "f@example.com"
    assert refused.status_code == 422
    assert wrong_method.status_code == 405


# -- tokens that are not (or no longer) good -------------------------------------


STYLES: list[tuple[UnauthorizedStyle, str | None, dict[str, str] | None]] = [
    (
        "rfc6750",
        'Bearer error="invalid_token", error_description="The access token is unknown."',
        {"error": "invalid_token", "error_description": "The access token is unknown."},
    ),
    (
        "header-only",
        'Bearer error="invalid_token", error_description="The access token is unknown."',
        None,
    ),
    (
        "body-only",
        None,
        {"error": "invalid_token", "error_description": "The access token is unknown."},
    ),
    ("bare", None, {"message": "Unauthenticated."}),
]


@pytest.mark.parametrize(("style", "header", "body"), STYLES, ids=[s[0] for s in STYLES])
def test_each_401_style_reaches_the_client_as_configured(
    piggy: FakePiggy, style: UnauthorizedStyle, header: str | None, body: dict[str, str] | None
) -> None:
    piggy.unauthorized_style = style
    auth = PersonalAccessTokenAuth("unknown-token", base_url=piggy.url)

    response = requests.get(piggy.url + API, auth=auth, timeout=10)

    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate") == header
    assert (response.json() if response.content else None) == body
    assert piggy.stats().unauthorized == 1


def test_a_request_without_a_token_is_unauthenticated(piggy: FakePiggy) -> None:
    response = requests.get(piggy.url + API, timeout=10)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Piggy"'
    assert response.json() == {"message": "Unauthenticated."}


def description(response: requests.Response) -> str:
    return str(response.json()["error_description"])


def test_tokens_expire_on_the_servers_clock(piggy: FakePiggy) -> None:
    piggy.clock = clock = FakeClock()
    piggy.token_lifetime = 60
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache())
    token = auth.token()

    clock.advance(59.9)
    assert get(piggy, token=token).status_code == 200
    clock.advance(0.1)
    assert description(get(piggy, token=token)) == "The access token expired."


def test_expire_all_and_revoke_all(piggy: FakePiggy) -> None:
    auth = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache())
    piggy.add_personal_access_token(PAT)
    first = auth.fetch_token().access_token
    piggy.expire_all()
    assert description(get(piggy, token=first)) == "The access token expired."
    assert description(get(piggy, token=PAT)) == "The access token expired."

    piggy.add_personal_access_token(PAT)
    second = auth.fetch_token().access_token
    piggy.revoke_all()

    assert description(get(piggy, token=second)) == "The access token was revoked."
    assert description(get(piggy, token=PAT)) == "The access token was revoked."
    assert get(piggy, token=auth.fetch_token().access_token).status_code == 200


def test_a_personal_access_token_expires_at_its_date(piggy: FakePiggy) -> None:
    piggy.clock = clock = FakeClock(datetime(2027, 6, 30, tzinfo=timezone.utc).timestamp() - 1)
    piggy.add_personal_access_token(PAT, expires_at=datetime(2027, 6, 30, tzinfo=timezone.utc))

    assert get(piggy).status_code == 200
    clock.advance(1)
    assert description(get(piggy)) == "The access token expired."


def test_single_tokens_are_issued_revoked_and_expired(piggy: FakePiggy) -> None:
    piggy.clock = FakeClock()
    first, second, third = (piggy.issue_personal_access_token() for _ in range(3))
    issued = ClientCredentialsAuth(
        CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache()
    ).token()
    assert len({first, second, third}) == 3
    assert first.startswith("pat-")

    piggy.revoke(first)
    piggy.expire(issued)

    assert description(get(piggy, token=first)) == "The access token was revoked."
    assert description(get(piggy, token=issued)) == "The access token expired."
    assert get(piggy, token=second).status_code == 200
    assert piggy.tokens() == [issued]  # personal access tokens are not issued ones
    expiry = datetime(2027, 6, 30, tzinfo=timezone.utc)
    dated = piggy.issue_personal_access_token(expires_at=expiry)
    piggy.clock = FakeClock(expiry.timestamp())
    assert description(get(piggy, token=dated)) == "The access token expired."
    assert get(piggy, token=third).status_code == 200


def test_an_unknown_token_or_client_is_a_key_error_without_the_token(piggy: FakePiggy) -> None:
    for control in (piggy.revoke, piggy.expire):
        with pytest.raises(KeyError) as raised:
            control("tok-CANARY-unknown")
        assert "CANARY" not in str(raised.value)
    with pytest.raises(KeyError, match="no client 'nobody'"):
        piggy.rotate_client_secret("nobody")


def test_a_rotated_client_secret_refuses_the_old_one_and_keeps_its_tokens(
    piggy: FakePiggy,
) -> None:
    before = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=TokenCache())
    token = before.token()

    chosen = piggy.rotate_client_secret(CLIENT_ID, "the-new-secret")
    drawn = piggy.rotate_client_secret(CLIENT_ID)

    assert chosen == "the-new-secret"
    assert len(drawn) >= 24
    assert (
        token_request(
            piggy, grant_type="client_credentials", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        ).json()["error"]
        == "invalid_client"
    )
    assert token_request(
        piggy, grant_type="client_credentials", client_id=CLIENT_ID, client_secret=drawn
    ).ok
    assert get(piggy, token=token).status_code == 200


# -- faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "says"),
    [
        (Status(503), TokenRequestError, "HTTP 503 (message 'Service Unavailable')"),
        (Status(500), TokenRequestError, "HTTP 500"),
        (Status(429, retry_after=7), TokenRequestError, "HTTP 429"),
        (Malformed("html"), TokenResponseError, "a body that is not JSON (text/html"),
        (Malformed("empty"), TokenResponseError, "with an empty body"),
        (Malformed("truncated-json"), TokenResponseError, "a body that is not JSON"),
        (Malformed("no-access-token"), TokenResponseError, "without an access_token"),
        (Drop(), TokenRequestError, "token request to"),
    ],
    ids=["503", "500", "429", "html", "empty", "truncated-json", "no-access-token", "drop"],
)
def test_each_token_endpoint_fault_reaches_the_client(
    piggy: FakePiggy,
    plain_auth: ClientCredentialsAuth,
    fault: Fault,
    error: type[TokenRequestError],
    says: str,
) -> None:
    piggy.fault_token_endpoint(fault, times=1)

    with pytest.raises(error) as raised:
        plain_auth.token()

    assert type(raised.value) is error
    assert says in str(raised.value)
    assert plain_auth.token() == piggy.tokens()[0]
    assert [entry.status for entry in piggy.log("token")][1:] == [200]


def test_a_dropped_token_request_is_a_connection_error_and_logged_unanswered(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    piggy.fault_token_endpoint(Drop())

    with pytest.raises(TokenRequestError) as raised:
        auth.token()

    assert "failed: connection error (ConnectionError: ProtocolError" in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.status is None
    assert piggy.log("token")[0].status is None


def test_a_429_carries_retry_after(pat: FakePiggy) -> None:
    pat.fault_resources(Status(429, retry_after=7), times=1)

    response = get(pat)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["message"] == "Too Many Requests"


@pytest.mark.parametrize(
    ("body", "content"),
    [
        ("html", b"<!doctype html><title>Bad Gateway</title><h1>502 Bad Gateway</h1>"),
        ("empty", b""),
        ("truncated-json", b'{"token_type": "Bearer", "access_token": "3f9a'),
        ("no-access-token", b'{"token_type": "Bearer", "expires_in": 3600}'),
    ],
)
def test_each_malformed_body_reaches_the_client_of_a_resource(
    pat: FakePiggy, body: MalformedBody, content: bytes
) -> None:
    pat.fault_resources(Malformed(body, status=502), times=1)

    response = get(pat)

    assert (response.status_code, response.content) == (502, content)
    assert get(pat).status_code == 200


@pytest.mark.parametrize("status", [500, 503])
def test_a_status_reaches_the_client_of_a_resource(pat: FakePiggy, status: int) -> None:
    pat.fault_resources(Status(status), times=1)

    assert get(pat).status_code == status


def test_a_dropped_resource_request_is_a_connection_error(pat: FakePiggy) -> None:
    pat.fault_resources(Drop(), times=1)

    with pytest.raises(requests.ConnectionError):
        get(pat)
    assert get(pat).status_code == 200


def test_a_delay_outlasting_the_clients_timeout_is_a_read_timeout(pat: FakePiggy) -> None:
    delay = pat.fault_resources(Delay(60), times=1)

    with pytest.raises(requests.ReadTimeout):
        requests.get(pat.url + API, headers={"Authorization": f"Bearer {PAT}"}, timeout=(5, 0.2))
    pat.clear_faults()  # releases the delayed request

    assert delay.arrived.is_set()
    assert get(pat).status_code == 200


def test_a_short_delay_then_answers_normally(pat: FakePiggy) -> None:
    delay = pat.fault_resources(Delay(0.01), times=1)

    assert get(pat).status_code == 200
    assert delay.arrived.is_set()
    assert not delay.released.is_set()


def test_a_token_endpoint_delay_applies_to_every_token_request(
    piggy: FakePiggy, auth: ClientCredentialsAuth
) -> None:
    delay = piggy.fault_token_endpoint(Delay(60))
    slow = ClientCredentialsAuth(
        CLIENT_ID,
        CLIENT_SECRET,
        base_url=piggy.url,
        cache=TokenCache(),
        timeout=(5, 0.2),
        retry=RetryPolicy(total=0),
    )

    for _ in range(2):
        with pytest.raises(TokenRequestError):
            slow.fetch_token()
    delay.release()

    assert auth.token() in piggy.tokens()  # the held requests may still be finishing
    assert piggy.stats().token_requests == 3


def test_a_fault_for_the_next_n_requests(pat: FakePiggy) -> None:
    pat.fault_resources(Status(503), times=2)

    assert [get(pat).status_code for _ in range(3)] == [503, 503, 200]


def test_a_fault_for_a_time_window_on_the_servers_clock(pat: FakePiggy) -> None:
    pat.clock = clock = FakeClock()
    pat.fault_resources(Status(503), seconds=10)

    during = [get(pat).status_code for _ in range(3)]
    clock.advance(10)

    assert during == [503] * 3
    assert get(pat).status_code == 200


def test_a_token_endpoint_fault_for_one_client(piggy: FakePiggy) -> None:
    piggy.add_client("client-b", "secret-b")
    piggy.fault_token_endpoint(Status(503), client_id="client-b")
    cache = TokenCache()
    auth_a = ClientCredentialsAuth(CLIENT_ID, CLIENT_SECRET, base_url=piggy.url, cache=cache)
    auth_b = ClientCredentialsAuth(
        "client-b", "secret-b", base_url=piggy.url, cache=cache, retry=RetryPolicy(total=0)
    )

    assert auth_a.token() == piggy.tokens(CLIENT_ID)[0]
    with pytest.raises(TokenRequestError, match="HTTP 503"):
        auth_b.token()
    assert piggy.stats().token_requests_by_client == {CLIENT_ID: 1, "client-b": 1}


def test_a_custom_fault_can_answer_or_let_the_request_through(pat: FakePiggy) -> None:
    seen: list[str] = []
    pat.fault_resources(lambda request: seen.append(request.path), times=1)

    assert get(pat).status_code == 200
    assert seen == [API]


def test_a_hold_that_nobody_reaches_times_out() -> None:
    with pytest.raises(TimeoutError, match="no request arrived at the hold within 0 s"):
        Hold().release_on_arrival(timeout=0)


# -- counters, log, reset ----------------------------------------------------------


def test_counters_and_log_are_exact_under_concurrency(pat: FakePiggy) -> None:
    threads, calls = 16, 5
    barrier = threading.Barrier(threads)

    def client(n: int) -> list[int]:
        barrier.wait(30)
        return [get(pat, params={"page": n}).status_code for _ in range(calls)]

    with ThreadPoolExecutor(threads) as pool:
        statuses = [s for result in pool.map(client, range(1, threads + 1)) for s in result]

    log = pat.log("resource")
    assert statuses == [200] * threads * calls
    assert pat.stats().resource_requests == len(log) == threads * calls
    assert sorted(entry.query for entry in log) == sorted(
        f"page={n}" for n in range(1, threads + 1) for _ in range(calls)
    )
    assert {entry.status for entry in log} == {200}


def test_reset_forgets_everything_and_releases_holds(piggy: FakePiggy) -> None:
    piggy.token_lifetime, piggy.unauthorized_style = 5, "bare"
    piggy.add_contact("a@example.com")
    hold = piggy.hold()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            token_request,
            piggy,
            grant_type="client_credentials",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
        )
        assert hold.arrived.wait(30)
        piggy.reset()
        assert pending.result().status_code == 401  # answered by the new server

    piggy.add_personal_access_token(PAT)
    assert piggy.log() == []
    assert get(piggy).json()["meta"]["total"] == 0
    assert (piggy.token_lifetime, piggy.unauthorized_style) == (3600, "rfc6750")
    assert (
        token_request(
            piggy, grant_type="client_credentials", client_id=CLIENT_ID, client_secret=CLIENT_SECRET
        ).json()["error"]
        == "invalid_client"
    )


def test_works_without_pytest_as_a_context_manager() -> None:
    with FakePiggy(token_lifetime=30) as piggy:
        piggy.add_client("id", "secret")
        auth = ClientCredentialsAuth("id", "secret", base_url=piggy.url, cache=TokenCache())
        response = requests.get(piggy.api_url + "/contacts", auth=auth, timeout=10)
        assert repr(piggy) == f"<FakePiggy {piggy.url} running=True>"

    assert response.status_code == 200
    assert piggy.token_url == piggy.url + "/oauth/token"
    assert not piggy.server.is_running()
