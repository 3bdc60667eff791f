"""The SQLite store's pieces and contents: rows, and a file of its own for each large piece (a plot).

Part of :class:`~.sqlite.SQLiteBackend` (:class:`SQLitePieces` is mixed into it).
A piece of :data:`LARGE` bytes or more is a file in ``pieces/``
(:class:`~.files.PieceFiles`), its row naming it: SQLite hands a large blob
over through several copies, a mapped file in one, so reading a version costs
about what reading the notebook's file does. A file is written before its row
and removed only after the row is gone and committed, so a row never names a
file that is not there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Iterator

from .files import PieceFiles
from .backend import Buffer, PieceCache, chunked
from .pieces import pack_ids, unpack_ids

LARGE = 16384  # stored bytes from which a piece is a file: a plot; below, a row costs less than a file's inode and slack


class SQLitePieces:
    """Pieces and contents: part of :class:`~.sqlite.SQLiteBackend`, on its connection ``_db``, its piece
    ``files``, its read cache ``_read`` and ``_unlink`` (files of pieces dropped in the open transaction)."""

    _db: sqlite3.Connection
    files: PieceFiles
    _read: PieceCache
    _unlink: list[bytes]

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

    def remove_files(self, digests: Collection[bytes] | None) -> None:
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
