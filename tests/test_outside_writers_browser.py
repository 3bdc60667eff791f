"""Writers outside Jupyter under an open tab, in a real browser (issue 23): JupyterLab and Notebook 7.

Servers are started plainly (``jupyter lab``, ``jupyter notebook``: the
extension and its watcher come from the install); the browser is Debian's
Chromium driven by Playwright, as in tests/test_lab_browser.py. A person's
saved edits and an outside writer's (a script or an agent that read the
notebook a little earlier) both end up in the file and on the screen, and the
notification says who changed the file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io
from nbmergesave.store import Store

from .conftest import edited, sources, wait_for
from .git import git
from .lab import CHROMIUM, PANEL, Lab, NotebookSeven, People, Tab, browsing, lab_notebook

pytest.importorskip("jupyterlab")
pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)

TIMEOUT = 30.0


def write(path: Path, nb: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:  # in place, as most scripts write
        f.write(notebook_io.dumps(nb))


def read_whole(path: Path) -> dict[str, Any] | None:
    try:
        return notebook_io.read_notebook(path)
    except Exception:
        return None


def read_whole_bytes(data: bytes) -> dict[str, Any] | None:
    try:
        return notebook_io.parse_notebook(data)
    except Exception:
        return None


class World(People):
    """A JupyterLab server (more started by the tests that need them), and the people at one browser."""

    def __init__(self, tmp: Path, browser: Any) -> None:
        super().__init__(browser)
        self.tmp = tmp
        self.root = tmp / "project"
        self.root.mkdir()
        self.lab = Lab(self.root, tmp / "home-lab")
        self.servers: list[Any] = [self.lab]

    def server(self, kind: type, root: Path, home: str) -> Any:
        server = kind(root, self.tmp / home)
        self.servers.append(server)
        return server

    def close(self) -> None:
        super().close()
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from browsing(World, tmp_path_factory.mktemp("outside-browser"))


@pytest.fixture(autouse=True)
def no_page_errors(world: World) -> Iterator[None]:
    world.errors.clear()
    yield
    # Notebook 7.6 throws this itself on opening a notebook, with this extension disabled too (tried)
    assert [e for e in world.errors if not ("/notebooks/" in e and e.endswith("(reading 'schema')"))] == []


def watching(server: Any) -> None:
    wait_for(lambda: "for writes made outside Jupyter (ready in" in server.output(), "the server's watcher", TIMEOUT)


def settled(server: Any, name: str) -> dict[str, Any] | None:
    state = server.request("GET", f"/nbmergesave/api/state?path={name}")
    return state if not state["settling"] and state["by"] is not None else None


def saved_then_outside_write(world: World, server: Any, name: str) -> Tab:
    """A person saves cell 1; an agent that read the notebook before that writes cell 4."""
    watching(server)
    path = server.root / name
    write(path, lab_notebook())
    tab = Tab(world.person(), server, name)
    loaded = notebook_io.read_notebook(path)
    tab.edit(1, "person = 1")
    tab.save()
    wait_for(lambda: (s := settled(server, name)) and s["by"] == "jupyter", "the save recorded", TIMEOUT)
    write(path, edited(loaded, 4, "agent = 4"))
    return tab


def test_lab_an_outside_write_after_a_saved_edit(world: World) -> None:
    tab = saved_then_outside_write(world, world.lab, "agent.ipynb")
    path = world.root / "agent.ipynb"
    tab.wait(f"() => {PANEL}.model.sharedModel.cells[4].getSource() === 'agent = 4'", timeout=TIMEOUT)
    assert tab.sources() == sources(path)
    assert sources(path)[1] == "person = 1" and sources(path)[4] == "agent = 4"
    assert not tab.dirty()
    words = tab.toast("changed outside Jupyter")
    assert "agent.ipynb was changed outside Jupyter; merged with your saved edits." in words
    assert "Review the merge" in words
    with tab.page.context.expect_page() as review:
        tab.page.locator(".Toastify__toast", has_text="changed outside Jupyter").get_by_text("Review the merge").click()
    review.value.wait_for_load_state()
    assert "agent = 4" in review.value.content() and "person = 1" in review.value.content()


def test_lab_a_conflicting_outside_write_gets_the_conflict_bar(world: World) -> None:
    watching(world.lab)
    path = world.root / "clash.ipynb"
    write(path, lab_notebook())
    tab = Tab(world.person(), world.lab, "clash.ipynb")
    loaded = notebook_io.read_notebook(path)
    tab.edit(2, "x2 = 'person'")
    tab.save()
    wait_for(lambda: (s := settled(world.lab, "clash.ipynb")) and s["by"] == "jupyter", "the save recorded", TIMEOUT)
    write(path, edited(loaded, 2, "x2 = 'agent'"))
    words = tab.toast("1 conflict in cell 3")
    assert "1 conflict in cell 3. clash.ipynb was changed outside Jupyter; merged with your saved edits." in words
    bar = tab.page.locator(".nbmergesave-conflict")
    bar.wait_for(timeout=TIMEOUT * 1000)
    assert [b.inner_text() for b in bar.locator("button").all()] == ["Keep mine", "Keep theirs", "Keep both"]
    assert "Yours: between <<<<<<< and =======" in bar.inner_text()  # this tab's save is the merge's local side
    bar.get_by_role("button", name="Keep mine").click()
    tab.wait("() => !document.querySelector('.nbmergesave-conflict')")
    assert tab.sources()[2] == "x2 = 'person'"
    tab.save()
    assert sources(path)[2] == "x2 = 'person'"


def test_lab_a_writer_every_second_while_a_person_types_and_saves(world: World) -> None:
    """For 20 s an agent changes cell 4 every second (reading the file, then writing a little later, so
    some of its writes are made from a version older than the person's last save); meanwhile a person
    types in cell 1 and saves. Nothing is lost from the file or from the screen."""
    watching(world.lab)
    name = "loop.ipynb"
    path = world.root / name
    write(path, edited(lab_notebook(), 4, ""))
    tab = Tab(world.person(), world.lab, name)
    stop = threading.Event()
    written: list[str] = []
    failures: list[BaseException] = []

    def agent() -> None:
        try:
            j = 0
            while not stop.is_set():
                # (Jupyter writes a save in place: a read can find it half written, and is tried again)
                nb = wait_for(lambda: read_whole(path), "a whole notebook to read", TIMEOUT)
                time.sleep(0.3)  # thinking
                # Each step adds a line to cell 4. (An agent that rewrote one line with a new value each
                # time could not be told, by content, from a writer that started before its previous
                # write: the base search then takes the older base, and the merge marks a conflict.)
                text = f"agent = {j}"
                nb["cells"][4]["source"] = (nb["cells"][4]["source"] + "\n" + text).strip("\n")
                write(path, nb)
                written.append(text)
                j += 1
                stop.wait(0.7)
        except BaseException as e:  # reported by the test
            failures.append(e)

    thread = threading.Thread(target=agent)
    thread.start()
    typed: list[str] = []
    try:
        began = time.monotonic()
        k = 0
        while time.monotonic() - began < 20:
            text = f"person = {k}"
            tab.edit(1, text)
            tab.save()
            typed.append(text)
            k += 1
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures
    assert len(written) >= 15 and len(typed) >= 5, (len(written), len(typed))
    want = (typed[-1], "\n".join(written))

    def story() -> None:
        """What happened, for the failure's report: every version, and what the server said."""
        with Store.open(world.root) as store:
            for v in store.history(path):
                c = read_whole_bytes(store.content(v)) if v.sha256 else None
                print("version", v.version, v.kind, v.base, v.local, v.remote, v.time,
                      [c["cells"][i]["source"] for i in (1, 4)] if c else None, store.declared_writer(path, v.sha256 or ""))
        print("\n".join(line for line in world.lab.output().splitlines() if "nbmergesave" in line))

    try:
        wait_for(lambda: (sources(path)[1], sources(path)[4]) == want, f"the file holding {want}", TIMEOUT)
    except AssertionError:
        story()
        raise
    wait_for(lambda: (s := settled(world.lab, name)) and s["sha256"] is not None, "the watcher idle", TIMEOUT)
    tab.wait(f"([a, b]) => {PANEL}.model.sharedModel.cells[1].getSource() === a"
             f" && {PANEL}.model.sharedModel.cells[4].getSource() === b", arg=list(want), timeout=TIMEOUT)
    assert tab.sources() == sources(path)
    final = notebook_io.read_notebook(path)
    notebook_io.validate(final)
    assert not any("<<<<<<<" in c["source"] for c in final["cells"])
    # every save of either writer is in the history
    with Store.open(world.root) as store:
        versions = [(v.kind, read_whole_bytes(store.content(v))) for v in store.history(path) if v.sha256]
    # (a half-written file read by the watcher is kept too, as kind "torn", never used as a version)
    assert all(nb is not None for kind, nb in versions if kind != "torn"), [k for k, nb in versions if nb is None]
    seen = {line for _, nb in versions if nb is not None for i in (1, 4) for line in nb["cells"][i]["source"].splitlines()}
    if not (set(typed) <= seen and set(written) <= seen):
        story()
    assert set(typed) <= seen and set(written) <= seen, (set(typed) - seen, set(written) - seen)


def test_lab_git_checkout_and_pull_under_an_open_tab(world: World) -> None:
    upstream = world.tmp / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    write(upstream / "nb.ipynb", lab_notebook())
    (upstream / ".gitignore").write_text(".ipynb_checkpoints/\n")  # JupyterLab's own folder, as projects ignore it
    git(upstream, "add", "nb.ipynb", ".gitignore")
    git(upstream, "commit", "-qm", "one")
    git(upstream, "switch", "-qc", "other")
    write(upstream / "nb.ipynb", edited(lab_notebook(), 2, "x2 = 'other branch'"))
    git(upstream, "commit", "-qam", "other")
    git(upstream, "switch", "-q", "main")
    repo = world.tmp / "repo"
    git(world.tmp, "clone", "-q", str(upstream), str(repo))
    git(repo, "branch", "-q", "other", "origin/other")
    server = world.server(Lab, repo, "home-git")
    watching(server)
    tab = Tab(world.person(), server, "nb.ipynb")
    path = repo / "nb.ipynb"

    git(repo, "checkout", "-q", "other")
    tab.wait(f"() => {PANEL}.model.sharedModel.cells[2].getSource() === \"x2 = 'other branch'\"", timeout=TIMEOUT)
    assert tab.sources() == sources(path)
    assert path.read_bytes() == git(repo, "show", "other:nb.ipynb").encode()
    assert "nb.ipynb was replaced by git; this tab now shows it." in tab.toast("replaced by git")
    assert not tab.dirty()

    git(repo, "checkout", "-q", "main")
    tab.wait(f"() => {PANEL}.model.sharedModel.cells[2].getSource() === 'x2 = 2'", timeout=TIMEOUT)
    write(upstream / "nb.ipynb", edited(lab_notebook(), 5, "x5 = 'pulled'"))
    git(upstream, "commit", "-qam", "upstream")
    git(repo, "pull", "-q", "--ff-only")
    tab.wait(f"() => {PANEL}.model.sharedModel.cells[5].getSource() === \"x5 = 'pulled'\"", timeout=TIMEOUT)
    assert tab.sources() == sources(path)
    assert path.read_bytes() == git(repo, "show", "HEAD:nb.ipynb").encode()
    assert git(repo, "status", "--porcelain") == ""
    with Store.open(repo) as store:
        assert [v for v in store.history(path) if v.kind == "merged"] == []


def test_notebook7_an_outside_write_after_a_saved_edit(world: World) -> None:
    root = world.tmp / "nb7"
    root.mkdir()
    server = world.server(NotebookSeven, root, "home-nb7")
    tab = saved_then_outside_write(world, server, "agent7.ipynb")
    for plugin in ("nbmergesave:merge-save", "nbmergesave:conflicts", "nbmergesave:other-tabs"):
        assert tab.js("p => window.jupyterapp.isPluginActivated(p)", plugin), plugin
    path = root / "agent7.ipynb"
    tab.wait(f"() => {PANEL}.model.sharedModel.cells[4].getSource() === 'agent = 4'", timeout=TIMEOUT)
    assert tab.sources() == sources(path)
    assert sources(path)[1] == "person = 1" and sources(path)[4] == "agent = 4"
    assert not tab.dirty()
    assert "agent7.ipynb was changed outside Jupyter; merged with your saved edits." in tab.toast("changed outside Jupyter")
