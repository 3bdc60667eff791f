"""Hostile and odd input through the CLI and the watcher: clear errors, nothing outside the roots touched,
and the watcher never stops."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io
from nbmergesave.cli import cli
from nbmergesave.store import Store

from .conftest import cell, edited, notebook, numbered, wait_for, write
from .test_watcher import Project, project, put, sources  # noqa: F401

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
HOSTILE = {
    "invalid.ipynb": b'{"cells": [',
    "not-a-notebook.ipynb": b'{"hello": "world"}',
    "nbformat3.ipynb": b'{"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}',
    "empty.ipynb": b"",
    "binary.ipynb": bytes(range(256)) * 4,
    "deep.ipynb": DEEP,
    "latin1.ipynb": '{"cells": [], "metadata": {"a": "café"}, "nbformat": 4, "nbformat_minor": 5}'.encode("latin-1"),
}


def test_cli_refuses_deep_nesting_and_handles_duplicate_ids(tmp_path: Path) -> None:
    deep = tmp_path / "deep.ipynb"
    deep.write_bytes(DEEP)
    good = write(tmp_path / "good.ipynb", notebook(cell("a", "a")))
    result = CliRunner().invoke(cli, ["merge", str(good), str(deep), str(good)])
    assert (result.exit_code, result.stderr) == (2, f"Error: LOCAL '{deep}' is nested too deeply to read\n")

    dup = notebook(cell("a", "same"), cell("b", "same"))
    local = copy.deepcopy(dup)
    local["cells"][0]["source"] = "a2"
    remote = copy.deepcopy(dup)
    remote["cells"][1]["source"] = "b2"
    paths = [write(tmp_path / f"{n}.ipynb", nb) for n, nb in (("b", dup), ("l", local), ("r", remote))]
    result = CliRunner().invoke(cli, ["merge", *map(str, paths)], catch_exceptions=False)
    assert result.exit_code == 0
    merged = json.loads(result.stdout)
    assert ["".join(c["source"]) for c in merged["cells"]] == ["a2", "b2"]
    assert len({c["id"] for c in merged["cells"]}) == 2


@pytest.mark.parametrize("name", ["with space.ipynb", "quote's \"double\".ipynb", "new\nline.ipynb", "ünï⊂ødé.ipynb"])
def test_cli_odd_names(tmp_path: Path, name: str) -> None:
    b = write(tmp_path / f"b {name}", notebook(cell("x", "x"), cell("y", "y")))
    l = write(tmp_path / f"l {name}", notebook(cell("x1", "x"), cell("y", "y")))
    r = write(tmp_path / name, notebook(cell("x", "x"), cell("y1", "y")))
    result = CliRunner().invoke(cli, ["merge", str(b), str(l), str(r), "--inplace"], catch_exceptions=False)
    assert result.exit_code == 0
    assert [c["source"] for c in notebook_io.read_notebook(l)["cells"]] == ["x1", "y1"]


def test_cli_100_mb_notebook(tmp_path: Path) -> None:
    blob = "A" * (1024 * 1024)  # a 1 MiB image, a hundred times
    big = notebook(*[cell(f"plot({i})", f"c{i}", outputs=[{"data": {"image/png": blob}, "metadata": {},
                                                             "output_type": "display_data"}]) for i in range(100)])
    base = write(tmp_path / "base.ipynb", big)
    assert base.stat().st_size > 100 * 1024 * 1024
    local = copy.deepcopy(big)
    local["cells"][3]["source"] = "plot(3, log=True)"
    write(tmp_path / "local.ipynb", local)
    out = tmp_path / "out.ipynb"
    result = CliRunner().invoke(cli, ["merge", str(base), str(tmp_path / "local.ipynb"), str(base), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0
    assert out.read_bytes() == (tmp_path / "local.ipynb").read_bytes()


def test_watcher_survives_hostile_files_and_touches_nothing_outside(project: Project, tmp_path: Path) -> None:  # noqa: F811
    outside = tmp_path / "outside.ipynb"
    outside.write_text(notebook_io.dumps(notebook(*numbered(2))))
    outside_before = outside.read_bytes()
    v0 = notebook(*numbered(10))
    put(project, "good.ipynb", v0)
    (project.root / "link.ipynb").symlink_to(outside)
    (project.root / "loop.ipynb").symlink_to(project.root / "loop.ipynb")
    project.start()
    for name, data in HOSTILE.items():
        (project.root / name).write_bytes(data)
    for odd in ("with space.ipynb", "quote's.ipynb", "new\nline.ipynb", "ünï⊂ødé.ipynb"):
        put(project, odd, v0)
    (project.root / "was-a-file.ipynb").write_text(notebook_io.dumps(v0))
    wait_for(lambda: project.versions("was-a-file.ipynb"), "the watcher to see a file")
    os.unlink(project.root / "was-a-file.ipynb")
    (project.root / "was-a-file.ipynb").mkdir()  # a notebook replaced by a directory
    os.utime(outside)  # touching the target of the symlink: still not ours
    (project.root / "link.ipynb").write_text(notebook_io.dumps(edited(notebook(*numbered(2)), 0, "via link")))
    outside_before = outside.read_bytes()

    # the watcher still works: two writers merge as ever
    project.save("good.ipynb", edited(v0, 1, "w1"))
    project.save("good.ipynb", edited(v0, 8, "w2"))
    assert [sources(project.read("good.ipynb"))[i] for i in (1, 8)] == ["w1", "w2"]
    for odd in ("with space.ipynb", "quote's.ipynb", "new\nline.ipynb", "ünï⊂ødé.ipynb"):
        assert project.versions(odd), odd
    assert project.proc is not None and project.proc.poll() is None, "the watcher never stops"
    assert outside.read_bytes() == outside_before
    with Store.open(project.root) as store:
        tracked = store.tracked()
        assert "link.ipynb" not in tracked and "loop.ipynb" not in tracked
        for name, data in HOSTILE.items():
            assert name not in tracked, name
        assert store.history(project.root / "was-a-file.ipynb")[-1].kind == "deleted"
