"""JupyterLab in a real browser while the history store is away: a calm notice appears, saves still
merge, and the notice goes once the store is back (its catch-up done)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbmergesave import notebook_io

from . import pg
from .conftest import cell, notebook, wait_for
from .lab import CHROMIUM, PANEL, Lab, chromium

pytest.importorskip("jupyterlab")
pytest.importorskip("psycopg")
pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)
if pg.bindir() is None:
    pytest.skip("no PostgreSQL server binaries", allow_module_level=True)

WORDS = "History store unreachable since"


def test_the_notice_appears_while_the_store_is_away_and_goes_when_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: pg.Server) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell("a = 1", "a"), cell("b = 1", "b"))))
    monkeypatch.setenv("NBMERGESAVE_STORE_URL", database.url("lab"))
    monkeypatch.setenv("NBMERGESAVE_HOME", str(tmp_path / "state"))
    database.stop()  # away from the start
    lab = Lab(root, tmp_path / "home")
    try:
        with chromium() as browser:
            page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            page.goto(lab.url("nb.ipynb"))
            page.wait_for_function(f"() => window.jupyterapp && {PANEL} && {PANEL}.context && {PANEL}.context.isReady",
                                   timeout=90_000, polling=100)
            toast = page.locator(".Toastify__toast", has_text=WORDS).first
            toast.wait_for(timeout=60_000)
            assert toast.inner_text().endswith(
                "— saves are still merged on this server and will be recorded when it is back")
            # a save while the store is away succeeds, merged from the spool
            nb = lab.request("GET", "/api/contents/nb.ipynb")["content"]
            nb["cells"][0]["source"] = "a = 2"
            lab.request("PUT", "/api/contents/nb.ipynb", {"type": "notebook", "format": "json", "content": nb})
            assert notebook_io.read_notebook(root / "nb.ipynb")["cells"][0]["source"] == "a = 2"
            assert any((tmp_path / "state").glob("spool/*/index.sqlite"))
            database.start()
            toast.wait_for(state="detached", timeout=90_000)  # gone once the server has caught up
            wait_for(lambda: not any((tmp_path / "state").glob("spool/*/index.sqlite")), "the spool replayed",
                     timeout=30)
        assert "the history store is away" in lab.output() and "is back" in lab.output()
    finally:
        lab.stop()
