"""The watcher while its store is away: saves still merged, from the local spool, and recorded when it is back.

A watcher (``nbmergesave watch``, the daemon, the Jupyter server's watcher of
its folder) holds its store open for its whole life. When that store stops
answering (a PostgreSQL server stopped or unreachable, an embedded store's
folder gone read-only or full), each sync goes to the local spool instead
(:mod:`nbmergesave.store.spool`: the one the Jupyter save hook of the same
process uses, so the hook's saves and declarations are seen there), seeded
with the last versions the watcher saw of the notebook, so an outside write is
merged with what the file held before it. When the store answers again, the
spool is replayed into it first (:func:`~nbmergesave.store.spool.catch_up`),
and the watcher goes on with the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..store import Store, sha256


class _Said(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for the spool's messages that says them through the watcher's ``log(line)``."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.getLogger("nbmergesave"), {})
        self.say = say

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        self.say((str(msg) % args if args else str(msg)).removeprefix("nbmergesave: "))


class StandIn:
    """What the watcher saw last of each notebook (kept to seed the spool), and which store a sync uses."""

    #: The bytes kept, all notebooks together, and the versions kept per notebook.
    KEPT_BYTES = 64 << 20
    KEPT_PER_NOTEBOOK = 4

    def __init__(self, log: Callable[[str], None], logger: Any = None) -> None:
        self.logger = logger if logger is not None else _Said(log)
        self._seen: OrderedDict[str, list[bytes]] = OrderedDict()  # path -> its versions seen, oldest first
        self._bytes = 0
        self._away: dict[str, Path] = {}  # stores found away (by target), and a path each holds: to look again

    def saw(self, path: Path, data: bytes) -> None:
        """``data`` is what ``path`` holds now (recorded or merged by the watcher). Kept as it is: hashed only
        if a spool ever needs it (the watcher's record of a save must not pay for an outage that may never come)."""
        key = str(path)
        kept = self._seen.pop(key, [])
        if not kept or kept[-1] != data:
            kept.append(data)
            self._bytes += len(data)
            while len(kept) > self.KEPT_PER_NOTEBOOK:
                self._bytes -= len(kept.pop(0))
        self._seen[key] = kept
        while self._bytes > self.KEPT_BYTES and len(self._seen) > 1:
            _, dropped = self._seen.popitem(last=False)
            self._bytes -= sum(map(len, dropped))

    def away(self, path: Path, error: BaseException) -> bool:
        """Whether ``error`` (raised by ``path``'s store) means the store is away; if so, it is noted
        (said once per outage) and the next :meth:`using` hands out the spool."""
        from ..store.spool import is_trouble, note_away, target_of

        if not is_trouble(error):
            return False
        try:
            target = target_of(path)
            note_away(target, error, self.logger)
        except Exception:  # no spool for this store (a setting to fix): the error stands
            return False
        self._away[target.ident] = path
        return True

    def due(self) -> list[Path]:
        """A path of each store found away whose time to be tried again has come (the worker looks, so a
        store that is back is caught up even when no save comes)."""
        from ..store.spool import outage, pending, target_of

        due = []
        for ident, path in list(self._away.items()):
            try:
                target = target_of(path)
            except Exception:
                del self._away[ident]
                continue
            away = outage(target)
            if away is None and not pending(target):
                del self._away[ident]
            elif away is None or time.monotonic() >= away.retry_at:
                due.append(path)
        return due

    @contextmanager
    def using(self, path: Path, store: Store) -> Iterator[Store]:
        """``store``, or while it is away the spool standing in for it (seeded with what was seen of ``path``);
        a store back after an outage is caught up from the spool first."""
        from ..store.spool import Spool, caught_up, spooling, target_of

        try:
            target = target_of(path)
        except Exception:
            yield store
            return
        if not spooling(target) and caught_up(store, target, self.logger):
            self._away.pop(target.ident, None)
            yield store
            return
        with Spool(target) as spool:
            self._seed(spool, path)
            yield spool

    def _seed(self, spool: Store, path: Path) -> None:
        """The spool learns the last versions the watcher saw of ``path``, the newest as the one on disk
        (unless the spool follows the file already)."""
        kept = self._seen.get(str(path), [])
        if not kept or not os.path.exists(path):
            return
        latest = None
        for data in kept:
            latest = spool.latest_with(path, sha256(data)) or spool.add(path, data, "observed", on_disk=False)
        if spool.on_disk(path) is None and latest is not None:
            spool.add_on_disk(path, latest.version)
