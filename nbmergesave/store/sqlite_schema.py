"""The SQLite store's tables: created when missing, older layouts upgraded when opened, newer ones refused.

Part of :class:`~.sqlite.SQLiteBackend` (:class:`SQLiteSchema` is mixed into it).
A store written by nbmergesave 0.1 (one zlib blob per content, table
``blobs``) is upgraded in place when opened: the store's logic (passed in
as ``upgrade``) cuts each blob into pieces, reading and dropping the blobs
with the methods here, each blob dropped in the transaction that stored its
pieces, so an interrupted upgrade resumes where it stopped and loses nothing.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from ..errors import StoreError

DB_NAME = "index.sqlite"
SCHEMA_VERSION = "4"  # 3: plots in files, piece ids never reused; 4: the engine of each merge (older ones upgraded when opened)
PAGE_SIZE = 4096  # measured against 16 KiB: reads 10 % slower, the watcher's first scan 10-25 % faster, less memory

# ids never reused (AUTOINCREMENT): a piece read and cached under its id is that piece for good.
# file: the stored length when the piece is a file of its own (data is then empty), 0 when in the row
_PIECES = """pieces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest BLOB NOT NULL UNIQUE,
    codec INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    file INTEGER NOT NULL DEFAULT 0
);"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    base INTEGER, local INTEGER, remote INTEGER,
    conflicts INTEGER NOT NULL DEFAULT 0,
    engine TEXT,
    PRIMARY KEY (path, version)
);
CREATE INDEX IF NOT EXISTS versions_by_content ON versions (path, sha256);
CREATE TABLE IF NOT EXISTS contents (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    manifest BLOB NOT NULL,
    cells_recorded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {pieces}
CREATE TABLE IF NOT EXISTS cell_index (
    pair INTEGER NOT NULL,
    content INTEGER NOT NULL,
    PRIMARY KEY (pair, content)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS on_disk (
    path TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS declarations (
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    base_sha256 TEXT NOT NULL,
    writer TEXT,
    time TEXT NOT NULL,
    PRIMARY KEY (path, sha256)
);
CREATE TABLE IF NOT EXISTS pins (
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (path, version)
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
""".format(pieces=_PIECES)


class SQLiteSchema:
    """Creating, checking and upgrading the tables (and the 0.1 layout's upgrade steps): part of
    :class:`~.sqlite.SQLiteBackend`, on its connection ``_db``."""

    _db: sqlite3.Connection
    location: Path
    transaction: Callable[[], AbstractContextManager[None]]
    record_cells: Callable[[str, dict[str, str]], None]

    def create_tables(self) -> None:
        """The connection's settings and the tables, on a new database or one opened again."""
        if self._db.execute("PRAGMA page_count").fetchone()[0] == 0:  # these take effect before the first table only
            self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA journal_size_limit = 4194304")  # the log shrinks back after a checkpoint
        self._db.executescript(_SCHEMA)

    def check_schema(self) -> None:
        """Refuse a newer layout; bring an older one up to :data:`SCHEMA_VERSION` (each step in a transaction)."""
        row = self._db.execute("SELECT value FROM settings WHERE name = 'schema'").fetchone()
        if row is not None and int(row[0]) > int(SCHEMA_VERSION):
            raise StoreError(f"the store at '{self.location}' was written by a newer nbmergesave (schema {row[0]}, "
                             f"this one reads up to {SCHEMA_VERSION}); upgrade nbmergesave")
        if self._pieces_of_schema_2():
            with self.transaction():  # its pieces stay rows (new large ones are files); ids are never reused now
                if self._pieces_of_schema_2():
                    self._db.execute("CREATE TABLE pieces_3 " + _PIECES.split(" ", 1)[1])
                    self._db.execute("INSERT INTO pieces_3 (id, digest, codec, size, data) "
                                     "SELECT id, digest, codec, size, data FROM pieces")
                    self._db.execute("DROP TABLE pieces")
                    self._db.execute("ALTER TABLE pieces_3 RENAME TO pieces")
        if not self._has_engine_column():
            with self.transaction():  # schema 4: the engine of each merge; earlier merges keep NULL (not recorded)
                if not self._has_engine_column():
                    self._db.execute("ALTER TABLE versions ADD COLUMN engine TEXT")
        if (row is None or row[0] != SCHEMA_VERSION) and not self.legacy_blobs():
            with self.transaction():
                self._db.execute("INSERT OR REPLACE INTO settings VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def _has_engine_column(self) -> bool:
        return any(r[1] == "engine" for r in self._db.execute("PRAGMA table_info(versions)"))

    def _pieces_of_schema_2(self) -> bool:
        return "AUTOINCREMENT" not in self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'pieces'").fetchone()[0]

    # --- upgrading a store written by nbmergesave 0.1 --------------------------------

    def legacy_blobs(self) -> bool:
        return self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'blobs'").fetchone() is not None

    def legacy_batch(self, n: int) -> list[tuple[str, bytes]]:
        """Up to ``n`` blobs of the old layout: ``(sha, zlib-compressed bytes)`` (none once another process finished)."""
        if not self.legacy_blobs():
            return []
        return self._db.execute("SELECT sha256, data FROM blobs LIMIT ?", (n,)).fetchall()

    def drop_legacy_blob(self, sha: str) -> None:
        self._db.execute("DELETE FROM blobs WHERE sha256 = ?", (sha,))

    def finish_upgrade(self) -> None:
        """Once every blob is cut: move the old lineage index over, drop the old tables."""
        with self.transaction():
            if not self.legacy_blobs() or self._db.execute("SELECT 1 FROM blobs LIMIT 1").fetchone() is not None:
                return  # done by another process, or not done yet
            if self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cell_sources'").fetchone():
                by_content: dict[str, dict[str, str]] = {}
                for sha, cell, source in self._db.execute("SELECT sha256, cell, source FROM cell_sources"):
                    by_content.setdefault(sha, {})[cell] = source
                for sha, cells in by_content.items():
                    self.record_cells(sha, cells)
                self._db.execute("DROP TABLE cell_sources")
            self._db.execute("DROP TABLE blobs")
            self._db.execute("INSERT OR REPLACE INTO settings VALUES ('schema', ?)", (SCHEMA_VERSION,))


def legacy_decompress(data: bytes) -> bytes | None:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return None
