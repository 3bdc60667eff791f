"""Retention, pins and collection on a store: the :class:`~nbmergesave.store.Store` methods that thin old
versions and give their space back, and the store's size.

Which versions a rule drops is a pure function (:mod:`.retention`); this module
adds what only a store can say (what is pinned, on disk, or recently used by a
merge or a declaration) and does the removal safely beside writers.
:class:`RetentionMixin` is one of the parts :class:`Store` is made of, so
``store.gc(...)``, ``store.pin(...)`` and ``store.stats()`` are called on the store itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from . import pieces
from .backend import Backend, Version
from .retention import Retention, drop, parse_time, time_text

GC_EVERY = timedelta(days=1)  # automatic collections (watcher, daemon) at most this often


@dataclass(frozen=True)
class GcReport:
    """What a collection removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    versions_removed: int
    versions_kept: int
    contents_removed: int
    pieces_removed: int
    bytes_freed: int  # on disk, measured (dry run: the pieces' bytes plus space already unused)
    retention: Retention

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "retention": asdict(self.retention)}


@dataclass(frozen=True)
class StoreStats:
    """The size of a store and what a collection would give back."""

    location: str
    size_bytes: int
    notebooks: int
    versions: int
    contents: int
    pieces: int
    reclaimable_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RetentionMixin:
    """Retention, pins, collection and size: part of :class:`~nbmergesave.store.Store` (it uses the store's
    ``backend``, ``location``, ``key()``, ``get()`` and clock)."""

    backend: Backend
    location: Any
    key: Callable[[str | os.PathLike[str]], str]
    get: Callable[[str | os.PathLike[str], int], Version]
    _clock: Callable[[], datetime]

    def retention(self) -> Retention:
        """The store's retention rule (the default until one is saved with :meth:`set_retention`)."""
        return Retention.from_json(self.backend.setting("retention"))

    def set_retention(self, policy: Retention) -> None:
        self.backend.set_setting("retention", policy.to_json())

    def pin(self, path: str | os.PathLike[str], version: int, pinned: bool = True) -> Version:
        """Keep ``version`` of ``path`` whatever the retention rule says (``pinned=False`` lets it go again)."""
        found = self.get(path, version)
        with self.backend.transaction():
            self.backend.set_pin(found.path, found.version, pinned)
        return found

    def pinned(self, path: str | os.PathLike[str] | None = None) -> list[tuple[str, int]]:
        key = self.key(path) if path is not None else None
        return sorted(p for p in self.backend.pins() if key is None or p[0] == key)

    def _protected(self, policy: Retention, now: datetime) -> set[tuple[str, int]]:
        since = time_text(now - timedelta(days=policy.keep_all))
        keep = set(self.backend.pins())
        versions = self.backend.all_versions()
        declared = self.backend.declared_bases_since(since)
        for key in self.backend.tracked():
            v = self.backend.on_disk(key)
            if v is not None:
                keep.add((v.path, v.version))
        for v in versions:
            if v.kind == "merged" and v.time >= since:
                keep.update((v.path, n) for n in (v.version, v.base, v.local, v.remote) if n is not None)
            if v.sha256 is not None and (v.path, v.sha256) in declared:
                keep.add((v.path, v.version))
        return keep

    def _plan(self, policy: Retention, now: datetime) -> list[Version]:
        return drop(self.backend.all_versions(), policy, now=now, protected=self._protected(policy, now))

    def _unreferenced(self, dropped: set[tuple[str, int]] | None = None) -> tuple[list[str], dict[int, int]]:
        """The contents no version needs (once the versions ``dropped`` are gone), and ``id -> bytes`` of the
        pieces no other content uses."""
        contents = list(self.backend.contents())  # every manifest, read once
        if dropped is None:
            gone = self.backend.unreferenced_contents()
        else:
            live = {v.sha256 for v in self.backend.all_versions() if v.sha256 is not None and
                    (v.path, v.version) not in dropped}
            gone = [sha for sha, _, _ in contents if sha not in live]
        gone_set, needed = set(gone), set()
        for sha, _, manifest in contents:
            if sha not in gone_set:
                needed.update(pieces.unpack_ids(manifest))
        sizes = self.backend.piece_sizes()
        return gone, {i: n for i, n in sizes.items() if i not in needed}

    def gc(self, policy: Retention | None = None, *, dry_run: bool = False, now: datetime | None = None,
           progress: Callable[[str], None] | None = None) -> GcReport:
        """Thin old versions by ``policy`` (default: the store's) and collect what no version needs.

        Safe while writers run: versions are dropped in one transaction, then
        contents and pieces no remaining version refers to are found and
        removed in a second one; both are serialised with every writer's
        transaction, so a save landing meanwhile either commits first (and its
        pieces count as needed) or finds the pieces gone and stores them again.
        A crash at any point leaves a consistent store (the next gc finishes
        the job).

        >>> # report = store.gc(Retention(keep_all=14), dry_run=True); report.bytes_freed
        """
        policy = policy or self.retention()
        now = now or self._clock()
        step = progress or (lambda _: None)
        if dry_run:
            plan = self._plan(policy, now)
            contents, orphan = self._unreferenced({(v.path, v.version) for v in plan})
            total = len(self.backend.all_versions())
            return GcReport(True, len(plan), total - len(plan), len(contents), len(orphan),
                            sum(orphan.values()) + self.backend.free_bytes(), policy)
        before = self.backend.disk_usage()
        with self.backend.transaction():
            plan = self._plan(policy, now)
            step(f"removing {len(plan)} versions")
            self.backend.drop_versions((v.path, v.version) for v in plan)
        with self.backend.transaction():
            contents, orphan = self._unreferenced()
            step(f"removing {len(contents)} contents and {len(orphan)} pieces")
            self.backend.drop_contents(contents)
            self.backend.drop_pieces(orphan)
        step("compacting")
        self.backend.compact()
        self.backend.set_setting("last_gc", time_text(self._clock()))
        return GcReport(False, len(plan), len(self.backend.all_versions()), len(contents), len(orphan),
                        max(0, before - self.backend.disk_usage()), policy)

    def gc_due(self, now: datetime | None = None) -> bool:
        """Whether an automatic collection is due (none in the last :data:`GC_EVERY`)."""
        last = self.backend.setting("last_gc")
        return last is None or (now or self._clock()) - parse_time(last) >= GC_EVERY

    def maybe_gc(self, now: datetime | None = None) -> GcReport | None:
        """Collect with the store's retention rule if :meth:`gc_due`; what the watcher and the daemon call."""
        if not self.gc_due(now):
            return None
        return self.gc(now=now)

    def stats(self) -> StoreStats:
        """The store's size, what it holds, and the bytes a collection would free now."""
        versions = self.backend.all_versions()
        report = self.gc(dry_run=True)
        return StoreStats(str(self.location), self.backend.disk_usage(), len({v.path for v in versions}),
                          len(versions), sum(1 for _ in self.backend.contents()), len(self.backend.piece_sizes()),
                          report.bytes_freed)
