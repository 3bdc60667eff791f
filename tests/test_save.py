"""`nbmergesave save` and `declare`: writers that know their base."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io
from nbmergesave.cli import cli
from nbmergesave.store import Store, sha256

from .conftest import cell, notebook, write


def nb(*edits: tuple[int, str]):  # type: ignore[no-untyped-def]
    out = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(6)])
    for index, text in edits:
        out["cells"][index]["source"] = text
    return out


def test_save_merges_what_others_saved_since_the_base(tmp_path: Path) -> None:
    target = write(tmp_path / "nb.ipynb", nb((0, "someone else")))
    base = write(tmp_path / "loaded.ipynb", nb())
    new = write(tmp_path / "edited.ipynb", nb((5, "mine")))
    result = CliRunner().invoke(cli, ["save", str(target), "--base", str(base), "--from", str(new)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"{target}: merged with changes saved since the base (version 4)\n"
    merged = notebook_io.read_notebook(target)
    assert [merged["cells"][0]["source"], merged["cells"][5]["source"]] == ["someone else", "mine"]
    with Store.find(target) as store:
        kinds = [v.kind for v in store.history(target)]
        assert kinds == ["declared", "observed", "observed", "merged"]
        assert store.declared_base(target, sha256(target.read_bytes())) is not None


def test_save_from_stdin_with_conflict_exits_1(tmp_path: Path) -> None:
    target = write(tmp_path / "nb.ipynb", nb((2, "theirs")))
    base = write(tmp_path / "loaded.ipynb", nb())
    result = CliRunner().invoke(cli, ["save", str(target), "--base", str(base)], input=notebook_io.dumps(nb((2, "mine"))))
    assert result.exit_code == 1
    assert "cell 3 (id 'c2'): both sides edited the source" in result.stderr
    assert "<<<<<<< local" in notebook_io.read_notebook(target)["cells"][2]["source"]


def test_save_when_nobody_else_saved_just_writes(tmp_path: Path) -> None:
    target = write(tmp_path / "nb.ipynb", nb())
    result = CliRunner().invoke(cli, ["save", str(target), "--base", str(target)], input=notebook_io.dumps(nb((1, "mine"))))
    assert result.exit_code == 0
    assert result.stderr.endswith("saved (version 2)\n")
    assert notebook_io.read_notebook(target) == nb((1, "mine"))


def test_save_bad_input_leaves_the_file(tmp_path: Path) -> None:
    target = write(tmp_path / "nb.ipynb", nb())
    before = target.read_bytes()
    result = CliRunner().invoke(cli, ["save", str(target), "--base", str(target)], input="{ nope")
    assert (result.exit_code, result.stderr) == (2, "Error: the new content is not valid JSON: line 1 column 3 (Expecting property name enclosed in double quotes)\n")
    assert target.read_bytes() == before


def test_declare_records_the_base(tmp_path: Path) -> None:
    target = write(tmp_path / "nb.ipynb", nb((1, "new")))
    base_sha = sha256(notebook_io.dumps(nb()).encode())
    result = CliRunner().invoke(cli, ["declare", str(target), "--base-sha256", base_sha, "--writer", "rsync"], catch_exceptions=False)
    assert result.exit_code == 0
    with Store.find(target) as store:
        row = store._db.execute("SELECT sha256, base_sha256, writer FROM declarations").fetchone()
    assert row == (sha256(target.read_bytes()), base_sha, "rsync")
    bad = CliRunner().invoke(cli, ["declare", str(target), "--base-sha256", "xyz"])
    assert bad.exit_code == 2 and "expected bytes or a sha256 hex digest" in bad.stderr


def test_a_declared_save_that_follows_unseen_saves_is_not_merged_backwards(tmp_path: Path) -> None:
    """Two declared saves land before the watcher looks: the second was made from the first,
    which was made from the version the watcher knows. Merging the second against that older
    version would undo the first; it is recorded as it is."""
    from nbmergesave import declare, sync_file

    path = write(tmp_path / "nb.ipynb", nb())
    with Store.open(tmp_path) as store:
        sync_file(store, path)
    first, second = notebook_io.dumps(nb((1, "first"))).encode(), notebook_io.dumps(nb((1, "first"), (4, "second"))).encode()
    declare(path, first, base=path.read_bytes(), writer="tool")
    declare(path, second, base=first, writer="tool")
    path.write_bytes(second)
    with Store.open(tmp_path) as store:
        assert sync_file(store, path).action == "recorded"
    assert path.read_bytes() == second


def test_a_write_marked_by_a_merging_server_is_recorded_never_merged_again(tmp_path: Path) -> None:
    """Another host's Jupyter server, its store away (its declarations are not in this store), merged a save
    and wrote it with compare-then-swap, leaving its mark on the file: a watcher here records it as that
    server's and never merges it again from an inferred base (that server puts back what its swap displaced,
    and merges it in). An in-place write over the marked file keeps the inode's mark but not its bytes: it
    is judged as any other write."""
    from nbmergesave.sync import sync_file

    path = write(tmp_path / "nb.ipynb", notebook(cell("a = 0", "a"), cell("b = 0", "b")))
    with Store.open(tmp_path) as store:
        assert sync_file(store, path).action == "recorded"  # v1
        write(path, notebook(cell("a = 0\na = 1", "a"), cell("b = 0", "b")))
        assert sync_file(store, path).action == "recorded"  # v2, on disk
        # made from v1, without v2's 'a = 1': on its own, a save to merge with v2
        other = notebook_io.dumps(notebook(cell("a = 0", "a"), cell("b = 0\nb = 1", "b"))).encode()
        notebook_io.write_atomic(path, other, mark=True)
        if not notebook_io.marked(path, sha256(other)):
            pytest.skip("this file system keeps no user extended attributes")
        outcome = sync_file(store, path)
        assert (outcome.action, outcome.writer) == ("recorded", "jupyter")
        assert path.read_bytes() == other
        assert store.on_disk(path).sha256 == sha256(other)
        assert store.declared_writer(path, sha256(other)) == "jupyter"

        # made from v2 (without the other host's 'b = 1'), written in place: same inode, the mark still on it
        again = notebook_io.dumps(notebook(cell("a = 0\na = 1", "a"), cell("b = 0", "b"), cell("c = 1", "c"))).encode()
        with open(path, "r+b") as f:
            f.write(again)
            f.truncate()
        assert not notebook_io.marked(path, sha256(again))
        outcome = sync_file(store, path)
        assert (outcome.action, outcome.writer) == ("merged", None)
        assert [c["source"] for c in notebook_io.read_notebook(path)["cells"]] == ["a = 0", "b = 0\nb = 1", "c = 1"]
