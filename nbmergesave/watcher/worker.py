"""The worker: one thread that syncs the saves the events queued, rescans, and collects old versions.

Each path is debounced, then handled by one worker thread, so saves of one
file are merged one at a time. A periodic rescan catches events the kernel
dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from ..gitrepo import GitRepo
from ..pairs import Pairs
from ..store import Store
from ..sync import STEPPED_BACK, Outcome, Session, conflict_copy_of, merge_copy, put_aside, sync_file
from .events import scan
from .away import StandIn
from .gate import Held, Pauses


@dataclass
class Stats:
    merges: int = 0
    conflicts: int = 0
    errors: int = 0
    last_error: str | None = None
    single_writer: dict[str, int] = field(default_factory=dict)  # saves recorded, never merged, by writer
    started: float = field(default_factory=time.time)


class Worker:
    """The watcher's part that does the work, in one thread: each save in the order it was written,
    through sync_file() (a part of :class:`~nbmergesave.watcher.Watcher`, which sets the state below)."""

    roots: list[Path]
    stores: dict[Path, Store]
    ignore: tuple[str, ...]
    rescan_every: float
    retry: float
    log: Callable[[str], None]
    stats: Stats
    session: Session
    pauses: Pauses
    pairs: Pairs
    standin: StandIn
    changed: threading.Event
    _due: dict[Path, float]
    _snapshots: dict[Path, list[Held]]
    _ops: list[tuple[str, Path, Path | None]]
    _held: dict[Path, tuple[GitRepo, list[Held]]]
    _held_ops: list[tuple[GitRepo, tuple[str, Path, Path | None]]]
    _held_since: dict[GitRepo, float | None]
    _said_broken: set[GitRepo]
    _busy: int
    _lock: threading.Lock
    _work: threading.RLock
    _wake: threading.Event
    _stop: threading.Event
    # from the other parts
    _store_for: Callable[[Path], Store | None]
    _engine_for: Callable[[Path], str]
    _watched: Callable[[Path], bool]
    _refuse: Callable[[Path, str], None]
    schedule: Callable[[Path, float | None], None]
    _apply: Callable[[str, Path, Path | None], None]
    _repo: Callable[[Path], GitRepo | None]
    _writer_of: Callable[[Path, GitRepo | None, str | None], Callable[[bytes], str | None] | None]
    paused: Callable[[Path], bool]
    _release_held: Callable[[], None]

    def sync(self, path: Path, data: bytes | None = None, hint: str | None = None,
             repo: GitRepo | None = None) -> Outcome | None:
        store = self._store_for(path)
        if store is None:
            return None
        try:
            outcome, later = self._sync_in(store, path, data, hint, repo)
        except Exception as e:  # a watcher never stops for one bad file
            if not self.standin.away(path, e):
                self._failed(f"{path}: {e}")
                return None
            try:  # the store went away during this sync: once more, on the spool standing in for it
                outcome, later = self._sync_in(store, path, data, hint, repo)
            except Exception as again:
                self._failed(f"{path}: {again}")
                return None
        if outcome is None:
            return None
        if repo is not None and repo.broken is not None and repo not in self._said_broken:
            self._said_broken.add(repo)
            self.log(f"git cannot be asked in {repo.work_tree} ({repo.broken}): saves there are judged on content"
                     f" alone, as outside git, until it answers again")
        if any(step.action == "partial" for step in (*outcome.earlier, outcome)) \
                and (path.exists() or put_aside(path).exists()):  # (sync.stepped_back)
            self.schedule(path, self.retry)
        for where, step in [(path, outcome), *later]:
            self._report(where, step, repo)
        return outcome

    def _sync_in(self, store: Store, path: Path, data: bytes | None, hint: str | None,
                 repo: GitRepo | None) -> tuple[Outcome | None, list[tuple[Path, Outcome]]]:
        """One sync of ``path`` in ``store``, or in the spool standing in for it while it is away."""
        later: list[tuple[Path, Outcome]] = []
        with self._work, self.standin.using(path, store) as using:
            if path.suffix != ".ipynb":  # a Jupytext pair's text file: a save of its notebook
                outcome = self.pairs.sync_text(using, path, data=data, session=self.session,
                                               writer_for=self._notebook_writer, engine_for=self._engine_for)
            elif conflict_copy_of(path) is not None:
                outcome = merge_copy(using, path, session=self.session, engine=self._engine_for(path))
            else:
                outcome = sync_file(using, path, data=data, session=self.session,
                                    writer_of=self._writer_of(path, repo, hint), engine=self._engine_for(path))
                later = self.pairs.check(using, path, session=self.session, writer_for=self._notebook_writer,
                                         engine_for=self._engine_for,
                                         follow=outcome.writer is None and outcome.action != "skipped")
                if data is not None and outcome.action in ("recorded", "unchanged"):
                    self.standin.saw(path, data)  # what the file holds now: a spool's "on disk", should one be needed
        return outcome, later

    def _look_again(self, path: Path) -> None:
        store = self._store_for(path)
        if store is not None:
            with self._work, self.standin.using(path, store):
                pass

    def _notebook_writer(self, notebook: Path) -> Callable[[bytes], str | None] | None:
        """Who wrote a paired notebook's ``.ipynb`` whole, asked before its text file is taken in."""
        return self._writer_of(notebook, self._repo(notebook), None)

    def _report(self, path: Path, outcome: Outcome, repo: GitRepo | None) -> None:
        """Count and log what a sync of ``path`` did."""
        for step in (*outcome.earlier, outcome):
            if STEPPED_BACK in step.message:
                self.log(f"{path}: {step.message} (v{step.version})")
            if step.action == "merged":
                self._merged(path, step, repo)
            elif step.action == "recorded" and step.writer is not None:
                self.stats.single_writer[step.writer] = self.stats.single_writer.get(step.writer, 0) + 1
            elif step.action == "skipped":
                self._refuse(path, step.message)
            elif step.action == "error":
                self._failed(step.message)

    def _failed(self, what: str) -> None:
        """Count an error, keep it for ``status``, and log it."""
        self.stats.errors += 1
        self.stats.last_error = what
        self.log(f"error {what}")

    def _merged(self, path: Path, outcome: Outcome, repo: GitRepo | None = None) -> None:
        self.stats.merges += 1
        what = f"{outcome.conflicts} conflict(s) marked inline" if outcome.conflicts else "clean"
        if outcome.conflicts:
            self.stats.conflicts += 1
        source = f"conflict copy {path.name}" if conflict_copy_of(path) else \
            "save" if path.suffix == ".ipynb" else f"paired text file {path.name}"
        # In a git work tree a merge changes a file git tracks: say how to take it back.
        undo = f"; in git work tree {repo.work_tree}: 'nbmergesave undo {path}' puts the save back" if repo else ""
        engine = self._engine_for(path)
        by = f", by {engine}" if engine != "cells" else ""  # the default engine goes without saying
        self.log(f"merged {path}: base v{outcome.base} + on disk v{outcome.local} + {source} v{outcome.remote}"
                 f" -> v{outcome.version} ({what}{by}){undo}")

    #: How long a replaced file's old inode is watched for a writer caught mid-save.
    REPLACED_WATCH = 2.0

    def _check_replaced(self) -> None:
        """Read what a writer put into a file we replaced while it had the file open."""
        keep = []
        for old in self.session.replaced:
            try:
                changed = old.changed()
                data = old.read() if changed else b""
            except OSError:
                old.close()
                continue
            if changed and self._parses(data):
                self.log(f"recovered a save into {old.path} that was written while the file was being replaced")
                with self._lock:
                    self._snapshots.setdefault(old.path, []).append((data, None))
                    self._due[old.path] = time.monotonic()
                old.close()
            elif time.monotonic() - old.since < (self.REPLACED_WATCH * 3 if changed else self.REPLACED_WATCH):
                keep.append(old)
            else:
                old.close()
        self.session.replaced = keep

    @staticmethod
    def _parses(data: bytes) -> bool:
        from ..notebook_io import parse_notebook

        try:
            parse_notebook(data)
            return True
        except Exception:
            return False

    def initial_scan(self, progress: Callable[[list[Path]], Iterable[Path]] = iter) -> int:
        """Record the current version of every notebook under the roots.

        ``progress`` wraps the list of paths (the CLI passes a progress bar).
        """
        paths = [p for root in self.roots for p in scan(root, self.ignore) if self._watched(p)]
        with ExitStack() as stack:
            for store in self.stores.values():
                stack.enter_context(store.batch())
            for path in progress(paths):
                self.sync(path, repo=self._repo(path))
        return len(paths)

    def _rescan(self) -> None:
        self.pauses.look()  # in case an event was lost
        for root, store in self.stores.items():
            present = {store.key(p) for p in scan(root, self.ignore)}
            for key in store.tracked(root):  # keys are relative to the store's root (a shared store's project root)
                if key not in present:
                    with self._work:
                        self._apply("delete", store.root / key, None)
            for key in present:
                self.schedule(store.root / key, 0)
            self._collect(store)

    def _collect(self, store: Store) -> None:
        """Apply the store's retention rule, at most once a day (``nbmergesave gc`` does it by hand)."""
        try:
            with self._work:
                report = store.maybe_gc()
        except Exception as e:  # a collection that fails must not stop the watching
            self.log(f"gc of {store.location} failed: {e}")
            return
        if report is not None:
            self.log(f"gc: removed {report.versions_removed} old versions from {store.location}, "
                     f"freed {report.bytes_freed} bytes")

    def _guarded(self, step: Callable[..., None], *args: object) -> None:
        """Run a step of the worker; an error (say, a shared store's database down) is logged and
        counted, and never ends the worker: the next rescan catches up."""
        try:
            step(*args)
        except Exception as e:
            self._failed(str(e))

    def _worker(self) -> None:
        next_rescan = time.monotonic() + self.rescan_every
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                ready = [p for p, t in self._due.items() if t <= now]
                for p in ready:
                    del self._due[p]
                snapshots = {p: self._snapshots.pop(p, []) for p in ready}
                ops, self._ops = self._ops, []
                self._busy = len(ready) + len(ops)
            with self._work:
                for op in ops:
                    self._guarded(self._apply, *op)
            with self._lock:
                wait = min((t - now for t in self._due.values()), default=0.5)
            self._check_replaced()
            for path in ready:
                # each save in the order it was written, then the file as it is now
                self._handle(path, snapshots[path] or [(None, None)])
            self._release_held()
            with self._lock:
                self._busy = 0
            if ready or ops:
                self.changed.set()
            if time.monotonic() >= next_rescan:
                self._guarded(self._rescan)
                next_rescan = time.monotonic() + self.rescan_every
            for path in self.standin.due():  # a store away: is it back? (then the spool is replayed into it)
                self._guarded(self._look_again, path)
            if not ready:
                if self.session.replaced:
                    wait = min(wait, 0.1)  # a writer caught mid-save: look at the inode it writes into
                if self._held or self._held_ops:
                    wait = min(wait, 0.02)  # git is writing: look for the end of its lock
                self._wake.wait(max(0.0, min(wait, 0.5)))
                self._wake.clear()

    def _handle(self, path: Path, saves: list[Held]) -> None:
        """Sync each save of ``path``, in order; while git holds the index lock of its work tree,
        hold back every save that is not git's own (a blob) until git is done."""
        repo = self._repo(path)
        held = self._held.get(path)
        for i, (data, hint) in enumerate(saves):
            if data is None and hint is None and self.paused(path):
                hint = "paused"  # the file is read now: paused now is what counts
            # (once one save of a path waits, every later one waits behind it, to keep their order)
            if repo is not None and (held is not None or (hint is None and repo.busy())):
                # (a paired text file waits too: taking it in writes the .ipynb, which git may be writing)
                if held is not None or data is None or not repo.has_blob(data) or path.suffix != ".ipynb":
                    with self._lock:
                        self._held.setdefault(path, (repo, []))[1].extend(saves[i:])
                        self._held_since.setdefault(repo, time.monotonic())
                    return
            self.sync(path, data, hint, repo)
