"""The single-writer gate: git and pauses, asked before any merge is inferred.

Single writers are never merged. In a git work tree, a save whose bytes are
a blob git holds was written by git (checkout, reset, stash, rebase, merge,
pull): it is recorded with the writer ``git``, as made from the version on
disk. While git holds ``index.lock``, other saves in that work tree wait and
are handled once git is done. While the folder is paused (``nbmergesave
pause``, or a ``--pause-while`` path exists), every save is recorded as the
pausing tool's, never merged.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..gitrepo import GitRepo, GitRepos
from ..private import private_dir, state_dir
from ..store import Store, sha256

#: In a store's folder: while this file exists, the root's watcher records every save as made from
#: the version on disk and merges none (``nbmergesave pause`` / ``resume``).
PAUSE_FILE = "paused"

#: A save waiting for git, with what we knew when it was read: (content or None to read it then, writer).
Held = tuple["bytes | None", "str | None"]


class Pauses:
    """The pause markers of a watcher's roots: whether a tool that rewrites the folder is at work."""

    def __init__(self, roots: list[Path], stores: dict[Path, Store], pause_while: Iterable[str | os.PathLike[str]],
                 log: Callable[[str], None]) -> None:
        self.roots = roots
        self.log = log
        # Pause markers: each root's store/paused, and the user's --pause-while paths (any root).
        # Those inside a root are followed through events, in order with the saves around
        # them, so a tool's last write before `resume` is still the tool's; others are stat'ed.
        self._markers: dict[Path, Path | None] = {}
        for root, store in stores.items():  # one store shared by several roots: its marker pauses them all
            marker = _marker(store, root)
            self._markers[marker] = None if marker in self._markers else root
        self._markers.update({Path(os.path.abspath(p)): None for p in pause_while})
        self._marker_present = {m: os.path.lexists(m) for m in self._markers}
        self._marker_by_event = {m for m in self._markers if any(m.is_relative_to(r) for r in self.roots)}

    def look(self) -> None:
        """Look at every marker on disk (when watching starts, and at each rescan in case an event was lost)."""
        self._marker_present.update({m: os.path.lexists(m) for m in self._markers})

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

    def event(self, path: str | bytes, present: bool) -> bool:
        """Follow a marker created or removed; ``False`` when ``path`` is no marker."""
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


class Gate:
    """The watcher's part that asks a save's single writer, git or a pausing tool, and holds the saves of a
    work tree while git writes it (a part of :class:`~nbmergesave.watcher.Watcher`, which sets the state
    below; what it releases goes to ``_handle`` and ``_apply``)."""

    git: GitRepos | None
    pauses: Pauses
    log: Callable[[str], None]
    _held: dict[Path, tuple[GitRepo, list[Held]]]  # saves waiting for git to finish
    _held_ops: list[tuple[GitRepo, tuple[str, Path, Path | None]]]  # deletions, likewise
    _held_since: dict[GitRepo, float | None]  # None: the wait was reported
    _lock: threading.Lock
    _work: threading.RLock
    # from the other parts
    _store_for: Callable[[Path], Store | None]
    _handle: Callable[[Path, list[Held]], None]
    _apply: Callable[[str, Path, Path | None], None]

    def paused(self, path: Path) -> bool:
        """Whether a pause marker for ``path``'s root (or a --pause-while path) is there."""
        return self.pauses.paused(path)

    def _repo(self, path: Path) -> GitRepo | None:
        return self.git.find(path) if self.git is not None else None

    def _writer_of(self, path: Path, repo: GitRepo | None, hint: str | None) -> Callable[[bytes], str | None] | None:
        return single_writer(path, repo, hint)

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


def single_writer(path: Path, repo: GitRepo | None, hint: str | None) -> Callable[[bytes], str | None] | None:
    """Who wrote a save whole, if a single writer did (``sync_file``'s ``writer_of``): the pausing tool
    (``hint``, known when the save was read), or git (its bytes are a blob, or, through a smudge filter,
    git says the file is as its index has it). ``None`` where there is no one to ask (outside git, not
    paused). Shared by the watcher and the Jupyter server's collaboration rooms, so both apply one rule."""
    if hint is None and repo is None:
        return None

    def writer_of(data: bytes) -> str | None:
        if hint is not None:
            return hint
        if repo is not None and (repo.has_blob(data) or repo.as_in_index(path, data)):
            return "git"
        return None
    return writer_of


def is_paused(store: Store, root: Path) -> bool:
    """Whether ``root``'s watcher is paused now (``nbmergesave pause``): its saves are the pausing tool's."""
    return os.path.lexists(_marker(store, root))


# --- pause and resume: a tool rewrites the folder --------------------------

def _marker(store: Store, root: Path) -> Path:
    """The pause marker of ``root``: in its store folder; for a store in a database (which has no folder, and
    puts nothing in the project), a file per watched folder in this user's state folder on this host."""
    if isinstance(store.location, Path):
        return store.location.absolute() / PAUSE_FILE
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
