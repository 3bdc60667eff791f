"""The team backend: one PostgreSQL database shared by every host that mounts a project (all its SQL is here).

Chosen by a URL (``NBMERGESAVE_STORE_URL=postgresql://user@host:port/db``,
``--store URL``, Jupyter's ``NbMergeSave.store_url``); needs the ``postgres``
extra (``pip install 'nbmergesave[postgres]'``: psycopg 3 and psycopg_pool).

* The tables are those of the SQLite backend (same columns, same order), in
  the first schema of the connection's ``search_path`` (created when
  missing), so several projects can share one database, a schema each:
  ``postgresql://.../db?options=-csearch_path%3Dteam_a``.
* The schema is created, or upgraded, on first use by a process, under an
  advisory lock so that hosts starting together do not race (``MIGRATIONS``).
* Writes are serialised store-wide (``pg_advisory_xact_lock`` taken first in
  every write transaction), which is the contract the store's logic relies on
  (see :mod:`.backend`). The save lock is an advisory lock per notebook, held
  in a transaction of its own connection: a crashed holder's connection goes,
  and the lock with it.
* Connections come from one pool per URL per process (a long-running server
  keeps a few open); connecting gives up after ``CONNECT_TIMEOUT`` seconds and
  waiting for a pooled connection after ``POOL_WAIT``, so a database that is
  down makes store calls fail fast with :class:`~nbmergesave.errors.StoreUnavailable`,
  never hang a save. Error messages never carry the password (:func:`redact_url`).
"""

from __future__ import annotations

import atexit
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError, StoreUnavailable
from ..private import redact_url
from .backend import COPIED, Buffer, PieceCache, chunked
from .pieces import unpack_ids
from .cells import cell_pairs  # the lineage index's keys: the same numbers in every backend

CONNECT_TIMEOUT = 3  # seconds to reach the server before a store call gives up
POOL_WAIT = 3.0  # seconds to wait for a pooled connection
RETRY_AFTER = 2.0  # after failing to reach the server, calls fail at once for this long (a save is held up once)
LOCK_TIMEOUT = "120s"  # the longest a save waits for another host's save of the same notebook
SCHEMES = ("postgresql", "postgres")

#: Schema upgrades, in order: ``MIGRATIONS[n]`` takes a store from version ``n`` to ``n + 1``.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS versions (
            path TEXT NOT NULL,
            version INTEGER NOT NULL,
            sha256 TEXT,
            time TEXT NOT NULL,
            kind TEXT NOT NULL,
            base INTEGER, local INTEGER, remote INTEGER,
            conflicts INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (path, version))""",
        "CREATE INDEX IF NOT EXISTS versions_by_content ON versions (path, sha256)",
        "CREATE INDEX IF NOT EXISTS versions_by_sha ON versions (sha256)",
        """CREATE TABLE IF NOT EXISTS contents (
            id BIGSERIAL PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            size BIGINT NOT NULL,
            manifest BYTEA NOT NULL,
            cells_recorded BOOLEAN NOT NULL DEFAULT FALSE)""",
        """CREATE TABLE IF NOT EXISTS pieces (
            id BIGSERIAL PRIMARY KEY,
            digest BYTEA NOT NULL UNIQUE,
            codec INTEGER NOT NULL,
            size BIGINT NOT NULL,
            data BYTEA NOT NULL)""",
        # pieces come compressed where that pays (pieces.encode); compressing the rest again (base64
        # images) would cost a decompression on every read for a quarter of their size
        "ALTER TABLE pieces ALTER COLUMN data SET STORAGE EXTERNAL",
        "CREATE TABLE IF NOT EXISTS cell_index (pair BIGINT NOT NULL, content BIGINT NOT NULL, PRIMARY KEY (pair, content))",
        "CREATE TABLE IF NOT EXISTS on_disk (path TEXT PRIMARY KEY, version INTEGER NOT NULL)",
        """CREATE TABLE IF NOT EXISTS declarations (
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            base_sha256 TEXT NOT NULL,
            writer TEXT,
            time TEXT NOT NULL,
            PRIMARY KEY (path, sha256))""",
        "CREATE TABLE IF NOT EXISTS pins (path TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (path, version))",
        "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("versions", "contents", "pieces", "cell_index", "on_disk", "declarations", "pins", "settings")
_KEYS = {"versions": "path, version", "on_disk": "path", "declarations": "path, sha256", "pins": "path, version",
         "settings": "name"}


def is_url(location: object) -> bool:
    """Whether a ``--store`` value names a database (``scheme://...``) rather than a folder."""
    return isinstance(location, str) and "://" in location


class Location(str):
    """A PostgreSQL store's ``Store.location``: prints (logs, status, JSON) without the password,
    and opens the store again with it (``Store.open(root, store.location)``)."""

    url: str

    def __new__(cls, url: str) -> Location:
        shown = super().__new__(cls, redact_url(url))
        shown.url = url
        return shown


def _secrets(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in urllib.parse.parse_qsl(parts.query) if k.lower() == "password" and v]
    return [s for s in found if s] + [urllib.parse.unquote(s) for s in found if s]


def _message(url: str, error: BaseException) -> str:
    """One line about ``error``, without the password (a driver may echo its connection string)."""
    text = " ".join(str(error).split()) or type(error).__name__
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _lock_id(*parts: str) -> int:
    """A signed 32-bit advisory lock key (collisions only make unrelated saves wait for each other)."""
    n = zlib.crc32("\0".join(parts).encode())
    return n - (1 << 32) if n >= 1 << 31 else n


def _drivers() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg (hint: pip install 'nbmergesave[postgres]')") from None
    return psycopg, psycopg_pool


_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()
_schemas: dict[str, str] = {}  # url -> the schema its tables are in
_down: dict[str, tuple[float, str]] = {}  # url -> (monotonic time until which we do not try, why)


def _unavailable(url: str, why: str) -> StoreUnavailable:
    """Note that ``url`` cannot be reached (calls in the next :data:`RETRY_AFTER` seconds fail at once)."""
    _down[url] = (time.monotonic() + RETRY_AFTER, why)
    with _pools_lock:
        pool = _pools.pop(url, None)
    if pool is not None:  # a pool whose server went away: a new one (after a direct connection) when it is back
        threading.Thread(target=pool.close, kwargs={"timeout": 1}, daemon=True).start()
    return StoreUnavailable(f"cannot reach the PostgreSQL store at '{redact_url(url)}': {why}")


def _refuse_if_down(url: str) -> None:
    until, why = _down.get(url, (0.0, ""))
    if time.monotonic() < until:
        raise StoreUnavailable(f"cannot reach the PostgreSQL store at '{redact_url(url)}': {why} "
                               f"(trying again within {RETRY_AFTER:.0f} s)")


def _close_pools() -> None:
    with _pools_lock:
        for pool in _pools.values():
            try:
                pool.close(timeout=2)
            except Exception:
                pass
        _pools.clear()


atexit.register(_close_pools)


def check_url(url: str) -> None:
    """Refuse a URL that is not PostgreSQL's, with one line."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise StoreError(f"'{redact_url(url)}' is not a PostgreSQL URL (hint: postgresql://user@host:5432/dbname, "
                         "or a folder for the embedded store)")


def _connect_once(url: str) -> None:
    """Connect directly once: a clear error for a wrong password or a server that is down, then migrate."""
    psycopg, _ = _drivers()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as e:
        text = _message(url, e)
        where = redact_url(url)
        if "password authentication failed" in text or "authentication" in text and "failed" in text:
            raise StoreError(f"the PostgreSQL store at '{where}' refused the credentials: {text}") from None
        if "does not exist" in text:
            raise StoreError(f"the PostgreSQL store at '{where}': {text}") from None
        raise _unavailable(url, text) from None
    except psycopg.Error as e:  # a malformed URL
        raise StoreError(f"cannot use '{redact_url(url)}' as a PostgreSQL store: {_message(url, e)}") from None
    try:
        _migrate(conn)
    except psycopg.Error as e:
        raise StoreError(f"cannot create the store's tables at '{redact_url(url)}': {_message(url, e)}") from None
    finally:
        conn.close()


def _migrate(conn: Any) -> None:
    """Create the schema named by the search path when missing, then the tables, or upgrade them."""
    if conn.execute("SELECT current_schema()").fetchone()[0] is None:
        first = conn.execute("SHOW search_path").fetchone()[0].split(",")[0].strip().strip('"')
        first = conn.info.user if first == "$user" else first
        from psycopg import sql

        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(first)))
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 1)", (_lock_id(schema, "nbmergesave migrate"),))
        exists = conn.execute("SELECT to_regclass('settings') IS NOT NULL").fetchone()[0]
        current = 0
        if exists:
            row = conn.execute("SELECT value FROM settings WHERE name = 'pg_schema'").fetchone()
            current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(f"this PostgreSQL store was written by a newer nbmergesave (schema {current}, "
                             f"this one knows {SCHEMA_VERSION}) (hint: upgrade nbmergesave)")
        for step in MIGRATIONS[current:]:
            for statement in step:
                conn.execute(statement)
        if current < SCHEMA_VERSION:
            conn.execute("INSERT INTO settings VALUES ('pg_schema', %s) ON CONFLICT (name) DO UPDATE SET value = "
                         "excluded.value", (str(SCHEMA_VERSION),))


def _pool(url: str) -> Any:
    """The process's pool for ``url``, made (after one direct connection that migrates) on first use."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is not None:
            return pool
    _refuse_if_down(url)
    _connect_once(url)
    _, psycopg_pool = _drivers()
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            extra = {"check": psycopg_pool.ConnectionPool.check_connection} \
                if hasattr(psycopg_pool.ConnectionPool, "check_connection") else {}
            pool = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=10, timeout=POOL_WAIT, open=True, name="nbmergesave",
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT}, **extra)
            _pools[url] = pool
        return pool


class PostgresBackend:
    """Rows of one store in a PostgreSQL schema; see :class:`~nbmergesave.store.backend.Backend`."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        from . import Version

        check_url(url)
        self.url = url
        self.where = redact_url(url)
        self._version = Version
        self._psycopg, self._psycopg_pool = _drivers()
        _pool(url)
        self._local = threading.local()
        self._read = PieceCache()  # ids are BIGSERIAL: never reused
        schema = _schemas.get(url) or self._run(lambda c: c.execute("SELECT current_schema()").fetchone()[0])
        _schemas[url] = schema
        self._write_lock = _lock_id(schema, "nbmergesave write")
        self._save_all = _lock_id(schema, "nbmergesave save")
        self._save_one = _lock_id(schema, "nbmergesave notebook")

    def close(self) -> None:
        pass  # connections go back to the pool after each call; the pool lives as long as the process

    # --- connections -----------------------------------------------------------

    def _error(self, e: BaseException) -> StoreError:
        if isinstance(e, StoreError):
            return e
        state = getattr(e, "sqlstate", None) or ""
        lost = isinstance(e, self._psycopg.OperationalError) and (not state or state[:2] in ("08", "57"))
        if lost or isinstance(e, self._psycopg_pool.PoolTimeout):  # the server went away, or never answered
            return _unavailable(self.url, _message(self.url, e) if str(e) else "no connection in time")
        return StoreError(f"the PostgreSQL store at '{self.where}' failed: {_message(self.url, e)}")

    def _getconn(self) -> tuple[Any, Any]:
        """``(pool, connection)``: give the connection back to that pool."""
        _refuse_if_down(self.url)
        pool = _pool(self.url)
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
                     ("SELECT pg_advisory_xact_lock(%s, %s)", (self._save_one, _lock_id(key)))]
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
                    local: int | None, remote: int | None, conflicts: int) -> int:
        row = self._one(
            "INSERT INTO versions SELECT %s, COALESCE(MAX(version), 0) + 1, %s, %s, %s, %s, %s, %s, %s "
            "FROM versions WHERE path = %s RETURNING version",
            (key, sha, time, kind, base, local, remote, conflicts, key))
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
