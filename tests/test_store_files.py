"""Large pieces (plots) as files of their own beside the SQLite database: written before their row,
removed after it, swept when stray, checked by fsck, and never needed by a store written before them."""

from __future__ import annotations

import base64
import os
import random
import sqlite3
import stat
import subprocess
import sys
import textwrap
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io
from nbmergesave.cli import cli
from nbmergesave.errors import StoreError
from nbmergesave.store import Retention, Store, sha256
from nbmergesave.store.sqlite import LARGE, SCHEMA_VERSION

from .conftest import ROOT, cell, notebook

EVERYTHING_OLD = Retention(keep_all=0, hourly=0, daily=0)


def plots(seed: int, n: int = 3) -> bytes:
    """A notebook with ``n`` plots of 24 kB (32 kB of base64 each: above LARGE) and some small cells."""
    rng = random.Random(seed)
    cells = []
    for i in range(2 * n):
        c = cell(f"x{i} = {i}", f"c{i}", execution_count=i + 1)
        if i % 2 == 0:
            c["outputs"] = [{"data": {"image/png": base64.b64encode(rng.randbytes(24_000)).decode() + "\n"},
                             "metadata": {}, "output_type": "display_data"}]
        cells.append(c)
    return notebook_io.dumps(notebook(*cells)).encode()


def piece_files(root: Path) -> list[Path]:
    folder = root / ".nbmergesave" / "pieces"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def rows(root: Path) -> list[tuple[bytes, int, int]]:
    db = sqlite3.connect(root / ".nbmergesave" / "index.sqlite")
    try:
        return db.execute("SELECT digest, length(data), file FROM pieces").fetchall()
    finally:
        db.close()


def test_plots_are_files_named_by_their_digest_and_read_back_exactly(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        v1, v2 = store.add(nb, plots(1), "observed"), store.add(nb, plots(2), "observed")
        assert store.content(v1) == plots(1) and store.content(v2) == plots(2)
    in_files = {digest.hex(): size for digest, in_row, size in rows(tmp_path) if size}
    assert len(in_files) == 6 and all(size >= LARGE for size in in_files.values())
    assert all(in_row == 0 for _, in_row, size in rows(tmp_path) if size)  # the row keeps no copy
    found = piece_files(tmp_path)
    assert {p.name: p.stat().st_size for p in found} == in_files
    for p in found:
        assert p.parent.name == p.name[:2] and sha256(p.read_bytes()) == p.name  # raw: the digest of the bytes
        assert stat.S_IMODE(p.stat().st_mode) == 0o600 and stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    with Store.open(tmp_path) as store:  # a new process's maps
        assert [store.content(v) for v in (v2, v1, v2)] == [plots(2), plots(1), plots(2)]
        assert store.fsck(repair=False)["ok"]


def test_a_mapped_piece_stays_right_after_its_file_is_removed(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        v = store.add(nb, plots(1), "observed")
        assert store.content(v) == plots(1)  # mapped now
        for p in piece_files(tmp_path):
            p.unlink()  # another process collects them (or a person deletes them)
        assert store.content(v) == plots(1)
    with Store.open(tmp_path) as store:  # not mapped: the loss shows, and fsck says what to do
        with pytest.raises(StoreError, match="damaged .*fsck"):
            store.content(v)


def test_collection_removes_the_files_of_pieces_no_version_needs(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        store.add(nb, plots(1), "observed")
        kept = store.add(nb, plots(2), "observed")
        assert len(piece_files(tmp_path)) == 6
        report = store.gc(EVERYTHING_OLD, now=datetime.now(timezone.utc) + timedelta(days=2))
        assert report.versions_removed == 1 and report.pieces_removed >= 3
        assert len(piece_files(tmp_path)) == 3  # version 1's plots are gone from the disk
        assert store.content(kept) == plots(2) and store.fsck(repair=False)["ok"]


def test_a_crash_between_the_sweep_and_the_unlink_leaves_stray_files_the_next_gc_removes(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        store.add(nb, plots(1), "observed")
        store.add(nb, plots(2), "observed")
    script = textwrap.dedent(f"""
        import os, sys
        from datetime import datetime, timedelta, timezone
        sys.path.insert(0, {str(ROOT)!r})
        from nbmergesave.store import Retention, Store, files
        files.PieceFiles.remove = lambda self, digests: os._exit(9)  # the rows are gone, committed; then the crash
        with Store.open({str(tmp_path)!r}) as store:
            store.gc(Retention(keep_all=0, hourly=0, daily=0), now=datetime.now(timezone.utc) + timedelta(days=2))
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert len(piece_files(tmp_path)) == 6  # three of them named by no row now
    result = CliRunner().invoke(cli, ["fsck", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0 and "0 damaged" in result.output, result.output
    with Store.open(tmp_path) as store:
        [last] = store.history(nb)
        assert store.content(last) == plots(2)
        store.gc()
        assert len(piece_files(tmp_path)) == 3 and store.content(last) == plots(2)


def test_a_writer_that_rolls_back_leaves_a_stray_file_and_no_row(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        with pytest.raises(RuntimeError), store.batch():
            store.add(nb, plots(1), "observed")
            raise RuntimeError("the process fails before the commit")
        assert store.history(nb) == [] and rows(tmp_path) == []
        assert len(piece_files(tmp_path)) == 3
        store.gc()
        assert piece_files(tmp_path) == []
        v = store.add(nb, plots(1), "observed")  # stored again, whole
        assert store.content(v) == plots(1) and len(piece_files(tmp_path)) == 3


def test_fsck_finds_a_lost_plot_file_and_takes_it_back_from_the_notebook(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nb.write_bytes(plots(1))
    with Store.open(tmp_path) as store:
        v = store.add(nb, plots(1), "observed")
    piece_files(tmp_path)[0].unlink()
    with Store.open(tmp_path) as store:
        report = store.fsck()
        assert report["damaged"] and report["restored"] == ["nb.ipynb v1"]
        assert store.content(v) == plots(1) and store.fsck(repair=False)["ok"]
    assert len(piece_files(tmp_path)) == 3


def _old_manifest(ids: list[int]) -> bytes:
    """A manifest as schema 2 wrote it: zigzag varints of the differences, deflated."""
    out, previous = bytearray(), 0
    for i in ids:
        delta, previous = i - previous, i
        n = (delta << 1) ^ (delta >> 63)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    return zlib.compress(bytes(out), 9)


def test_a_store_of_schema_2_is_read_as_it_is_and_keeps_new_plots_in_files(tmp_path: Path) -> None:
    """Schema 2 kept every piece in its row and wrote manifests as deflated varints."""
    import json

    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as store:
        old = [store.add(nb, plots(seed), "observed") for seed in (1, 2, 3)]
    db = sqlite3.connect(tmp_path / ".nbmergesave" / "index.sqlite", isolation_level=None)
    for i, digest in db.execute("SELECT id, digest FROM pieces WHERE file").fetchall():
        data = (tmp_path / ".nbmergesave" / "pieces" / digest.hex()[:2] / digest.hex()).read_bytes()
        db.execute("UPDATE pieces SET data = ?, file = 0 WHERE id = ?", (data, i))
    for sha, manifest in db.execute("SELECT sha256, manifest FROM contents").fetchall():
        db.execute("UPDATE contents SET manifest = ? WHERE sha256 = ?", (_old_manifest(json.loads(manifest)), sha))
    db.execute("CREATE TABLE pieces_2 (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, codec INTEGER NOT NULL, "
               "size INTEGER NOT NULL, data BLOB NOT NULL)")  # schema 2's table: ids could be reused
    db.execute("INSERT INTO pieces_2 SELECT id, digest, codec, size, data FROM pieces")
    db.execute("DROP TABLE pieces")
    db.execute("ALTER TABLE pieces_2 RENAME TO pieces")
    db.execute("UPDATE settings SET value = '2' WHERE name = 'schema'")
    db.close()
    for p in piece_files(tmp_path):
        p.unlink()
    with Store.open(tmp_path) as store:
        assert [store.content(v) for v in old] == [plots(1), plots(2), plots(3)]
        new = store.add(nb, plots(4), "observed")
        assert store.content(new) == plots(4) and len(piece_files(tmp_path)) == 3  # only the new plots
        assert store.backend.setting("schema") == SCHEMA_VERSION and store.fsck(repair=False)["ok"]  # brought up to now
        assert "AUTOINCREMENT" in store._db.execute("SELECT sql FROM sqlite_master WHERE name = 'pieces'").fetchone()[0]


def test_piece_ids_are_never_reused_so_a_piece_read_once_is_that_piece_for_good(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path) as reader, Store.open(tmp_path) as writer:
        first = writer.add(nb, plots(1), "observed")
        assert reader.content(first) == plots(1)  # the reader holds these pieces by id now
        writer.add(nb, plots(2), "observed")  # the newest pieces...
        before = set(writer.backend.piece_sizes())
        writer.add(nb, plots(1), "observed")  # ...needed by no version once this one is the file's
        writer.gc(EVERYTHING_OLD, now=datetime.now(timezone.utc) + timedelta(days=2))
        kept = set(writer.backend.piece_sizes())
        assert max(before) not in kept  # the newest id was dropped: SQLite alone would hand it out again
        third = writer.add(nb, plots(3), "observed")
        assert min(set(writer.backend.piece_sizes()) - kept) > max(before)  # new pieces get new ids
        assert reader.content(third) == plots(3) and reader.content(first) == plots(1)


def test_a_store_written_by_a_newer_nbmergesave_is_refused_in_one_line(tmp_path: Path) -> None:
    nb = tmp_path / "nb.ipynb"
    nb.write_bytes(plots(1))
    with Store.open(tmp_path) as store:
        store.add(nb, plots(1), "observed")
        store.backend.set_setting("schema", "99")
    result = CliRunner().invoke(cli, ["history", str(nb)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "newer nbmergesave (schema 99" in result.output, result.output


def test_a_team_store_gives_the_group_its_plot_files(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o2775)  # chgrp team && chmod 2775: shared on purpose
    with Store.open(team) as store:
        store.add(team / "nb.ipynb", plots(1), "observed")
    found = piece_files(team)
    assert found
    for p in found:
        assert stat.S_IMODE(p.stat().st_mode) == 0o660, p
        for folder in (p.parent, p.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o2770, folder
