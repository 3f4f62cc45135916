"""docs/reliability.md stays true: every test it names exists, every default it states holds."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from requests_piggy_auth import (
    ClientCredentialsAuth,
    CoolDown,
    RefreshMargin,
    RetryPolicy,
    TokenCache,
    oauth,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
NAMED = re.compile(r"`(tests/\w+\.py)::(\w+)(?:\[([\w-]+)\])?`")


def rows(section: str) -> list[list[str]]:
    """The body rows of the first table after the heading ``section``."""
    text = DOC[DOC.index(section) :]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    table = []
    for line in lines[2:]:
        table.append([cell.strip() for cell in line.strip("|").split("|")])
        if text[text.index(line) + len(line) :].startswith("\n\n"):
            break
    return table


def defined_tests(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize(("path", "test", "case"), NAMED.findall(DOC))
def test_every_named_test_exists(path: str, test: str, case: str) -> None:
    assert test in defined_tests(path)
    if case:
        assert f'"{case}"' in (ROOT / path).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "section",
    [
        "### The token endpoint fails",
        "### The token endpoint answers garbage",
        "### Secrets",
        "### 401s and revocations",
        "### Redis",
        "### SQLite",
        "### Processes",
        "### Bad settings",
    ],
)
def test_every_row_names_a_test(section: str) -> None:
    table = rows(section)
    assert len(table) > 4
    assert all(NAMED.search(row[-1]) for row in table)


def test_every_test_of_this_issue_is_in_the_table() -> None:
    hardening = ["tests/test_deadlines.py", "tests/test_revocation.py", "tests/test_pickle.py"]
    for path in [
        "tests/test_retry.py",
        "tests/test_cooldown.py",
        "tests/test_security.py",
        *hardening,
    ]:
        named = {test for file, test, _ in NAMED.findall(DOC) if file == path}
        tests = {name for name in defined_tests(path) if name.startswith("test_")}
        assert tests - named <= {  # the knobs themselves, not faults
            "test_full_jitter_waits_anywhere_up_to_the_ceiling",
            "test_nonsense_policies_are_refused",
            "test_nonsense_cooldowns_are_refused",
            "test_total_zero_never_retries",
            "test_each_retry_is_logged",
            "test_clear_ends_every_cooldown",
            "test_a_zero_cooldown_retries_every_call",
            "test_an_interrupted_fetch_does_not_cool_down",
        }


DEFAULTS: dict[str, object] = {
    **{f"RetryPolicy({name}=)": getattr(RetryPolicy(), name) for name in vars(RetryPolicy())},
    **{f"CoolDown({name}=)": getattr(CoolDown(), name) for name in vars(CoolDown())},
    **{f"RefreshMargin({name}=)": value for name, value in vars(RefreshMargin()).items()},
    **{
        f"{cls.__name__}({name}=)": parameter.default
        for cls in (TokenCache, ClientCredentialsAuth)
        for name, parameter in inspect.signature(cls).parameters.items()
    },
    "oauth.MAX_LIFETIME": oauth.MAX_LIFETIME,
    "oauth.MAX_BODY": oauth.MAX_BODY,
}


def numbers(value: object) -> list[float]:
    if isinstance(value, (tuple, frozenset, set)):
        return sorted(float(item) for item in value)
    assert isinstance(value, (int, float))
    return [float(value)]


@pytest.mark.parametrize("row", rows("## Defaults"), ids=lambda row: row[2])
def test_every_default_is_what_the_code_says(row: list[str]) -> None:
    _, stated, where = row
    default = DEFAULTS[where.strip("`")]
    if isinstance(default, bool):
        assert stated == ("on" if default else "off")
    else:
        assert [float(n) for n in re.findall(r"[\d.]+", stated)] == numbers(default)
