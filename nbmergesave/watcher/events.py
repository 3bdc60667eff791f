"""File events -> saves: which files are notebooks, the watchdog handler and its filter, moves and deletions.

One observer for any number of roots, recursive (new subfolders included).
We act on close-after-write and on renames, not on every modify: a Jupyter
save truncates and rewrites the file in place, so modify events arrive while
the bytes are half written. Each path is debounced, then handled by one worker
thread (:mod:`.worker`).
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..gitrepo import GitRepo
from ..pairs import Pairs
from ..store import STORE_DIR, Store
from .gate import Held, Pauses

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


class Events:
    """The watcher's part that turns file events into work for the worker: saves read at once and
    debounced per path, renames and deletions queued in event order (a part of
    :class:`~nbmergesave.watcher.Watcher`, which sets the state below)."""

    roots: list[Path]
    ignore: tuple[str, ...]
    debounce: float
    retry: float
    log: Callable[[str], None]
    pauses: Pauses
    pairs: Pairs
    _due: dict[Path, float]
    _snapshots: dict[Path, list[Held]]
    _ops: list[tuple[str, Path, Path | None]]
    _held_ops: list[tuple[GitRepo, tuple[str, Path, Path | None]]]
    _held_since: dict[GitRepo, float | None]
    _refused: set[Path]
    _lock: threading.Lock
    _wake: threading.Event
    _observer: Any  # watchdog's Observer, once started
    # from the other parts
    _store_for: Callable[[Path], Store | None]
    _repo: Callable[[Path], GitRepo | None]
    paused: Callable[[Path], bool]

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
        if p.name.endswith(".ipynb.invalid"):  # a save jupyter_server put aside (sync.stepped_back)
            self.schedule(p.with_suffix(""), 0)
            return
        if not self._watched(p):
            return
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            data = None  # gone or unreadable: the worker reads (and reports) it
        hint = "paused" if self.paused(p) else None  # in event order: the tool's write, whenever it is handled
        with self._lock:
            queued = self._snapshots.setdefault(p, [])
            if data is not None and (not queued or queued[-1][0] != data):  # two events, one save: read once
                queued.append((data, hint))
        self.schedule(p, 0)

    def _watched(self, p: Path) -> bool:
        """A notebook under a root, and no symlink leading out of the roots; or a text file that may be
        a watched notebook's Jupytext pair (its write is a save of the notebook: :mod:`nbmergesave.pairs`)."""
        if not is_notebook(p, self.ignore):
            notebook = self.pairs.candidate(p)
            return notebook is not None and notebook != p and self._watched(notebook)
        if self._store_for(p) is None:
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
        elif op == "delete" and store.on_disk(a) is not None:
            repo = self._repo(a)
            gone = not a.is_file() if repo is None else repo.gone(a)
            if repo is not None and gone is None:  # git replaces a file by removing it first: wait, look again
                with self._lock:
                    self._held_ops.append((repo, (op, a, b)))
                    self._held_since.setdefault(repo, time.monotonic())
                return
            if gone:
                store.add(a, None, "deleted")
                self.log(f"deleted {a}")

    def _handler(self):  # type: ignore[no-untyped-def]
        from watchdog.events import FileSystemEventHandler

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event):  # type: ignore[no-untyped-def]
                watcher.snapshot(event.src_path)

            def on_created(self, event):  # type: ignore[no-untyped-def]
                if watcher.pauses.event(event.src_path, True):
                    pass
                elif not event.is_directory:
                    watcher.schedule(event.src_path, delay=watcher.retry)  # a close event normally comes first
                else:
                    for p in scan(Path(os.fsdecode(event.src_path)), watcher.ignore):  # files that came with the folder
                        watcher.schedule(p)

            def on_moved(self, event):  # type: ignore[no-untyped-def]
                watcher.pauses.event(event.src_path, False)
                watcher.pauses.event(event.dest_path, True)
                if event.is_directory:
                    for p in scan(Path(os.fsdecode(event.dest_path)), watcher.ignore):
                        watcher.schedule(p)
                else:
                    watcher._moved(event.src_path, event.dest_path)

            def on_deleted(self, event):  # type: ignore[no-untyped-def]
                if not watcher.pauses.event(event.src_path, False) and not event.is_directory:
                    watcher._deleted(event.src_path)

        return Handler()

    def _observe(self) -> None:
        """Follow the events under every root, in watchdog's threads."""
        from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileClosedEvent,
                                     FileCreatedEvent, FileDeletedEvent, FileMovedEvent)
        from watchdog.observers import Observer

        # The event thread must get the interpreter quickly while the worker
        # merges: a save is read at its close event, before the next writer's
        # save can replace it, and every millisecond of waiting widens that window.
        sys.setswitchinterval(0.0005)
        _pair_moves_promptly()
        self._observer = Observer()
        # Always filter: watchdog's default mask includes open/close-without-write,
        # which floods the kernel queue on large trees.
        kinds = [FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent,
                 DirDeletedEvent]  # (a folder can be a --pause-while marker)
        for root in self.roots:
            self._observer.schedule(self._handler(), str(root), recursive=True, event_filter=kinds)
        self._observer.start()
