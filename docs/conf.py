"""Sphinx configuration: furo, MyST Markdown, autodoc; every asset served locally."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

from requests_piggy_auth import __version__  # noqa: E402

project = "requests-piggy-auth"
author = "requests-piggy-auth contributors"
copyright = "requests-piggy-auth contributors"
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "offline_assets",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"requests-piggy-auth {release}"
html_permalinks_icon = "#"
