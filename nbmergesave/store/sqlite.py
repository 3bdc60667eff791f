"""The embedded backend: one SQLite database in WAL mode in the store folder (all of the store's SQL is here).

``index.sqlite`` holds the versions (one row each), contents (a manifest per
distinct file content) and pieces (each distinct piece once, by sha256).
A piece of :data:`LARGE` bytes or more (a plot) is a file of its own in
``pieces/`` (:class:`~.files.PieceFiles`), its row naming it: SQLite hands
a large blob over through several copies, a mapped file in one, so reading
a version costs about what reading the notebook's file does.
A store written by nbmergesave 0.1 (one zlib blob per content, table
``blobs``) is upgraded in place when opened: each blob is cut into pieces
and dropped in the same transaction, so an interrupted upgrade resumes
where it stopped and loses nothing.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError
from . import files
from .backend import COPIED, Buffer, PieceCache, Version, chunked
from .cells import cell_pairs
from .pieces import pack_ids, unpack_ids

SCHEMA_VERSION = "4"  # 3: plots in files, piece ids never reused; 4: the engine of each merge (older ones upgraded when opened)
DB_NAME = "index.sqlite"
LARGE = 16384  # stored bytes from which a piece is a file: a plot; below, a row costs less than a file's inode and slack
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


_VERSION_COLUMNS = ", ".join(COPIED["versions"])  # named: a store upgraded in place has the columns in this order too


class SQLiteBackend:
    """Rows of one store in ``LOCATION/index.sqlite``; see :class:`~nbmergesave.store.backend.Backend`."""

    name = "sqlite"

    def __init__(self, location: Path, *, upgrade: Callable[[SQLiteBackend], None] | None = None) -> None:
        self._version = Version
        self.location = location
        self.path = location / DB_NAME
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        if self._db.execute("PRAGMA page_count").fetchone()[0] == 0:  # these take effect before the first table only
            self._db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA journal_size_limit = 4194304")  # the log shrinks back after a checkpoint
        self._db.executescript(_SCHEMA)
        self.files = files.PieceFiles(location)
        self._unlink: list[bytes] = []  # files of pieces dropped in the open transaction, removed once it commits
        self._read = PieceCache()  # plots held as maps, not copies
        self._check_schema()
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            files.make_private(location / name)
        if self.legacy_blobs() and upgrade is not None:
            upgrade(self)

    def _check_schema(self) -> None:
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
            self._remove_files(gone)

    def _remove_files(self, digests: Collection[bytes] | None) -> None:
        """Remove the files of pieces no row names (``None``: every such file), under the write lock: every
        writer writes a piece's file inside its transaction, so none is between the file and its row now."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            named = {row[0] for row in self._db.execute("SELECT digest FROM pieces WHERE file")}
            if digests is None:
                self.files.sweep(named)
            else:
                self.files.remove([d for d in digests if d not in named])
        finally:
            self._db.execute("COMMIT")

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

    def _row(self, row: tuple | None):  # type: ignore[no-untyped-def,type-arg]
        return self._version(*row) if row else None

    # --- pieces and contents ------------------------------------------------

    def piece_ids(self, digests: Collection[bytes]) -> dict[bytes, int]:
        found: dict[bytes, int] = {}
        for part in chunked(list(digests)):
            found.update(self._db.execute(
                f"SELECT digest, id FROM pieces WHERE digest IN ({','.join('?' * len(part))})", part).fetchall())
        return found

    def put_piece(self, digest: bytes, codec: int, size: int, data: bytes) -> int:
        file = 0
        if len(data) >= LARGE:
            found = self._db.execute("SELECT id FROM pieces WHERE digest = ?", (digest,)).fetchone()
            if found:
                return int(found[0])
            self.files.write(digest, data)  # the file first: a row never names a file that is not there
            data, file = b"", len(data)
        cur = self._db.execute("INSERT OR IGNORE INTO pieces (digest, codec, size, data, file) VALUES (?, ?, ?, ?, ?)",
                               (digest, codec, size, data, file))
        if cur.rowcount:
            return int(cur.lastrowid)  # type: ignore[arg-type]
        return int(self._db.execute("SELECT id FROM pieces WHERE digest = ?", (digest,)).fetchone()[0])

    def pieces_of(self, manifest: bytes) -> list[tuple[int, Buffer]]:
        return self._read.get(unpack_ids(manifest), self._fetch)

    def _fetch(self, ids: list[int]) -> dict[int, tuple[int, Buffer]]:
        found: dict[int, tuple[int, Buffer]] = {}
        rows = self._db.execute(  # one statement; a file's row gives its digest
            "SELECT p.id, p.codec, iif(p.file, p.digest, p.data), p.file FROM json_each(?) j "
            "JOIN pieces p ON p.id = j.value", (pack_ids(ids).decode(),))
        for i, codec, data, file in rows:
            if file:
                try:
                    data = self.files.map(data)
                except FileNotFoundError:
                    continue  # the content is reported damaged
            found[i] = codec, data
        return found

    def has_content(self, sha: str) -> bool:
        return self._db.execute("SELECT 1 FROM contents WHERE sha256 = ?", (sha,)).fetchone() is not None

    def put_content(self, sha: str, size: int, manifest: bytes) -> None:
        self._db.execute("INSERT OR IGNORE INTO contents (sha256, size, manifest) VALUES (?, ?, ?)", (sha, size, manifest))

    def manifest(self, sha: str) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT size, manifest FROM contents WHERE sha256 = ?", (sha,)).fetchone()
        return (row[0], row[1]) if row else None

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
        return self._row(self._db.execute(
            "SELECT v.* FROM on_disk d JOIN versions v ON v.path = d.path AND v.version = d.version WHERE d.path = ?",
            (key,)).fetchone())

    def versions(self, key: str, last: int | None) -> list:  # type: ignore[type-arg]
        rows = self._db.execute("SELECT * FROM (SELECT * FROM versions WHERE path = ? ORDER BY version DESC LIMIT ?)"
                                " ORDER BY version", (key, -1 if last is None else last))
        return [self._version(*row) for row in rows]

    def version(self, key: str, number: int):  # type: ignore[no-untyped-def]
        return self._row(self._db.execute("SELECT * FROM versions WHERE path = ? AND version = ?",
                                          (key, number)).fetchone())

    def latest_with(self, key: str, sha: str):  # type: ignore[no-untyped-def]
        return self._row(self._db.execute(
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
        return self._row(self._db.execute(
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
        return [self._version(*row) for row in rows]

    # --- retention and collection --------------------------------------------------

    def all_versions(self) -> list:  # type: ignore[type-arg]
        return [self._version(*row) for row in self._db.execute("SELECT * FROM versions ORDER BY path, version")]

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

    def piece_sizes(self) -> dict[int, int]:
        # length(data) reads the blob's header only; the columns before it are in the row itself
        return dict(self._db.execute("SELECT id, length(data) + file FROM pieces").fetchall())

    def drop_pieces(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        self._read.drop(ids)
        for part in chunked([(i,) for i in ids]):
            self._unlink += [row[0] for i, in part for row in
                             self._db.execute("SELECT digest FROM pieces WHERE id = ? AND file", (i,))]
            self._db.executemany("DELETE FROM pieces WHERE id = ?", part)

    def iter_pieces(self) -> Iterator[tuple[int, bytes, int, bytes]]:
        cur = self._db.execute("SELECT id, digest, codec, data, file FROM pieces")
        while rows := cur.fetchmany(256):
            for i, digest, codec, data, file in rows:
                yield i, digest, codec, self.files.read(digest) if file else data

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
        self._remove_files(None)  # files left by a crash or a rollback

    def integrity(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # --- copying a whole store (``nbmergesave store copy``) ---------------------------

    def rows(self, table: str) -> list[tuple]:  # type: ignore[type-arg]
        return self._db.execute(f"SELECT {', '.join(COPIED[table])} FROM {table}").fetchall()

    def put_rows(self, table: str, rows: list[tuple]) -> None:  # type: ignore[type-arg]
        columns = COPIED[table]
        self._db.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * len(columns))})", rows)

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


def open_backend(location: Path, upgrade: Callable[[SQLiteBackend], None] | None = None) -> SQLiteBackend:
    try:
        return SQLiteBackend(location, upgrade=upgrade)
    except (sqlite3.DatabaseError, PermissionError) as e:
        if isinstance(e, PermissionError) or not files.usable(location):
            raise files.denied(location, e) from None  # another user's store: fsck would not help
        raise StoreError(f"cannot open the store at '{location}': {e} (hint: nbmergesave fsck)") from None
