"""`nbmergesave review`: nbdime's terminal diff, and its web diff checked in a real headless Chromium."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io, sync_file
from nbmergesave.cli import cli
from nbmergesave.store import Store

from .conftest import cell, notebook


@pytest.fixture
def merged_notebook(tmp_path: Path) -> Path:
    """A notebook whose store holds one automatic merge: two writers, one same-line conflict."""
    path = tmp_path / "nb.ipynb"
    v0 = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(6)])
    w1, w2 = copy.deepcopy(v0), copy.deepcopy(v0)
    w1["cells"][1]["source"] = "x1 = 'first writer'"
    w2["cells"][4]["source"] = "x4 = 'second writer'"
    with Store.open(tmp_path) as store:
        for nb in (v0, w1, w2):
            path.write_text(notebook_io.dumps(nb))
            sync_file(store, path)
        assert store.history(path)[-1].kind == "merged"
    return path


def test_review_text(merged_notebook: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(merged_notebook), "--text"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout.startswith("### the save (v3) -> merged (v4)\n")
    assert "### the other writer's version (v2) -> merged (v4)" in result.stdout
    assert "+  x1 = 'first writer'" in result.stdout and "+  x4 = 'second writer'" in result.stdout


def test_review_of_a_version_that_is_not_a_merge(merged_notebook: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(merged_notebook), "--version", "2", "--text"])
    assert result.exit_code == 2
    assert "version 2 of" in result.stderr and "is not a merge" in result.stderr


def test_review_web_in_headless_chromium(merged_notebook: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "review", str(merged_notebook)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("merge v4 of"), lines
        urls = [line.rsplit(" ", 1)[1].strip() for line in lines[1:]]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)  # loopback only
        with urllib.request.urlopen(urls[0], timeout=30) as response:
            assert response.status == 200
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            pytest.skip("no chromium here (.ci/run installs Debian's)")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--virtual-time-budget=10000", "--window-size=1200,900"]
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom", urls[0]],
                                 capture_output=True, text=True, timeout=120).stdout
            shot = tmp_path / "review.png"
            subprocess.run([browser, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}", urls[0]],
                           capture_output=True, timeout=120)
        # The save's diff against the merge shows the cell the other writer changed (CodeMirror
        # splits the line into highlighted tokens, so look for the string's words).
        assert "first writer" in dom, "the page shows the merged cell"
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=20)
