"""Watch folders for notebook saves and run sync_file() on each (watchdog).

One observer for any number of roots, recursive (new subfolders included).
We act on close-after-write and on renames, not on every modify: a Jupyter
save truncates and rewrites the file in place, so modify events arrive while
the bytes are half written. Each path is debounced, then handled by one worker
thread, so saves of one file are merged one at a time. A periodic rescan
catches events the kernel dropped.

Single writers are never merged. In a git work tree, a save whose bytes are
a blob git holds was written by git (checkout, reset, stash, rebase, merge,
pull): it is recorded with the writer ``git``, as made from the version on
disk. While git holds ``index.lock``, other saves in that work tree wait and
are handled once git is done. While the folder is paused (``nbmergesave
pause``, or a ``--pause-while`` path exists), every save is recorded as the
pausing tool's, never merged.
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

from .gitrepo import GitRepo, GitRepos
from .store import STORE_DIR, Store, sha256
from .sync import Outcome, Session, conflict_copy_of, merge_copy, sync_file

SKIP_DIRS = frozenset({".ipynb_checkpoints", STORE_DIR, ".git"})

#: In a store's folder: while this file exists, the root's watcher records every save as made from
#: the version on disk and merges none (``nbmergesave pause`` / ``resume``).
PAUSE_FILE = "paused"

#: A save waiting for git, with what we knew when it was read: (content or None to read it then, writer).
Held = tuple["bytes | None", "str | None"]


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
    single_writer: dict[str, int] = field(default_factory=dict)  # saves recorded, never merged, by writer
    started: float = field(default_factory=time.time)


class Watcher:
    """Keep the stores of ``roots`` current and merge overlapping saves.

    >>> # Watcher([Path("project")], log=print).run()   # until Ctrl-C
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], *, log: Callable[[str], None] = lambda s: None,
                 debounce: float = 0.02, rescan: float = 300.0, retry: float = 0.2,
                 ignore: Iterable[str] = (), store_location: str | None = None,
                 pause_while: Iterable[str | os.PathLike[str]] = (), git: bool = True) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.stores = {root: Store.open(root, store_location) for root in self.roots}
        self.log = log
        self.debounce, self.rescan_every, self.retry = debounce, rescan, retry
        self.ignore = tuple(ignore)
        self.stats = Stats()
        self.session = Session()
        self.git = GitRepos() if git else None
        # Pause markers: each root's store/paused, and the user's --pause-while paths (any root).
        # Those inside a root are followed through events, in order with the saves around
        # them, so a tool's last write before `resume` is still the tool's; others are stat'ed.
        self._markers: dict[Path, Path | None] = {}
        for root, store in self.stores.items():  # one store shared by several roots: its marker pauses them all
            marker = _marker(store, root)
            self._markers[marker] = None if marker in self._markers else root
        self._markers.update({Path(os.path.abspath(p)): None for p in pause_while})
        self._marker_present = {m: os.path.lexists(m) for m in self._markers}
        self._marker_by_event = {m for m in self._markers if any(m.is_relative_to(r) for r in self.roots)}
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

    def tracked(self) -> dict[str, int]:
        return {str(root): len(store.tracked(root)) for root, store in self.stores.items()}

    def pending(self) -> int:
        """Saves read and renames seen but not yet handled (those waiting for git included), plus files
        waiting to be looked at."""
        with self._lock:
            return (sum(map(len, self._snapshots.values())) + len(self._due) + len(self._ops) + self._busy
                    + sum(len(held) for _, held in self._held.values()) + len(self._held_ops))

    # --- single writers: git and pauses -------------------------------------

    def paused(self, path: Path) -> bool:
        """Whether a pause marker for ``path``'s root (or a --pause-while path) is there."""
        root = self._root_of(path)
        for marker, owner in self._markers.items():
            if owner is not None and owner != root:
                continue
            if marker in self._marker_by_event:
                if self._marker_present[marker]:  # as of the last event read: in order with the saves
                    return True
            elif os.path.lexists(marker):
                return True
        return False

    def _marker_event(self, path: str | bytes, present: bool) -> bool:
        p = Path(os.fsdecode(path))
        if p in self._marker_present:
            self._marker_present[p] = present
            self.log(f"{'paused' if present else 'resumed'} ({p} {'created' if present else 'removed'})")
            return True
        return False

    def _root_of(self, path: Path) -> Path | None:
        for root in sorted(self.roots, key=lambda r: len(r.parts), reverse=True):
            if path.is_relative_to(root):
                return root
        return None

    def _repo(self, path: Path) -> GitRepo | None:
        return self.git.find(path) if self.git is not None else None

    def _writer_of(self, path: Path, repo: GitRepo | None, hint: str | None) -> Callable[[bytes], str | None] | None:
        """Who wrote a save whole, if a single writer did: the pausing tool (``hint``, known when
        the save was read), or git (its bytes are a blob, or, through a smudge filter, git says
        the file is as its index has it). ``None`` where there is no one to ask (outside git, not paused)."""
        if hint is None and repo is None:
            return None

        def writer_of(data: bytes) -> str | None:
            if hint is not None:
                return hint
            if repo is not None and (repo.has_blob(data) or repo.as_in_index(path, data)):
                return "git"
            return None
        return writer_of

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
        hint = "paused" if self.paused(p) else None  # in event order: the tool's write, whenever it is handled
        with self._lock:
            queued = self._snapshots.setdefault(p, [])
            if data is not None and (not queued or queued[-1][0] != data):  # two events, one save: read once
                queued.append((data, hint))
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
                if watcher._marker_event(event.src_path, True):
                    pass
                elif not event.is_directory:
                    watcher.schedule(event.src_path, delay=watcher.retry)  # a close event normally comes first
                else:
                    for p in scan(Path(os.fsdecode(event.src_path)), watcher.ignore):  # files that came with the folder
                        watcher.schedule(p)

            def on_moved(self, event):  # type: ignore[no-untyped-def]
                watcher._marker_event(event.src_path, False)
                watcher._marker_event(event.dest_path, True)
                if event.is_directory:
                    for p in scan(Path(os.fsdecode(event.dest_path)), watcher.ignore):
                        watcher.schedule(p)
                else:
                    watcher._moved(event.src_path, event.dest_path)

            def on_deleted(self, event):  # type: ignore[no-untyped-def]
                if not watcher._marker_event(event.src_path, False) and not event.is_directory:
                    watcher._deleted(event.src_path)

        return Handler()

    # --- work --------------------------------------------------------------

    def sync(self, path: Path, data: bytes | None = None, hint: str | None = None,
             repo: GitRepo | None = None) -> Outcome | None:
        store = self._store_for(path)
        if store is None:
            return None
        try:
            with self._work:
                if conflict_copy_of(path) is not None:
                    outcome = merge_copy(store, path, session=self.session)
                else:
                    outcome = sync_file(store, path, data=data, session=self.session,
                                        writer_of=self._writer_of(path, repo, hint))
        except Exception as e:  # a watcher never stops for one bad file
            self._failed(f"{path}: {e}")
            return None
        if repo is not None and repo.broken is not None and repo not in self._said_broken:
            self._said_broken.add(repo)
            self.log(f"git cannot be asked in {repo.work_tree} ({repo.broken}): saves there are judged on content"
                     f" alone, as outside git, until it answers again")
        if outcome.action == "partial" and path.exists():
            self.schedule(path, self.retry)
        for step in (*outcome.earlier, outcome):
            if step.action == "merged":
                self._merged(path, step, repo)
            elif step.action == "recorded" and step.writer is not None:
                self.stats.single_writer[step.writer] = self.stats.single_writer.get(step.writer, 0) + 1
            elif step.action == "skipped":
                self._refuse(path, step.message)
            elif step.action == "error":
                self._failed(step.message)
        return outcome

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
        source = f"conflict copy {path.name}" if conflict_copy_of(path) else "save"
        # In a git work tree a merge changes a file git tracks: say how to take it back.
        undo = f"; in git work tree {repo.work_tree}: 'nbmergesave undo {path}' puts the save back" if repo else ""
        self.log(f"merged {path}: base v{outcome.base} + on disk v{outcome.local} + {source} v{outcome.remote}"
                 f" -> v{outcome.version} ({what}){undo}")

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
                self.sync(path, repo=self._repo(path))
        return len(paths)

    def _rescan(self) -> None:
        self._marker_present.update({m: os.path.lexists(m) for m in self._markers})  # in case an event was lost
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
                if held is not None or data is None or not repo.has_blob(data):
                    with self._lock:
                        self._held.setdefault(path, (repo, []))[1].extend(saves[i:])
                        self._held_since.setdefault(repo, time.monotonic())
                    return
            self.sync(path, data, hint, repo)

    #: After how long a held save is worth a line in the log (a stale index.lock keeps saves waiting).
    HELD_WARNING = 10.0

    def _release_held(self) -> None:
        """Handle the saves held for git in every work tree where git is done."""
        if not self._held and not self._held_ops:
            return
        now = time.monotonic()
        for repo, since in list(self._held_since.items()):
            if repo.busy():
                if since is not None and now - since > self.HELD_WARNING:
                    waiting = sum(len(h) for r, h in self._held.values() if r is repo) \
                        + sum(1 for r, _ in self._held_ops if r is repo)
                    self.log(f"waiting for git: {repo.lock_file} has been there {now - since:.0f} s; {waiting} save(s)"
                             f" in {repo.work_tree} are kept and will be handled when it is gone (remove it if no git"
                             f" command is running)")
                    self._held_since[repo] = None  # said once
                continue
            with self._lock:
                paths = [p for p, (r, _) in self._held.items() if r is repo]
                released = {p: self._held.pop(p)[1] for p in paths}
                ops = [op for r, op in self._held_ops if r is repo]
                self._held_ops = [(r, op) for r, op in self._held_ops if r is not repo]
                del self._held_since[repo]
            for path, saves in released.items():
                self._handle(path, saves)
            with self._work:
                for op in ops:
                    self._apply(*op)

    def start(self, progress: Callable[[list[Path]], Iterable[Path]] = iter) -> None:
        """Scan, then follow events in background threads until :meth:`stop`."""
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
        self._observer.start()  # before the scan, so no save slips between the two
        self._marker_present.update({m: os.path.lexists(m) for m in self._markers})
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

    def _keep_held(self) -> None:
        """Saves still waiting for git when we stop go into the store (not as current), so none is lost."""
        with self._lock:
            held, self._held = self._held, {}
        for path, (_, saves) in held.items():
            store = self._store_for(path)
            for data, _ in saves:
                if store is not None and data is not None and store.latest_with(path, sha256(data)) is None:
                    store.add(path, data, "observed", on_disk=False)
                    self.log(f"stopped while git held {path}'s work tree: its save is kept in the store, not merged")


# --- pause and resume: a tool rewrites the folder --------------------------

def _marker(store: Store, root: Path) -> Path:
    """The pause marker of ``root``: in its store folder; for a store in a database (which has no folder, and
    puts nothing in the project), a file per watched folder in this user's state folder on this host."""
    if isinstance(store.location, Path):
        return store.location.absolute() / PAUSE_FILE
    from .daemon import state_dir
    from .private import private_dir

    return private_dir(state_dir() / "paused") / sha256(os.fsencode(root.absolute()))[:16]


def pause_file(root: str | os.PathLike[str], store_location: str | None = None) -> Path:
    """The file whose presence pauses the watcher of ``root`` (in its store folder)."""
    if store_location or os.environ.get("NBMERGESAVE_STORE"):
        return Path(store_location or os.environ["NBMERGESAVE_STORE"]).absolute() / PAUSE_FILE
    root = Path(root).resolve()
    store = Store.find(root / "_")  # the store of root, or of a folder above it
    try:
        return _marker(store, root)
    finally:
        store.close()


def pause(root: str | os.PathLike[str], *, reason: str = "", store_location: str | None = None) -> Path:
    """Pause the watcher of ``root``: saves are recorded as made from the version on disk, none is merged.

    >>> # nbmergesave.watcher.pause("project", reason="restoring a backup"); ...; resume("project")
    """
    marker = pause_file(root, store_location)
    with open(marker, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')} {reason}\n")
    return marker


def resume(root: str | os.PathLike[str], *, store_location: str | None = None) -> bool:
    """End a pause of ``root``'s watcher; ``False`` when it was not paused."""
    marker = pause_file(root, store_location)
    try:
        os.unlink(marker)
    except FileNotFoundError:
        return False
    return True
