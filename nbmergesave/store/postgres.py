"""The team backend: one PostgreSQL database shared by every host that mounts a project (all its SQL is here).

Chosen by a URL (``NBMERGESAVE_STORE_URL=postgresql://user@host:port/db``,
``--store URL``, Jupyter's ``NbMergeSave.store_url``); needs the ``postgres``
extra (``pip install 'nbmergesave[postgres]'``: psycopg 3 and psycopg_pool).
Reaching the database (the URL, the pool, creating and upgrading the schema)
is :mod:`.pg_connect`'s job; this module is the backend's operations.

:class:`PostgresBackend` is made of parts by job: running statements,
transactions and locks (:mod:`.pg_session`); retention, collection,
settings, size and copying (:mod:`.pg_collect`); and here pieces,
contents, versions, declarations and the lineage index.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from ..private import redact_url
from .backend import COPIED, Buffer, PieceCache, Version, as_version, chunked
from .cells import cell_pairs  # the lineage index's keys: the same numbers in every backend
from .pg_collect import PostgresCollection
from .pg_connect import check_url, drivers, lock_id, pool_for
from .pg_connect import Location, _close_pools, is_url  # noqa: F401  (callers import these from here)
from .pieces import unpack_ids

_schemas: dict[str, str] = {}  # url -> the schema its tables are in


class PostgresBackend(PostgresCollection):
    """Rows of one store in a PostgreSQL schema; see :class:`~nbmergesave.store.backend.Backend`.

    (Its bases: :class:`~.pg_collect.PostgresCollection`, on :class:`~.pg_session.PostgresSession`.)"""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        check_url(url)
        self.url = url
        self.where = redact_url(url)
        self._psycopg, self._psycopg_pool = drivers()
        pool_for(url)
        self._local = threading.local()
        self._read = PieceCache()  # ids are BIGSERIAL: never reused
        schema = _schemas.get(url) or self._run(lambda c: c.execute("SELECT current_schema()").fetchone()[0])
        _schemas[url] = schema
        self._write_lock = lock_id(schema, "nbmergesave write")
        self._save_all = lock_id(schema, "nbmergesave save")
        self._save_one = lock_id(schema, "nbmergesave notebook")

    def close(self) -> None:
        pass  # connections go back to the pool after each call; the pool lives as long as the process

    # --- pieces and contents ------------------------------------------------

    def piece_ids(self, digests: Collection[bytes]) -> dict[bytes, int]:
        found: dict[bytes, int] = {}
        for part in chunked(list(digests), 1000):
            found.update((bytes(d), i) for d, i in self._all(
                "SELECT digest, id FROM pieces WHERE digest = ANY(%s)", (list(part),)))
        return found

    def put_piece(self, digest: bytes, codec: int, size: int, data: bytes) -> int:
        row = self._one("INSERT INTO pieces (digest, codec, size, data) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (digest) DO NOTHING RETURNING id", (digest, codec, size, data))
        if row is not None:
            return int(row[0])
        return int(self._one("SELECT id FROM pieces WHERE digest = %s", (digest,))[0])  # type: ignore[index]

    def pieces_of(self, manifest: bytes) -> list[tuple[int, Buffer]]:
        return self._read.get(unpack_ids(manifest), self._fetch)

    def _fetch(self, ids: list[int]) -> dict[int, tuple[int, Buffer]]:
        found: dict[int, tuple[int, Buffer]] = {}
        for part in chunked(list(set(ids)), 1000):
            for i, codec, data in self._all("SELECT id, codec, data FROM pieces WHERE id = ANY(%s)", (list(part),),
                                            binary=True):
                found[i] = (codec, bytes(data))
        return found

    def has_content(self, sha: str) -> bool:
        return self._one("SELECT 1 FROM contents WHERE sha256 = %s", (sha,)) is not None

    def put_content(self, sha: str, size: int, manifest: bytes) -> None:
        self._exec("INSERT INTO contents (sha256, size, manifest) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                   (sha, size, manifest))

    def manifest(self, sha: str) -> tuple[int, bytes] | None:
        row = self._one("SELECT size, manifest FROM contents WHERE sha256 = %s", (sha,), binary=True)
        return (int(row[0]), bytes(row[1])) if row else None

    # --- versions -------------------------------------------------------------

    def add_version(self, key: str, sha: str | None, time: str, kind: str, base: int | None,
                    local: int | None, remote: int | None, conflicts: int, engine: str | None = None) -> int:
        row = self._one(
            f"INSERT INTO versions ({', '.join(COPIED['versions'])}) SELECT %s, COALESCE(MAX(version), 0) + 1, "
            "%s, %s, %s, %s, %s, %s, %s, %s FROM versions WHERE path = %s RETURNING version",
            (key, sha, time, kind, base, local, remote, conflicts, engine, key))
        return int(row[0])  # type: ignore[index]

    def set_on_disk(self, key: str, version: int | None) -> None:
        if version is None:
            self._exec("DELETE FROM on_disk WHERE path = %s", (key,))
        else:
            self._exec("INSERT INTO on_disk VALUES (%s, %s) ON CONFLICT (path) DO UPDATE SET version = excluded.version",
                       (key, version))

    def on_disk(self, key: str):  # type: ignore[no-untyped-def]
        return as_version(self._one(
            "SELECT v.* FROM on_disk d JOIN versions v ON v.path = d.path AND v.version = d.version WHERE d.path = %s",
            (key,)))

    def versions(self, key: str, last: int | None) -> list:  # type: ignore[type-arg]
        rows = self._all("SELECT * FROM (SELECT * FROM versions WHERE path = %s ORDER BY version DESC LIMIT %s) v "
                         "ORDER BY version", (key, last))
        return [Version(*row) for row in rows]

    def version(self, key: str, number: int):  # type: ignore[no-untyped-def]
        return as_version(self._one("SELECT * FROM versions WHERE path = %s AND version = %s", (key, number)))

    def latest_with(self, key: str, sha: str):  # type: ignore[no-untyped-def]
        return as_version(self._one(
            "SELECT * FROM versions WHERE path = %s AND sha256 = %s ORDER BY version DESC LIMIT 1", (key, sha)))

    def tracked(self) -> list[str]:
        return [row[0] for row in self._all("SELECT path FROM on_disk ORDER BY path COLLATE \"C\"")]

    def rename(self, old: str, new: str) -> None:
        if self._one("SELECT 1 FROM versions WHERE path = %s LIMIT 1", (new,)):
            return  # the new name has a history of its own; keep both
        for table in ("versions", "on_disk", "declarations", "pins"):
            self._exec(f"UPDATE {table} SET path = %s WHERE path = %s", (new, old))

    def mark_lost(self, key: str, number: int) -> None:
        self._exec("UPDATE versions SET kind = 'lost' WHERE path = %s AND version = %s", (key, number))
        self._exec("DELETE FROM on_disk WHERE path = %s AND version = %s", (key, number))

    # --- declarations -------------------------------------------------------

    def declare(self, key: str, sha: str, base_sha: str, writer: str | None, time: str) -> None:
        self._exec("INSERT INTO declarations VALUES (%s, %s, %s, %s, %s) ON CONFLICT (path, sha256) DO UPDATE SET "
                   "base_sha256 = excluded.base_sha256, writer = excluded.writer, time = excluded.time",
                   (key, sha, base_sha, writer, time))

    def declared_base(self, key: str, sha: str):  # type: ignore[no-untyped-def]
        return as_version(self._one(
            "SELECT v.* FROM declarations d JOIN versions v ON v.path = d.path AND v.sha256 = d.base_sha256 "
            "WHERE d.path = %s AND d.sha256 = %s ORDER BY v.version DESC LIMIT 1", (key, sha)))

    def declared_writer(self, key: str, sha: str) -> str | None:
        row = self._one("SELECT writer FROM declarations WHERE path = %s AND sha256 = %s", (key, sha))
        return row[0] if row else None

    def parents(self, key: str, sha: str) -> list[str]:
        return [row[0] for row in self._all(
            "SELECT base_sha256 FROM declarations WHERE path = %s AND sha256 = %s UNION "
            "SELECT p.sha256 FROM versions m JOIN versions p ON p.path = m.path AND p.version IN (m.local, m.remote) "
            "WHERE m.path = %s AND m.sha256 = %s AND m.kind = 'merged' AND p.sha256 IS NOT NULL",
            (key, sha, key, sha))]

    # --- the lineage index -------------------------------------------------------

    def record_cells(self, sha: str, cells: dict[str, str]) -> None:
        row = self._one("SELECT id, cells_recorded FROM contents WHERE sha256 = %s", (sha,))
        if row is None or row[1]:
            return  # a read, where inserting again would be a write transaction for nothing
        with self.transaction():
            self._exec("INSERT INTO cell_index SELECT pair, %s FROM unnest(%s::bigint[]) AS pair ON CONFLICT DO NOTHING",
                       (row[0], cell_pairs(cells)))
            self._exec("UPDATE contents SET cells_recorded = TRUE WHERE id = %s", (row[0],))

    def sharing_cells(self, key: str, cells: dict[str, str], limit: int) -> list:  # type: ignore[type-arg]
        rows = self._all(
            "SELECT v.* FROM (SELECT content, count(*) AS n FROM cell_index WHERE pair = ANY(%s::bigint[]) "
            "GROUP BY content) m JOIN contents c ON c.id = m.content JOIN versions v ON v.sha256 = c.sha256 "
            "AND v.path = %s ORDER BY m.n DESC, v.version DESC LIMIT %s", (cell_pairs(cells), key, limit))
        return [Version(*row) for row in rows]


def open_backend(url: str) -> PostgresBackend:
    return PostgresBackend(url)
