"""A Sphinx extension that fails the build when a page would need the network to show.

After an HTML build it reads every page and stylesheet in the output: a script,
stylesheet, image, diagram or frame loaded from an http(s) URL is an error, and
so is a local one that is not in the output. Links (``<a href>``) are not
assets and may go anywhere. The checks are plain functions, so tests run them
without Sphinx.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

#: The attributes that make a browser load something, by tag.
ASSET_ATTRIBUTES = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "image": ("href", "xlink:href"),
    "object": ("data",),
    "embed": ("src",),
    "iframe": ("src",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "use": ("href", "xlink:href"),
}
#: ``<link rel=...>`` kinds that load something (not ``canonical``, ``next``, ...).
LOADING_LINKS = {"stylesheet", "icon", "preload", "modulepreload", "manifest", "apple-touch-icon"}
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        names = ASSET_ATTRIBUTES.get(tag, ())
        if tag == "link" and LOADING_LINKS & set(values.get("rel", "").lower().split()):
            names = ("href",)
        for name in names:
            if name in values:
                self.urls += _srcset(values[name]) if name == "srcset" else [values[name]]
        if "style" in values:
            self.urls += CSS_URL.findall(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += CSS_URL.findall(data)


def _srcset(value: str) -> list[str]:
    return [part.split()[0] for part in value.split(",") if part.strip()]


def asset_urls(html: str) -> list[str]:
    """Every URL a browser would load to show ``html`` (not the links it may follow)."""
    parser = _Assets()
    parser.feed(html)
    parser.close()
    return parser.urls


def is_remote(url: str) -> bool:
    """Whether loading ``url`` needs the network: http(s) or protocol-relative."""
    return urlsplit(url).scheme.lower() in ("http", "https") or url.startswith("//")


def problems(outdir: Path) -> list[str]:
    """What in the built site at ``outdir`` is remote or missing, one line each."""
    found = []
    for page in sorted([*outdir.rglob("*.html"), *outdir.rglob("*.css")]):
        text = page.read_text(encoding="utf-8", errors="replace")
        urls = CSS_URL.findall(text) if page.suffix == ".css" else asset_urls(text)
        name = page.relative_to(outdir)
        for url in urls:
            parts = urlsplit(url)
            path = "" if parts.scheme else unquote(parts.path)  # none for data: and #fragment
            if is_remote(url):
                found.append(f"{name}: loads {url} from the network")
            elif path and not (page.parent / path).exists():
                found.append(f"{name}: {url} is not in the built site")
    return found


def _check(app: Any, exception: BaseException | None) -> None:
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    if exception is not None or app.builder.format != "html":
        return
    found = problems(Path(app.outdir))
    log = logging.getLogger(__name__)
    for problem in found:
        log.warning("offline assets: %s", problem)
    if found:
        raise ExtensionError(f"{len(found)} page(s) would not show offline")


def setup(app: Any) -> dict[str, Any]:
    app.connect("build-finished", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
