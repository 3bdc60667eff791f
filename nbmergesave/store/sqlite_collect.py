"""The SQLite store's collection, settings, size and copying: what retention, gc, fsck, ``store stats`` and
``store copy`` ask of its rows.

Part of :class:`~.sqlite.SQLiteBackend` (:class:`SQLiteCollection` is mixed into it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from .files import PieceFiles
from .backend import COPIED, Version
from .sqlite_schema import DB_NAME


class SQLiteCollection:
    """Retention, collection, settings, size and copying: part of :class:`~.sqlite.SQLiteBackend`, on its
    connection ``_db``."""

    _db: sqlite3.Connection
    location: Path
    files: PieceFiles
    transaction: Callable[[], AbstractContextManager[None]]
    remove_files: Callable[[Collection[bytes] | None], None]

    def all_versions(self) -> list:  # type: ignore[type-arg]
        return [Version(*row) for row in self._db.execute("SELECT * FROM versions ORDER BY path, version")]

    def pins(self) -> set[tuple[str, int]]:
        return {(p, v) for p, v in self._db.execute("SELECT path, version FROM pins")}

    def set_pin(self, key: str, number: int, pinned: bool) -> None:
        if pinned:
            self._db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (key, number))
        else:
            self._db.execute("DELETE FROM pins WHERE path = ? AND version = ?", (key, number))

    def declared_bases_since(self, time: str) -> set[tuple[str, str]]:
        return {(p, s) for p, s in self._db.execute(
            "SELECT path, base_sha256 FROM declarations WHERE time >= ?", (time,))}

    def drop_versions(self, which: Iterable[tuple[str, int]]) -> None:
        which = list(which)
        self._db.executemany("DELETE FROM versions WHERE path = ? AND version = ?", which)
        self._db.executemany("DELETE FROM pins WHERE path = ? AND version = ?", which)

    def contents(self) -> Iterator[tuple[str, int, bytes]]:
        yield from self._db.execute("SELECT sha256, size, manifest FROM contents").fetchall()

    def unreferenced_contents(self) -> list[str]:
        return [row[0] for row in self._db.execute(
            "SELECT sha256 FROM contents WHERE sha256 NOT IN (SELECT sha256 FROM versions WHERE sha256 IS NOT NULL)")]

    def drop_contents(self, shas: Iterable[str]) -> None:
        ids = [row[0] for s in shas for row in self._db.execute("SELECT id FROM contents WHERE sha256 = ?", (s,))]
        self._db.executemany("DELETE FROM cell_index WHERE content = ?", [(i,) for i in ids])
        self._db.executemany("DELETE FROM contents WHERE id = ?", [(i,) for i in ids])

    def setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_setting(self, name: str, value: str) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    def disk_usage(self) -> int:
        total = 0
        for name in (DB_NAME, DB_NAME + "-wal"):
            try:
                total += (self.location / name).stat().st_size
            except FileNotFoundError:
                pass
        return total + self.files.disk_usage()

    def free_bytes(self) -> int:
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(free * self._db.execute("PRAGMA page_size").fetchone()[0])

    def compact(self) -> None:
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # a store from before: switch once
            try:
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._db.execute("VACUUM")
            except sqlite3.OperationalError:
                pass  # another process is using the store; the next collection tries again
        self._db.execute("PRAGMA incremental_vacuum")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.remove_files(None)  # files left by a crash or a rollback

    def integrity(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # --- copying a whole store (``nbmergesave store copy``) ---------------------------

    def rows(self, table: str) -> list[tuple]:  # type: ignore[type-arg]
        return self._db.execute(f"SELECT {', '.join(COPIED[table])} FROM {table}").fetchall()

    def put_rows(self, table: str, rows: list[tuple]) -> None:  # type: ignore[type-arg]
        columns = COPIED[table]
        self._db.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * len(columns))})", rows)
