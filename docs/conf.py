"""Sphinx configuration of nbmergesave's documentation site.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html``
(``pip install -e '.[docs]'`` first). ``-W`` turns every warning into an
error, so a broken link or reference fails the build, in CI too.
"""

from __future__ import annotations

import nbmergesave

project = "nbmergesave"
author = "nbmergesave contributors"
copyright = "nbmergesave contributors"
version = release = nbmergesave.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# Options such as --inplace stay two hyphens, not a dash.
smartquotes = False
exclude_patterns = ["_build", "README.md"]

# MyST: `(label)=` targets and #anchors to headings, so pages can link to a section.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# The API page documents what the package exports, in source order, with
# type hints in the signature where they are short.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}

html_theme = "pydata_sphinx_theme"
html_title = f"nbmergesave {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
# No source links or "edit this page": the site is built from the repository itself.
html_show_sourcelink = False


def _help_as_rst(app: object, ctx: object, lines: list[str]) -> None:
    """Show each command's ``--help`` text as it reads in a terminal.

    sphinx-click reads help text as reStructuredText, but ours is written for
    the terminal: its ``\\b`` example blocks become code blocks here instead of
    line blocks, and a lone ``*`` (``*.ipynb``) is text, not the start of
    emphasis. The help itself stays unchanged, so ``--help`` is still the
    source of truth.
    """
    out: list[str] = []
    in_example = False
    for line in lines:
        if line.startswith("| ") and line[2:].strip().startswith("Example") and line.endswith(":"):
            out += [line[2:].strip()[:-1] + "::", ""]
            in_example = True
        elif in_example and line.startswith("| "):
            out.append("   " + line[2:].strip())
        else:
            if in_example and line == "":
                in_example = False
            out.append(line.replace("*", "\\*") if not line.startswith("|") else line)
    lines[:] = out


def setup(app: object) -> None:
    app.connect("sphinx-click-process-description", _help_as_rst)  # type: ignore[attr-defined]
