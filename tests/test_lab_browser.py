"""JupyterLab in a real browser: two people on two servers sharing one folder, tabs on one server.

Servers are started as a user starts them after the README's install (plain
``jupyter lab``: the extensions come from the installed config and bundle);
the browser is Debian's Chromium driven by Playwright. Slow (a minute or two):
the servers and the browser are shared by the tests of this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io

from .conftest import nbm, sources
from .lab import CHROMIUM, Lab, People, Tab, browsing, lab_notebook

pytest.importorskip("jupyterlab")
pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)


class World(People):
    """Two JupyterLab servers on one folder (two hosts sharing it), and the people at one browser."""

    def __init__(self, tmp: Path, browser: Any) -> None:
        super().__init__(browser)
        self.root = tmp / "project"
        self.root.mkdir()
        self.a = Lab(self.root, tmp / "home-a")
        self.b = Lab(self.root, tmp / "home-b")

    def write(self, name: str, nb: dict[str, Any]) -> Path:
        path = self.root / name
        path.write_text(notebook_io.dumps(nb))
        return path

    def close(self) -> None:
        super().close()
        self.a.stop()
        self.b.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from browsing(World, tmp_path_factory.mktemp("lab"))


@pytest.fixture(autouse=True)
def no_page_errors(world: World) -> Iterator[None]:
    """No test may leave an uncaught error in a page (JupyterLab's or ours)."""
    world.errors.clear()
    yield
    # (a tab of the restart test reports its kernel, which the stopped server took along, as dead)
    assert [e for e in world.errors if not e.endswith("Kernel is dead")] == []


def test_two_people_two_servers_clean_overlap(world: World) -> None:
    path = world.write("clean.ipynb", lab_notebook())
    alice, bob = Tab(world.person(), world.a, "clean.ipynb"), Tab(world.person(), world.b, "clean.ipynb")
    bob.js("() => { window.__marker = 1 }")
    bob.select(4)
    kernel = bob.kernel_id()
    bob.edit(4, "bob = 2")  # Bob edits, and before he saves, Alice saves
    alice.edit(1, "alice = 1")
    alice.save()
    bob.save()  # no File Changed dialog
    assert sources(path)[1] == "alice = 1" and sources(path)[4] == "bob = 2"
    # Bob's tab shows the merged notebook in place: no reload, same kernel, same active cell, not dirty
    bob.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[1].getSource() === 'alice = 1'", timeout=5)
    assert bob.sources() == sources(path)
    assert bob.js("() => window.__marker") == 1, "the page was not reloaded"
    assert bob.kernel_id() == kernel
    assert bob.active() == 4
    assert not bob.dirty()
    words = bob.toast("your save was merged")
    assert "1 cell changed" in words and "merged" in words and "Review the merge" in words
    with bob.page.context.expect_page() as review:
        bob.page.locator(".Toastify__toast", has_text="your save was merged").get_by_text("Review the merge").click()
    review.value.wait_for_load_state()
    assert "merge" in review.value.title() and "alice = 1" in review.value.content()
    review.value.close()


@pytest.mark.parametrize("button, expected", [
    ("Keep mine", ["x = 'bob'"]),
    ("Keep theirs", ["x = 'alice'"]),
    ("Keep both", ["x = 'alice'", "x = 'bob'"]),
])
def test_a_conflict_is_settled_with_each_button(world: World, button: str, expected: list[str]) -> None:
    name = f"conflict-{button.split()[1]}.ipynb"
    path = world.write(name, lab_notebook(4))
    alice, bob = Tab(world.person(), world.a, name), Tab(world.person(), world.b, name)
    bob.edit(2, "x = 'bob'")
    alice.edit(2, "x = 'alice'")
    alice.save()
    bob.save()
    words = bob.toast("conflict")
    assert "1 conflict in cell 3 — both changed the same lines" in words
    bar = bob.page.locator(".nbmergesave-conflict")
    bar.wait_for()
    assert [b.inner_text() for b in bar.locator("button").all()] == ["Keep mine", "Keep theirs", "Keep both"]
    assert "<<<<<<< local" in bob.sources()[2]
    bar.get_by_role("button", name=button).click()
    bob.wait("n => window.jupyterapp.shell.currentWidget.model.sharedModel.cells.length === n", arg=3 + len(expected))
    assert bob.sources()[2:2 + len(expected)] == expected
    bob.wait("() => !document.querySelector('.nbmergesave-conflict')")
    bob.page.locator(".Toastify__toast", has_text="1 conflict in cell 3").wait_for(state="detached")  # settled: gone
    bob.save()
    assert sources(path) == ["x0 = 0", "x1 = 1", *expected, "x3 = 3"]
    listed = nbm("conflicts", str(world.root / name), "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed


def test_a_server_restart_between_load_and_save_keeps_the_other_save(world: World) -> None:
    path = world.write("restart.ipynb", lab_notebook())
    alice, bob = Tab(world.person(), world.a, "restart.ipynb"), Tab(world.person(), world.b, "restart.ipynb")
    port, token = world.b.port, world.b.token
    world.b.stop()
    world.b = Lab(world.root, world.b.home, port=port, token=token)  # same address: Bob's tab reconnects
    # JupyterLab may have noticed the server was away ("Server Connection Error"): Bob dismisses it
    bob.wait("() => window.jupyterapp.serviceManager.connectionFailure !== undefined", timeout=5)
    bob.wait("() => fetch('/api/status').then(r => r.status < 500).catch(() => false)", timeout=30)
    for _ in range(3):
        dialog = bob.page.locator(".jp-Dialog", has_text="Server Connection Error")
        if dialog.count() == 0:
            break
        dialog.get_by_role("button").last.click()
    bob.edit(5, "bob = 2")
    alice.edit(0, "alice = 1")
    alice.save()
    bob.save()
    assert sources(path)[0] == "alice = 1" and sources(path)[5] == "bob = 2"
    bob.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[0].getSource() === 'alice = 1'", timeout=5)
    assert "without a known base" not in world.b.output(), "the base travelled with the save"
    assert "restart.ipynb changed on disk since it was loaded; merged cleanly" in world.b.output()


def test_two_tabs_on_one_server_follow_each_other(world: World) -> None:
    path = world.write("tabs.ipynb", lab_notebook())
    person = world.person()
    one, two = Tab(person, world.a, "tabs.ipynb"), Tab(person, world.a, "tabs.ipynb")
    one.edit(2, "from_tab_one = 1")
    one.save()
    two.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[2].getSource() === 'from_tab_one = 1'")
    assert not two.dirty()
    two.toast("saved elsewhere")
    two.edit(3, "from_tab_two = 2")
    two.save()
    one.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[3].getSource() === 'from_tab_two = 2'")
    assert sources(path)[2:4] == ["from_tab_one = 1", "from_tab_two = 2"]


def test_a_tab_dirty_only_from_opening_still_follows(world: World) -> None:
    """JupyterLab writes the kernel's language_info into a notebook without it, which marks the tab
    dirty on opening; with no cell edited, the tab still follows another tab's save."""
    nb = lab_notebook()
    del nb["metadata"]["language_info"]
    path = world.write("opened.ipynb", nb)
    person = world.person()
    one, two = Tab(person, world.a, "opened.ipynb"), Tab(person, world.a, "opened.ipynb")
    two.wait("() => window.jupyterapp.shell.currentWidget.model.dirty")
    one.edit(1, "from_one = 1")
    one.save()
    two.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[1].getSource() === 'from_one = 1'")
    two.save()  # its language_info is saved, nothing else changes
    assert sources(path)[1] == "from_one = 1"
    assert "language_info" in notebook_io.read_notebook(path)["metadata"]


def test_a_dirty_tab_keeps_its_edits_and_merges_on_its_save(world: World) -> None:
    path = world.write("dirty.ipynb", lab_notebook())
    person = world.person()
    dirty, other = Tab(person, world.a, "dirty.ipynb"), Tab(person, world.a, "dirty.ipynb")
    bob = Tab(world.person(), world.b, "dirty.ipynb")
    dirty.edit(0, "unsaved = 1")
    bob.edit(5, "bob = 5")
    bob.save()
    other.edit(3, "other = 3")
    other.save()  # merged with Bob's save
    other.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[5].getSource() === 'bob = 5'")
    dirty.toast("Your next save merges")
    assert dirty.dirty() and dirty.sources()[0] == "unsaved = 1" and dirty.sources()[5] == "x5 = 5"
    dirty.save()
    assert sources(path) == ["unsaved = 1", "x1 = 1", "x2 = 2", "other = 3", "x4 = 4", "bob = 5"]
    dirty.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[5].getSource() === 'bob = 5'")
    assert not dirty.dirty()


def test_outputs_are_kept_and_shown(world: World) -> None:
    path = world.write("outputs.ipynb", lab_notebook())
    alice, bob = Tab(world.person(), world.a, "outputs.ipynb"), Tab(world.person(), world.b, "outputs.ipynb")
    bob.edit(1, "print('from bob', 6 * 7)")
    bob.run(1)
    bob.page.locator(".jp-OutputArea-output", has_text="from bob 42").wait_for()
    alice.edit(4, "alice = 4")
    alice.save()
    bob.save()
    saved = notebook_io.read_notebook(path)
    assert saved["cells"][1]["outputs"][0]["text"] == "from bob 42\n" and saved["cells"][4]["source"] == "alice = 4"
    bob.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[4].getSource() === 'alice = 4'")
    assert bob.page.locator(".jp-OutputArea-output", has_text="from bob 42").count() == 1
    alice.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[1].getSource().startsWith('print')")
    alice.page.locator(".jp-OutputArea-output", has_text="from bob 42").wait_for()


def test_a_file_that_is_no_longer_a_notebook_still_warns(world: World) -> None:
    path = world.write("broken.ipynb", lab_notebook())
    tab = Tab(world.person(), world.a, "broken.ipynb")
    path.write_text("this is not a notebook any more")
    tab.edit(0, "mine = 1")
    tab.page.keyboard.press("Control+s")
    dialog = tab.page.locator(".jp-Dialog")
    dialog.wait_for()
    assert "File Changed" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()


def test_scroll_and_active_cell_stay_where_they_were(world: World) -> None:
    path = world.write("long.ipynb", lab_notebook(40))
    alice, bob = Tab(world.person(), world.a, "long.ipynb"), Tab(world.person(), world.b, "long.ipynb")
    bob.edit(30, "bob = 30")
    bob.select(33)
    scroller = "window.jupyterapp.shell.currentWidget.content.outerNode"
    before = bob.js(f"() => {scroller}.scrollTop")
    assert before > 0
    alice.edit(0, "alice = 0")
    alice.save()
    bob.save()
    bob.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[0].getSource() === 'alice = 0'")
    assert sources(path)[0] == "alice = 0" and sources(path)[30] == "bob = 30"
    assert bob.active() == 33
    assert abs(bob.js(f"() => {scroller}.scrollTop") - before) < 5


def test_deleted_versus_edited_and_cells_both_inserted_are_settled_in_place(world: World) -> None:
    path = world.write("kinds.ipynb", lab_notebook(4))
    alice, bob = Tab(world.person(), world.a, "kinds.ipynb"), Tab(world.person(), world.b, "kinds.ipynb")
    cells = "window.jupyterapp.shell.currentWidget.model.sharedModel.cells"
    bob.edit(2, "x2 = 'bob edited'")
    bob.select(3)
    bob.page.keyboard.press("b")
    bob.wait(f"() => {cells}.length === 5")
    bob.edit(4, "bob_new = 1")
    alice.select(2)
    alice.page.keyboard.press("d")
    alice.page.keyboard.press("d")
    alice.wait(f"() => {cells}.length === 3")
    alice.select(2)
    alice.page.keyboard.press("b")
    alice.wait(f"() => {cells}.length === 4")
    alice.edit(3, "alice_new = 1")
    alice.save()
    bob.save()
    # cell 4: the cell Alice deleted and Bob edited (a note cell before it); cell 6: the first of three marker cells
    assert "2 conflicts, in cells 4, 6" in bob.toast("2 conflicts")
    bars = bob.page.locator(".nbmergesave-conflict")
    bars.nth(1).wait_for()
    assert "someone else deleted this cell, and you edited it" in bars.nth(0).inner_text()
    assert "both added cells here" in bars.nth(1).inner_text()
    bars.nth(0).get_by_role("button", name="Keep mine").click()  # the edited cell stays, without the marker
    # (its bar is gone before the next click: until the bars are redrawn, the first is still the settled one,
    # whose buttons do nothing now)
    bob.wait("() => document.querySelectorAll('.nbmergesave-conflict').length === 1")
    bars = bob.page.locator(".nbmergesave-conflict")
    bars.first.get_by_role("button", name="Keep both").click()  # both new cells, without marker cells
    bob.wait("() => !document.querySelector('.nbmergesave-conflict')")
    bob.save()
    assert sources(path) == ["x0 = 0", "x1 = 1", "x2 = 'bob edited'", "x3 = 3", "alice_new = 1", "bob_new = 1"]


def test_metadata_both_changed_merges_without_a_conflict(world: World) -> None:
    """Both change a cell's tags and the notebook's metadata (through the model: JupyterLab's
    property inspector is a sidebar): tags merge as sets, a key both set takes the later save's
    value (the merge's rule), so the tab shows a clean merge in place and nothing to settle."""
    nb = lab_notebook(3)
    nb["cells"][1]["metadata"]["tags"] = ["x"]
    path = world.write("metadata.ipynb", nb)
    alice, bob = Tab(world.person(), world.a, "metadata.ipynb"), Tab(world.person(), world.b, "metadata.ipynb")
    change = ("who => { const m = window.jupyterapp.shell.currentWidget.model.sharedModel;"
              " m.getCell(1).setMetadata('tags', [who]); m.setMetadata('owner', who) }")
    bob.js(change, "bob")
    alice.js(change, "alice")
    alice.save()
    bob.save()
    assert "conflict" not in bob.toast("your save was merged")
    assert bob.page.locator(".nbmergesave-conflict").count() == 0
    saved = notebook_io.read_notebook(path)
    assert sorted(saved["cells"][1]["metadata"]["tags"]) == ["alice", "bob"]
    assert saved["metadata"]["owner"] == "bob" and "nbdime-conflicts" not in saved["metadata"]
    bob.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.getCell(1).getMetadata('tags').length === 2")
