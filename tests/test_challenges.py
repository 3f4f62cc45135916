"""The WWW-Authenticate parser and what a 401 says."""

from __future__ import annotations

import pytest

from requests_piggy_auth.challenges import Challenge, parse_challenges, token_rejected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Bearer error="invalid_token"', [Challenge("bearer", {"error": "invalid_token"})]),
        ("bEaReR ErRoR=invalid_token", [Challenge("bearer", {"error": "invalid_token"})]),
        (
            'Basic realm="a, b", Bearer realm="api", error="invalid_token", '
            'error_description="The \\"token\\" expired"',
            [
                Challenge("basic", {"realm": "a, b"}),
                Challenge(
                    "bearer",
                    {
                        "realm": "api",
                        "error": "invalid_token",
                        "error_description": 'The "token" expired',
                    },
                ),
            ],
        ),
        ("Negotiate abc==, Bearer", [Challenge("negotiate", token68="abc=="), Challenge("bearer")]),
        ("Bearer, Basic realm=x", [Challenge("bearer"), Challenge("basic", {"realm": "x"})]),
        ("", []),
        ("=== garbage", []),
        ("Bearer realm=x trailing", [Challenge("bearer")]),
    ],
)
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected


@pytest.mark.parametrize(
    ("header", "body", "rejected"),
    [
        ('Bearer error="invalid_token"', b"", True),
        (None, b'{"error": "invalid_token"}', True),
        (None, b'{"message": "Unauthenticated."}', True),
        (None, b"<html>401</html>", True),
        (None, b"", True),
        ('Bearer realm="api"', b"[1, 2]", True),
        ('Bearer error="invalid_request"', b'{"error": "invalid_token"}', False),
        (None, b'{"error": "insufficient_scope"}', False),
        ('Basic error="invalid_token"', b'{"error": 42}', True),
    ],
)
def test_token_rejected(header: str | None, body: bytes, rejected: bool) -> None:
    assert token_rejected(header, body) is rejected
