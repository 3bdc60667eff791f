"""nbmergesave as Unison's merge program, against a real unison (skipped where it is not installed)."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbmergesave import notebook_io

from .conftest import cell, notebook, write

pytestmark = pytest.mark.skipif(shutil.which("unison") is None, reason="unison is not installed")


def sync(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = f"{sys.executable} -m nbmergesave merge CURRENTARCH CURRENT1 CURRENT2 -o NEW"
    return subprocess.run(
        ["unison", str(tmp_path / "a"), str(tmp_path / "b"), "-batch", "-backupcurrent", "Name *.ipynb",
         "-merge", f"Name *.ipynb -> {command}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path / "home")},
    )


def test_unison_merges_notebooks(tmp_path: Path) -> None:
    for d in ("a", "b", "home"):
        (tmp_path / d).mkdir()
    base = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(5)])
    write(tmp_path / "a" / "nb.ipynb", base)
    assert sync(tmp_path).returncode == 0
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    a["cells"][0]["source"], b["cells"][4]["source"] = "replica a", "replica b"
    write(tmp_path / "a" / "nb.ipynb", a)
    write(tmp_path / "b" / "nb.ipynb", b)
    result = sync(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for replica in ("a", "b"):
        cells = notebook_io.read_notebook(tmp_path / replica / "nb.ipynb")["cells"]
        assert [cells[0]["source"], cells[4]["source"]] == ["replica a", "replica b"]

    a["cells"][2]["source"], b["cells"][2]["source"] = "x2 = 'a'", "x2 = 'b'"
    write(tmp_path / "a" / "nb.ipynb", a)
    write(tmp_path / "b" / "nb.ipynb", b)
    result = sync(tmp_path)
    assert "failed: nb.ipynb" in result.stdout + result.stderr
    assert notebook_io.read_notebook(tmp_path / "a" / "nb.ipynb") == a
    assert notebook_io.read_notebook(tmp_path / "b" / "nb.ipynb") == b
