"""Writers outside Jupyter (agents, scripts, git) under a real, plainly started ``jupyter lab`` (issue 23).

The server watches the folder it serves: a notebook written there by anything
but this server is merged with what was saved through it, git's writes are
recorded as git's (never merged), and the state route the tabs poll says who
made the version on disk. Here over HTTP, as a tab's requests; the browser
side is in tests/test_outside_writers_browser.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io
from nbmergesave.store import Store, sha256

from .conftest import edited, notebook, numbered, sources, stop_process, wait_for
from .git import git
from .lab import Lab

pytest.importorskip("jupyterlab")

TIMEOUT = 30.0


class Tab:
    """What a JupyterLab tab asks of the server: load (the server tells it the hash), save with that base."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab, self.name = lab, name
        model = lab.request("GET", f"/api/contents/{name}")
        self.content, self.base = model["content"], model["nbmergesave"]["sha256"]

    def save(self, index: int, text: str) -> dict[str, Any]:
        self.content = edited(self.content, index, text)
        reply = self.lab.request("PUT", f"/api/contents/{self.name}", {
            "type": "notebook", "format": "json", "content": self.content, "nbmergesave_base": self.base})
        self.base = reply["nbmergesave"]["sha256"]
        return reply  # type: ignore[no-any-return]

    def save_recorded(self, index: int, text: str) -> dict[str, Any]:
        """Save, then wait until the server's watcher has recorded that save: its state."""
        self.save(index, text)
        return wait_for(lambda: self.settled(), "the save recorded", TIMEOUT)  # type: ignore[no-any-return]

    def state(self) -> dict[str, Any]:
        return self.lab.request("GET", f"/nbmergesave/api/state?path={self.name}")  # type: ignore[no-any-return]

    def settled(self) -> dict[str, Any] | None:
        """The state once the server's watcher is done with the file as it is now."""
        state = self.state()
        return state if not state["settling"] and state["by"] is not None else None


# --- the ways outside writers write a file ---------------------------------------

def write_in_place(path: Path, nb: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:  # truncate, write, close: as most scripts do
        f.write(notebook_io.dumps(nb))


def write_by_rename(path: Path, nb: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # as editors and agents that write safely do
    tmp.write_text(notebook_io.dumps(nb), encoding="utf-8")
    os.replace(tmp, path)


def write_with_nbformat(path: Path, nb: dict[str, Any]) -> None:
    import nbformat

    nbformat.write(nbformat.from_dict(nb), str(path))


WRITERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "in-place": write_in_place, "rename": write_by_rename, "nbformat.write": write_with_nbformat}


# --- servers -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One plain ``jupyter lab`` (watching its folder, the default) for the tests of this module that share it."""
    tmp = tmp_path_factory.mktemp("outside")
    root = tmp / "project"
    root.mkdir()
    server = Lab(root, tmp / "home")
    try:
        yield server
    finally:
        server.stop()


def opened(lab: Lab, name: str) -> tuple[Path, Tab, dict[str, Any]]:
    """``name`` written with six numbered cells and open in a person's tab; with the notebook as an agent read it
    then (before anything the tab saves)."""
    path = lab.root / name
    write_in_place(path, notebook(*numbered(6)))
    return path, Tab(lab, name), notebook_io.parse_notebook(path.read_bytes())


def ready(lab: Lab) -> None:
    wait_for(lambda: "for writes made outside Jupyter (ready in" in lab.output(), "the server's watcher", TIMEOUT)


def merges(root: Path, name: str) -> list[Any]:
    with Store.open(root) as store:
        return [v for v in store.history(root / name) if v.kind == "merged"]


@pytest.mark.parametrize("how", list(WRITERS))
def test_an_outside_write_after_a_saved_edit_keeps_both(lab: Lab, how: str) -> None:
    ready(lab)
    name = f"agent-{how.replace('.', '-')}.ipynb"
    path, tab, loaded = opened(lab, name)  # loaded: what the agent read, a little earlier
    tab.save_recorded(1, "person = 1")
    WRITERS[how](path, edited(loaded, 4, "agent = 4"))  # the agent's version: made before the person's save
    wait_for(lambda: sources(path)[1] == "person = 1" and sources(path)[4] == "agent = 4",
             "the file holding both edits", TIMEOUT)
    notebook_io.validate(notebook_io.read_notebook(path))
    state = wait_for(lambda: tab.settled(), "the merge settled", TIMEOUT)
    assert state["by"] == "outside" and state["sha256"] == sha256(path.read_bytes())
    assert state["merge"]["local"] == tab.base  # merged with what this tab saved: its words say "your saved edits"
    assert state["merge"]["conflicts"] == 0
    [merged] = merges(lab.root, name)
    assert merged.sha256 == sha256(path.read_bytes())
    assert f"merged {path}" in lab.output()


def test_an_outside_write_made_from_the_saved_version_replaces_it(lab: Lab) -> None:
    """An agent that read the file after the person's save: nothing to merge; the tab follows, told who wrote."""
    ready(lab)
    path, tab, _ = opened(lab, "fresh.ipynb")
    tab.save_recorded(1, "person = 1")
    write_in_place(path, edited(notebook_io.read_notebook(path), 4, "agent = 4"))
    state = wait_for(lambda: (s := tab.settled()) and s["sha256"] == sha256(path.read_bytes()) and s,
                     "the write recorded", TIMEOUT)
    assert state["by"] == "outside" and state["merge"] is None
    assert sources(path)[1] == "person = 1" and sources(path)[4] == "agent = 4"
    assert merges(lab.root, "fresh.ipynb") == []


def test_the_servers_own_saves_are_not_merged_again(lab: Lab) -> None:
    ready(lab)
    path, tab, _ = opened(lab, "own.ipynb")
    for i in range(3):
        state = tab.save_recorded(i, f"save {i}")
        assert state["by"] == "jupyter" and state["sha256"] == tab.base
    assert merges(lab.root, "own.ipynb") == []
    assert sources(path)[:3] == ["save 0", "save 1", "save 2"]


def test_a_conflicting_outside_write_is_marked_inline(lab: Lab) -> None:
    ready(lab)
    path, tab, loaded = opened(lab, "clash.ipynb")
    tab.save_recorded(2, "x2 = 'person'")
    write_in_place(path, edited(loaded, 2, "x2 = 'agent'"))
    state = wait_for(lambda: (s := tab.settled()) and s["merge"] and s, "the merge", TIMEOUT)
    assert state["by"] == "outside" and state["merge"]["conflicts"] == 1
    assert sources(path)[2] == "<<<<<<< local\nx2 = 'person'\n=======\nx2 = 'agent'\n>>>>>>> remote"


def test_other_files_and_symlinks_out_of_the_root_are_left_alone(lab: Lab, tmp_path: Path) -> None:
    ready(lab)
    outside = tmp_path / "elsewhere.ipynb"
    write_in_place(outside, notebook(*numbered(6)))
    link = lab.root / "link.ipynb"
    link.symlink_to(outside)
    text = lab.root / "notes.txt"
    text.write_text("not a notebook")
    text.write_text("still not a notebook")
    before = outside.read_bytes()
    write_in_place(outside, edited(notebook(*numbered(6)), 1, "written through the real file"))
    write_in_place(link, edited(notebook(*numbered(6)), 2, "written through the link"))  # follows the link: the target changes
    wait_for(lambda: "link.ipynb: is a symlink to a file outside the watched folders; left alone" in lab.output(),
             "the watcher refusing the link", TIMEOUT)
    assert sources(outside)[2] == "written through the link" and sources(outside)[1] == "x1 = 1"
    assert outside.read_bytes() != before
    assert text.read_text() == "still not a notebook"
    with Store.open(lab.root) as store:
        assert "link.ipynb" not in store.tracked(lab.root) and "notes.txt" not in store.tracked(lab.root)


def test_a_cli_watcher_on_the_same_folder_never_merges_the_write_twice(lab: Lab, tmp_path: Path) -> None:
    ready(lab)
    status = tmp_path / "status.json"
    proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(lab.root), "--status-file", str(status)],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(status.exists, "the CLI watcher", TIMEOUT)
        path, tab, loaded = opened(lab, "both.ipynb")
        tab.save_recorded(1, "person = 1")
        write_by_rename(path, edited(loaded, 4, "agent = 4"))
        wait_for(lambda: sources(path)[1] == "person = 1" and sources(path)[4] == "agent = 4", "both edits", TIMEOUT)
        written = time.time()

        def idle() -> bool:
            info = json.loads(status.read_text())
            return info["time"] > written + 0.5 and info["pending"] == 0

        wait_for(idle, "the CLI watcher idle", TIMEOUT)
        wait_for(lambda: tab.settled(), "the server's watcher idle", TIMEOUT)
        found = merges(lab.root, "both.ipynb")
        assert len({v.sha256 for v in found}) == 1, found  # one merge result, whichever watcher wrote it
        assert sources(path)[1] == "person = 1" and sources(path)[4] == "agent = 4"
        assert json.loads(status.read_text())["errors"] == 0
    finally:
        stop_process(proc)


def test_the_trait_off_keeps_todays_behaviour(tmp_path: Path) -> None:
    """``c.NbMergeSave.watch_root = False``: an outside write replaces the file (only saves through the server
    are merged, with what is on disk then); the state route does not know who wrote."""
    root = tmp_path / "project"
    root.mkdir()
    server = Lab(root, tmp_path / "home", args=("--NbMergeSave.watch_root=False",))
    try:
        assert "not watching the server's folder (c.NbMergeSave.watch_root = False)" in server.output()
        path = root / "nb.ipynb"
        write_in_place(path, notebook(*numbered(6)))
        tab = Tab(server, "nb.ipynb")
        loaded = notebook_io.parse_notebook(path.read_bytes())
        tab.save(1, "person = 1")
        write_in_place(path, edited(loaded, 4, "agent = 4"))
        state = tab.state()
        assert state["by"] is None and state["settling"] is False and state["merge"] is None
        assert sources(path)[1] == "x1 = 1", "the person's saved edit is gone from the file, as before"
        # the next save through the server merges with what is on disk, which no longer has the edit:
        # the outside write took it back, and the merge keeps that (why the server now watches)
        tab.save(2, "person = 2")
        assert sources(path)[1:5] == ["x1 = 1", "person = 2", "x3 = 3", "agent = 4"]
    finally:
        server.stop()
    assert "Traceback" not in server.output()


# --- git under the server ----------------------------------------------------------------

def test_git_checkout_and_pull_under_an_open_notebook(tmp_path: Path) -> None:
    """The server serves a git work tree (the store created in it): what git writes is shown as it is,
    recorded as git's, never merged; ``git status`` stays clean (the store keeps itself out of git)."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    write_in_place(upstream / "nb.ipynb", notebook(*numbered(6)))
    git(upstream, "add", "nb.ipynb")
    git(upstream, "commit", "-qm", "one")
    git(upstream, "switch", "-qc", "other")
    write_in_place(upstream / "nb.ipynb", edited(notebook(*numbered(6)), 2, "x2 = 'other branch'"))
    git(upstream, "commit", "-qam", "other")
    git(upstream, "switch", "-q", "main")
    repo = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(upstream), str(repo))
    git(repo, "branch", "-q", "other", "origin/other")
    server = Lab(repo, tmp_path / "home")
    try:
        ready(server)
        assert (repo / ".nbmergesave" / ".gitignore").read_text().splitlines()[-1] == "*"
        path = repo / "nb.ipynb"
        tab = Tab(server, "nb.ipynb")
        wait_for(lambda: tab.settled(), "the loaded version recorded", TIMEOUT)

        git(repo, "checkout", "-q", "other")
        state = wait_for(lambda: (s := tab.settled()) and s["sha256"] != tab.base and s, "git's version seen", TIMEOUT)
        assert state["by"] == "git" and state["merge"] is None
        assert path.read_bytes() == git(repo, "show", "other:nb.ipynb").encode()
        assert git(repo, "status", "--porcelain") == ""

        git(repo, "checkout", "-q", "main")
        write_in_place(upstream / "nb.ipynb", edited(notebook(*numbered(6)), 5, "x5 = 'pulled'"))
        git(upstream, "commit", "-qam", "upstream")
        tab = Tab(server, "nb.ipynb")
        git(repo, "pull", "-q", "--ff-only")
        state = wait_for(lambda: (s := tab.settled()) and s["sha256"] != tab.base and s, "the pull seen", TIMEOUT)
        assert state["by"] == "git" and state["merge"] is None
        assert path.read_bytes() == git(repo, "show", "HEAD:nb.ipynb").encode()
        assert sources(path)[5] == "x5 = 'pulled'"
        assert git(repo, "status", "--porcelain") == ""
        assert merges(repo, "nb.ipynb") == []
    finally:
        server.stop()
    assert "Traceback" not in server.output()
    assert git(repo, "status", "--porcelain") == ""


def test_the_watcher_stops_with_the_server(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    server = Lab(root, tmp_path / "home")
    ready(server)
    server.proc.terminate()
    assert server.proc.wait(timeout=30) == 0
    server.stop()
    out = server.output()
    assert "Shutting down" in out and "Traceback" not in out and "did not stop cleanly" not in out
