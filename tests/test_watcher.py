"""End-to-end: a real `nbmergesave watch` process, real files, the issue's scenarios."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io
from nbmergesave.cli import cli
from nbmergesave.store import Store, sha256

from .conftest import cell, edited, notebook, numbered, stepped_back_by_a_plain_server, stop_process, wait_for

TIMEOUT = 20.0


class Project:
    """A folder watched by a real watcher process, and helpers to save into it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *extra: str) -> None:
        # The watcher's stderr goes to a file: a pipe nobody reads fills up and stops it.
        self.log = self.root.parent / "watcher.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbmergesave", "watch", str(self.root), "--rescan", "600", *extra],
                stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_for(lambda: "watching" in self.output(), "the watcher to start")

    def start_with(self, name: str, nb: dict[str, Any]) -> dict[str, Any]:
        """Write ``nb`` at ``name`` before the watcher runs (what it finds there at start), then start it;
        ``nb`` returned, as the base both writers loaded."""
        (self.root / name).write_text(notebook_io.dumps(nb), encoding="utf-8")
        self.start()
        return nb

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, timeout=10)

    def versions(self, name: str) -> list[Any]:
        with Store.open(self.root) as store:
            return store.history(self.root / name)

    def save(self, name: str, nb: dict[str, Any], style: str = "jupyter") -> None:
        """Save like a real writer, then wait until the watcher has taken it in."""
        path = self.root / name
        before = len(self.versions(name))
        data = notebook_io.dumps(nb)
        if style == "jupyter":  # FileContentsManager: copy aside, rewrite in place, remove the copy
            shutil.copy2(path, path.with_name(f".~{name}"))
            with open(path, "w", encoding="utf-8") as f:
                f.write(data)
            os.unlink(path.with_name(f".~{name}"))
        elif style == "rename":
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, path)
        else:
            path.write_text(data, encoding="utf-8")
        if any(v.sha256 and Store.open(self.root).content(v) == data.encode() for v in self.versions(name)):
            time.sleep(0.3)  # a revert adds no new blob content to wait for; give the watcher a moment
        wait_for(lambda: len(self.versions(name)) > before and self.settled(name), f"the watcher to take in {name}")

    def settled(self, name: str) -> bool:
        with Store.open(self.root) as store:
            current = store.on_disk(self.root / name)
            return current is not None and current.sha256 == __import__("hashlib").sha256((self.root / name).read_bytes()).hexdigest()

    def read(self, name: str) -> dict[str, Any]:
        return notebook_io.read_notebook(self.root / name)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path / "project")
    p.root.mkdir()
    yield p
    p.stop()


def sources(nb: dict[str, Any]) -> list[str]:
    return [c["source"] for c in nb["cells"]]


def put(project: Project, name: str, nb: dict[str, Any]) -> None:
    (project.root / name).write_text(notebook_io.dumps(nb), encoding="utf-8")


def test_two_writers_take_turns(project: Project) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    w1 = edited(v0, 2, "w1 edit of cell 2")
    project.save("nb.ipynb", w1)
    w2 = edited(v0, 7, "w2 edit of cell 7")
    project.save("nb.ipynb", w2, style="rename")
    assert sources(project.read("nb.ipynb"))[2::5] == ["w1 edit of cell 2", "w2 edit of cell 7"]
    w1 = edited(w1, 3, "w1 edit of cell 3")
    project.save("nb.ipynb", w1, style="plain")
    w2 = edited(w2, 9, "w2 edit of cell 9")
    project.save("nb.ipynb", w2)
    final = sources(project.read("nb.ipynb"))
    assert [final[i] for i in (2, 3, 7, 9)] == ["w1 edit of cell 2", "w1 edit of cell 3", "w2 edit of cell 7", "w2 edit of cell 9"]
    kinds = [v.kind for v in project.versions("nb.ipynb")]
    assert kinds.count("merged") == 3
    assert kinds.count("observed") == 5  # the first sighting and every raw save


def test_editor_save_after_git_pull(project: Project) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    pulled = edited(edited(v0, 1, "from git, cell 1"), 4, "from git, cell 4")
    project.save("nb.ipynb", pulled, style="rename")  # git checkout writes a new file and renames it
    project.save("nb.ipynb", edited(v0, 6, "editor, cell 6"))
    final = sources(project.read("nb.ipynb"))
    assert [final[i] for i in (1, 4, 6)] == ["from git, cell 1", "from git, cell 4", "editor, cell 6"]


def test_single_writer_is_never_merged(project: Project) -> None:
    nb = notebook(*numbered(6))
    for c in nb["cells"]:
        c["outputs"] = [{"name": "stdout", "output_type": "stream", "text": "out\n"}]
        c["execution_count"] = 1
    put(project, "nb.ipynb", nb)
    project.start()
    styles = ["jupyter", "rename", "plain"]
    added: list[str] = []
    for step in range(30):
        nb = copy.deepcopy(nb)
        cells = nb["cells"]
        kind = step % 6
        if kind == 0:
            cells.insert(step % len(cells), cell(f"new = {step}", f"n{step}"))
            added.append(f"n{step}")
        elif kind == 1:
            # Edit an original cell: a save that removes *everything* the saves
            # since some version added (edit a new cell, then delete it) is the
            # documented ambiguous case, which merges and is undone by `undo`.
            originals = [c for c in cells if c["id"].startswith("c")]
            originals[step % len(originals)]["source"] += f"\n# edit {step}"
        elif kind == 2 and len(added) >= 1:
            gone = added.pop(0)  # a cell added two saves before
            nb["cells"] = [c for c in cells if c.get("id") != gone]
            nb["cells"][0]["source"] += f"\n# tidy {step}"
        elif kind == 3:
            cells.append(cells.pop(0))  # move
        elif kind == 4:
            for c in cells:
                if c["cell_type"] == "code":
                    c["outputs"], c["execution_count"] = [], None  # clear outputs
        else:
            for c in cells:
                if c["cell_type"] == "code":
                    c["outputs"] = [{"name": "stdout", "output_type": "stream", "text": f"run {step}\n"}]
                    c["execution_count"] = step
        project.save("nb.ipynb", nb, style=styles[step % 3])
        assert project.read("nb.ipynb") == nb, f"save {step} was changed"
    assert not any(v.kind == "merged" for v in project.versions("nb.ipynb"))
    assert len(project.versions("nb.ipynb")) == 31


def test_revert_to_an_earlier_version_is_not_merged(project: Project) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    project.save("nb.ipynb", edited(v0, 2, "edit"))
    project.save("nb.ipynb", v0, style="rename")  # git checkout -- nb.ipynb
    time.sleep(0.3)
    assert project.read("nb.ipynb") == v0
    assert not any(v.kind == "merged" for v in project.versions("nb.ipynb"))


def test_same_line_conflict_is_marked_listed_and_undone(project: Project) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    w1 = edited(v0, 5, "x5 = 'w1'")
    project.save("nb.ipynb", w1)
    w2 = edited(v0, 5, "x5 = 'w2'")
    project.save("nb.ipynb", w2)
    merged = project.read("nb.ipynb")
    notebook_io.validate(merged)
    assert merged["cells"][5]["source"] == "<<<<<<< local\nx5 = 'w1'\n=======\nx5 = 'w2'\n>>>>>>> remote"
    runner = CliRunner()
    listed = runner.invoke(cli, ["conflicts", str(project.root)], catch_exceptions=False)
    assert listed.stdout == f"{project.root / 'nb.ipynb'}: cell 6 (c5)\n"
    project.stop()  # undo while nobody watches, then check both saves are reachable
    undone = runner.invoke(cli, ["undo", str(project.root / "nb.ipynb")], catch_exceptions=False)
    assert undone.exit_code == 0, undone.output
    assert project.read("nb.ipynb") == w2
    history = project.versions("nb.ipynb")
    merge = next(v for v in history if v.kind == "merged")
    shown = runner.invoke(cli, ["show", str(project.root / "nb.ipynb"), "--version", str(merge.local)], catch_exceptions=False)
    assert notebook_io.parse_notebook(shown.stdout.encode()) == w1
    assert {v.sha256 for v in history} >= {Store.open(project.root).key(project.root / "nb.ipynb") and v.sha256 for v in history}


def test_new_subfolders_renames_deletions_and_skips(project: Project) -> None:
    project.start()
    sub = project.root / "later" / "deeper"
    sub.mkdir(parents=True)
    v0 = notebook(*numbered(3))
    put(project, "later/deeper/nb.ipynb", v0)
    wait_for(lambda: project.versions("later/deeper/nb.ipynb"), "a notebook in a folder created after start")

    os.rename(sub / "nb.ipynb", sub / "renamed.ipynb")
    wait_for(lambda: project.versions("later/deeper/renamed.ipynb") and not project.versions("later/deeper/nb.ipynb"),
             "history to move with the file")

    for skipped in (".ipynb_checkpoints/nb-checkpoint.ipynb", ".hidden/nb.ipynb", ".~nb.ipynb"):
        (project.root / skipped).parent.mkdir(parents=True, exist_ok=True)
        put(project, skipped, v0)
    os.unlink(sub / "renamed.ipynb")
    wait_for(lambda: project.versions("later/deeper/renamed.ipynb")[-1].kind == "deleted", "the deletion to be recorded")
    with Store.open(project.root) as store:
        assert store.tracked() == []
    assert not (sub / "renamed.ipynb").exists(), "a deleted notebook is never recreated"


def test_partial_write_is_waited_out_never_overwritten(project: Project) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(3)))
    data = notebook_io.dumps(edited(v0, 1, "finished")).encode()
    path = project.root / "nb.ipynb"
    with open(path, "wb") as f:  # half a file, closed: the watcher must not touch it
        f.write(data[: len(data) // 2])
    time.sleep(0.5)
    assert path.read_bytes() == data[: len(data) // 2]
    path.write_bytes(data)
    wait_for(lambda: project.settled("nb.ipynb") and len(project.versions("nb.ipynb")) == 2, "the finished save")
    assert project.read("nb.ipynb") == edited(v0, 1, "finished")


@pytest.mark.parametrize("copy_name", [
    "nb.sync-conflict-20261130-101500-ABCDEF1.ipynb",  # Syncthing
    "nb (Ana's conflicted copy 2026-11-30).ipynb",  # Dropbox
])
def test_sync_tool_conflict_copy_is_merged_then_removed(project: Project, copy_name: str) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    project.save("nb.ipynb", edited(v0, 1, "this device"), style="rename")
    put(project, copy_name, edited(v0, 8, "the other device"))  # the sync tool keeps the loser beside the file
    wait_for(lambda: not (project.root / copy_name).exists(), "the copy to be merged and removed")
    final = sources(project.read("nb.ipynb"))
    assert [final[1], final[8]] == ["this device", "the other device"]
    kinds = [v.kind for v in project.versions("nb.ipynb")]
    assert "conflict-copy" in kinds and kinds[-1] == "merged"
    assert project.versions(copy_name) == []


def test_declared_base_is_used_instead_of_inference(project: Project) -> None:
    from nbmergesave import declare

    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    mine = edited(v0, 1, "mine")
    project.save("nb.ipynb", mine)
    # A sync tool writes a version that already holds "mine" (so inference would call it an
    # ordinary save) but declares it was made from v0: the watcher must merge against v0.
    theirs = edited(edited(v0, 1, "mine"), 4, "theirs")
    theirs["cells"][1]["source"] = "x1 = 1"  # it undid "mine": without the declaration this would just win
    data = notebook_io.dumps(theirs).encode()
    declare(project.root / "nb.ipynb", data, base=notebook_io.dumps(v0).encode(), writer="test-sync")
    (project.root / "nb.ipynb").write_bytes(data)
    # the merge is recorded before it is written: wait for the file to hold it
    wait_for(lambda: any(v.kind == "merged" for v in project.versions("nb.ipynb")) and project.settled("nb.ipynb"),
             "the declared merge")
    final = sources(project.read("nb.ipynb"))
    assert [final[1], final[4]] == ["mine", "theirs"]


def test_a_paired_rename_does_not_hold_back_the_events_behind_it() -> None:
    """watchdog's queue slept out its whole move-pairing delay once a lone IN_MOVED_FROM
    reached its head, even after the IN_MOVED_TO arrived; saves made meanwhile were
    replaced unread. Ours looks again as soon as the pair arrives."""
    import threading

    pytest.importorskip("watchdog.observers.inotify_move_event_grouper")
    from watchdog.observers import inotify_move_event_grouper as grouper

    from nbmergesave.watcher import _pair_moves_promptly

    _pair_moves_promptly()
    queue = grouper.DelayedQueue(3600)  # without the fix, get() would sleep an hour
    queue.put("moved_from", delay=True)
    got: list[str | None] = []
    reader = threading.Thread(target=lambda: got.append(queue.get()), daemon=True)
    reader.start()
    wait_for(lambda: queue._not_empty._waiters, "the reader to wait on the held event")
    queue.remove(lambda e: e == "moved_from")
    queue.put(("moved_from", "moved_to"))  # watchdog pairs the two and queues the pair
    reader.join(timeout=TIMEOUT)
    assert got == [("moved_from", "moved_to")]
    queue.close()


# --- pause and resume: a tool rewrites the folder (issue 12) ------------------

def _taken_in(project: Project, name: str, before: int, data: bytes) -> None:
    import hashlib

    def done() -> bool:
        with Store.open(project.root) as store:
            v = store.on_disk(project.root / name)
        return v is not None and len(project.versions(name)) > before and v.sha256 == hashlib.sha256(data).hexdigest()

    wait_for(done, f"the watcher to take in {name}")


def test_pause_runs_a_tool_whose_writes_are_never_merged_then_resumes(project: Project) -> None:
    v0 = project.start_with("nb.ipynb", notebook(*numbered(10)))
    project.save("nb.ipynb", edited(v0, 2, "w1 edit of cell 2"))
    restored = notebook_io.dumps(edited(v0, 7, "from the backup")).encode()  # looks like a stale writer's save
    before = len(project.versions("nb.ipynb"))
    tool = f"import sys; open(sys.argv[1], 'wb').write({restored!r})"
    run = subprocess.run([sys.executable, "-m", "nbmergesave", "pause", str(project.root), "--",
                          sys.executable, "-c", tool, str(project.root / "nb.ipynb")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    _taken_in(project, "nb.ipynb", before, restored)
    assert (project.root / "nb.ipynb").read_bytes() == restored
    assert [v.kind for v in project.versions("nb.ipynb")][-1] == "paused"
    assert "merged" not in [v.kind for v in project.versions("nb.ipynb")]
    assert not (project.root / ".nbmergesave" / "paused").exists()  # resumed, even without being told
    # resumed: the same kind of stale save merges again
    project.save("nb.ipynb", edited(v0, 9, "stale writer, cell 9"))
    assert sources(project.read("nb.ipynb"))[7::2] == ["from the backup", "stale writer, cell 9"]
    assert [v.kind for v in project.versions("nb.ipynb")].count("merged") == 1
    assert "paused (" in project.output() and "resumed (" in project.output()


def test_pause_exit_code_is_the_tools(project: Project) -> None:
    put(project, "nb.ipynb", notebook(*numbered(10)))
    project.start()
    run = subprocess.run([sys.executable, "-m", "nbmergesave", "pause", str(project.root), "--",
                          sys.executable, "-c", "raise SystemExit(3)"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3
    assert not (project.root / ".nbmergesave" / "paused").exists()


def test_pause_while_a_path_exists_in_event_order(project: Project) -> None:
    """The marker is removed right after the tool's write: the write is still the tool's."""
    v0 = notebook(*numbered(10))
    put(project, "nb.ipynb", v0)
    marker = project.root / ".restoring"
    project.start("--pause-while", str(marker))
    project.save("nb.ipynb", edited(v0, 2, "w1 edit of cell 2"))
    before = len(project.versions("nb.ipynb"))
    restored = notebook_io.dumps(edited(v0, 7, "from the backup")).encode()
    marker.touch()
    (project.root / "nb.ipynb").write_bytes(restored)
    marker.unlink()
    _taken_in(project, "nb.ipynb", before, restored)
    assert (project.root / "nb.ipynb").read_bytes() == restored
    assert [v.kind for v in project.versions("nb.ipynb")][-1] == "paused"


def test_pause_and_resume_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    bare = tmp_path / "bare"
    bare.mkdir()
    result = runner.invoke(cli, ["pause", str(bare)])
    assert result.exit_code == 2 and "no version store" in result.output and "hint:" in result.output
    root = tmp_path / "root"
    root.mkdir()
    Store.open(root).close()
    result = runner.invoke(cli, ["pause", str(root)], catch_exceptions=False)
    assert result.exit_code == 0 and "paused: saves in" in result.output
    assert (root / ".nbmergesave" / "paused").exists()
    result = runner.invoke(cli, ["resume", str(root)], catch_exceptions=False)
    assert result.output == f"resumed: {root}\n"
    result = runner.invoke(cli, ["resume", str(root)], catch_exceptions=False)
    assert result.exit_code == 0 and result.output == f"{root} was not paused\n"


def test_a_save_a_plain_servers_read_stepped_back_is_merged_forward(project: Project) -> None:
    """A plain jupyter_server's GET found a save half written in place and put its ``.~`` copy back; the save
    finished into ``nb.ipynb.invalid``. The watcher merges it forward: on disk again, and in the history."""
    v0 = project.start_with("nb.ipynb", notebook(*numbered(4)))
    wait_for(lambda: project.settled("nb.ipynb"), "the first sighting")
    save, before = notebook_io.dumps(edited(v0, 2, "x2 = 'saved'")).encode(), notebook_io.dumps(v0).encode()
    stepped_back_by_a_plain_server(project.root, before, save)
    try:
        wait_for(lambda: (project.root / "nb.ipynb").read_bytes() == save and project.settled("nb.ipynb"),
                 "the save merged forward", timeout=15)
    except AssertionError as e:
        files = sorted(p.name for p in project.root.iterdir())
        raise AssertionError(f"{e}\nfiles: {files}\nwatcher:\n{project.output()}\nhistory: "
                             f"{[(v.version, v.kind, v.sha256[:8]) for v in project.versions('nb.ipynb')]}; "
                             f"before {sha256(before)[:8]}, save {sha256(save)[:8]}, "
                             f"file {sha256((project.root / 'nb.ipynb').read_bytes())[:8]}") from None
    assert "merged forward" in project.output()
    # a merge whose local side is the version put back: a late look at that version is not taken for a revert
    first, *_, last = project.versions("nb.ipynb")
    assert (last.kind, last.base, last.local, last.conflicts) == ("merged", first.version, first.version, 0)
