"""Real `jupyter lab` servers and a real browser (Debian's Chromium through Playwright) for the UI tests."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    """``jupyter lab`` as a user starts it after ``pip install -e .`` (no extension flags), on loopback."""

    def __init__(self, root: Path, home: Path, port: int | None = None, token: str | None = None) -> None:
        self.root, self.home = root, home
        self.port, self.token = port or free_port(), token or secrets.token_hex(16)
        settings = home / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.log_path = home / f"lab-{self.port}-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={home / 'settings'}",
             f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                 "JUPYTER_PLATFORM_DIRS": "1"},
        )
        deadline = time.monotonic() + 90
        while True:
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("jupyter lab did not start:\n" + self.output())
                time.sleep(0.2)

    def request(self, method: str, path: str, body: Any = None, token: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **({"Authorization": f"token {self.token}"} if token else {})}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?reset&token={self.token}"

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


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
