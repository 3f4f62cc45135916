"""Sphinx configuration: furo, MyST Markdown, autodoc; every asset served locally."""

import sys
from pathlib import Path

from sphinx.pycode import ModuleAnalyzer

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


def _doc_comment_where_defined(app, what, name, obj, options, lines):
    """Document a re-exported constant with its ``#:`` comment, not its type's docstring.

    ``requests_piggy_auth.testing.Fault`` is defined in ``testing/faults.py``,
    so autodoc, reading ``testing/__init__.py``, finds no comment for it.
    """
    if what != "data":
        return
    package, _, attribute = name.rpartition(".")
    for module_name, module in sorted(sys.modules.items()):
        if module_name.startswith(package) and getattr(module, attribute, None) is obj:
            comment = ModuleAnalyzer.for_module(module_name).find_attr_docs().get(("", attribute))
            if comment:
                lines[:] = [*comment]
                return


def setup(app):
    app.connect("autodoc-process-docstring", _doc_comment_where_defined)
