"""The embedded backend: one SQLite database in WAL mode in the store folder (all of the store's SQL is in it
and in the modules beside it).

``index.sqlite`` holds the versions (one row each), contents (a manifest per
distinct file content) and pieces (each distinct piece once, by sha256).
:class:`SQLiteBackend` is made of parts by job: its tables, created and
upgraded (:mod:`.sqlite_schema`, which also upgrades a store of nbmergesave
0.1); pieces and contents, a large piece (a plot) as a file of its own
(:mod:`.sqlite_pieces`); retention, collection, settings, size and copying
(:mod:`.sqlite_collect`); and here the connection, transactions, the save
lock, versions, declarations and the lineage index.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError
from . import files
from .backend import COPIED, PieceCache, Version, as_version
from .cells import cell_pairs
from .sqlite_collect import SQLiteCollection
from .sqlite_pieces import LARGE, SQLitePieces  # noqa: F401  (LARGE: callers import it from here)
from .sqlite_schema import DB_NAME, SQLiteSchema
from .sqlite_schema import PAGE_SIZE, SCHEMA_VERSION, legacy_decompress  # noqa: F401  (callers import these from here)

_VERSION_COLUMNS = ", ".join(COPIED["versions"])  # named: a store upgraded in place has the columns in this order too


class SQLiteBackend(SQLiteSchema, SQLitePieces, SQLiteCollection):
    """Rows of one store in ``LOCATION/index.sqlite``; see :class:`~nbmergesave.store.backend.Backend`."""

    name = "sqlite"

    def __init__(self, location: Path, *, upgrade: Callable[[SQLiteBackend], None] | None = None) -> None:
        self.location = location
        self.path = location / DB_NAME
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.create_tables()
        self.files = files.PieceFiles(location)
        self._unlink: list[bytes] = []  # files of pieces dropped in the open transaction, removed once it commits
        self._read = PieceCache()  # plots held as maps, not copies
        self.check_schema()
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            files.make_private(location / name)
        if self.legacy_blobs() and upgrade is not None:
            upgrade(self)

    def close(self) -> None:
        self._read.clear()
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._db.in_transaction:  # inside batch() or add(): one commit for all
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._unlink.clear()
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if self._unlink:  # only now: a crash before the commit keeps both the rows and their files
            gone, self._unlink = self._unlink, []
            self.remove_files(gone)

    @contextmanager
    def lax(self) -> Iterator[None]:
        """Commits made meanwhile return before reaching the disk; the next ordinary commit syncs the log
        they are in, so they are durable with it (one fsync for both). For a record that nothing depends on
        until that commit (a save not yet the version on disk, whose bytes are still in the file)."""
        if self._db.in_transaction:  # inside batch(): its one commit is the durable one
            yield
            return
        self._db.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def save_lock(self, key: str | None) -> Iterator[None]:
        """A ``flock`` on ``save.lock``: one per store, whatever the notebook."""
        import fcntl

        fd = files.open_private(self.location / "save.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- versions -------------------------------------------------------------

    def add_version(self, key: str, sha: str | None, time: str, kind: str, base: int | None,
                    local: int | None, remote: int | None, conflicts: int, engine: str | None = None) -> int:
        if sqlite3.sqlite_version_info >= (3, 35):  # one statement: the number and the row
            return int(self._db.execute(
                f"INSERT INTO versions ({_VERSION_COLUMNS}) SELECT ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ? "
                "FROM versions WHERE path = ? RETURNING version",
                (key, sha, time, kind, base, local, remote, conflicts, engine, key)).fetchone()[0])
        number = self._db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE path = ?", (key,)).fetchone()[0]
        self._db.execute(f"INSERT INTO versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (key, number, sha, time, kind, base, local, remote, conflicts, engine))
        return int(number)

    def set_on_disk(self, key: str, version: int | None) -> None:
        if version is None:
            self._db.execute("DELETE FROM on_disk WHERE path = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO on_disk VALUES (?, ?)", (key, version))

    def on_disk(self, key: str):  # type: ignore[no-untyped-def]
        return as_version(self._db.execute(
            "SELECT v.* FROM on_disk d JOIN versions v ON v.path = d.path AND v.version = d.version WHERE d.path = ?",
            (key,)).fetchone())

    def versions(self, key: str, last: int | None) -> list:  # type: ignore[type-arg]
        rows = self._db.execute("SELECT * FROM (SELECT * FROM versions WHERE path = ? ORDER BY version DESC LIMIT ?)"
                                " ORDER BY version", (key, -1 if last is None else last))
        return [Version(*row) for row in rows]

    def version(self, key: str, number: int):  # type: ignore[no-untyped-def]
        return as_version(self._db.execute("SELECT * FROM versions WHERE path = ? AND version = ?",
                                          (key, number)).fetchone())

    def latest_with(self, key: str, sha: str):  # type: ignore[no-untyped-def]
        return as_version(self._db.execute(
            "SELECT * FROM versions WHERE path = ? AND sha256 = ? ORDER BY version DESC LIMIT 1", (key, sha)).fetchone())

    def tracked(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT path FROM on_disk ORDER BY path")]

    def rename(self, old: str, new: str) -> None:
        if self._db.execute("SELECT 1 FROM versions WHERE path = ?", (new,)).fetchone():
            return  # the new name has a history of its own; keep both
        for table in ("versions", "on_disk", "declarations", "pins"):
            self._db.execute(f"UPDATE {table} SET path = ? WHERE path = ?", (new, old))

    def mark_lost(self, key: str, number: int) -> None:
        self._db.execute("UPDATE versions SET kind = 'lost' WHERE path = ? AND version = ?", (key, number))
        self._db.execute("DELETE FROM on_disk WHERE path = ? AND version = ?", (key, number))

    # --- declarations -------------------------------------------------------

    def declare(self, key: str, sha: str, base_sha: str, writer: str | None, time: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO declarations VALUES (?, ?, ?, ?, ?)", (key, sha, base_sha, writer, time))

    def declared_base(self, key: str, sha: str):  # type: ignore[no-untyped-def]
        return as_version(self._db.execute(
            "SELECT v.* FROM declarations d JOIN versions v ON v.path = d.path AND v.sha256 = d.base_sha256 "
            "WHERE d.path = ? AND d.sha256 = ? ORDER BY v.version DESC LIMIT 1", (key, sha)).fetchone())

    def declared_writer(self, key: str, sha: str) -> str | None:
        row = self._db.execute("SELECT writer FROM declarations WHERE path = ? AND sha256 = ?", (key, sha)).fetchone()
        return row[0] if row else None

    def parents(self, key: str, sha: str) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT base_sha256 FROM declarations WHERE path = ? AND sha256 = ? UNION "
            "SELECT p.sha256 FROM versions m JOIN versions p ON p.path = m.path AND p.version IN (m.local, m.remote) "
            "WHERE m.path = ? AND m.sha256 = ? AND m.kind = 'merged' AND p.sha256 IS NOT NULL",
            (key, sha, key, sha))]

    # --- the lineage index -------------------------------------------------------

    def record_cells(self, sha: str, cells: dict[str, str]) -> None:
        row = self._db.execute("SELECT id, cells_recorded FROM contents WHERE sha256 = ?", (sha,)).fetchone()
        if row is None or row[1]:
            return  # a read, where inserting again would be a write transaction for nothing
        with self.transaction():
            self._db.executemany("INSERT OR IGNORE INTO cell_index VALUES (?, ?)",
                                 [(pair, row[0]) for pair in cell_pairs(cells)])
            self._db.execute("UPDATE contents SET cells_recorded = 1 WHERE id = ?", (row[0],))

    def sharing_cells(self, key: str, cells: dict[str, str], limit: int) -> list:  # type: ignore[type-arg]
        pairs = cell_pairs(cells)
        rows = self._db.execute(
            f"SELECT v.* FROM (SELECT content, count(*) AS n FROM cell_index WHERE pair IN ({','.join('?' * len(pairs))}) "
            "GROUP BY content) m JOIN contents c ON c.id = m.content JOIN versions v ON v.sha256 = c.sha256 AND v.path = ? "
            "ORDER BY m.n DESC, v.version DESC LIMIT ?", [*pairs, key, limit])
        return [Version(*row) for row in rows]


def open_backend(location: Path, upgrade: Callable[[SQLiteBackend], None] | None = None) -> SQLiteBackend:
    try:
        return SQLiteBackend(location, upgrade=upgrade)
    except (sqlite3.DatabaseError, PermissionError) as e:
        if isinstance(e, PermissionError) or not files.usable(location):
            raise files.denied(location, e) from None  # another user's store: fsck would not help
        raise StoreError(f"cannot open the store at '{location}': {e} (hint: nbmergesave fsck)") from None
