"""Test your Piggy integration against a local fake Piggy.

:class:`FakePiggy` serves Piggy's token endpoint and contact routes on
loopback, with controls to revoke and expire tokens and to inject faults.
With pytest, the ``fake_piggy`` and ``piggy_auth`` fixtures (registered
automatically when this package is installed) hand you one, reset for each
test. Needs the ``testing`` extra: ``pip install 'requests-piggy-auth[testing]'``.
"""

from __future__ import annotations

try:
    import pytest_httpserver  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "requests_piggy_auth.testing needs the testing extra: "
        "pip install 'requests-piggy-auth[testing]'",
        name=exc.name,
    ) from exc

from .clock import FakeClock
from .contacts import API_PREFIX, Contacts
from .faults import Delay, Drop, Fault, Hold, Malformed, MalformedBody, Status, json_response
from .server import FakePiggy, LoggedRequest, Stats, UnauthorizedStyle

__all__ = [
    "API_PREFIX",
    "Contacts",
    "Delay",
    "Drop",
    "FakeClock",
    "FakePiggy",
    "Fault",
    "Hold",
    "LoggedRequest",
    "Malformed",
    "MalformedBody",
    "Stats",
    "Status",
    "UnauthorizedStyle",
    "json_response",
]
