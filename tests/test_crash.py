"""Crash safety: SIGKILL the watcher in the middle of merges; nothing torn, nothing lost, nothing merged twice."""

from __future__ import annotations

import copy
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from nbmergesave import notebook_io
from nbmergesave.cli import cli
from nbmergesave.store import Store

from .conftest import cell, notebook, wait_for


def start(root: Path, delay: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "600"],
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "NBMERGESAVE_TEST_MERGE_DELAY": str(delay)})
    assert proc.stderr is not None
    for _ in range(20):  # the start-up scan may finish an interrupted merge and say so first
        if "watching" in proc.stderr.readline():
            return proc
    proc.kill()
    proc.wait()
    raise AssertionError("the watcher did not start")


def test_sigkill_mid_merge_leaves_whole_files_and_a_sound_store(tmp_path: Path) -> None:
    rng = random.Random(7)
    root = tmp_path / "project"
    root.mkdir()
    path = root / "nb.ipynb"
    v0 = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(12)])
    path.write_text(notebook_io.dumps(v0))
    for round_ in range(4):
        current = notebook_io.read_notebook(path)
        proc = start(root, delay=0.3)
        try:
            w1, w2 = copy.deepcopy(current), copy.deepcopy(current)
            w1["cells"][round_]["source"] = f"w1 round {round_}"
            w2["cells"][11 - round_]["source"] = f"w2 round {round_}"
            path.write_text(notebook_io.dumps(w1))
            wait_for(lambda: _has(root, notebook_io.dumps(w1).encode()), "the first save to be stored")
            path.write_text(notebook_io.dumps(w2))  # made from the older version: a merge starts, slowly
            time.sleep(rng.uniform(0.0, 0.45))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        after = path.read_bytes()
        notebook_io.parse_notebook(after)  # whole: it parses
        with Store.open(root) as store:
            assert any(store.content(v) == after for v in store.history(path) if v.sha256), "old or new, never a mix"
        db = sqlite3.connect(root / ".nbmergesave" / "index.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        checked = CliRunner().invoke(cli, ["fsck", str(root)], catch_exceptions=False)
        assert checked.exit_code == 0, checked.output

        proc = start(root, delay=0)  # picks up where it left off
        try:
            wait_for(lambda: _sources(path)[round_] == f"w1 round {round_}" and _sources(path)[11 - round_] == f"w2 round {round_}",
                     "the restarted watcher to finish the merge")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        with Store.open(root) as store:
            merges = [v for v in store.history(path) if v.kind == "merged"]
            remotes = [m.remote for m in merges]
            assert len(remotes) == len(set(remotes)), "no save is merged twice"


def _has(root: Path, data: bytes) -> bool:
    with Store.open(root) as store:
        return any(v.sha256 and store.content(v) == data for v in store.history(root / "nb.ipynb"))


def _sources(path: Path) -> list[str]:
    try:
        return [c["source"] for c in notebook_io.read_notebook(path)["cells"]]
    except Exception:
        return []


def test_fsck_repairs_a_missing_blob(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    data = notebook_io.dumps(notebook(cell("a", "a"))).encode()
    path.write_bytes(data)
    with Store.open(tmp_path) as store:
        kept = store.add(path, data, "observed")
        gone = store.add(path, b'{"gone": true}', "observed", on_disk=False)
        store._db.execute("DELETE FROM pieces")  # as if the pieces never reached the disk
    result = CliRunner().invoke(cli, ["fsck", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout == ("integrity: ok; 2 contents and 0 pieces checked; 2 damaged, 2 versions without their content "
                             "(1 restored from disk, 1 marked lost)\n")
    with Store.open(tmp_path) as store:
        assert store.content(store.get(path, kept.version)) == data
        assert store.get(path, gone.version).kind == "lost"
    assert CliRunner().invoke(cli, ["fsck", str(tmp_path)]).exit_code == 0


def test_read_only_notebook_and_full_disk_leave_the_file_untouched(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nbmergesave import sync_file
    from nbmergesave.store import Store

    path = tmp_path / "nb.ipynb"
    v0 = notebook(*[cell(f"x{i}", f"c{i}") for i in range(4)])
    w1 = copy.deepcopy(v0)
    w1["cells"][0]["source"] = "w1"
    w2 = copy.deepcopy(v0)
    w2["cells"][3]["source"] = "w2"
    with Store.open(tmp_path) as store:
        for nb in (v0, w1):
            path.write_text(notebook_io.dumps(nb))
            sync_file(store, path)
        path.write_text(notebook_io.dumps(w2))
        os.chmod(path, 0o444)
        before = path.read_bytes()
        outcome = sync_file(store, path)
        assert outcome.action == "error" and "is read-only: left untouched" in outcome.message
        assert path.read_bytes() == before
        os.chmod(path, 0o644)

        def full(*args: object, **kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(notebook_io, "write_atomic", full)
        outcome = sync_file(store, path)
        assert outcome.action == "error" and "No space left on device" in outcome.message
        assert path.read_bytes() == before
