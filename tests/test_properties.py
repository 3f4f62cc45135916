"""Properties of the parsers, for any input: a valid result or one of our errors, nothing else."""

from __future__ import annotations

import json
import math
import os
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from requests_piggy_auth import PiggyAuthError
from requests_piggy_auth.challenges import Challenge, parse_challenges, token_rejected
from requests_piggy_auth.oauth import (
    MAX_LIFETIME,
    ClientCredentials,
    TokenResponse,
    is_valid_token,
)

SECRET = "s3cret-CANARY-5ecret"
GRANT = ClientCredentials("https://piggy.test/oauth/token", "client-1", SECRET)

# make test runs the "suite" profile; HYPOTHESIS_PROFILE=thorough runs many more.
settings.register_profile("suite", max_examples=300, deadline=None)
settings.register_profile("thorough", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")  # lowercase: what the parser returns

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.integers(min_value=10**300, max_value=10**400),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)
visible_tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)
tokens = visible_tokens | st.text() | json_values | (visible_tokens.map(lambda t: t + "\r\nX: 1"))
lifetimes = (
    st.integers()
    | st.floats()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats().map(str)
    | st.text(max_size=10)
    | json_values
)
token_types = st.sampled_from(["Bearer", "bearer", "BEARER", "mac", "", "Bearer "]) | json_values
payloads = st.fixed_dictionaries(
    {},
    optional={
        "access_token": tokens,
        "expires_in": lifetimes,
        "token_type": token_types,
        "error": st.sampled_from(["invalid_client", "invalid_grant"]) | json_values,
        "error_description": st.text() | st.just(f"bad secret {SECRET}\r\n") | json_values,
    },
)


def dumps(payload: object) -> bytes:
    return json.dumps(payload).encode()


bodies = (
    payloads.map(dumps)
    | json_values.map(dumps)
    | st.binary(max_size=200)
    | st.tuples(payloads.map(dumps), st.integers(0, 200)).map(lambda cut: cut[0][: cut[1]])
)
statuses = st.sampled_from([200, 201, 204, 301, 302, 400, 401, 403, 429, 500, 503]) | st.integers(
    100, 599
)
headers = st.fixed_dictionaries(
    {}, optional={"Content-Type": st.text(max_size=30), "Location": st.text(max_size=30)}
)


@given(status=statuses, headers=headers, body=bodies)
@example(status=200, headers={}, body=b'{"access_token": "a", "expires_in": ' + b"9" * 400 + b"}")
@example(status=200, headers={}, body=b"[" * 100_000)
def test_parse_gives_a_valid_token_or_our_error(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    try:
        token = GRANT.parse(TokenResponse(status, headers, body))
    except PiggyAuthError as exc:
        message = str(exc)
        assert SECRET not in message
        assert "\n" not in message
        assert "\r" not in message
        return

    # A token came back: the input must have held exactly that valid token.
    assert 200 <= status < 300
    payload = json.loads(body)
    assert isinstance(payload, dict)
    assert token.access_token == payload["access_token"]
    assert is_valid_token(token.access_token)
    assert str(payload.get("token_type", "Bearer")).lower() == "bearer"
    if token.expires_in is None:
        assert payload.get("expires_in") is None
    else:
        assert 0 < token.expires_in <= MAX_LIFETIME
        assert not isinstance(payload["expires_in"], bool)


@given(
    access_token=visible_tokens,
    expires_in=st.none()
    | st.integers(1, 10**30)
    | st.floats(min_value=1e-3, allow_infinity=True, allow_nan=False),
    token_type=st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"]),
    status=st.integers(200, 299),
)
def test_every_valid_answer_gives_its_token(
    access_token: str, expires_in: float | None, token_type: str, status: int
) -> None:
    body = {"access_token": access_token, "token_type": token_type, "expires_in": expires_in}
    token = GRANT.parse(TokenResponse(status, {}, dumps(body)))

    assert token.access_token == access_token
    if expires_in is None:
        assert token.expires_in is None
    else:
        assert token.expires_in == min(float(expires_in), MAX_LIFETIME)
        assert math.isfinite(token.expires_in)


@given(header=st.text() | st.text(alphabet=_TOKEN_CHARS + ' ,=\t"\\', max_size=60))
def test_parse_challenges_never_raises_and_gives_well_formed_challenges(header: str) -> None:
    for challenge in parse_challenges(header):
        assert _HTTP_TOKEN.fullmatch(challenge.scheme)
        assert all(_HTTP_TOKEN.fullmatch(name) for name in challenge.params)
        assert all(isinstance(value, str) for value in challenge.params.values())
        assert challenge.token68 is None or not challenge.params


schemes = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=10)
param_names = st.text(alphabet=_TOKEN_CHARS.lower(), min_size=1, max_size=10)
token68s = st.from_regex(r"[A-Za-z0-9\-._~+/]+=*", fullmatch=True)
challenges = st.one_of(
    st.builds(
        Challenge,
        scheme=schemes.map(str.lower),
        params=st.dictionaries(param_names, st.text(max_size=20), max_size=4),
    ),
    st.builds(Challenge, scheme=schemes.map(str.lower), token68=token68s),
)


def render(challenge: Challenge) -> str:
    """A challenge as a server would send it, scheme case and quoting included."""
    if challenge.token68 is not None:
        return f"{challenge.scheme.title()} {challenge.token68}"
    quoted = {name: re.sub(r'(["\\])', r"\\\1", value) for name, value in challenge.params.items()}
    params = ", ".join(f'{name.upper()}="{value}"' for name, value in quoted.items())
    return f"{challenge.scheme.title()} {params}".rstrip()


@given(st.lists(challenges, max_size=4))
def test_parse_challenges_reads_back_what_a_server_writes(sent: list[Challenge]) -> None:
    assert parse_challenges(", ".join(render(c) for c in sent)) == sent


@given(header=st.none() | st.text(), body=st.binary(max_size=200) | json_values.map(dumps))
def test_token_rejected_is_always_a_plain_answer(header: str | None, body: bytes) -> None:
    assert token_rejected(header, body) in (True, False)


@given(error=st.text(alphabet=_TOKEN_CHARS, min_size=1), body=st.binary(max_size=50))
def test_token_rejected_follows_the_bearer_error(error: str, body: bytes) -> None:
    header = render(Challenge("bearer", {"error": error}))
    assert token_rejected(header, body) is (error == "invalid_token")
