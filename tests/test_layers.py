"""The core decides and sends nothing: its modules import no HTTP library, only each other.

The drivers (``auth`` for requests, ``urllib3``, ``httpx``, ``responses``,
``failures``, ``token_session``) move the bytes; the stores' drivers talk to Redis and
SQLite around their shared part, ``_sharing``, which is core. The error classes
keep ``requests.RequestException`` as their base, so a requests user's
``except`` catches ours: that import is the one allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "requests_piggy_auth"
CORE = {
    "_sharing",
    "_version",
    "cache",
    "challenges",
    "errors",
    "events",
    "oauth",
    "origins",
    "policy",
    "refresh",
    "replay",
    "retry",
    "sources",
}
HTTP_LIBRARIES = {"requests", "urllib3", "httpx"}
ALLOWED = {"errors": {"requests"}}


def imports(module: str) -> tuple[set[str], set[str]]:
    """The top-level packages ``module`` imports, and the modules of ours it imports."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    packages: set[str] = set()
    ours: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            ours.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            packages.add((node.module or "").split(".")[0])
    return packages, ours


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_no_http_library_and_nothing_but_the_core(module: str) -> None:
    packages, ours = imports(module)
    assert packages & HTTP_LIBRARIES <= ALLOWED.get(module, set())
    assert ours <= CORE


def test_the_check_sees_a_driver_for_what_it_is() -> None:
    packages, ours = imports("auth")
    assert "requests" in packages
    assert "policy" in ours


@pytest.mark.parametrize("module", ["urllib3", "responses", "failures"])
def test_the_urllib3_adapter_needs_no_requests(module: str) -> None:
    packages, ours = imports(module)
    assert "requests" not in packages
    assert ours.isdisjoint({"auth", "token_session", "env", "cli"})


#: The longest function each layer may have, in lines (docstring included).
LIMITS = {"core": 39, "driver": 60}
DRIVERS = {
    "auth",
    "urllib3",
    "httpx",
    "responses",
    "failures",
    "token_session",
    "otel",
    "_redis_store",
    "_sqlite_store",
}


@pytest.mark.parametrize("module", sorted(CORE | DRIVERS))
def test_every_function_is_short(module: str) -> None:
    limit = LIMITS["core" if module in CORE else "driver"]
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    lengths = {
        f"{node.name} (line {node.lineno})": node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno
    }
    assert {name: n for name, n in lengths.items() if n > limit} == {}


#: What the extras add: the package, the core and the drivers of requests and urllib3
#: import without any of it.
EXTRAS = ["opentelemetry", "redis", "httpx", "rich", "werkzeug", "pytest_httpserver"]


def test_the_package_imports_without_its_extras() -> None:
    code = "\n".join(
        [
            "import sys",
            *(f"sys.modules[{name!r}] = None" for name in EXTRAS),  # importing it fails
            "import requests_piggy_auth, requests_piggy_auth.urllib3",
            "try:",
            "    import requests_piggy_auth.otel",
            "except ImportError as exc:",
            "    print(exc)",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "requests_piggy_auth.otel needs opentelemetry-api: "
        "pip install 'requests-piggy-auth[otel]'\n"
    )
