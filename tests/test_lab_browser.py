"""JupyterLab in a real browser: two people on two servers sharing one folder, tabs on one server.

Servers are started as a user starts them after the README's install (plain
``jupyter lab``: the extensions come from the installed config and bundle);
the browser is Debian's Chromium driven by Playwright. Slow (a minute or two):
the servers and the browser are shared by the tests of this module.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io
from nbmergesave.store import Store

from .conftest import cell, notebook
from .lab import CHROMIUM, CHROMIUM_ARGS, Lab, Tab

pytest.importorskip("jupyterlab")
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)


class World:
    def __init__(self, tmp: Path, browser: Any) -> None:
        self.root = tmp / "project"
        self.root.mkdir()
        self.browser = browser
        self.a = Lab(self.root, tmp / "home-a")
        self.b = Lab(self.root, tmp / "home-b")
        self.contexts: list[Any] = []

    def person(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1200, "height": 900})
        self.contexts.append(context)
        return context

    def write(self, name: str, nb: dict[str, Any]) -> Path:
        path = self.root / name
        path.write_text(notebook_io.dumps(nb))
        return path

    def close(self) -> None:
        for context in self.contexts:
            try:
                context.close()
            except Exception:
                pass
        self.a.stop()
        self.b.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        w = World(tmp_path_factory.mktemp("lab"), browser)
        try:
            yield w
        finally:
            w.close()
            browser.close()


def start(nb_cells: int = 6, **extra: Any) -> dict[str, Any]:
    nb = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(nb_cells)],
                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.update(extra)
    return nb


def on_disk(path: Path) -> list[str]:
    return [c["source"] for c in notebook_io.read_notebook(path)["cells"]]


def test_two_people_two_servers_clean_overlap(world: World) -> None:
    path = world.write("clean.ipynb", start())
    alice, bob = Tab(world.person(), world.a, "clean.ipynb"), Tab(world.person(), world.b, "clean.ipynb")
    bob.js("() => { window.__marker = 1 }")
    bob.select(4)
    kernel = bob.kernel_id()
    alice.edit(1, "alice = 1")
    alice.save()
    bob.edit(4, "bob = 2")
    bob.save()  # no File Changed dialog
    assert on_disk(path)[1] == "alice = 1" and on_disk(path)[4] == "bob = 2"
    # Bob's tab shows the merged notebook in place: no reload, same kernel, same active cell, not dirty
    bob.wait("() => window.jupyterapp.shell.currentWidget.model.sharedModel.cells[1].getSource() === 'alice = 1'", timeout=5)
    assert bob.sources() == on_disk(path)
    assert bob.js("() => window.__marker") == 1, "the page was not reloaded"
    assert bob.kernel_id() == kernel
    assert bob.active() == 4
    assert not bob.dirty()
    words = bob.toast("merged")
    assert "1 cell changed" in words and "Review the merge" in words
    with bob.page.context.expect_page() as review:
        bob.page.locator(".Toastify__toast", has_text="merged").get_by_text("Review the merge").click()
    review.value.wait_for_load_state()
    assert "merge" in review.value.title() and "alice = 1" in review.value.content()
    review.value.close()
