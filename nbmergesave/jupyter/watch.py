"""The Jupyter server watches the folder it serves: writes made outside it are merged, not obeyed.

An agent, a script, a sync tool or another host writes ``nb.ipynb`` without
going through this server. Left alone, that write replaces what people saved
from their tabs, and the tabs then follow the file and drop those edits from
the screen too. The watcher started here sees such a write the moment it is
closed (or renamed into place) and merges it like an overlapping save
(:func:`nbmergesave.sync.sync_file`): local = what the file held before, remote
= the outside write, base = the version the writer started from, found in the
store. Open tabs then follow the merged file.

It is :class:`nbmergesave.watcher.Watcher` (events, the single-writer gate for
git and pauses, the worker) over the server's root, with two differences:

* **No first scan of the whole root.** A large root (10,000 notebooks) is not
  read or hashed at start: a notebook a tab opens is recorded when it is
  loaded (the save hook asks the watcher to look at it), and one nobody opened
  is recorded at its first event (nobody had edits in it to lose). Only the
  notebooks the store already tracks are looked at again, in the worker, at
  start and at each rescan: they may have changed while nothing watched, and
  a stale "version on disk" must not become one side of a merge.
* **The stores the save hook uses.** Each notebook's store is the one
  :func:`nbmergesave.sync.open_store` finds for it (the root's, a store above
  the root, or a nested project's), so the watcher sees the hook's
  declarations and never merges the server's own saves again; a ``nbmergesave
  watch`` or daemon on the same folder shares the same store and locks.

Everything runs in threads of its own (watchdog's, and the worker): adding
inotify watches over a large tree never holds up the server's event loop.

Turned off by ``c.NbMergeSave.watch_root = False`` (the server then merges
only the saves it receives, as before).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..store import ENV_STORE, STORE_DIR, Store
from ..watcher import Watcher


def _root_store(root: Path) -> Store:
    """The store the save hook would use for a notebook right under ``root`` (created in ``root`` if none).

    Never the local spool: the watcher holds its store for the server's lifetime, and a spool held open
    can never be caught up. A store that is away at start leaves the server without a watcher (said in
    the log); saves through it are still merged, from the spool."""
    from ..sync import open_store

    return open_store(root / "_.ipynb", spool=False)


class ServerWatcher(Watcher):
    """A :class:`~nbmergesave.watcher.Watcher` of one server's root, started without a first scan.

    >>> # w = ServerWatcher("/srv/notebooks", log=print); w.start(); ...; w.stop()
    """

    #: Seconds between rescans of the notebooks the store tracks (events can be lost; a rescan
    #: reads and hashes each tracked notebook, so it is rarer than the CLI watcher's default).
    RESCAN = 600.0
    #: Seconds between looks at a notebook whose store is away (the save hook spools meanwhile).
    AWAY_RETRY = 3.0

    def __init__(self, root: str | os.PathLike[str], *, log: Any = lambda s: None, rescan: float | None = None,
                 engine: str = "cells", server_log: Any = None) -> None:
        root = Path(root).resolve()
        self._server_log = server_log  # where the spool's catch-up speaks (the server's log)
        store = _root_store(root)
        super().__init__([root], log=log, rescan=self.RESCAN if rescan is None else rescan, stores={root: store},
                         engine=engine)
        if server_log is not None:
            self.standin.logger = server_log  # the outage and the catch-up said as the save hook says them
        self.root = root
        from ..store.where import store_url

        # nested stores (a project with its own .nbmergesave/ below the root) are the hook's stores there;
        # a store named by URL or $NBMERGESAVE_STORE holds every notebook, as for the hook
        self._nested_ok = store_url() is None and not os.environ.get(ENV_STORE)
        self._nested: dict[Path, Store] = {}
        self._syncing: Path | None = None
        self._stale: set[Path] = set()  # notebooks written while the store was away: next look records, never merges
        self.ready = threading.Event()  # set once start() is done (or has failed)
        self._starting = False
        self.failed: str | None = None

    # --- the stores the save hook uses -----------------------------------------

    def _store_for(self, path: Path) -> Store | None:
        if not path.is_relative_to(self.root):
            return None
        if self._nested_ok:
            folder = path.parent
            while folder != self.root and folder.is_relative_to(self.root):
                if folder in self._nested:
                    return self._nested[folder]
                if (folder / STORE_DIR / "index.sqlite").exists():
                    with self._lock:
                        if folder not in self._nested:
                            self._nested[folder] = Store.open(folder)
                    return self._nested[folder]
                folder = folder.parent
        return self.stores[self.root]

    # --- start, stop ---------------------------------------------------------------

    def start(self, progress: Any = iter) -> None:
        """Follow events from now on (in watchdog's threads and the worker); look again at the notebooks
        the store tracks (they may have changed while nothing watched), never at the others."""
        self._starting = True
        self._observe()
        self.pauses.look()
        self._rescan()  # queued for the worker; the server answers meanwhile
        self._thread = threading.Thread(target=self._worker, name="nbmergesave-server-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._starting:
            self.ready.wait(60)  # an observer still adding its watches would start after we stopped it
        super().stop()
        for store in self._nested.values():
            store.close()

    def _rescan(self) -> None:
        """Catch lost events for the notebooks the store tracks (never record the whole root)."""
        self.pauses.look()
        for store in [self.stores[self.root], *self._nested.values()]:
            for key in store.tracked(self.root):
                path = store.root / key
                if not path.exists():
                    with self._work:
                        self._apply("delete", path, None)
                else:
                    self.schedule(path, 0)
            self._collect(store)

    # --- what the server and its routes ask ------------------------------------------

    def sync(self, path: Path, data: bytes | None = None, hint: str | None = None, repo: Any = None) -> Any:
        # While the store is away, the sync goes to the spool the save hook uses too (its saves and their
        # declarations are there), seeded with what this watcher saw last (:mod:`nbmergesave.watcher.away`).
        with self._lock:
            stale = path in self._stale
            self._stale.discard(path)
        if stale:
            return self._sighted(path)
        errors = self.stats.errors
        self._syncing = path
        try:
            return super().sync(path, data, hint, repo)
        finally:
            self._syncing = None
            if self.stats.errors > errors and self._away(path, catch_up=False):
                with self._lock:
                    self._stale.add(path)
                self.schedule(path, self.AWAY_RETRY)  # the store went away during this sync

    def _away(self, path: Path, *, catch_up: bool = True) -> bool:
        """Whether ``path``'s store is away, or back with a spool not yet replayed (``catch_up``: then
        replay it now, as a save would, and say whether that could be done)."""
        from ..store.spool import outage, pending, target_of
        from ..sync import open_store

        try:
            target = target_of(path)
        except Exception:
            return False
        away = outage(target)
        if away is None and not pending(target):
            return False
        if not catch_up or (away is not None and time.monotonic() < away.retry_at):
            return True
        try:
            with open_store(path, log=self._server_log, catch_up=True) as store:
                return store.is_spool
        except Exception:
            return True

    def _sighted(self, path: Path) -> Any:
        """After an outage: record ``path`` as it is now, as a first sighting is, never merged. The saves
        made meanwhile were merged by the hooks that made them, against the file itself; this watcher saw
        none of them, so the version it holds as "on disk" is stale, and merging with it would undo them."""
        from ..notebook_io import parse_notebook
        from ..store import sha256
        from ..sync import Outcome

        store = self._store_for(path)
        try:
            data = path.read_bytes()
            parse_notebook(data)
        except FileNotFoundError:
            return None
        except Exception:  # caught mid-write: look again shortly, still as a sighting
            with self._lock:
                self._stale.add(path)
            self.schedule(path, self.retry)
            return None
        if store is None:
            return None
        try:
            with self._work:
                digest = sha256(data)
                before = store.on_disk(path)
                if before is not None and before.sha256 == digest:
                    return Outcome("unchanged", str(path), before.version)
                known = store.latest_with(path, digest)
                if known is not None:
                    store.add_on_disk(path, known.version)
                    version = known.version
                else:
                    version = store.add(path, data, "observed").version
        except Exception as e:
            self._failed(f"{path}: {e}")
            return None
        self.log(f"recorded {path} as it is after the store was away (v{version}); saves made meanwhile were "
                 f"merged by the servers that took them")
        return Outcome("recorded", str(path), version)

    @staticmethod
    def _here(os_path: str | os.PathLike[str]) -> Path:
        """``os_path`` as events name it: its folder resolved (the root is), the file's own name kept."""
        p = Path(os_path)
        return Path(os.path.realpath(p.parent)) / p.name

    def look_at(self, os_path: str | os.PathLike[str]) -> None:
        """Record the notebook ``os_path`` as it is now (in the worker, soon)."""
        self.schedule(self._here(os_path), 0)

    def settling(self, os_path: str | os.PathLike[str]) -> bool:
        """Whether a write of ``os_path`` is seen but not yet handled (a tab should wait before following it)."""
        p = self._here(os_path)
        with self._lock:
            held = p in self._held or any(op[1] == p for _, op in self._held_ops)
            return p in self._due or bool(self._snapshots.get(p)) or held or self._syncing == p


def start(serverapp: Any, log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
          engine: str = "cells") -> ServerWatcher | None:
    """Watch ``serverapp``'s root; ``None`` when its contents are not a local folder or cannot be watched.

    The store is opened here (quick); the watches, one per folder, are added in a thread of
    its own, as they take time on a large root and the server answers meanwhile.
    """
    root = getattr(serverapp.contents_manager, "root_dir", None) or serverapp.root_dir
    if not root or not os.path.isdir(root):
        log.info("nbmergesave: the server's contents are not a local folder; not watching for outside writes")
        return None
    try:
        watcher = ServerWatcher(root, log=lambda line: log.info("nbmergesave: %s", line), engine=engine, server_log=log)
    except Exception as e:  # the server works without it: saves through it are still merged by the hook
        log.error("nbmergesave: cannot watch %s for writes made outside Jupyter (%s); saves through this server "
                  "are still merged", root, e)
        return None

    def run() -> None:
        began = time.perf_counter()
        try:
            watcher.start()
        except Exception as e:  # e.g. the kernel's limit of inotify watches
            watcher.failed = str(e)
            log.error("nbmergesave: cannot watch %s for writes made outside Jupyter (%s); saves through this "
                      "server are still merged", root, e)
            return
        finally:
            watcher.ready.set()
        log.info("nbmergesave: watching %s for writes made outside Jupyter (ready in %.2f s)", root,
                 time.perf_counter() - began)

    threading.Thread(target=run, name="nbmergesave-server-watch-start", daemon=True).start()
    return watcher
