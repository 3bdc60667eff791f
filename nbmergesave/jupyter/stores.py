"""Where the Jupyter server keeps its versions while it saves: the notebook's store, or the local spool
standing in for it while it is away, or (when even the spool cannot be written) a scratch store; and the
save lock that keeps saves of one notebook apart.

One mechanism for every case: an embedded store that answers is kept open for the next save of its
folder (opening one costs a connection and its schema check, each save three times over); any store
error drops it (closed, forgotten), and the next open goes through :func:`nbmergesave.sync.open_store`,
which hands out the spool while the store is away and catches up when it is back. A kept store is used
only while no outage of it is noted (one noted elsewhere, say by a lock release, sends the next save
through ``open_store`` too, so the spool is caught up before the store is written again).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from ..store import Store, sha256
from ..sync import open_store
from .files import quietly


class Stores:
    """The stores a server's saves and loads use, and the memory that seeds a spool with the bases tabs hold."""

    #: The bytes of what was served and saved lately, kept to seed the spool if the store goes away.
    KEPT_BYTES = 64 << 20

    def __init__(self, log: logging.Logger | logging.LoggerAdapter, os_path: Callable[[str], str]) -> None:  # type: ignore[type-arg]
        self.log = log
        self.os_path = os_path  # the server's path of a notebook -> its path on disk
        self.held: dict[str, Store] = {}  # folder -> its embedded store, kept open across saves
        self._targets: dict[str, Any] = {}  # folder -> what that store is (:func:`.spool.target_of`): is it away?
        self._memory: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (path, sha256) -> bytes, oldest first
        self._memory_bytes = 0
        self._local = asyncio.Lock()

    def keep(self, path: str, data: bytes, sha: str | None = None) -> None:
        """Keep ``data`` (served or saved; ``sha``: its sha256, when known) in memory, so a spool opened
        later knows the bases tabs hold."""
        key = (path, sha or sha256(data))
        if key in self._memory:
            self._memory.move_to_end(key)
            return
        self._memory[key] = data
        self._memory_bytes += len(data)
        while self._memory_bytes > self.KEPT_BYTES and len(self._memory) > 1:
            self._memory_bytes -= len(self._memory.popitem(last=False)[1])


    def seed(self, store: Store, path: str, os_path: str) -> Store:
        """A spool learns what this server served and saved of ``path`` (the bases its tabs hold)."""
        if store.is_spool:
            for (p, sha), data in list(self._memory.items()):
                if p == path and store.latest_with(os_path, sha) is None:
                    store.add(os_path, data, "observed", on_disk=False)
        return store

    def open(self, path: str, os_path: str, *, catch_up: bool = True) -> Store:
        """The notebook's store (kept open, for an embedded one); while it is away, the local spool standing
        in for it (seeded). Give it back with :meth:`_close` (or use :meth:`_using`)."""
        from ..store.spool import outage, target_of

        folder = os.path.dirname(os_path)
        kept = self.held.get(folder)
        if kept is not None:
            if outage(self._targets[folder]) is None:
                return kept
            self.close(kept, failed=True)
        store = open_store(os_path, log=self.log, catch_up=catch_up)
        # kept only when open_store has caught it up (a load's open leaves that to the next save)
        if catch_up and not store.is_spool and getattr(store.backend, "name", None) == "sqlite":
            try:
                target = target_of(os_path)
            except Exception:
                target = None
            if target is not None and outage(target) is None:
                self.held[folder], self._targets[folder] = store, target
                return store
        try:
            return self.seed(store, path, os_path)
        except BaseException:
            store.close()
            raise

    def close(self, store: Store, *, failed: bool = False) -> None:
        """Done with ``store`` for now: closed unless kept open; ``failed``: it raised, so it is dropped
        (closed and forgotten) and the next open finds the store again, or its spool."""
        kept = [folder for folder, s in self.held.items() if s is store]
        if kept and not failed:
            return
        for folder in kept:
            del self.held[folder], self._targets[folder]
        quietly(store.close)

    @contextmanager
    def using(self, path: str, os_path: str, *, catch_up: bool = True) -> Iterator[Store]:
        """:meth:`_open` for one piece of work; a store error drops a kept store."""
        from ..store.spool import is_trouble

        store = self.open(path, os_path, catch_up=catch_up)
        try:
            yield store
        except BaseException as e:
            self.close(store, failed=not isinstance(e, Exception) or is_trouble(e))
            raise
        self.close(store)

    def spool(self, path: str, os_path: str, error: BaseException) -> Store:
        """After ``error`` from the store mid-save: note the outage (said once) and hand out the spool."""
        from ..store.spool import Spool, note_away, target_of

        target = target_of(os_path)
        note_away(target, error, self.log)
        spool = Spool(target)
        try:
            return self.seed(spool, path, os_path)
        except BaseException:
            spool.close()
            raise

    def scratch(self, path: str, os_path: str) -> Store:
        """The last resort when even the spool cannot be written (the state folder full or read-only): a
        store in a temporary folder, seeded with what this server holds in memory, so the save is still merged."""
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.mkdtemp(prefix="nbmergesave-scratch-"))
        store = Store(Path(os_path).parent, folder)
        store.is_spool = True  # seeded like one
        original_close = store.close

        def close() -> None:
            import shutil

            try:
                original_close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        store.close = close  # type: ignore[method-assign]
        return self.seed(store, path, os_path)

    def run(self, path: str, os_path: str, work: Any, *, catch_up: bool = True) -> Any:
        """``work(store)`` on the notebook's store; if the store fails (away, refused, not writable, a kept
        store that stopped answering), again on the spool; if that fails too, on a scratch store. Only the
        notebook's own errors pass. ``catch_up``: a store back after an outage is caught up first (not while
        this thread holds a save lock that catch-up would take through another store object)."""
        from ..store.spool import is_trouble

        try:
            with self.using(path, os_path, catch_up=catch_up) as store:
                return work(store)
        except Exception as e:
            if not is_trouble(e):
                raise
            first = e
        try:
            with self.spool(path, os_path, first) as spool:
                return work(spool)
        except Exception as e:
            if not is_trouble(e):
                raise
            self.log.error("nbmergesave: the local spool cannot be used either (%s); merging %s from memory", e, path)
        with self.scratch(path, os_path) as scratch:
            return work(scratch)

    def take_lock(self, path: str) -> tuple[Any, Any] | None:
        """Enter the save lock for ``path``: the store's (a flock for the embedded store, an advisory lock
        for PostgreSQL) or, while it is away, the spool's (a flock: saves of this host one at a time; other
        hosts are kept apart by the compare-then-swap write). ``None`` only when no lock can be had at all."""
        from ..store.spool import is_trouble

        os_path = self.os_path(path)
        error: BaseException | None = None
        for attempt in ("store", "spool"):
            store = None
            try:
                store = self.open(path, os_path) if attempt == "store" else self.spool(path, os_path, error)  # type: ignore[arg-type]
                held = store.save_lock(os_path)
                held.__enter__()
                return store, held
            except Exception as e:
                if store is not None:
                    self.close(store, failed=True)
                if not is_trouble(e) or attempt == "spool":
                    self.log.warning("nbmergesave: no save lock for %s (%s); saving without it", path, e)
                    return None
                error = e
        return None

    def release(self, taken: tuple[Any, Any] | None) -> None:
        """Leave the save lock. Never raises: a lock whose connection died was released by the server
        already, and the save it guarded has reached the disk (the outage is noted, once)."""
        if taken is None:
            return
        store, held = taken
        failed = False
        try:
            held.__exit__(None, None, None)
        except Exception as e:
            from ..store.spool import is_trouble, note_away, target_of

            failed = True
            if is_trouble(e) and not store.is_spool:
                error = e
                quietly(lambda: note_away(target_of(store.root / "_"), error, self.log))
            else:
                self.log.warning("nbmergesave: releasing the save lock failed (%s); the save is done", e)
        finally:
            self.close(store, failed=failed)

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """Hold the store's save lock from reading the file on disk to writing the merge.

        Two servers saving one notebook at once would each merge with the file
        as it was before the other's write, and the later write would drop the
        earlier one's changes; the lock (across processes, and across hosts with
        a PostgreSQL store) makes the second wait and merge with the first's result.
        """
        taken = self.take_lock(path)
        try:
            yield
        finally:
            self.release(taken)

    @asynccontextmanager
    async def alock(self, path: str) -> AsyncIterator[None]:
        """:meth:`lock` for an async server: waits in a thread, never blocking the event loop
        (a blocked loop could not finish the save that holds the lock)."""
        async with self._local:  # saves through this server, one at a time
            taken = await asyncio.to_thread(self.take_lock, path)
            try:
                yield
            finally:
                await asyncio.to_thread(self.release, taken)
