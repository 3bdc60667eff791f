"""Running a PostgreSQL store's statements: pooled connections, a retry on a dropped one, errors worded for
people, write transactions and save locks.

Part of :class:`~.postgres.PostgresBackend` (:class:`PostgresSession` is its base).
Writes are serialised store-wide (``pg_advisory_xact_lock`` taken first in
every write transaction), which is the contract the store's logic relies on
(see :mod:`.backend`). The save lock is an advisory lock per notebook, held in
a transaction of its own connection: a crashed holder's connection goes, and
the lock with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError
from .pg_connect import lock_id, message, pool_for, refuse_if_down, unavailable

LOCK_TIMEOUT = "120s"  # the longest a save waits for another host's save of the same notebook


class PostgresSession:
    """Statements, transactions and locks on the pool of ``url``: the base of :class:`~.postgres.PostgresBackend`,
    which sets the drivers (``_psycopg``, ``_psycopg_pool``) and the lock ids of its schema."""

    url: str
    where: str  # the URL without its password, for messages
    _psycopg: Any
    _psycopg_pool: Any
    _local: threading.local  # the transaction this thread has open (``conn``)
    _write_lock: int
    _save_all: int
    _save_one: int

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
