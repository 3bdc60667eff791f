"""The local spool (nbmergesave.store.spool): standing in for a store that is away, and the catch-up.

Library and CLI level; the Jupyter servers and a database going down under them are in test_store_away.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io, save_file
from nbmergesave.cli import cli
from nbmergesave.errors import StoreError, StoreUnavailable
from nbmergesave.store import Store, sha256
from nbmergesave.store import pg_connect, spool
from nbmergesave.store.where import configure
from nbmergesave.sync import open_store

from .conftest import cell, notebook, write


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    configure(url="", project_root="", roots=[])
    monkeypatch.setenv("NBMERGESAVE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(spool, "RETRY_EVERY", 0.0)  # try the store again at every open
    spool._outages.clear()
    yield
    spool._outages.clear()
    configure(url="", project_root="", roots=[])


def _edit(nb: dict[str, Any], index: int, text: str) -> bytes:
    nb = json.loads(json.dumps(nb))
    nb["cells"][index]["source"] = text
    return notebook_io.dumps(nb).encode()


def _no_driver(*_: object) -> None:
    raise StoreError("a PostgreSQL store needs psycopg (hint: pip install 'nbmergesave[postgres]')")


def test_without_the_driver_saves_merge_from_the_spool_and_the_store_catches_up_in_order(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    root.mkdir()
    configure(url=postgres_url, project_root=str(root))
    start = notebook(cell("a = 0", "a"), cell("b = 0", "b"))
    nb = write(root / "nb.ipynb", start)
    loaded = nb.read_bytes()
    save_file(nb, _edit(start, 0, "a = 1"), loaded, writer="test")  # the store answers: recorded there
    with open_store(nb) as store:
        assert not store.is_spool
        before = [v.sha256 for v in store.history(nb)]

    monkeypatch.setattr(pg_connect, "drivers", _no_driver)
    monkeypatch.setattr("nbmergesave.store.postgres.drivers", _no_driver)
    # two writers who loaded the same version while the driver is gone: the second is merged, from the spool
    now = notebook_io.parse_notebook(nb.read_bytes())
    loaded_again = nb.read_bytes()  # what both writers loaded (a version the store had before it went)
    save_file(nb, _edit(now, 1, "b = 2"), loaded_again, writer="test")
    second = save_file(nb, _edit(now, 0, "a = 1\na = 3"), loaded_again, writer="test")
    assert second.merged
    assert [c["source"] for c in notebook_io.read_notebook(nb)["cells"]] == ["a = 1\na = 3", "b = 2"]
    assert spool.outage(spool.target_of(nb)) is not None
    assert spool.pending(spool.target_of(nb))
    with open_store(nb) as away:
        assert away.is_spool
        spooled = [v for v in away.history(nb) if v.sha256 not in before]

    monkeypatch.undo()  # the driver is back (and the environment of the fixture with it)
    monkeypatch.setenv("NBMERGESAVE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(spool, "RETRY_EVERY", 0.0)
    with open_store(nb) as store:
        assert not store.is_spool
        history = store.history(nb)
    assert not spool.pending(spool.target_of(nb)) and spool.outage(spool.target_of(nb)) is None
    replayed = [v for v in history if v.sha256 not in before]
    # every version made meanwhile, once, in the order made, at the time made, with its kind and inputs
    assert [(v.sha256, v.kind, v.time, v.conflicts) for v in replayed] == \
        [(v.sha256, v.kind, v.time, v.conflicts) for v in spooled if v.sha256 not in before]
    assert len({v.sha256 for v in replayed}) == len(replayed)
    merged = next(v for v in replayed if v.kind == "merged")
    numbers = {v.version: v for v in history}
    assert {numbers[merged.local].sha256, numbers[merged.remote].sha256, numbers[merged.base].sha256} <= \
        {v.sha256 for v in history}
    assert numbers[merged.base].sha256 == sha256(loaded_again)  # remapped onto the store's own version of the base
    assert store.on_disk is not None


def test_two_catch_ups_at_once_record_each_version_once(postgres_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "project"
    root.mkdir()
    configure(url=postgres_url, project_root=str(root))
    nb = write(root / "nb.ipynb", notebook(cell("x = 0", "x")))
    target = spool.target_of(nb)
    with spool.Spool(target) as away:  # what saves during an outage left
        for n in range(30):
            away.add(nb, notebook_io.dumps(notebook(cell(f"x = {n + 1}", "x"))).encode(), "observed")
    code = ("import sys; from nbmergesave.store.where import configure; from nbmergesave.sync import open_store; "
            f"configure(url={postgres_url!r}, project_root={str(root)!r}); "
            f"s = open_store({str(nb)!r}); print(s.is_spool); s.close()")
    env = {**__import__("os").environ, "NBMERGESAVE_HOME": str(tmp_path / "state")}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in runs]
    assert all(p.returncode == 0 for p in runs), outs
    with Store.open(root, postgres_url) as store:
        shas = [v.sha256 for v in store.history(nb)]
    assert len(shas) == len(set(shas)) == 30  # each once, none interleaved twice
    assert ["".join(json.loads(Store.open(root, postgres_url).blob(s))["cells"][0]["source"]) for s in shas] == \
        [f"x = {n + 1}" for n in range(30)]
    assert not spool.pending(target)


def test_an_embedded_store_that_cannot_be_opened_is_stood_in_for_and_caught_up(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    start = notebook(cell("a = 0", "a"), cell("b = 0", "b"))
    nb = write(root / "nb.ipynb", start)
    loaded = nb.read_bytes()
    save_file(nb, _edit(start, 0, "a = 1"), loaded)
    db = root / ".nbmergesave" / "index.sqlite"
    db.rename(db.with_name("kept"))
    db.write_bytes(b"not a database, as a full or foreign disk may leave it" * 100)
    save_file(nb, _edit(start, 1, "b = 2"), loaded)  # made from the first load: merged, from the spool
    assert [c["source"] for c in notebook_io.read_notebook(nb)["cells"]] == ["a = 1", "b = 2"]
    result = CliRunner().invoke(cli, ["status", str(root), "--json"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["state"] == "degraded" and "cannot open the store" in report["degraded"]["reason"]
    assert report["spools"][0]["versions"] >= 2 and report["spools"][0]["bytes"] > 0
    text = CliRunner().invoke(cli, ["status", str(root)], catch_exceptions=False)
    assert text.output.startswith("degraded: ") and "spool " in text.output
    db.unlink()
    db.with_name("kept").rename(db)
    for stale in (db.with_name("index.sqlite-wal"), db.with_name("index.sqlite-shm")):
        stale.unlink(missing_ok=True)
    with open_store(nb) as store:
        assert not store.is_spool
        kinds = [v.kind for v in store.history(nb)]
        assert "merged" in kinds and store.on_disk(nb).sha256 == sha256(nb.read_bytes())  # type: ignore[union-attr]
    result = CliRunner().invoke(cli, ["status", str(root), "--json"], catch_exceptions=False)
    assert result.exit_code == 0 and json.loads(result.output)["spools"] == []


def test_releasing_a_lock_whose_connection_died_never_fails_the_save(tmp_path: Path) -> None:
    """The HTTP 500 of the issue: store/postgres.py save_lock -> _held raised at COMMIT once the database went."""
    import logging

    from nbmergesave.jupyter import SaveMerger

    class Dead:
        def __exit__(self, *_: object) -> None:
            raise StoreUnavailable("cannot reach the PostgreSQL store at 'postgresql://x': server closed the connection")

    class Log(logging.Logger):
        lines: list[str] = []

        def warning(self, msg: str, *args: object, **_: object) -> None:  # type: ignore[override]
            self.lines.append(msg % args)

    nb = write(tmp_path / "nb.ipynb", notebook(cell("a", "a")))
    merger = SaveMerger(None, Log("t"))
    for _ in range(3):
        merger.stores.release((Store.open(nb.parent), Dead()))  # must not raise
    assert len([line for line in Log.lines if "away" in line]) == 1  # said once, not once per save


def test_a_kept_open_store_that_starts_failing_is_dropped_and_the_spool_stands_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Jupyter hook keeps an embedded store open across saves (the fast path): when that store starts
    failing mid-run, the save still merges (from the spool), the kept store is dropped, and the next open
    once it answers again replays the spool into it."""
    pytest.importorskip("jupyter_server")
    import sqlite3

    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    root = tmp_path / "project"
    root.mkdir()
    nb = write(root / "nb.ipynb", notebook(cell("a = 0", "a"), cell("b = 0", "b")))
    cm = FileContentsManager(root_dir=str(root))
    merger = install(cm)
    tab = cm.get("nb.ipynb")  # a tab: saves with the hash it loaded
    tab["content"]["cells"][0]["source"] = "a = 1"
    reply = cm.save({"type": "notebook", "content": tab["content"], "nbmergesave_base": tab["nbmergesave"]["sha256"]},
                    "nb.ipynb")
    kept = list(merger.stores.held.values())
    assert len(kept) == 1 and not kept[0].is_spool  # kept open for the next save
    other = cm.get("nb.ipynb")  # a second tab, loaded now; the first saves again from its own version
    base = reply["nbmergesave"]["sha256"]

    def failing(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(kept[0], "add", failing)
    other["content"]["cells"][1]["source"] = "b = 2"
    spooled = cm.save({"type": "notebook", "content": other["content"],
                       "nbmergesave_base": other["nbmergesave"]["sha256"]}, "nb.ipynb")
    assert spooled["nbmergesave"].get("spooled")  # merged (here: recorded) from the spool, not failed
    assert kept[0] not in merger.stores.held.values()  # dropped, closed
    assert [c["source"] for c in notebook_io.read_notebook(nb)["cells"]] == ["a = 1", "b = 2"]
    assert spool.pending(spool.target_of(nb)) and spool.outage(spool.target_of(nb)) is not None

    # the store answers again (a fresh store; RETRY_EVERY = 0): the next save replays the spool first
    tab["content"]["cells"][0]["source"] = "a = 3"
    reply = cm.save({"type": "notebook", "content": tab["content"], "nbmergesave_base": base}, "nb.ipynb")
    assert reply["nbmergesave"]["merged"] and not reply["nbmergesave"].get("spooled")
    assert [c["source"] for c in notebook_io.read_notebook(nb)["cells"]] == ["a = 3", "b = 2"]
    assert not spool.pending(spool.target_of(nb)) and spool.outage(spool.target_of(nb)) is None
    assert len(merger.stores.held) == 1  # kept open again
    for store in list(merger.stores.held.values()):
        store.close()
    with Store.open(root) as store:
        sources = [[c["source"] for c in notebook_io.parse_notebook(store.content(v))["cells"]]
                   for v in store.history(nb) if v.sha256]
    assert sources.index(["a = 1", "b = 2"]) < sources.index(["a = 3", "b = 2"])  # the spooled save, replayed
