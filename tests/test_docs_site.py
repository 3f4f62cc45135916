"""The documentation site stays complete and readable offline, checked without building it.

The API reference documents exactly each public module's ``__all__``; the
configuration reference lists every constructor parameter with its default and
every ``PIGGY_*`` variable; the diagrams are local SVG files that load nothing,
and the build's offline check (docs/_ext/offline_assets.py, run by ``make docs``)
catches a page that would load anything from the network.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import random
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, get_origin

import pytest

import requests_piggy_auth
import requests_piggy_auth.events
from requests_piggy_auth import PiggyAuth, PiggyAuthError, TokenStore

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PUBLIC_MODULES = [
    "requests_piggy_auth",
    "requests_piggy_auth.urllib3",
    "requests_piggy_auth.httpx",
    "requests_piggy_auth.events",
    "requests_piggy_auth.otel",
    "requests_piggy_auth.stores",
    "requests_piggy_auth.testing",
]
AUTODOC = re.compile(r"^\.\. auto(?:class|function|exception|data):: ([\w.]+)$", re.MULTILINE)
SVG = "{http://www.w3.org/2000/svg}"


def sections(text: str, level: int) -> dict[str, str]:
    """The text under each heading of ``level`` whose title is a name in backticks."""
    headings = list(re.finditer(r"^(#+) (.*)$", text, re.MULTILINE))
    found = {}
    for n, heading in enumerate(headings):
        title = re.fullmatch(r"`([^`]+)`", heading.group(2))
        if len(heading.group(1)) == level and title:
            end = next((h.start() for h in headings[n + 1 :] if len(h.group(1)) <= level), None)
            found[title.group(1)] = text[heading.end() : end]
    return found


def load_offline_assets() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "offline_assets", DOCS / "_ext" / "offline_assets.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the API reference ---------------------------------------------------------


def test_the_api_reference_documents_exactly_each_public_modules_all() -> None:
    documented = sections((DOCS / "api.md").read_text(encoding="utf-8"), 2)
    assert list(documented) == PUBLIC_MODULES
    for name, text in documented.items():
        module = importlib.import_module(name)
        names = [full.rpartition(".") for full in AUTODOC.findall(text)]
        assert {prefix for prefix, _, _ in names} == {name}
        assert sorted(short for _, _, short in names) == sorted(module.__all__)


def test_every_public_name_is_exported_and_has_a_docstring() -> None:
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for public in module.__all__:
            value = getattr(module, public)
            # get_origin: on Python 3.10 a type alias such as Fault passes for a class.
            if get_origin(value) is None and (inspect.isclass(value) or inspect.isfunction(value)):
                assert inspect.getdoc(value), f"{name}.{public} has no docstring"


# -- the configuration reference ---------------------------------------------------

CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
#: Public classes with parameters that are no configuration: a base class, records of
#: what the fake server saw, the events and the hook a store reports its health through.
NOT_CONFIGURATION = {  # made by the library
    "PiggyAuth",
    "Lease",
    "Stats",
    "LoggedRequest",
    *requests_piggy_auth.events.__all__,
}


def documented_options() -> dict[str, list[list[str]]]:
    """Each ``### `Name``` or ``#### `Name``` section's table rows, as cells."""
    found = {}
    for level in (3, 4):
        for name, text in sections(CONFIGURATION, level).items():
            rows = [line for line in text.splitlines() if line.startswith("| `")]
            found[name] = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return found


def constructors() -> dict[str, Callable[..., Any]]:
    """Every public class that takes parameters, and ``from_env``."""
    found: dict[str, Callable[..., Any]] = {"from_env": requests_piggy_auth.from_env}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for public in module.__all__:
            value = getattr(module, public)
            if (
                inspect.isclass(value)
                and not issubclass(value, (PiggyAuthError, Warning))
                and value is not TokenStore
                and public not in NOT_CONFIGURATION
                and inspect.signature(value).parameters
            ):
                found[public] = value
    return found


def test_every_constructor_has_a_configuration_section() -> None:
    assert set(constructors()) <= set(documented_options())
    assert issubclass(requests_piggy_auth.ClientCredentialsAuth, PiggyAuth)


@pytest.mark.parametrize("name", sorted(constructors()))
def test_every_option_is_listed_with_its_default(name: str) -> None:
    namespace = {**vars(requests_piggy_auth), "asyncio": asyncio, "time": time, "random": random}
    parameters = inspect.signature(constructors()[name]).parameters.values()
    rows = documented_options()[name]

    assert [row[0].strip("`").lstrip("*") for row in rows] == [p.name for p in parameters]
    for parameter, (_, default, *_) in zip(parameters, rows, strict=True):
        if parameter.kind is parameter.VAR_KEYWORD:
            assert default == "—"
        elif parameter.default is parameter.empty:
            assert default == "required", parameter.name
        else:
            code = re.fullmatch(r"`([^`]+)`", default)
            assert code, parameter.name
            assert eval(code.group(1), namespace) == parameter.default, parameter.name


def test_every_environment_variable_is_in_the_reference() -> None:
    source = "".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "requests_piggy_auth").rglob("*.py")
    )
    variables = set(re.findall(r'"(PIGGY_[A-Z_]+)"', source))
    table = CONFIGURATION[: CONFIGURATION.index("## Auth objects")]
    listed = set(re.findall(r"^\| `(PIGGY_[A-Z_]+)` \|", table, re.MULTILINE))
    assert len(variables) >= 4
    assert listed == variables


# -- diagrams and offline assets ---------------------------------------------------

DIAGRAMS = sorted((DOCS / "diagrams").glob("*.svg"))


def test_every_diagram_is_shown_where_it_belongs() -> None:
    figure = re.compile(r"^```\{figure\} (\S+)$", re.MULTILINE)
    shown = {
        page.name: figure.findall(page.read_text(encoding="utf-8")) for page in DOCS.glob("*.md")
    }
    assert sorted(shown["concepts.md"]) == [
        "diagrams/retry-on-401.svg",
        "diagrams/token-timeline.svg",
    ]
    assert shown["architecture.md"] == ["diagrams/layers.svg"]
    everywhere = sorted(path for paths in shown.values() for path in paths)
    assert everywhere == [f"diagrams/{svg.name}" for svg in DIAGRAMS]


@pytest.mark.parametrize("svg", DIAGRAMS, ids=lambda path: path.name)
def test_each_diagram_is_a_self_contained_svg(svg: Path) -> None:
    text = svg.read_text(encoding="utf-8")
    root = ET.fromstring(text)
    references = re.findall(r"""url\(\s*['"]?([^'")]*)""", text) + [
        value
        for element in root.iter()
        for name, value in element.attrib.items()
        if name.endswith("href") or name in ("src", "data")
    ]

    assert root.tag == f"{SVG}svg"
    assert root.find(f"{SVG}title") is not None  # what screen readers say
    assert not [*root.iter(f"{SVG}script"), *root.iter(f"{SVG}foreignObject")]
    assert "@import" not in text
    assert references  # its markers and patterns, all defined inside it
    assert all(reference.startswith("#") for reference in references)


def test_the_offline_check_finds_remote_and_missing_assets(tmp_path: Path) -> None:
    offline = load_offline_assets()
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "here.svg").write_text("<svg/>")
    (tmp_path / "page.html").write_text(
        '<link rel="stylesheet" href="https://cdn.example/theme.css">'
        '<script src="//cdn.example/mermaid.js"></script>'
        '<img src="_images/here.svg"><img src="_images/gone.svg">'
        '<a href="https://docs.piggy.eu">links go anywhere</a>'
        '<link rel="canonical" href="https://example.org/page.html">'
        '<div style="background: url(https://example.org/bg.png)"></div>'
        "<style>.x { background: url('data:image/png;base64,AAAA') }</style>"
    )
    (tmp_path / "site.css").write_text("@import url('https://fonts.example/f.css');")

    assert offline.problems(tmp_path) == [
        "page.html: loads https://cdn.example/theme.css from the network",
        "page.html: loads //cdn.example/mermaid.js from the network",
        "page.html: _images/gone.svg is not in the built site",
        "page.html: loads https://example.org/bg.png from the network",
        "site.css: loads https://fonts.example/f.css from the network",
    ]


def test_the_offline_check_passes_a_self_contained_site(tmp_path: Path) -> None:
    offline = load_offline_assets()
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "furo.js").write_text("")
    (tmp_path / "_static" / "icon.png").write_bytes(b"")
    (tmp_path / "_static" / "furo.css").write_text(".a { background: url(icon.png) }")
    (tmp_path / "index.html").write_text(
        '<script src="_static/furo.js?v=1"></script>'
        '<img srcset="_static/icon.png 1x, _static/icon.png 2x">'
        '<svg><use href="#svg-toc"></use></svg>'
    )

    assert offline.problems(tmp_path) == []
