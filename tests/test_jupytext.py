"""Jupytext pairs (issue 24): an edit of a notebook's paired text file is merged, never overwritten.

Real Jupytext, real `jupyter_server` processes (Jupytext's server extension and ours, as a user has them
after ``pip install``), a real `nbmergesave watch` process, and one browser test. In every case no edit
is lost from either file, and the pair ends consistent (the text file says what the ``.ipynb`` says).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io, pairs
from nbmergesave.store import Store, sha256

from .conftest import cell, notebook, stop_process, wait_for
from .servers import JupyterProcess

jupytext = pytest.importorskip("jupytext", reason="Jupytext is not installed (pip install -e '.[test]')")
pytest.importorskip("jupyter_server")

#: The formats tried: a percent script and a Markdown document.
FORMATS = ["py:percent", "md"]
OUTPUT = {"name": "stdout", "output_type": "stream", "text": "1\n"}


def paired(root: Path, fmt: str, name: str = "nb") -> tuple[Path, Path]:
    """A notebook paired as ``ipynb,<fmt>``, with an output, and its text file as Jupytext writes it."""
    ext = "." + fmt.split(":")[0]
    nb = notebook(
        cell("# Title", "m1", kind="markdown"),
        cell("x = 1\nprint(x)", "c1", execution_count=1, outputs=[OUTPUT]),
        cell("y = 2", "c2"),
        cell("z = 3", "c3"),
        metadata={"jupytext": {"formats": f"ipynb,{fmt}"},
                  "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                  "language_info": {"name": "python"}})
    ipynb, text = root / f"{name}.ipynb", root / f"{name}{ext}"
    ipynb.write_text(notebook_io.dumps(nb), encoding="utf-8")
    text.write_text(jupytext.writes(jupytext.reads(ipynb.read_text(), fmt="ipynb"), fmt=fmt), encoding="utf-8")
    return ipynb, text


def edit_text(text: Path, old: str, new: str) -> None:
    """Edit the text file in place, as an editor or an agent does."""
    content = text.read_text(encoding="utf-8")
    assert old in content, content
    text.write_text(content.replace(old, new, 1), encoding="utf-8")


def sources(ipynb: Path) -> list[str]:
    return [c["source"] for c in notebook_io.read_notebook(ipynb)["cells"]]


def consistent(ipynb: Path, text: Path) -> bool:
    """The text file says what the .ipynb says (Jupytext would read the same notebook from either)."""
    pair = pairs.pair_of(ipynb)
    assert pair is not None
    return pairs.combined(pair, text, text.read_bytes(), ipynb.read_bytes()) is None


class Server(JupyterProcess):
    """jupyter_server with Jupytext's server extension and ours."""

    def __init__(self, root: Path, config_dir: Path) -> None:
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"jupyterlab_jupytext": True, "nbmergesave": True}}}))
        super().__init__("jupyter_server", root, config_dir,
                         {"JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_RUNTIME_DIR": str(config_dir / "runtime"),
                          "JUPYTER_DATA_DIR": str(config_dir / "data")})

    def load(self, name: str) -> tuple[dict[str, Any], str | None]:
        """A client's load: the notebook, and the hash of it the server vouches for (the tab's base)."""
        model = self.request("GET", f"/api/contents/{name}")
        return model["content"], (model.get("nbmergesave") or {}).get("sha256")

    def put(self, name: str, nb: dict[str, Any], base: str | None) -> dict[str, Any]:
        body = {"type": "notebook", "format": "json", "content": nb, **({"nbmergesave_base": base} if base else {})}
        return self.request("PUT", f"/api/contents/{name}", body)  # type: ignore[no-any-return]


class Watch:
    """A real `nbmergesave watch` process over ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root.parent / "watcher.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "600"],
                                         stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: "watching" in self.output(), "the watcher to start")

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def settled(self, ipynb: Path) -> bool:
        with Store.open(self.root) as store:
            current = store.on_disk(ipynb)
        return current is not None and current.sha256 == sha256(ipynb.read_bytes())

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, list[Any]]]:
    """A project folder, and the processes a test starts in it (stopped after it)."""
    root = tmp_path / "project"
    root.mkdir()
    started: list[Any] = []
    yield root, started
    for p in reversed(started):
        p.stop()


def with_edit(nb: dict[str, Any], index: int, source: str) -> dict[str, Any]:
    nb = copy.deepcopy(nb)
    nb["cells"][index]["source"] = source
    return nb


# --- a tab's save after the text file was edited ------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("order", ["save-hook", "watcher-first"])
def test_text_edited_while_a_tab_is_open_then_the_tab_saves_another_cell(project: tuple[Path, list[Any]], fmt: str,
                                                                           order: str) -> None:
    """The tab loaded before the text edit; its save of another cell keeps the text edit in both files.
    ``save-hook``: no watcher runs, the save itself takes the text edit in; ``watcher-first``: `nbmergesave
    watch` has taken it into the .ipynb before the tab saves."""
    root, started = project
    ipynb, text = paired(root, fmt)
    server = Server(root, root.parent / "jupyter")
    started.append(server)
    assert "[Jupytext Server Extension] Deriving" in server.output()  # Jupytext's contents manager, wrapped by ours
    nb, base = server.load("nb.ipynb")
    assert base == sha256(ipynb.read_bytes())  # a paired notebook's load gives the tab an exact base too
    if order == "watcher-first":
        watch = Watch(root)
        started.append(watch)
    edit_text(text, "y = 2", "y = 2  # edited in the text file")
    if order == "watcher-first":
        wait_for(lambda: "edited in the text file" in ipynb.read_text() and watch.settled(ipynb),
                 "the watcher to take the text edit into the .ipynb")
    reply = server.put("nb.ipynb", with_edit(nb, 3, "z = 3  # edited in the tab"), base)

    assert reply["nbmergesave"]["merged"] is True
    assert reply["nbmergesave"]["conflicts"] == []
    assert sources(ipynb) == ["# Title", "x = 1\nprint(x)", "y = 2  # edited in the text file",
                              "z = 3  # edited in the tab"]
    content = text.read_text()
    assert "y = 2  # edited in the text file" in content and "z = 3  # edited in the tab" in content
    assert notebook_io.read_notebook(ipynb)["cells"][1]["outputs"] == [OUTPUT]  # outputs stay in the .ipynb
    assert consistent(ipynb, text)
    with Store.open(root) as store:  # the text edit is a version of the notebook, under its key
        assert any(b"edited in the text file" in store.content(v) and b"edited in the tab" not in store.content(v)
                   for v in store.history(ipynb) if v.sha256)


# --- no one has the notebook open ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_text_edited_while_no_one_has_the_notebook_open(project: tuple[Path, list[Any]], fmt: str) -> None:
    """`nbmergesave watch` records the text edit as a version of the notebook, and the .ipynb follows."""
    root, started = project
    ipynb, text = paired(root, fmt)
    watch = Watch(root)
    started.append(watch)
    wait_for(lambda: watch.settled(ipynb), "the first scan")
    with Store.open(root) as store:
        before = len(store.history(ipynb))
    edit_text(text, "z = 3", "z = 3  # edited by an agent\nw = 4")

    wait_for(lambda: "edited by an agent" in ipynb.read_text() and watch.settled(ipynb), "the .ipynb to follow")
    assert sources(ipynb)[3] == "z = 3  # edited by an agent\nw = 4"
    assert notebook_io.read_notebook(ipynb)["cells"][1]["outputs"] == [OUTPUT]
    assert "z = 3  # edited by an agent\nw = 4" in text.read_text()  # the text file keeps the edit as written
    assert consistent(ipynb, text)
    with Store.open(root) as store:
        new = store.history(ipynb)[before:]
        read = [v for v in new if v.kind == "jupytext"]  # the notebook as read from the text file, kept as is
        assert len(read) == 1 and b"edited by an agent" in store.content(read[0])
        assert b"edited by an agent" in store.content(store.on_disk(ipynb))
        assert store.history(text) == []  # versions are kept under the notebook's key only


def test_text_edited_before_the_watcher_starts(project: tuple[Path, list[Any]]) -> None:
    """A text file newer than its .ipynb that says something else is an edit: the first scan takes it in."""
    root, started = project
    ipynb, text = paired(root, "py:percent")
    os.utime(ipynb, ns=(1_000_000_000, 1_000_000_000))  # the .ipynb is older, as when the text was edited since
    edit_text(text, "y = 2", "y = 2  # edited while no watcher ran")
    watch = Watch(root)
    started.append(watch)

    wait_for(lambda: "edited while no watcher ran" in ipynb.read_text() and watch.settled(ipynb), "the first scan")
    assert notebook_io.read_notebook(ipynb)["cells"][1]["outputs"] == [OUTPUT]
    assert consistent(ipynb, text)


def test_an_older_text_file_is_not_taken_for_an_edit(project: tuple[Path, list[Any]]) -> None:
    """A text file older than its .ipynb (the .ipynb changed since, by a writer that left the text file as it
    was) is not an edit: the save hook must not undo the .ipynb's newer content with it."""
    root, started = project
    ipynb, text = paired(root, "py:percent")
    server = Server(root, root.parent / "jupyter")
    started.append(server)
    loaded, base = server.load("nb.ipynb")
    nb = notebook_io.read_notebook(ipynb)
    ipynb.write_text(notebook_io.dumps(with_edit(nb, 2, "y = 2  # changed in the .ipynb only")))
    os.utime(text, ns=(1_000_000_000, 1_000_000_000))
    reply = server.put("nb.ipynb", with_edit(loaded, 3, "z = 3  # tab"), base)["nbmergesave"]
    assert reply["merged"] is True and reply["conflicts"] == []
    assert sources(ipynb)[2:] == ["y = 2  # changed in the .ipynb only", "z = 3  # tab"]
    assert consistent(ipynb, text)


def test_ipynb_edited_outside_the_text_file_follows(project: tuple[Path, list[Any]]) -> None:
    """A writer that changes the .ipynb only (a script, an agent): the watcher records it and writes the text
    file from it, so the pair stays consistent (Jupytext would otherwise refuse to open it)."""
    root, started = project
    ipynb, text = paired(root, "md")
    watch = Watch(root)
    started.append(watch)
    wait_for(lambda: watch.settled(ipynb), "the first scan")
    nb = notebook_io.read_notebook(ipynb)
    ipynb.write_text(notebook_io.dumps(with_edit(nb, 2, "y = 2  # changed in the .ipynb only")))
    wait_for(lambda: "changed in the .ipynb only" in text.read_text(), "the text file to follow")
    assert sources(ipynb)[2] == "y = 2  # changed in the .ipynb only"
    assert consistent(ipynb, text)


# --- everyone at once ------------------------------------------------------------------------------

def test_two_tabs_and_the_text_file_edited_at_once(project: tuple[Path, list[Any]]) -> None:
    """Two clients of the server and an agent writing the text file, all at once, five rounds, with the
    watcher running: each appends a line to its own cell each round; at the end every line is in both files."""
    root, started = project
    ipynb, text = paired(root, "py:percent")
    server = Server(root, root.parent / "jupyter")
    started.append(server)
    watch = Watch(root)
    started.append(watch)
    wait_for(lambda: watch.settled(ipynb), "the first scan")
    tabs = {name: list(server.load("nb.ipynb")) for name in ("A", "B")}
    cell_of = {"A": 1, "B": 2}
    rounds = 5
    errors: list[BaseException] = []

    def tab(name: str, i: int, go: threading.Barrier) -> None:
        try:
            nb, base = tabs[name]
            index = cell_of[name]
            mine = with_edit(nb, index, nb["cells"][index]["source"] + f"\n{name.lower()}{i} = {i}")
            go.wait()
            reply = server.put("nb.ipynb", mine, base)["nbmergesave"]
            tabs[name] = [reply["content"] if reply.get("merged") else mine, reply["sha256"]]
        except BaseException as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    def agent(i: int, go: threading.Barrier) -> None:
        try:
            content = text.read_text()
            go.wait()
            text.write_text(content.replace("z = 3", f"z = 3\nt{i} = {i}", 1))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    for i in range(rounds):
        go = threading.Barrier(3)
        threads = [threading.Thread(target=tab, args=("A", i, go)), threading.Thread(target=tab, args=("B", i, go)),
                   threading.Thread(target=agent, args=(i, go))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        wait_for(lambda: watch.settled(ipynb) and consistent(ipynb, text), "the pair to settle", timeout=60)

    final = "\n".join(sources(ipynb))
    content = text.read_text()
    for i in range(rounds):
        for line in (f"a{i} = {i}", f"b{i} = {i}", f"t{i} = {i}"):
            assert line in final and line in content, (line, final)
    assert "<<<<<<<" not in final  # each writer edits its own cell: nothing to settle by hand


# --- a conflict ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_text_edit_that_conflicts_with_the_tabs_edit(project: tuple[Path, list[Any]], fmt: str) -> None:
    """The text file and the tab change the same line: the save reports the conflict and both lines are kept,
    in the .ipynb and in the text file."""
    root, started = project
    ipynb, text = paired(root, fmt)
    server = Server(root, root.parent / "jupyter")
    started.append(server)
    nb, base = server.load("nb.ipynb")
    edit_text(text, "z = 3", "z = 'from the text file'")
    reply = server.put("nb.ipynb", with_edit(nb, 3, "z = 'from the tab'"), base)["nbmergesave"]

    assert reply["merged"] is True and len(reply["conflicts"]) == 1 and reply["conflicts"][0]["kind"] == "source"
    merged = sources(ipynb)[3]
    assert "z = 'from the text file'" in merged and "z = 'from the tab'" in merged and "<<<<<<<" in merged
    content = text.read_text()
    assert "z = 'from the text file'" in content and "z = 'from the tab'" in content and "<<<<<<<" in content
    assert sources(ipynb)[:3] == ["# Title", "x = 1\nprint(x)", "y = 2"]


# --- nothing changes without Jupytext or a pairing ------------------------------------------------

def _watch_in_process(root: Path, marker: Path) -> Any:
    """A Watcher in this process (so Jupytext can be hidden from it); ``marker``'s save tells it caught up."""
    from nbmergesave.watcher import Watcher

    watcher = Watcher([root], debounce=0.01)
    watcher.start()
    return watcher


def _caught_up(watcher: Any, root: Path, marker: Path) -> None:
    """Save ``marker`` and wait until the watcher recorded it: events before it were handled."""
    nb = notebook(cell(f"m = {os.urandom(4).hex()}", "m1"))
    marker.write_text(notebook_io.dumps(nb))
    wait_for(lambda: watcher.pending() == 0 and Store.open(root).on_disk(marker) is not None
             and Store.open(root).on_disk(marker).sha256 == sha256(marker.read_bytes()), "the watcher to catch up")


def test_a_text_file_beside_an_unpaired_notebook_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    ipynb = root / "nb.ipynb"
    ipynb.write_text(notebook_io.dumps(notebook(cell("y = 2", "c1"))))
    script = root / "nb.py"
    script.write_text("y = 2\n")
    original = ipynb.read_bytes()
    watcher = _watch_in_process(root, root / "marker.ipynb")
    try:
        _caught_up(watcher, root, root / "marker.ipynb")
        script.write_text("y = 'an unrelated script'\n")
        _caught_up(watcher, root, root / "marker.ipynb")
        assert ipynb.read_bytes() == original
        assert len(Store.open(root).history(ipynb)) == 1
        assert pairs.pair_of(ipynb) is None
    finally:
        watcher.stop()


def test_without_jupytext_a_paired_text_file_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if Jupytext were not installed: the text file of a paired notebook is just a file."""
    monkeypatch.setattr(pairs, "_available", False)
    root = tmp_path / "project"
    root.mkdir()
    ipynb, text = paired(root, "py:percent")
    original = ipynb.read_bytes()
    assert pairs.pair_of(ipynb) is None and pairs.bring_in(Store.open(root), ipynb, original) is None
    watcher = _watch_in_process(root, root / "marker.ipynb")
    try:
        _caught_up(watcher, root, root / "marker.ipynb")
        edit_text(text, "y = 2", "y = 'not read without Jupytext'")
        _caught_up(watcher, root, root / "marker.ipynb")
        assert ipynb.read_bytes() == original
    finally:
        watcher.stop()


# --- the browser --------------------------------------------------------------------------------

def test_browser_tab_saves_after_the_text_file_was_edited(tmp_path: Path) -> None:
    """JupyterLab with Jupytext: a person edits a cell, an agent edits the paired .py meanwhile, the person
    saves: no dialog, the tab shows both edits, and both files hold both."""
    from .lab import CHROMIUM, Lab, Tab, chromium

    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium")
    root = tmp_path / "project"
    root.mkdir()
    ipynb, text = paired(root, "py:percent")
    lab = Lab(root, tmp_path / "home")
    try:
        with chromium() as browser:
            tab = Tab(browser.new_context(), lab, "nb.ipynb")
            tab.edit(3, "z = 3  # typed in the tab")
            edit_text(text, "y = 2", "y = 2  # written by an agent")
            tab.save()
            tab.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[2].getSource()"
                     " === 'y = 2  # written by an agent'")
            assert tab.sources()[2:] == ["y = 2  # written by an agent", "z = 3  # typed in the tab"]
            assert tab.toast("merged").strip()
    finally:
        lab.stop()
    assert sources(ipynb)[2:] == ["y = 2  # written by an agent", "z = 3  # typed in the tab"]
    content = text.read_text()
    assert "y = 2  # written by an agent" in content and "z = 3  # typed in the tab" in content
    assert consistent(ipynb, text)
