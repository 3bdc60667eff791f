"""Retention and collection: what is kept, safety while writers save, a crash mid-collection, the commands."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

import nbmergesave.store as store_module
from nbmergesave import notebook_io
from nbmergesave.cli import cli
from nbmergesave.store import Retention, Store, Version, sha256
from nbmergesave.store.retention import drop

from .conftest import ROOT, cell, notebook

NOW = datetime(2026, 6, 30, 12, 0, tzinfo=timezone.utc)


def _at(days: float, minutes: float = 0) -> str:
    t = NOW - timedelta(days=days, minutes=minutes)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _nb(i: int) -> bytes:
    return notebook_io.dumps(notebook(cell(f"x = {i}", "x"), cell("y = 'the same in every version'", "y"))).encode()


def test_the_retention_rule_thins_by_age() -> None:
    versions = [Version("a", n, f"s{n}", t, "observed") for n, t in enumerate([
        _at(100), _at(100, 5),         # 1, 2: one day, long ago: the newer is kept (one a day, for ever)
        _at(20, 30), _at(20, 10),      # 3, 4: one hour, 20 days ago: the newer is kept (one an hour)
        _at(19),                       # 5: an hour of its own
        _at(3, 50), _at(3, 40),        # 6, 7: within 7 days: all kept
        _at(0),                        # 8: newest
    ], start=1)]
    assert [v.version for v in drop(versions, Retention(), now=NOW, protected=set())] == [1, 3]
    assert [v.version for v in drop(versions, Retention(), now=NOW, protected={("a", 1)})] == [3]
    assert [v.version for v in drop(versions, Retention(daily=60), now=NOW, protected=set())] == [1, 2, 3]
    assert [v.version for v in drop(versions, Retention(keep_all=30), now=NOW, protected=set())] == [1]
    everything = Retention(keep_all=0, hourly=0, daily=0)
    assert [v.version for v in drop(versions, everything, now=NOW, protected=set())] == [1, 2, 3, 4, 5, 6, 7]
    assert drop(versions[:1], everything, now=NOW, protected=set()) == []  # the newest stays, however old


def _history(store: Store, monkeypatch: pytest.MonkeyPatch, times: list[str], **merged: int) -> list[Version]:
    path = store.root / "nb.ipynb"
    out = []
    for i, t in enumerate(times, start=1):
        monkeypatch.setattr(store_module, "_now", lambda t=t: t)
        kind = "merged" if i == merged.get("at") else "observed"
        extra = {k: merged[k] for k in ("base", "local", "remote")} if kind == "merged" else {}
        out.append(store.add(path, _nb(i), kind, **extra))
    monkeypatch.undo()
    return out


def test_gc_keeps_the_newest_pinned_merge_inputs_and_collects_the_rest(store: Store,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = store.root / "nb.ipynb"
    versions = _history(store, monkeypatch, [_at(60, m) for m in (50, 40, 30, 20, 10)]    # v1-v5: one day
                        + [_at(20, m) for m in (30, 20, 10)] + [_at(19)]                  # v6-v8: one hour; v9
                        + [_at(2), _at(1)], at=10, base=1, local=6, remote=7)             # v10 merged; v11
    store.pin(path, 3)
    contents, pieces = store.stats().contents, len(store.backend.piece_sizes())
    dry = store.gc(dry_run=True, now=NOW)
    assert (dry.versions_removed, dry.contents_removed) == (2, 2)
    assert len(store.history(path)) == 11  # a dry run changes nothing
    report = store.gc(now=NOW)
    assert [v.version for v in store.history(path)] == [1, 3, 5, 6, 7, 8, 9, 10, 11]
    assert (report.versions_removed, report.contents_removed, report.pieces_removed) == (2, 2, dry.pieces_removed)
    assert store.stats().contents == contents - 2 and len(store.backend.piece_sizes()) == pieces - dry.pieces_removed
    for v in versions:
        if v.version not in (2, 4):
            assert store.content(store.get(path, v.version)) == _nb(v.version)
    assert store.fsck(repair=False)["ok"]
    # A month later the merge is old: its inputs are thinned like the others; the pin stays.
    store.gc(Retention(keep_all=7, hourly=7, daily=0), now=NOW + timedelta(days=30))
    assert [v.version for v in store.history(path)] == [3, 11]


def test_a_save_landing_during_collection_keeps_every_piece_it_needs(store: Store, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer cuts its save while gc is about to drop pieces the save shares: it stores them again."""
    path = store.root / "nb.ipynb"
    big = notebook(*[cell(f"line {i}\n" * 40, f"c{i}") for i in range(6)])
    old = notebook_io.dumps(big).encode()
    store.add(path, old, "observed")
    store.add(path, _nb(0), "observed")  # the old content is no longer the newest: gc drops it
    big["cells"][0]["source"] = "changed"
    new = notebook_io.dumps(big).encode()  # shares five cells with the version being dropped
    prepared, added = threading.Event(), []
    real_prepare = store_module._prepare

    def prepare(backend, data, given=None):  # type: ignore[no-untyped-def]
        result = real_prepare(backend, data, given)
        prepared.set()
        return result

    def writer() -> None:
        with Store.open(store.root, store.location) as other:
            added.append(other.add(path, new, "observed", on_disk=False))

    thread = threading.Thread(target=writer)

    def progress(step: str) -> None:
        if step.startswith("removing") and "contents" in step:
            monkeypatch.setattr(store_module, "_prepare", prepare)
            thread.start()  # the writer cuts its save and finds the shared pieces present...
            assert prepared.wait(30)  # ...then waits for our transaction, which drops them

    report = store.gc(Retention(keep_all=0, hourly=0, daily=0), now=datetime.now(timezone.utc) + timedelta(days=1),
                      progress=progress)
    thread.join(30)
    assert report.contents_removed == 1 and report.pieces_removed >= 5
    assert store.content(added[0]) == new
    assert store.fsck(repair=False)["ok"]


def test_collection_beside_a_writing_process_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from nbmergesave import notebook_io
        from nbmergesave.store import Store
        with Store.open({str(root)!r}) as store:
            for i in range(60):
                cells = [{{"cell_type": "code", "execution_count": None, "id": f"c{{k}}", "metadata": {{}},
                          "outputs": [], "source": f"v = {{i if k == i % 8 else 0}}\\n" + "# filler\\n" * 30}}
                         for k in range(8)]
                nb = {{"cells": cells, "metadata": {{}}, "nbformat": 4, "nbformat_minor": 5}}
                store.add({str(root / "nb.ipynb")!r}, notebook_io.dumps(nb).encode(), "observed")
        print("done")
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    collections = 0
    with Store.open(root) as store:
        while proc.poll() is None or collections == 0:
            store.gc(Retention(keep_all=0, hourly=0, daily=0), now=datetime.now(timezone.utc) + timedelta(days=1))
            collections += 1
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out.strip() == "done", err
        history = store.history(root / "nb.ipynb")
        assert history[-1].version == 60
        for v in history:
            assert sha256(store.content(v)) == v.sha256
        assert store.fsck(repair=False)["ok"]


def test_a_crash_in_the_middle_of_a_collection_leaves_a_sound_store(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        for i in range(10):
            store.add(path, _nb(i), "observed")
    script = textwrap.dedent(f"""
        import os, sys
        from datetime import datetime, timedelta, timezone
        sys.path.insert(0, {str(ROOT)!r})
        from nbmergesave.store import Retention, Store
        def progress(step):
            if "contents" in step:  # the versions are dropped and committed; the sweep is under way
                os._exit(9)
        with Store.open({str(tmp_path)!r}) as store:
            store.gc(Retention(keep_all=0, hourly=0, daily=0), now=datetime.now(timezone.utc) + timedelta(days=2),
                     progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    result = CliRunner().invoke(cli, ["fsck", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 damaged, 0 versions without their content" in result.output
    with Store.open(tmp_path) as store:
        assert [v.version for v in store.history(path)] == [10]
        assert store.content(store.history(path)[0]) == _nb(9)
        assert store.stats().contents == 10  # the sweep did not happen...
        again = store.gc()
        assert again.contents_removed == 9 and store.stats().contents == 1  # ...the next one does it


def test_automatic_collection_runs_at_most_once_a_day(store: Store) -> None:
    store.add(store.root / "nb.ipynb", b"{}", "observed")
    assert store.gc_due()
    assert store.maybe_gc() is not None
    assert not store.gc_due() and store.maybe_gc() is None
    assert store.gc_due(datetime.now(timezone.utc) + timedelta(days=1, seconds=1))


# --- the commands -------------------------------------------------------------------


def _project(tmp_path: Path) -> Path:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        for i in range(5):
            nb.write_bytes(_nb(i))
            store.add(nb, _nb(i), "observed")
    return nb


def test_status_reports_size_versions_and_reclaimable(tmp_path: Path) -> None:
    _project(tmp_path)
    result = CliRunner().invoke(cli, ["status", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith(f"store {tmp_path / '.nbmergesave'}: ") and lines[0].endswith(" on disk")
    assert lines[1] == "1 notebook, 5 versions (5 distinct contents in 8 pieces), 0 pinned"  # 5 x cells, 1 y, head, tail
    assert lines[3] == ("kept: every version for 7 days, then one per hour until 30 days old, then one per day "
                        "for ever; last collection: never")
    info = json.loads(CliRunner().invoke(cli, ["status", str(tmp_path), "--json"]).output)
    assert (info["notebooks"], info["versions"], info["reclaimable_bytes"]) == (1, 5, info["reclaimable_bytes"])
    assert info["size_bytes"] == sum(p.stat().st_size for p in (tmp_path / ".nbmergesave").glob("index.sqlite*"))


def test_gc_command_dry_run_saved_retention_and_refusals(tmp_path: Path) -> None:
    nb = _project(tmp_path)
    runner = CliRunner()
    dry = runner.invoke(cli, ["gc", str(tmp_path), "--dry-run", "--keep-all", "0", "--hourly", "0", "--daily", "0"],
                        catch_exceptions=False)
    assert dry.exit_code == 0
    assert dry.output.startswith("would remove 4 versions (1 kept), 4 contents, 4 pieces; would free about ")
    with Store.open(tmp_path) as store:
        assert len(store.history(nb)) == 5 and store.retention() == Retention()  # a dry run saves nothing
    pinned = runner.invoke(cli, ["pin", str(nb), "--version", "2"], catch_exceptions=False)
    assert pinned.output == f"{nb}: v2 pinned (gc keeps it)\n"
    assert runner.invoke(cli, ["pin", str(nb), "--list"]).output == "v2\n"
    result = runner.invoke(cli, ["gc", str(tmp_path), "--keep-all", "3", "--daily", "forever"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.startswith("removed 0 versions (5 kept)")
    with Store.open(tmp_path) as store:
        assert store.retention() == Retention(keep_all=3, hourly=30, daily=None)  # saved for the watcher
    assert runner.invoke(cli, ["pin", str(nb), "--version", "2", "--remove"]).output == f"{nb}: v2 unpinned\n"
    bad = runner.invoke(cli, ["gc", str(tmp_path), "--daily", "soon"])
    assert (bad.exit_code, bad.output) == (2, "Error: 'soon' is not a number of days (or 'forever')\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    none = runner.invoke(cli, ["gc", str(bare)])
    assert (none.exit_code, none.output) == (2, f"Error: '{bare}' has no version store (hint: run 'nbmergesave watch' on it first)\n")
    missing = runner.invoke(cli, ["pin", str(nb), "--version", "99"])
    assert missing.exit_code == 2 and "has no version 99" in missing.output


def test_gc_command_frees_old_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        _history(store, monkeypatch, [_at(40, m) for m in (40, 30, 20, 10)] + [_at(0)])
        store.pin(nb, 1)
    monkeypatch.setattr(store_module, "datetime", type("D", (datetime,), {"now": staticmethod(lambda tz=None: NOW)}))
    result = CliRunner().invoke(cli, ["gc", str(tmp_path), "--json"], catch_exceptions=False)
    report = json.loads(result.output)
    assert (report["versions_removed"], report["versions_kept"], report["contents_removed"]) == (2, 3, 2)
    with Store.open(tmp_path) as store:
        assert [v.version for v in store.history(nb)] == [1, 4, 5]


def test_a_running_watcher_applies_the_retention_rule_once_a_day(tmp_path: Path) -> None:
    import os
    import time

    root = tmp_path / "project"
    root.mkdir()
    nb = root / "nb.ipynb"
    with Store.open(root) as store:
        store.set_retention(Retention(keep_all=0, hourly=0, daily=0))
        for i in range(4):
            nb.write_bytes(_nb(i))
            store.add(nb, _nb(i), "observed")
    log = tmp_path / "watch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "0.5"],
                                stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while "gc: removed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "gc: removed 3 old versions" in log.read_text(), log.read_text()
        time.sleep(2)  # several more rescans: no second collection the same day
        assert log.read_text().count("gc: removed") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with Store.open(root) as store:
        assert [v.version for v in store.history(nb)] == [4] and not store.gc_due()


def test_daemon_status_reports_each_store_size(tmp_path: Path, daemon_env: dict[str, str]) -> None:
    from .conftest import nbm

    env = daemon_env
    root = tmp_path / "project"
    root.mkdir()
    (root / "nb.ipynb").write_bytes(_nb(1))
    started = nbm("daemon", "start", str(root), "--json", env=env)
    assert started.returncode == 0, started.stderr
    status = json.loads(nbm("daemon", "status", "--json", env=env).stdout)
    location = str(root.resolve() / ".nbmergesave")
    size = status["store_sizes"][location]
    assert (size["notebooks"], size["versions"]) == (1, 1)
    assert size["size_bytes"] > 0 and size["reclaimable_bytes"] >= 0
    table = nbm("daemon", "status", env=env).stdout
    assert f"store {location}: " in table and "1 notebook, 1 version, reclaimable by gc" in table
