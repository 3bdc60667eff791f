"""Watch folders for notebook saves and run sync_file() on each (watchdog).

One observer for any number of roots, recursive (new subfolders included).
We act on close-after-write and on renames, not on every modify: a Jupyter
save truncates and rewrites the file in place, so modify events arrive while
the bytes are half written. Each path is debounced, then handled by one worker
thread, so saves of one file are merged one at a time. A periodic rescan
catches events the kernel dropped.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .store import STORE_DIR, Store
from .sync import Outcome, Session, conflict_copy_of, merge_copy, sync_file

SKIP_DIRS = frozenset({".ipynb_checkpoints", STORE_DIR, ".git"})


def is_notebook(path: str | os.PathLike[str], ignore: Iterable[str] = ()) -> bool:
    """A ``.ipynb`` not in a hidden or skipped folder, and not a Jupyter ``.~`` copy."""
    p = Path(path)
    if p.suffix != ".ipynb" or p.name.startswith((".", "~")):
        return False
    if any(part in SKIP_DIRS or part.startswith(".") for part in p.parent.parts if part not in ("/", "..", ".")):
        return False
    return not any(fnmatch.fnmatch(p.name, pattern) for pattern in ignore)


def scan(root: Path, ignore: Iterable[str] = ()) -> list[Path]:
    """Every notebook under ``root``, hidden and skipped folders left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        found.extend(Path(folder) / f for f in files if is_notebook(Path(folder) / f, ignore))
    return found


def _pair_moves_promptly() -> None:
    """Stop watchdog's inotify backend from holding every event for 0.5 s after a rename.

    watchdog holds an IN_MOVED_FROM up to 0.5 s to pair it with its
    IN_MOVED_TO, and its queue's reader, finding that event at the head,
    sleeps the whole 0.5 s even when the pair arrives a microsecond later
    (gorakhargosh/watchdog#649). Every event behind it waits too, and saves
    made meanwhile are replaced before anyone reads them: in the soak this
    stall, not the writers' own races, caused most unseen saves. This queue
    waits on its condition instead, so the put that pairs the move wakes it.
    Only the inotify backend has the class; elsewhere this does nothing.
    """
    try:
        from watchdog.observers import inotify_move_event_grouper as grouper
    except ImportError:
        return
    base = grouper.DelayedQueue
    if getattr(base, "prompt", False):
        return

    class PromptDelayedQueue(base):  # type: ignore[misc, valid-type]
        prompt = True

        def get(self):  # type: ignore[no-untyped-def]
            if not all(hasattr(self, a) for a in ("_not_empty", "_queue", "_closed", "delay")):
                return super().get()  # a watchdog whose queue we do not know
            with self._not_empty:
                while True:
                    while not self._queue and not self._closed:
                        self._not_empty.wait()
                    if self._closed:
                        return None
                    head, inserted, delay = self._queue[0]
                    left = inserted + self.delay - time.monotonic() if delay else 0.0
                    if left <= 0:
                        self._queue.popleft()
                        return head
                    self._not_empty.wait(left)  # a put (the pairing IN_MOVED_TO) wakes us to look again

    grouper.DelayedQueue = PromptDelayedQueue


@dataclass
class Stats:
    merges: int = 0
    conflicts: int = 0
    errors: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.time)


class Watcher:
    """Keep the stores of ``roots`` current and merge overlapping saves.

    >>> # Watcher([Path("project")], log=print).run()   # until Ctrl-C
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], *, log: Callable[[str], None] = lambda s: None,
                 debounce: float = 0.02, rescan: float = 300.0, retry: float = 0.2,
                 ignore: Iterable[str] = (), store_location: str | None = None) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.stores = {root: Store.open(root, store_location) for root in self.roots}
        self.log = log
        self.debounce, self.rescan_every, self.retry = debounce, rescan, retry
        self.ignore = tuple(ignore)
        self.stats = Stats()
        self.session = Session()
        self._due: dict[Path, float] = {}
        self._snapshots: dict[Path, list[bytes]] = {}
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

    def tracked(self) -> dict[str, int]:
        return {str(root): len(store.tracked(root)) for root, store in self.stores.items()}

    def pending(self) -> int:
        """Saves read and renames seen but not yet handled, plus files waiting to be looked at."""
        with self._lock:
            return sum(map(len, self._snapshots.values())) + len(self._due) + len(self._ops) + self._busy

    # --- events ------------------------------------------------------------

    def schedule(self, path: str | os.PathLike[str], delay: float | None = None) -> None:
        p = Path(os.fsdecode(path))
        if not self._watched(p):
            return
        with self._lock:
            self._due[p] = time.monotonic() + (self.debounce if delay is None else delay)
        self._wake.set()

    def snapshot(self, path: str | os.PathLike[str]) -> None:
        """Read a just-written file now, in the event thread, and queue its content.

        A second writer can replace the file a few milliseconds later; what
        the first one saved must still reach the store (and the merge).
        """
        p = Path(os.fsdecode(path))
        if not self._watched(p):
            return
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            data = None  # gone or unreadable: the worker reads (and reports) it
        with self._lock:
            queued = self._snapshots.setdefault(p, [])
            if data is not None and (not queued or queued[-1] != data):  # two events, one save: read once
                queued.append(data)
        self.schedule(p, 0)

    def _watched(self, p: Path) -> bool:
        """A notebook under a root, and no symlink leading out of the roots."""
        if not is_notebook(p, self.ignore) or self._store_for(p) is None:
            return False
        if p.is_symlink():
            target = Path(os.path.realpath(p))
            if not any(target.is_relative_to(root) for root in self.roots):
                self._refuse(p, "is a symlink to a file outside the watched folders; left alone")
                return False
        return True

    def _refuse(self, p: Path, why: str) -> None:
        if p not in self._refused:
            self._refused.add(p)
            self.log(f"skipped {p}: {why}")

    # The event thread only reads files and queues work: it never waits for
    # the store, so a save is read the moment it is closed, even while the
    # worker is busy merging the previous one.

    def _moved(self, src: str, dest: str) -> None:
        s, d = Path(os.fsdecode(src)), Path(os.fsdecode(dest))
        if is_notebook(s, self.ignore) and self._store_for(s) is not None:
            with self._lock:
                self._ops.append(("rename", s, d))
        self.snapshot(d)

    def _deleted(self, src: str) -> None:
        p = Path(os.fsdecode(src))
        if is_notebook(p, self.ignore) and self._store_for(p) is not None:
            with self._lock:
                self._ops.append(("delete", p, None))
            self._wake.set()

    def _apply(self, op: str, a: Path, b: Path | None) -> None:
        """A rename or deletion, in the worker, in event order."""
        store = self._store_for(a)
        if store is None:
            return
        if op == "rename" and b is not None:
            if self._store_for(b) is store and is_notebook(b, self.ignore) and store.on_disk(a) is not None \
                    and store.on_disk(b) is None:
                store.rename(a, b)  # history moves with the file
        elif op == "delete" and store.on_disk(a) is not None and not a.is_file():
            store.add(a, None, "deleted")
            self.log(f"deleted {a}")

    def _handler(self):  # type: ignore[no-untyped-def]
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):  # type: ignore[no-untyped-def]
                watcher.snapshot(event.src_path)

            def on_created(self, event):  # type: ignore[no-untyped-def]
                if not event.is_directory:
                    watcher.schedule(event.src_path, delay=watcher.retry)  # a close event normally comes first
                else:
                    for p in scan(Path(os.fsdecode(event.src_path)), watcher.ignore):  # files that came with the folder
                        watcher.schedule(p)

            def on_moved(self, event):  # type: ignore[no-untyped-def]
                if event.is_directory:
                    for p in scan(Path(os.fsdecode(event.dest_path)), watcher.ignore):
                        watcher.schedule(p)
                else:
                    watcher._moved(event.src_path, event.dest_path)

            def on_deleted(self, event):  # type: ignore[no-untyped-def]
                if not event.is_directory:
                    watcher._deleted(event.src_path)

        return Handler()

    # --- work --------------------------------------------------------------

    def sync(self, path: Path, data: bytes | None = None) -> Outcome | None:
        store = self._store_for(path)
        if store is None:
            return None
        try:
            with self._work:
                if conflict_copy_of(path) is not None:
                    outcome = merge_copy(store, path, session=self.session)
                else:
                    outcome = sync_file(store, path, data=data, session=self.session)
        except Exception as e:  # a watcher never stops for one bad file
            self.stats.errors += 1
            self.stats.last_error = f"{path}: {e}"
            self.log(f"error {path}: {e}")
            return None
        if outcome.action == "partial" and path.exists():
            self.schedule(path, self.retry)
        for step in (*outcome.earlier, outcome):
            if step.action == "merged":
                self._merged(path, step)
            elif step.action == "error":
                self.stats.errors += 1
                self.stats.last_error = step.message
                self.log(f"error {step.message}")
        return outcome

    def _merged(self, path: Path, outcome: Outcome) -> None:
        self.stats.merges += 1
        what = f"{outcome.conflicts} conflict(s) marked inline" if outcome.conflicts else "clean"
        if outcome.conflicts:
            self.stats.conflicts += 1
        source = f"conflict copy {path.name}" if conflict_copy_of(path) else "save"
        self.log(f"merged {path}: base v{outcome.base} + on disk v{outcome.local} + {source} v{outcome.remote}"
                 f" -> v{outcome.version} ({what})")

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
                    self._snapshots.setdefault(old.path, []).append(data)
                    self._due[old.path] = time.monotonic()
                old.close()
            elif time.monotonic() - old.since < (self.REPLACED_WATCH * 3 if changed else self.REPLACED_WATCH):
                keep.append(old)
            else:
                old.close()
        self.session.replaced = keep

    @staticmethod
    def _parses(data: bytes) -> bool:
        from .notebook_io import parse_notebook

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
                self.sync(path)
        return len(paths)

    def _rescan(self) -> None:
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
            self.stats.errors += 1
            self.stats.last_error = str(e)
            self.log(f"error: {e}")

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
                for data in snapshots[path]:
                    self.sync(path, data)
                if not snapshots[path]:
                    self.sync(path)
            with self._lock:
                self._busy = 0
            if time.monotonic() >= next_rescan:
                self._guarded(self._rescan)
                next_rescan = time.monotonic() + self.rescan_every
            if not ready:
                if self.session.replaced:
                    wait = min(wait, 0.1)  # a writer caught mid-save: look at the inode it writes into
                self._wake.wait(max(0.0, min(wait, 0.5)))
                self._wake.clear()

    def start(self, progress: Callable[[list[Path]], Iterable[Path]] = iter) -> None:
        """Scan, then follow events in background threads until :meth:`stop`."""
        from watchdog.events import (DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent,
                                     FileDeletedEvent, FileMovedEvent)
        from watchdog.observers import Observer

        # The event thread must get the interpreter quickly while the worker
        # merges: a save is read at its close event, before the next writer's
        # save can replace it, and every millisecond of waiting widens that window.
        sys.setswitchinterval(0.0005)
        _pair_moves_promptly()
        self._observer = Observer()
        # Always filter: watchdog's default mask includes open/close-without-write,
        # which floods the kernel queue on large trees.
        kinds = [FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent]
        for root in self.roots:
            self._observer.schedule(self._handler(), str(root), recursive=True, event_filter=kinds)
        self._observer.start()  # before the scan, so no save slips between the two
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
        for store in self.stores.values():
            store.close()
