"""The store's contract, run against every backend (fixture ``store``: SQLite and a real PostgreSQL server).

Each test goes through the :class:`~nbmergesave.store.Store` facade only, so
the backends cannot drift: what one does, the other must do byte for byte.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from nbmergesave import notebook_io
from nbmergesave.errors import StoreError
from nbmergesave.store import Retention, Store, sha256

from .conftest import cell, notebook


def nb_bytes(*sources: str, outputs: int = 0) -> bytes:
    cells = [cell(s, f"c{i}") for i, s in enumerate(sources)]
    for c in cells[:outputs]:
        c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "out " * 200}]
    return notebook_io.dumps(notebook(*cells)).encode()


def other_handle(store: Store) -> Store:
    """A second, independent handle on the same store, as another process (or host) would open."""
    return Store.open(store.root, store.backend.url if store.backend.name == "postgresql" else None)  # type: ignore[attr-defined]


def test_versions_number_up_and_read_back_byte_for_byte(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    kinds = {"observed": nb_bytes("a = 1", "b = 2", outputs=1), "torn": nb_bytes("a = 1")[:-7] + b'{"x"\n}',
             "merged": nb_bytes("a = 1", "b = 3"), "restored": b"not json at all \x00\xff", "declared": b""}
    made = [store.add(nb, data, kind) for kind, data in kinds.items()]
    assert [v.version for v in made] == [1, 2, 3, 4, 5]
    for v, (kind, data) in zip(made, kinds.items()):
        assert v.kind == kind and store.content(v) == data and v.sha256 == sha256(data)
    assert store.history(nb) == made
    assert store.history(nb, last=2) == made[-2:]
    assert store.get(nb, 3) == made[2]
    assert store.on_disk(nb) == made[-1]
    assert store.latest_with(nb, sha256(kinds["observed"])) == made[0]
    assert store.tracked() == ["nb.ipynb"]
    with pytest.raises(StoreError, match="has no version 9"):
        store.get(nb, 9)


def test_identical_content_and_cells_are_stored_once(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    big = [f"x{i} = {i}\n" + "# padding\n" * 50 for i in range(30)]
    store.add(nb, nb_bytes(*big), "observed")
    before = store.stats()
    changed = list(big)
    changed[7] += "\n# one edit"
    store.add(nb, nb_bytes(*changed), "observed")
    store.add(nb, nb_bytes(*big), "restored")
    after = store.stats()
    assert (after.versions, after.contents) == (3, 2)
    assert after.pieces - before.pieces <= 3  # one cell (and the notebook's head/tail pieces around it)


def test_deletion_rename_and_keys(store: Store) -> None:
    a, b = store.root / "sub" / "a.ipynb", store.root / "b.ipynb"
    store.add(a, b"1", "observed")
    assert store.key(a) == "sub/a.ipynb"
    store.rename(a, b)
    assert store.history(a) == [] and [v.version for v in store.history(b)] == [1]
    gone = store.add(b, None, "deleted")
    assert gone.sha256 is None and store.on_disk(b) is None and store.tracked() == []
    with pytest.raises(StoreError, match="records a deletion"):
        store.content(gone)
    with pytest.raises(StoreError, match="outside"):
        store.key(store.root.parent / "elsewhere.ipynb")


def test_on_disk_marks_and_batches(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    with store.batch():
        first = store.add(nb, b"1", "observed")
        store.add(nb, b"2", "observed", on_disk=False)
        store.add(store.root / "other.ipynb", b"3", "observed")
    assert store.on_disk(nb) == first
    store.add_on_disk(nb, 2)
    assert store.on_disk(nb).version == 2  # type: ignore[union-attr]
    assert store.tracked() == ["nb.ipynb", "other.ipynb"]


def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    with pytest.raises(RuntimeError):
        with store.batch():
            store.add(nb, b"kept only if committed", "observed")
            raise RuntimeError("crash mid-batch")
    assert store.history(nb) == []
    assert store.add(nb, b"next", "observed").version == 1


def test_declarations_parents_and_descent(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    base = store.add(nb, b"base", "observed")
    mine = store.add(nb, b"mine", "observed")
    theirs = store.add(nb, b"theirs", "observed")
    merged = store.add(nb, b"merged", "merged", base=base.version, local=mine.version, remote=theirs.version)
    store.declare(nb, sha256(b"mine"), sha256(b"base"), "jupyter")
    assert store.declared_base(nb, sha256(b"mine")) == base
    assert store.declared_base(nb, sha256(b"unknown")) is None
    assert store.descends(nb, merged.sha256, sha256(b"base"))  # type: ignore[arg-type]
    assert not store.descends(nb, sha256(b"base"), merged.sha256)  # type: ignore[arg-type]
    store.declare(nb, sha256(b"mine"), sha256(b"theirs"), "again")  # a later declaration replaces it
    assert store.declared_base(nb, sha256(b"mine")) == theirs


def test_the_cell_index_finds_versions_sharing_cells(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    versions = []
    for n in range(4):
        data = b"v%d" % n
        versions.append(store.add(nb, data, "observed"))
        store.record_cells(sha256(data), {"a": "sa", "b": f"sb{min(n, 2)}", "c": f"sc{n}"})
    store.record_cells(sha256(b"v0"), {"a": "other"})  # recorded once per content: ignored
    found = store.sharing_cells(nb, {"a": "sa", "b": "sb2", "c": "sc3"}, 2)
    assert [v.version for v in found] == [4, 3]
    assert store.sharing_cells(nb, {}, 5) == []
    assert store.sharing_cells(store.root / "other.ipynb", {"a": "sa"}, 5) == []


def test_retention_pins_and_collection(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    for n in range(6):
        store.add(nb, nb_bytes(f"x = {n}", "# shared cell\n" * 40), "observed")
    store.pin(nb, 2)
    assert store.pinned() == [("nb.ipynb", 2)]
    later = datetime.now(timezone.utc) + timedelta(days=400)
    policy = Retention(keep_all=1, hourly=1, daily=1)
    dry = store.gc(policy, dry_run=True, now=later)
    assert (dry.versions_removed, dry.versions_kept) == (4, 2)
    assert len(store.history(nb)) == 6  # a dry run removes nothing
    report = store.gc(policy, now=later)
    assert report.versions_removed == 4 and report.contents_removed == 4
    assert [v.version for v in store.history(nb)] == [2, 6]  # the pinned and the newest
    for v in store.history(nb):
        assert store.content(v) == nb_bytes(f"x = {v.version - 1}", "# shared cell\n" * 40)
    assert store.fsck()["ok"]
    store.set_retention(Retention(keep_all=3, hourly=10, daily=None))
    assert store.retention() == Retention(keep_all=3, hourly=10, daily=None)
    assert not store.gc_due()  # collected just now
    store.pin(nb, 2, pinned=False)
    assert store.pinned() == []


def test_a_save_landing_during_collection_keeps_its_pieces(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    shared = "# a cell every version holds\n" * 60
    for n in range(5):
        store.add(nb, nb_bytes(f"x = {n}", shared), "observed")
    later = datetime.now(timezone.utc) + timedelta(days=400)
    done = threading.Event()
    saved: list = []  # type: ignore[type-arg]

    def save_while_collecting() -> None:
        with other_handle(store) as writer:
            while not done.is_set():
                saved.append(writer.add(nb, nb_bytes(f"late = {len(saved)}", shared), "observed"))
                time.sleep(0.001)

    t = threading.Thread(target=save_while_collecting)
    t.start()
    try:
        store.gc(Retention(keep_all=0, hourly=0, daily=0), now=later)
    finally:
        done.set()
        t.join(timeout=30)
    assert saved, "no save landed during the collection"
    for v in store.history(nb):
        assert sha256(store.content(v)) == v.sha256
    assert store.fsck(repair=False)["ok"]


def test_fsck_reports_a_damaged_store_and_takes_content_back_from_disk(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    data = nb_bytes("a = 1")
    nb.write_bytes(data)
    v = store.add(nb, data, "observed")
    with store.batch():  # the content goes missing behind the store's back
        store.backend.drop_contents([v.sha256])  # type: ignore[list-item]
    with pytest.raises(StoreError, match="missing"):
        store.content(v)
    report = store.fsck()
    assert report["missing"] == ["nb.ipynb v1"] and report["restored"] == ["nb.ipynb v1"]
    assert store.content(v) == data and store.fsck()["ok"]


def test_stats_count_what_the_store_holds(store: Store) -> None:
    store.add(store.root / "a.ipynb", nb_bytes("a"), "observed")
    store.add(store.root / "b.ipynb", nb_bytes("b"), "observed")
    stats = store.stats()
    assert (stats.notebooks, stats.versions, stats.contents) == (2, 2, 2)
    assert stats.size_bytes > 0 and stats.reclaimable_bytes >= 0


def test_the_save_lock_excludes_other_holders(store: Store) -> None:
    """Two holders of one notebook's lock (each with its own store, as two processes would) take turns."""
    nb = store.root / "nb.ipynb"
    other = other_handle(store)
    inside, order = threading.Event(), []

    def second() -> None:
        inside.wait(10)
        with other.save_lock(nb):
            order.append("second")

    t = threading.Thread(target=second)
    try:
        with store.save_lock(nb):
            t.start()
            inside.set()
            time.sleep(0.3)  # long enough for the second holder to be waiting, were the lock not exclusive
            order.append("first")
        t.join(timeout=30)
        assert order == ["first", "second"]
        with store.save_lock():  # the whole store
            pass
    finally:
        other.close()
