"""The PostgreSQL store's collection, settings, size and copying: what retention, gc, fsck, ``store stats``
and ``store copy`` ask of its rows.

Part of :class:`~.postgres.PostgresBackend` (:class:`PostgresCollection` is one of its bases).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .backend import COPIED, PieceCache, Version, chunked
from .pg_connect import TABLES
from .pg_session import PostgresSession

_KEYS = {"versions": "path, version", "on_disk": "path", "declarations": "path, sha256", "pins": "path, version",
         "settings": "name"}


class PostgresCollection(PostgresSession):
    """Retention, collection, settings, size and copying: part of :class:`~.postgres.PostgresBackend`."""

    _read: PieceCache

    def all_versions(self) -> list:  # type: ignore[type-arg]
        return [Version(*row) for row in self._all("SELECT * FROM versions ORDER BY path COLLATE \"C\", version")]

    def pins(self) -> set[tuple[str, int]]:
        return {(p, v) for p, v in self._all("SELECT path, version FROM pins")}

    def set_pin(self, key: str, number: int, pinned: bool) -> None:
        if pinned:
            self._exec("INSERT INTO pins VALUES (%s, %s) ON CONFLICT DO NOTHING", (key, number))
        else:
            self._exec("DELETE FROM pins WHERE path = %s AND version = %s", (key, number))

    def declared_bases_since(self, time: str) -> set[tuple[str, str]]:
        return {(p, s) for p, s in self._all("SELECT path, base_sha256 FROM declarations WHERE time >= %s", (time,))}

    def drop_versions(self, which: Iterable[tuple[str, int]]) -> None:
        which = list(which)
        self._many("DELETE FROM versions WHERE path = %s AND version = %s", which)
        self._many("DELETE FROM pins WHERE path = %s AND version = %s", which)

    def contents(self) -> Iterator[tuple[str, int, bytes]]:
        yield from ((sha, int(size), bytes(m)) for sha, size, m in self._all("SELECT sha256, size, manifest FROM contents"))

    def unreferenced_contents(self) -> list[str]:
        return [row[0] for row in self._all(
            "SELECT sha256 FROM contents c WHERE NOT EXISTS (SELECT 1 FROM versions v WHERE v.sha256 = c.sha256)")]

    def drop_contents(self, shas: Iterable[str]) -> None:
        shas = list(shas)
        for part in chunked(shas, 1000):
            self._exec("DELETE FROM cell_index WHERE content IN (SELECT id FROM contents WHERE sha256 = ANY(%s))",
                       (list(part),))
            self._exec("DELETE FROM contents WHERE sha256 = ANY(%s)", (list(part),))

    def piece_sizes(self) -> dict[int, int]:
        return {int(i): int(n) for i, n in self._all("SELECT id, octet_length(data) FROM pieces")}

    def drop_pieces(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        self._read.drop(ids)
        for part in chunked(ids, 1000):
            self._exec("DELETE FROM pieces WHERE id = ANY(%s)", (list(part),))

    def iter_pieces(self) -> Iterator[tuple[int, bytes, int, bytes]]:
        last = 0
        while True:
            rows = self._all("SELECT id, digest, codec, data FROM pieces WHERE id > %s ORDER BY id LIMIT 256", (last,),
                             binary=True)
            if not rows:
                return
            for i, digest, codec, data in rows:
                yield int(i), bytes(digest), int(codec), bytes(data)
            last = rows[-1][0]

    def setting(self, name: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE name = %s", (name,))
        return row[0] if row else None

    def set_setting(self, name: str, value: str) -> None:
        with self.transaction():
            self._exec("INSERT INTO settings VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                       (name, value))

    def disk_usage(self) -> int:
        row = self._one("SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(%s)",
                        (list(TABLES),))
        return int(row[0]) if row else 0

    def free_bytes(self) -> int:
        return 0  # PostgreSQL reuses dead rows' space itself (autovacuum); nothing to give back by hand

    def compact(self) -> None:
        for table in ("versions", "contents", "pieces", "cell_index"):
            self._exec(f"VACUUM {table}")

    def integrity(self) -> str:
        # the server keeps its own pages consistent (and checksums them where enabled); what can be
        # wrong here is the rows, which fsck's own checks find
        self._one("SELECT 1")
        return "ok"

    # --- copying a whole store (``nbmergesave store copy``) ---------------------------

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        return self._all(f"SELECT {', '.join(COPIED[table])} FROM {table} ORDER BY {_KEYS[table]}")

    def put_rows(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        columns = COPIED[table]
        self._many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
                   "ON CONFLICT DO NOTHING", rows)
