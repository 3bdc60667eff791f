"""The documentation site builds with warnings as errors: a broken link, reference or docstring fails.

CI builds it too (.ci/run, after installing the ``docs`` extra); this test runs the same
build wherever Sphinx and the site's extensions are installed, so a page edited beside the
code is checked by ``python -m pytest`` as well.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from nbmergesave.cli import cli as cli_group

from .conftest import ROOT
from .test_cli import _commands

NEEDED = ("sphinx", "myst_parser", "pydata_sphinx_theme", "sphinx_click")


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in NEEDED),
                    reason="the docs extra is not installed (pip install -e '.[docs]')")
def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for page in ("index", "getting-started", "jupyter", "git", "watcher", "sync-tools", "teams", "security",
                 "guarantees", "how-it-works", "contributing", "cli", "api"):
        assert (out / f"{page}.html").is_file(), page
    cli = (out / "cli.html").read_text(encoding="utf-8")
    for name, _ in _commands(cli_group):  # the reference is generated from the click group: all of it
        anchor = "nbmergesave-" + name.replace(" ", "-")
        assert f'id="{anchor}"' in cli, name
    api = (out / "api.html").read_text(encoding="utf-8")
    assert 'id="nbmergesave.merge"' in api and 'id="nbmergesave.declare"' in api  # autodoc found the public API
