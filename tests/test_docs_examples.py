"""Every ``python`` block in the README and docs/ runs against a local fake Piggy.

The blocks of one file run in order in one namespace, as a reader would type
them, with ``PIGGY_BASE_URL`` pointing at the fake server and the production
URL in the code swapped for the fake server's (so is the examples' proxy: the
fake serves the absolute URLs an http proxy gets); the placeholder credentials
are registered with the fake and set in the environment; a document that
mentions ``REDIS_URL`` gets a real redis-server there. A block right after
``<!-- pytest -->`` is a user's test module: each runs with pytest in a fresh
project, where the plugin's fixtures must make every test in it pass. A block
right after ``<!-- no-run -->`` is only shown (for example, one that needs a
real fleet).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from requests_piggy_auth import shared_cache
from requests_piggy_auth.testing import FakePiggy

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").rglob("*.md") if "_build" not in path.parts),
]
BLOCK = re.compile(r"(?:<!-- ([\w-]+) -->\s*)?^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

CLIENT_ID, CLIENT_SECRET, PAT = "my-client-id", "my-client-secret", "my-personal-access-token"
PROXY = "http://proxy.internal:3128"


def examples(document: Path, marker: str | None = None) -> list[str]:
    """The blocks after ``marker`` (``None``: unmarked), padded to keep their line numbers."""
    text = document.read_text(encoding="utf-8")
    return [
        "\n" * text.count("\n", 0, block.start(2)) + block.group(2)
        for block in BLOCK.finditer(text)
        if block.group(1) == marker
    ]


@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if examples(d)],
    ids=lambda d: str(d.relative_to(ROOT)),
)
def test_examples_run(
    document: Path,
    fake_piggy: FakePiggy,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if "REDIS_URL" in document.read_text(encoding="utf-8"):  # the fleet guide needs a Redis
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_server").url)
    monkeypatch.setenv("PIGGY_BASE_URL", fake_piggy.url)
    monkeypatch.setenv("PIGGY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("PIGGY_CLIENT_SECRET", CLIENT_SECRET)
    fake_piggy.add_client(CLIENT_ID, CLIENT_SECRET)
    fake_piggy.add_personal_access_token(PAT)
    namespace: dict[str, object] = {"__name__": "docs_example"}
    try:
        for code in examples(document):
            code = code.replace("https://api.piggy.eu", fake_piggy.url)
            code = code.replace(PROXY, fake_piggy.url)
            exec(compile(code, str(document), "exec"), namespace)
    finally:
        shared_cache().clear()
    stats = fake_piggy.stats()
    assert stats.resource_requests, f"{document.name}: its examples made no API request"
    assert stats.unauthorized == 0


@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if examples(d, "pytest")],
    ids=lambda d: str(d.relative_to(ROOT)),
)
def test_pytest_examples_pass(document: Path, pytester: pytest.Pytester) -> None:
    blocks = examples(document, "pytest")
    pytester.makepyfile(**{f"test_example_{n}": code for n, code in enumerate(blocks)})

    result = pytester.runpytest("-p", "no:cacheprovider")

    tests = sum(len(re.findall(r"^\s*def test_", code, re.MULTILINE)) for code in blocks)
    assert tests >= len(blocks)
    result.assert_outcomes(passed=tests)
