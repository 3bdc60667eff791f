"""Reaching a PostgreSQL store: its URL, the drivers, one pool per URL, and the schema (created or upgraded).

What :class:`~.postgres.PostgresBackend` stands on; the backend's operations
(all the SQL of a store's rows) are in :mod:`.postgres`.

* The tables are those of the SQLite backend (same columns, same order), in
  the first schema of the connection's ``search_path`` (created when
  missing), so several projects can share one database, a schema each:
  ``postgresql://.../db?options=-csearch_path%3Dteam_a``.
* The schema is created, or upgraded, on first use by a process, under an
  advisory lock so that hosts starting together do not race (``MIGRATIONS``).
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
from typing import Any

from ..errors import StoreError, StoreUnavailable
from ..private import redact_url

CONNECT_TIMEOUT = 3  # seconds to reach the server before a store call gives up
POOL_WAIT = 3.0  # seconds to wait for a pooled connection
RETRY_AFTER = 2.0  # after failing to reach the server, calls fail at once for this long (a save is held up once)
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
    [  # 2: the engine of each merge (earlier merges keep NULL: not recorded)
        "ALTER TABLE versions ADD COLUMN IF NOT EXISTS engine TEXT",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("versions", "contents", "pieces", "cell_index", "on_disk", "declarations", "pins", "settings")


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


def message(url: str, error: BaseException) -> str:
    """One line about ``error``, without the password (a driver may echo its connection string)."""
    text = " ".join(str(error).split()) or type(error).__name__
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def lock_id(*parts: str) -> int:
    """A signed 32-bit advisory lock key (collisions only make unrelated saves wait for each other)."""
    n = zlib.crc32("\0".join(parts).encode())
    return n - (1 << 32) if n >= 1 << 31 else n


def drivers() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg (hint: pip install 'nbmergesave[postgres]')") from None
    return psycopg, psycopg_pool


_pools: dict[str, Any] = {}
_pools_lock = threading.Lock()
_down: dict[str, tuple[float, str]] = {}  # url -> (monotonic time until which we do not try, why)


def unavailable(url: str, why: str) -> StoreUnavailable:
    """Note that ``url`` cannot be reached (calls in the next :data:`RETRY_AFTER` seconds fail at once)."""
    _down[url] = (time.monotonic() + RETRY_AFTER, why)
    with _pools_lock:
        pool = _pools.pop(url, None)
    if pool is not None:  # a pool whose server went away: a new one (after a direct connection) when it is back
        threading.Thread(target=pool.close, kwargs={"timeout": 1}, daemon=True).start()
    return StoreUnavailable(f"cannot reach the PostgreSQL store at '{redact_url(url)}': {why}")


def refuse_if_down(url: str) -> None:
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
    psycopg, _ = drivers()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as e:
        text = message(url, e)
        where = redact_url(url)
        if "password authentication failed" in text or "authentication" in text and "failed" in text:
            raise StoreError(f"the PostgreSQL store at '{where}' refused the credentials: {text}") from None
        if "does not exist" in text:
            raise StoreError(f"the PostgreSQL store at '{where}': {text}") from None
        raise unavailable(url, text) from None
    except psycopg.Error as e:  # a malformed URL
        raise StoreError(f"cannot use '{redact_url(url)}' as a PostgreSQL store: {message(url, e)}") from None
    try:
        _migrate(conn)
    except psycopg.Error as e:
        raise StoreError(f"cannot create the store's tables at '{redact_url(url)}': {message(url, e)}") from None
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
        conn.execute("SELECT pg_advisory_xact_lock(%s, 1)", (lock_id(schema, "nbmergesave migrate"),))
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


def pool_for(url: str) -> Any:
    """The process's pool for ``url``, made (after one direct connection that migrates) on first use."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is not None:
            return pool
    refuse_if_down(url)
    _connect_once(url)
    _, psycopg_pool = drivers()
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
