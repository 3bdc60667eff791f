"""Real `jupyter lab` servers and a real browser (Debian's Chromium through Playwright) for the UI tests."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .conftest import notebook, numbered
from .servers import JupyterProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless through Playwright, for the block; closed when it ends, however it ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def browsing(world: Callable[[Path, Any], People], tmp: Path) -> Iterator[Any]:
    """``world(tmp, browser)`` (People and the servers they use) over one Chromium, closed after: the body of a
    test module's shared ``world`` fixture (``yield from browsing(World, tmp)``)."""
    with chromium() as browser:
        made = world(tmp, browser)
        try:
            yield made
        finally:
            made.close()


def lab_notebook(n: int = 6, **extra: Any) -> dict[str, Any]:
    """A notebook of ``n`` numbered cells as JupyterLab saves one: with the kernel's language_info, else opening
    it makes the tab dirty. ``extra``: top-level keys to set (``nbformat_minor=4``)."""
    from ipykernel.ipkernel import IPythonKernel

    nb = notebook(*numbered(n), metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": IPythonKernel.language_info})
    nb.update(extra)
    return nb


class People:
    """People at one browser, each a context of their own (as two people on two machines: no shared storage);
    the uncaught errors of every page they open are collected in ``errors``, for the tests to assert none."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def person(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1200, "height": 900})
        context.on("page", lambda page: page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}")))
        self.contexts.append(context)
        return context

    def close(self) -> None:
        for context in self.contexts:
            try:
                context.close()
            except Exception:  # a context the browser already lost: nothing left to close
                pass


class Lab(JupyterProcess):
    """``jupyter lab`` as a user starts it after ``pip install -e .`` (no extension flags), on loopback."""

    def __init__(self, root: Path, home: Path, port: int | None = None, token: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.home = home
        settings = home / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        super().__init__(
            "jupyterlab", root, home,
            {"JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")},
            [f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
             "--LabApp.expose_app_in_browser=True", *args], port, token, timeout=90)

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?reset&token={self.token}"


PANEL = "window.jupyterapp.shell.currentWidget"


class Tab:
    """One JupyterLab page showing one notebook (a browser tab)."""

    def __init__(self, context: Any, lab: Lab, notebook: str) -> None:
        self.lab, self.notebook = lab, notebook
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.page.goto(lab.url(notebook))
        self.wait(f"() => window.jupyterapp && {PANEL} && {PANEL}.context && {PANEL}.context.isReady"
                  f" && {PANEL}.content.widgets.length > 0 && {PANEL}.sessionContext.session"
                  f" && {PANEL}.sessionContext.session.kernel", timeout=90)
        self.cells = f"#{self.js(f'() => {PANEL}.id')} .jp-Notebook .jp-Cell"

    def wait(self, expression: str, timeout: float = 30, arg: Any = None) -> Any:
        return self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=100)

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def sources(self) -> list[str]:
        return self.js(f"() => {PANEL}.model.sharedModel.cells.map(c => c.getSource())")

    def dirty(self) -> bool:
        return bool(self.js(f"() => {PANEL}.model.dirty"))

    def kernel_id(self) -> str:
        return self.js(f"() => {PANEL}.sessionContext.session.kernel.id")

    def active(self) -> int:
        return self.js(f"() => {PANEL}.content.activeCellIndex")

    def select(self, index: int) -> None:
        self.page.locator(self.cells).nth(index).locator(".jp-InputPrompt").click()
        self.wait(f"i => {PANEL}.content.activeCellIndex === i", arg=index)

    def edit(self, index: int, text: str) -> None:
        """Type ``text`` over cell ``index``'s source, as a person does."""
        editor = self.page.locator(self.cells).nth(index).locator(".cm-content")
        editor.click()
        self.page.keyboard.press("Control+a")
        self.page.keyboard.type(text)
        self.page.keyboard.press("Escape")
        self.wait(f"([i, t]) => {PANEL}.model.sharedModel.cells[i].getSource() === t", arg=[index, text])

    def run(self, index: int) -> None:
        self.select(index)
        self.page.keyboard.press("Shift+Enter")
        self.wait(f"i => {PANEL}.model.sharedModel.cells[i].execution_count !== null"
                  f" && {PANEL}.sessionContext.session.kernel.status === 'idle'", arg=index, timeout=60)

    def save(self) -> None:
        """Ctrl+S; returns when the save is done (or a dialog asks something, which fails the test)."""
        self.page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        self.page.keyboard.press("Control+s")
        self.wait(f"() => document.querySelector('.jp-Dialog') || !{PANEL}.model.dirty", timeout=30)
        dialog = self.page.locator(".jp-Dialog")
        assert dialog.count() == 0, "JupyterLab asked: " + dialog.inner_text()

    def toast(self, words: str, timeout: float = 30) -> str:
        """The text of the notification that contains ``words``."""
        toast = self.page.locator(".Toastify__toast", has_text=words).first
        toast.wait_for(timeout=timeout * 1000)
        return toast.inner_text()


class NotebookSeven(JupyterProcess):
    """``jupyter notebook`` (Notebook 7) as a user starts it after the install, on loopback."""

    def __init__(self, root: Path, home: Path, port: int | None = None, token: str | None = None) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(
            "notebook", root, home,
            {"JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")},
            [f"--JupyterNotebookApp.user_settings_dir={home / 'settings'}",
             f"--JupyterNotebookApp.workspaces_dir={home / 'workspaces'}",
             "--JupyterNotebookApp.expose_app_in_browser=True"], port, token, timeout=90)

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/notebooks/{notebook}?token={self.token}"
