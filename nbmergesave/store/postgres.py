"""The team backend: one PostgreSQL database shared by every host that mounts a project (all its SQL is here).

Chosen by a URL (``NBMERGESAVE_STORE_URL=postgresql://user@host:port/db``,
``--store URL``, Jupyter's ``NbMergeSave.store_url``); needs the ``postgres``
extra (``pip install 'nbmergesave[postgres]'``: psycopg 3 and psycopg_pool).
Reaching the database (the URL, the pool, creating and upgrading the schema)
is :mod:`.pg_connect`'s job; this module is the backend's operations.

* Writes are serialised store-wide (``pg_advisory_xact_lock`` taken first in
  every write transaction), which is the contract the store's logic relies on
  (see :mod:`.backend`). The save lock is an advisory lock per notebook, held
  in a transaction of its own connection: a crashed holder's connection goes,
  and the lock with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError
from ..private import redact_url
from .backend import COPIED, Buffer, PieceCache, Version, chunked
from .cells import cell_pairs  # the lineage index's keys: the same numbers in every backend
from .pg_connect import TABLES, check_url, drivers, lock_id, message, pool_for, refuse_if_down, unavailable
from .pg_connect import Location, _close_pools, is_url  # noqa: F401  (callers import these from here)
from .pieces import unpack_ids

LOCK_TIMEOUT = "120s"  # the longest a save waits for another host's save of the same notebook
_KEYS = {"versions": "path, version", "on_disk": "path", "declarations": "path, sha256", "pins": "path, version",
         "settings": "name"}
_schemas: dict[str, str] = {}  # url -> the schema its tables are in


class PostgresBackend:
    """Rows of one store in a PostgreSQL schema; see :class:`~nbmergesave.store.backend.Backend`."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        check_url(url)
        self.url = url
        self.where = redact_url(url)
        self._version = Version
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

    # --- connections -----------------------------------------------------------

    def _error(self, e: BaseException) -> StoreError:
        if isinstance(e, StoreError):
            return e
        state = getattr(e, "sqlstate", None) or ""
        lost = isinstance(e, self._psycopg.OperationalError) and (not state or state[:2] in ("08", "57"))
        if lost or isinstance(e, self._psycopg_pool.PoolTimeout):  # the server went away, or never answered
            return unavailable(self.url, message(self.url, e) if str(e) else "no connection in time")
        return StoreError(f"the PostgreSQL store at '{self.where}' failed: {message(self.url, e)}")

    def _getconn(self) -> tuple[Any, Any]:
        """``(pool, connection)``: give the connection back to that pool."""
        refuse_if_down(self.url)
        pool = pool_for(self.url)
        try:
            return pool, pool.getconn()
        except (self._psycopg.Error, self._psycopg_pool.PoolTimeout) as e:
            raise self._error(e) from None

    @staticmethod
    def _putconn(pool: Any, conn: Any) -> None:
        try:
            pool.putconn(conn)
        except Exception:  # a pool closed meanwhile (its server went away)
            conn.close()

    def _run(self, work: Callable[[Any], Any]) -> Any:
        """``work(connection)``: in the current transaction, or on a pooled connection (a read: retried once
        on a connection the server dropped, as after a restart)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                return work(conn)
            except self._psycopg.Error as e:
                raise self._error(e) from None
        for attempt in range(3):
            pool, conn = self._getconn()
            try:
                return work(conn)
            except self._psycopg.OperationalError as e:
                if attempt == 2 or not conn.closed:
                    raise self._error(e) from None
            except self._psycopg.Error as e:
                raise self._error(e) from None
            finally:
                self._putconn(pool, conn)
        raise AssertionError("unreachable")

    def _all(self, query: str, params: Any = (), *, binary: bool = False) -> list[tuple[Any, ...]]:
        """Rows of ``query``; ``binary``: in PostgreSQL's binary format (bytea as raw bytes, not hex text)."""
        return self._run(lambda c: c.execute(query, params, binary=binary).fetchall())  # type: ignore[no-any-return]

    def _one(self, query: str, params: Any = (), *, binary: bool = False) -> tuple[Any, ...] | None:
        return self._run(lambda c: c.execute(query, params, binary=binary).fetchone())  # type: ignore[no-any-return]

    def _exec(self, query: str, params: Any = ()) -> None:
        self._run(lambda c: c.execute(query, params))

    def _many(self, query: str, rows: list[Any]) -> None:
        if rows:
            self._run(lambda c: c.cursor().executemany(query, rows))

    @contextmanager
    def _held(self, *statements: tuple[str, tuple[Any, ...]]) -> Iterator[Any]:
        """A connection in a transaction that ran ``statements`` (taking locks) first; retried on a dropped connection."""
        for attempt in range(3):
            pool, conn = self._getconn()
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_TIMEOUT,))
                for query, params in statements:
                    conn.execute(query, params)
                break
            except self._psycopg.OperationalError as e:
                self._rollback(conn)
                self._putconn(pool, conn)
                if attempt == 2 or not conn.closed:
                    raise self._error(e) from None
            except self._psycopg.Error as e:
                self._rollback(conn)
                self._putconn(pool, conn)
                raise self._error(e) from None
        try:
            try:
                yield conn
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except self._psycopg.Error as e:
                raise self._error(e) from None
        finally:
            self._putconn(pool, conn)

    def _rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.Error:
            pass  # a broken connection: the server rolled back already, the pool drops it

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:  # nested: one commit for all
            yield
            return
        with self._held(("SELECT pg_advisory_xact_lock(%s, 0)", (self._write_lock,))) as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    @contextmanager
    def save_lock(self, key: str | None) -> Iterator[None]:
        """Advisory locks in a transaction of their own: a notebook's key exclusively and the store's
        shared, or the store's exclusively for ``None``. Released at commit, or when a crashed holder's
        connection goes."""
        if key is None:
            locks = [("SELECT pg_advisory_xact_lock(%s, 0)", (self._save_all,))]
        else:
            locks = [("SELECT pg_advisory_xact_lock_shared(%s, 0)", (self._save_all,)),
                     ("SELECT pg_advisory_xact_lock(%s, %s)", (self._save_one, lock_id(key)))]
        with self._held(*locks):
            yield

    def _row(self, row: tuple[Any, ...] | None):  # type: ignore[no-untyped-def]
        return self._version(*row) if row else None

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
        return self._row(self._one(
            "SELECT v.* FROM on_disk d JOIN versions v ON v.path = d.path AND v.version = d.version WHERE d.path = %s",
            (key,)))

    def versions(self, key: str, last: int | None) -> list:  # type: ignore[type-arg]
        rows = self._all("SELECT * FROM (SELECT * FROM versions WHERE path = %s ORDER BY version DESC LIMIT %s) v "
                         "ORDER BY version", (key, last))
        return [self._version(*row) for row in rows]

    def version(self, key: str, number: int):  # type: ignore[no-untyped-def]
        return self._row(self._one("SELECT * FROM versions WHERE path = %s AND version = %s", (key, number)))

    def latest_with(self, key: str, sha: str):  # type: ignore[no-untyped-def]
        return self._row(self._one(
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
        return self._row(self._one(
            "SELECT v.* FROM declarations d JOIN versions v ON v.path = d.path AND v.sha256 = d.base_sha256 "
            "WHERE d.path = %s AND d.sha256 = %s ORDER BY v.version DESC LIMIT 1", (key, sha)))

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
        return [self._version(*row) for row in rows]

    # --- retention and collection --------------------------------------------------

    def all_versions(self) -> list:  # type: ignore[type-arg]
        return [self._version(*row) for row in self._all("SELECT * FROM versions ORDER BY path COLLATE \"C\", version")]

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


def open_backend(url: str) -> PostgresBackend:
    return PostgresBackend(url)
