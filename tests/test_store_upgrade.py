"""Stores written by earlier nbmergesave versions are upgraded in place, losing nothing: 0.1's (one zlib blob per
content) and schema 3's (no engine recorded with merges)."""

from __future__ import annotations

import base64
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from nbmergesave import notebook_io
from nbmergesave.store import Store, sha256
from nbmergesave.store.sqlite import SCHEMA_VERSION

from . import legacy_store
from .conftest import ROOT, cell, notebook


def _old_store(root: Path) -> dict:  # type: ignore[type-arg]
    """Write a store in the old layout, with every kind of version, declarations and the lineage index."""
    rng = random.Random(5)
    a, b = root / "a.ipynb", root / "sub" / "b.ipynb"
    b.parent.mkdir()

    images = [base64.b64encode(rng.randbytes(20000)).decode() for _ in range(3)]

    def plots(n: int) -> bytes:  # one cell changes from one version to the next, the plots stay
        return notebook_io.dumps(notebook(*[cell(f"y{i} = {n if i == n % 3 else 0}", f"p{i}", outputs=[
            {"data": {"image/png": images[i]}, "metadata": {}, "output_type": "display_data"}]) for i in range(3)])).encode()

    v = [notebook_io.dumps(notebook(cell(f"x = {i}", "x"), cell("y = 0", "y"))).encode() for i in range(4)]
    later = notebook_io.dumps(notebook(cell("x = 9", "x"), cell("y = 1", "y"))).encode()
    torn = later + v[3][len(later):] + b'\n "tail": 1\n}\n'
    with legacy_store.Store.open(root) as old:
        old.add(a, v[0], "observed")
        old.add(a, v[1], "observed", on_disk=False)
        old.add(a, torn, "torn")
        old.add(a, v[2], "observed")
        old.add(a, v[3], "declared", on_disk=False)
        old.declare(a, sha256(v[2]), sha256(v[3]), "jupyter")
        old.add(a, v[1] + b"\n", "merged", base=1, local=2, remote=4, conflicts=1)
        old.add(a, None, "deleted")
        old.add(a, v[0], "restored")
        for i in range(40):  # enough blobs for several upgrade batches
            old.add(b, plots(i), "observed")
        old.add(b, b'{"cells": [', "conflict-copy", on_disk=False)  # a half-written save
        old.record_cells(sha256(v[0]), {"x": "s0", "y": "sy"})
        old.record_cells(sha256(v[2]), {"x": "s2", "y": "sy"})
        def row(x: legacy_store.Version) -> dict:  # type: ignore[type-arg]
            return {**x.to_dict(), "engine": None}  # 0.1 recorded no engine: its merges say none after the upgrade

        return {"history": {k: [(row(x), old.content(x) if x.sha256 else None) for x in old.history(k)]
                            for k in (a, b)},
                "declared": row(old.declared_base(a, sha256(v[2]))),  # type: ignore[arg-type]
                "sharing": [row(x) for x in old.sharing_cells(a, {"x": "s2", "y": "sy"}, 5)],
                "on_disk": {k: row(old.on_disk(k)) for k in (a, b)},  # type: ignore[arg-type]
                "tracked": old.tracked()}


def _check(root: Path, expected: dict) -> None:  # type: ignore[type-arg]
    with Store.open(root) as store:
        for path, history in expected["history"].items():
            got = store.history(path)
            assert [x.to_dict() for x in got] == [d for d, _ in history]
            for version, (_, data) in zip(got, history):
                if data is not None:
                    assert store.content(version) == data, (path, version.version)
        a = root / "a.ipynb"
        assert store.declared_base(a, expected["declared"]["sha256"] and store.history(a)[3].sha256 or "").to_dict() \
            == expected["declared"]  # type: ignore[union-attr]
        assert [x.to_dict() for x in store.sharing_cells(a, {"x": "s2", "y": "sy"}, 5)] == expected["sharing"]
        assert {k: store.on_disk(k).to_dict() for k in expected["on_disk"]} == expected["on_disk"]  # type: ignore[union-attr]
        assert store.tracked() == expected["tracked"]
        assert store.fsck(repair=False)["ok"]
        assert store.backend.setting("schema") == SCHEMA_VERSION
        tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not tables & {"blobs", "cell_sources"}


def test_an_old_store_is_upgraded_on_first_use_with_every_version_intact(tmp_path: Path) -> None:
    expected = _old_store(tmp_path)
    before = (tmp_path / ".nbmergesave" / "index.sqlite").stat().st_size
    _check(tmp_path, expected)
    with Store.open(tmp_path) as store:
        store.gc()  # the first collection also returns the old layout's space
    assert (tmp_path / ".nbmergesave" / "index.sqlite").stat().st_size < before
    _check(tmp_path, expected)


def test_an_upgrade_killed_half_way_resumes_and_loses_nothing(tmp_path: Path) -> None:
    expected = _old_store(tmp_path)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import nbmergesave.store as store
        from nbmergesave.store.sqlite import SQLiteBackend
        store.UPGRADE_BATCH = 4
        real, calls = SQLiteBackend.drop_legacy_blob, []
        def drop(self, sha):
            calls.append(sha)
            if len(calls) == 15:  # in the fourth batch: three have committed
                os._exit(9)
            real(self, sha)
        SQLiteBackend.drop_legacy_blob = drop
        store.Store.open({str(tmp_path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=120, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    db = sqlite3.connect(tmp_path / ".nbmergesave" / "index.sqlite")
    left = db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
    done = db.execute("SELECT COUNT(*) FROM contents").fetchone()[0]
    db.close()
    assert done == 12 and left > 0  # stopped half way, with three batches done
    _check(tmp_path, expected)


def _open_from_three_processes_at_once(root: Path) -> None:
    """Three processes open the store at ``root`` together (each as a tool does when it starts), each must succeed."""
    script = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from nbmergesave.store import Store; Store.open({str(root)!r}).close()"
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()  # type: ignore[union-attr]


def test_an_old_store_in_use_by_many_processes_is_upgraded_once(tmp_path: Path) -> None:
    expected = _old_store(tmp_path)
    _open_from_three_processes_at_once(tmp_path)
    _check(tmp_path, expected)
    assert os.stat(tmp_path / ".nbmergesave").st_mode & 0o077 == 0


def _schema_3_store(root: Path) -> list[dict]:  # type: ignore[type-arg]
    """A store as nbmergesave wrote it before merges recorded their engine (schema 3: no ``engine`` column)."""
    nb = root / "nb.ipynb"
    v = [notebook_io.dumps(notebook(cell(f"x = {i}", "x"))).encode() for i in range(3)]
    with Store.open(root) as store:
        store.add(nb, v[0], "observed")
        store.add(nb, v[1], "observed", on_disk=False)
        store.add(nb, v[2], "merged", base=1, local=1, remote=2, conflicts=0)
        history = [{**x.to_dict(), "engine": None} for x in store.history(nb)]
    db = sqlite3.connect(root / ".nbmergesave" / "index.sqlite")
    db.execute("ALTER TABLE versions DROP COLUMN engine")
    db.execute("UPDATE settings SET value = '3' WHERE name = 'schema'")
    db.commit()
    db.close()
    return history


def test_a_store_of_schema_3_gains_the_engine_column_in_place(tmp_path: Path) -> None:
    expected = _schema_3_store(tmp_path)
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        assert store.backend.setting("schema") == SCHEMA_VERSION == "4"
        assert [x.to_dict() for x in store.history(nb)] == expected  # the old merge: engine not recorded (None)
        merged = store.add(nb, b"{}", "merged", base=1, local=3, remote=2, engine="nbdime")
        assert merged.engine == "nbdime"
        assert store.history(nb)[-1] == merged
        assert store.fsck(repair=False)["ok"]
    columns = [r[1] for r in sqlite3.connect(tmp_path / ".nbmergesave" / "index.sqlite").execute(
        "PRAGMA table_info(versions)")]
    assert columns[-1] == "engine" and columns.count("engine") == 1


def test_a_schema_3_store_opened_by_many_processes_at_once_gains_one_column(tmp_path: Path) -> None:
    expected = _schema_3_store(tmp_path)
    _open_from_three_processes_at_once(tmp_path)
    with Store.open(tmp_path) as store:
        assert [x.to_dict() for x in store.history(tmp_path / "nb.ipynb")] == expected


def test_a_store_of_a_newer_schema_is_refused_with_a_hint(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / ".nbmergesave" / "index.sqlite")
    db.execute("UPDATE settings SET value = '5' WHERE name = 'schema'")
    db.commit()
    db.close()
    import pytest

    from nbmergesave.errors import StoreError

    with pytest.raises(StoreError, match="written by a newer nbmergesave .schema 5, this one reads up to 4.; upgrade"):
        Store.open(tmp_path)
