"""Watch folders for notebook saves and run sync_file() on each (watchdog).

A :class:`Watcher` is three parts over one set of queues:

- :mod:`.events`: file events -> saves (which files are notebooks, the
  watchdog handler and its event filter, debounce, renames and deletions);
- :mod:`.gate`: the single-writer gate (git and pauses): single writers are
  never merged, and saves wait while git writes their work tree;
- :mod:`.worker`: one thread that syncs each save in order, rescans and
  collects old versions.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..errors import NbMergeSaveError, StoreError
from ..gitrepo import GitRepo, GitRepos
from ..merge.options import engine_name
from ..pairs import Pairs
from ..store import Store
from ..sync import Session
from .away import StandIn
from .events import SKIP_DIRS, Events, is_notebook, scan
from .events import _pair_moves_promptly  # noqa: F401 (the tests reach it here)
from .gate import PAUSE_FILE, Gate, Held, Pauses, pause, pause_file, resume
from .worker import Stats, Worker

__all__ = ["PAUSE_FILE", "SKIP_DIRS", "Held", "Stats", "Watcher", "is_notebook", "pause", "pause_file", "resume",
           "scan"]


class Watcher(Events, Gate, Worker):
    """Keep the stores of ``roots`` current and merge overlapping saves.

    >>> # Watcher([Path("project")], log=print).run()   # until Ctrl-C
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], *, log: Callable[[str], None] = lambda s: None,
                 debounce: float = 0.02, rescan: float = 300.0, retry: float = 0.2,
                 ignore: Iterable[str] = (), store_location: str | None = None,
                 pause_while: Iterable[str | os.PathLike[str]] = (), git: bool = True,
                 engine: str = "cells", engines: Mapping[str | os.PathLike[str], str] | None = None,
                 stores: Mapping[Path, Store] | None = None) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        # the merge engine of each root: ``engines`` names some roots, ``engine`` is the rest's
        chosen = {Path(r).resolve(): e for r, e in (engines or {}).items()}
        self.engines = {root: engine_name(chosen.get(root, engine)) for root in self.roots}
        if set(chosen) - set(self.roots):
            raise NbMergeSaveError(f"an engine is given for a folder not watched: {', '.join(map(str, set(chosen) - set(self.roots)))}")
        # ``stores``: a door that has opened its roots' stores already (the Jupyter server's finds them
        # as its save hook does, which may be a store above the root)
        self.stores = dict(stores) if stores is not None else {root: Store.open(root, store_location)
                                                                for root in self.roots}
        self.log = log
        self.debounce, self.rescan_every, self.retry = debounce, rescan, retry
        self.ignore = tuple(ignore)
        self.stats = Stats()
        self.session = Session()
        self.git = GitRepos() if git else None
        self.pauses = Pauses(self.roots, self.stores, pause_while, log)
        self.pairs = Pairs()  # Jupytext's paired text files (none without Jupytext)
        self.standin = StandIn(log)  # the local spool, while a store is away
        self._due: dict[Path, float] = {}
        self._snapshots: dict[Path, list[Held]] = {}
        self._held: dict[Path, tuple[GitRepo, list[Held]]] = {}  # saves waiting for git to finish
        self._held_ops: list[tuple[GitRepo, tuple[str, Path, Path | None]]] = []  # deletions, likewise
        self._held_since: dict[GitRepo, float | None] = {}  # None: the wait was reported
        self._said_broken: set[GitRepo] = set()
        self.changed = threading.Event()  # set after each batch of work (the status file is rewritten)
        self._ops: list[tuple[str, Path, Path | None]] = []
        self._refused: set[Path] = set()
        self._busy = 0  # paths the worker has taken off the queues and is syncing
        self._lock = threading.Lock()
        self._work = threading.RLock()  # one thread at a time talks to the stores
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer = None

    def _store_for(self, path: Path) -> Store | None:
        for root in sorted(self.roots, key=lambda r: len(r.parts), reverse=True):
            if path.is_relative_to(root):
                return self.stores[root]
        return None

    def _engine_for(self, path: Path) -> str:
        for root in sorted(self.roots, key=lambda r: len(r.parts), reverse=True):
            if path.is_relative_to(root):
                return self.engines[root]
        return "cells"

    def tracked(self) -> dict[str, int]:
        """Notebooks tracked per root; ``-1`` for a root whose store is away (a status must not stop the watcher)."""
        counts = {}
        for root, store in self.stores.items():
            try:
                counts[str(root)] = len(store.tracked(root))
            except StoreError:
                counts[str(root)] = -1
        return counts

    def pending(self) -> int:
        """Saves read and renames seen but not yet handled (those waiting for git included), plus files
        waiting to be looked at."""
        with self._lock:
            return (sum(map(len, self._snapshots.values())) + len(self._due) + len(self._ops) + self._busy
                    + sum(len(held) for _, held in self._held.values()) + len(self._held_ops))

    def start(self, progress: Callable[[list[Path]], Iterable[Path]] = iter) -> None:
        """Scan, then follow events in background threads until :meth:`stop`."""
        self._observe()  # before the scan, so no save slips between the two
        self.pauses.look()
        self.initial_scan(progress)
        self._thread = threading.Thread(target=self._worker, name="nbmergesave-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if getattr(self, "_thread", None):
            self._thread.join(timeout=5)
        self._keep_held()
        if self.git is not None:
            self.git.close()
        for store in self.stores.values():
            store.close()
