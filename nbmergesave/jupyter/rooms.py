"""Real-time collaboration rooms (jupyter-collaboration): outside changes merged, not replaced.

jupyter-collaboration keeps each open notebook in a shared document (a "room",
``jupyter_server_ydoc.rooms.DocumentRoom``) and its file behind a
``jupyter_server_ydoc.loaders.FileLoader``. As shipped, when the file changes
outside the room (an agent, a script, ``git``, another server) the room is
replaced by the file ("disk wins"): edits typed in the room and not yet saved
are gone from every screen, and so are edits saved a minute before when the
outside writer started from an older version. Its own saves refuse to write
once the file changed (``OutOfBandChanges``) and replace the room the same way.

This module, loaded by the server extension when jupyter-server-ydoc is
installed, patches those two classes (no hook exists upstream):

* every version the room loads or writes passes through :func:`~nbmergesave.sync.sync_file`
  first, as the folder's watcher would see it: an outside write is merged into
  the file with the version it was made from (the base search of
  :mod:`nbmergesave.lineage`, git's and paused tools' writes recorded, never
  merged), so what the room saved before is in the file before the room looks;
* an outside change then reaches the room as ``merge(base, file, room)``, with
  ``base`` the version the room last loaded or saved, ``file`` the file after
  that step and ``room`` the shared document as it is now (unsaved typing
  included); the result is applied cell by cell (:func:`.ydoc.apply_notebook`), in one
  transaction, and saved when the room now holds more than the file;
* the room's own saves go through the server's merge with the exact base
  (``nbmergesave_base``: the hash of what the room last loaded or saved), so a
  room and a plain tab, or two rooms on two servers, on one file, merge rather
  than overwrite; a merged save comes back into the room in place.

Why two steps rather than one merge of the room with the file: an outside
writer's version is often made from an older version than the room's last
save (an agent that read the notebook a minute ago). Merged against the room's
last save, the agent's file would look as if it removed what the room saved
since. The first step finds the agent's real base and merges with what the
file held before; the second step only has to bring the room's unsaved
typing along, and there the room's last load or save is the exact base.
Each step writes with compare-and-swap under the store's save lock, so a
watcher or another server on the same folder never merges the same write twice.

Written against jupyter-server-ydoc 3.0 (jupyter-collaboration 5.0); the
methods it replaces have kept their names since jupyter-server-ydoc 2.0
(jupyter-collaboration 4.0). Other major versions are left as they are, with
one line in the log.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import notebook_io
from ..merge import merge
from ..store import sha256
from .ydoc import apply_notebook, normal

#: jupyter-server-ydoc major versions whose internals this module knows, and the jupyter-collaboration they ship in.
KNOWN_MAJORS = {2: "4.x", 3: "5.x"}
#: What the patches use of jupyter-server-ydoc; checked before patching, so a renamed internal is refused, not broken.
NEEDED = {
    "FileLoader": ("load_content", "maybe_save_content", "maybe_notify", "_save_content", "path", "_lock",
                   "_subscriptions"),
    "DocumentRoom": ("_on_outofband_change", "_maybe_save_document"),
}
#: How long a room waits for git to finish writing its work tree before looking at the file anyway.
GIT_WAIT = 10.0


# --- the server's side: the store, the file, git ------------------------------------

@dataclass(frozen=True)
class Synced:
    """What :meth:`Rooms.sync` found: the sha256 the store now has as the file's (``None``: unknown, say
    the file is not a notebook yet or the store is unreachable), and when it merged an outside write into
    the file, that merge's base, the outside write, and the sha256 of what the file held before it."""

    sha: str | None
    base: bytes | None = None
    outside: bytes | None = None
    before: str | None = None


class Rooms:
    """What the patched classes share in one server: the log, the sync session, git, the server's root.

    Store and git work is done in threads (never in the event loop), one at a time
    (the watcher's worker does the same: saves of a notebook are handled in order).
    """

    def __init__(self, root_dir: str, log: Any) -> None:
        from ..gitrepo import GitRepos
        from ..sync import Session

        self.root = Path(root_dir).resolve()
        self.log = log
        self.session = Session()
        self.git = GitRepos()
        self._work = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: dict[str, list[bytes]] = {}  # by file: bytes read at file events during a room's save
        self.nudges = Nudges(self)
        # One thread of our own: the steps are serial anyway, and waiting for the store's save lock
        # must never take the threads the server's own saves need to release it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbmergesave-rooms")

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` as a task of its own, kept until it is done (the loop holds tasks only weakly)."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in our thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    @staticmethod
    def os_path(loader: Any) -> str | None:
        """The file behind a loader, when its contents manager keeps files on disk."""
        try:
            return str(loader._contents_manager._get_os_path(loader.path))
        except Exception:
            return None

    def sync(self, os_path: str, data: bytes | None = None, outside: bool = False) -> Synced:
        """Bring the store (and the file, when an outside write needs merging) up to date with ``os_path``,
        as the watcher does. ``data``: the bytes the room itself just wrote, or (``outside``) the bytes
        read at a write's close event, which the file may no longer hold."""
        from ..gitrepo import GitRepo
        from ..sync import open_store, sync_file
        from ..watcher.gate import is_paused, single_writer

        path = Path(os_path)
        with self._work:
            repo: GitRepo | None = self.git.find(path) if data is None or outside else None
            if repo is not None:
                deadline = time.monotonic() + GIT_WAIT
                while repo.busy() and time.monotonic() < deadline:  # git is writing the work tree: its files come whole
                    time.sleep(0.02)
            try:
                with open_store(path) as store:
                    ours = data is not None and not outside
                    paused = not ours and is_paused(store, self.root)
                    writer_of = None if ours else single_writer(path, repo, "paused" if paused else None)
                    for _ in range(10):
                        outcome = sync_file(store, path, data=data, session=self.session, writer_of=writer_of)
                        if outcome.action != "partial":
                            break
                        time.sleep(0.1)  # a write in progress: read it again shortly
                    for step in (*outcome.earlier, outcome):
                        if step.action == "merged":
                            self.log.info("nbmergesave: %s was written outside Jupyter; merged with what it held "
                                          "before (base v%s + on disk v%s + the outside write v%s -> v%s, %s)",
                                          store.key(path), step.base, step.local, step.remote, step.version,
                                          f"{step.conflicts} conflict(s) marked inline" if step.conflicts else "clean")
                        elif step.writer is not None:
                            self.log.info("nbmergesave: %s was written by %s; recorded, not merged",
                                          store.key(path), step.writer)
                        elif step.action in ("error", "partial", "skipped"):
                            self.log.warning("nbmergesave: %s: %s", store.key(path), step.message)
                    current = store.on_disk(path)
                    sha = current.sha256 if current is not None else None
                    merged = [step for step in (*outcome.earlier, outcome) if step.action == "merged"]
                    if len(merged) != 1 or merged[0].version != (current.version if current else None) \
                            or merged[0].base is None or merged[0].local is None or merged[0].remote is None:
                        return Synced(sha)
                    step = merged[0]
                    return Synced(sha, store.content(store.get(path, step.base)),
                                  store.content(store.get(path, step.remote)), store.get(path, step.local).sha256)
            except Exception as e:  # the room goes on as jupyter-collaboration would; the log says why
                self.log.error("nbmergesave: could not bring the store up to date with %s (%s)", os_path, e,
                               exc_info=True)
                return Synced(None)

    def saving(self, os_path: str) -> None:
        """A room's save of ``os_path`` starts: what file events read meanwhile is kept for :meth:`own_write`."""
        self._held[os.path.abspath(os_path)] = []

    def hold(self, os_path: str, data: bytes) -> bool:
        """Keep bytes read at a file event during a room's save of that file (``False``: no save is on)."""
        held = self._held.get(os.path.abspath(os_path))
        if held is None:
            return False
        held.append(data)
        return True

    def own_write(self, os_path: str, data: bytes, held: list[bytes]) -> None:
        """Record the room's save ``data`` as the file's version (declared with its base: recorded, not merged).

        A save is merged with the file as read, then written by the contents manager, which does not
        compare before it replaces the file. An outside write that landed in between (its bytes read at
        its file event, ``held``) was replaced by ours: it is merged back now, from its own base, as the
        watcher merges a save its own write displaced."""
        from ..sync import open_store

        written = sha256(data)
        # Ours was the file's content once written, whatever came after: the base that later writes are
        # judged against. (Handed to sync_file as a save, it would be taken for one seen already when the
        # file has changed since, and the file's previous version would stay as the one on disk.)
        with self._work, open_store(os_path) as store:
            version = store.latest_with(os_path, written)
            if version is None:
                store.add(os_path, data, "observed")
            else:
                store.add_on_disk(os_path, version.version)
        others = [b for b in held if sha256(b) != written]
        if not others:
            return
        if _file_sha(os_path) != written:  # the file changed after our write: the room looks at it next
            for b in others:
                self.sync(os_path, b, True)
            return
        self.log.info("nbmergesave: %s was written outside Jupyter while the room saved it; merging %d such "
                      "write(s) back in", os_path, len(others))
        with open_store(os_path) as store:
            self.session.displaced.setdefault(store.key(os_path), []).extend(others)
        self.sync(os_path)

    def merge_of(self, os_path: str, sha: str, before: str) -> Synced:
        """When the file's version ``sha`` is a merge of an outside write with ``before`` (made by this room's
        look at the file, the server's watcher of its folder, or a ``nbmergesave watch``): that merge's base
        and outside write."""
        from ..sync import open_store

        try:
            with open_store(os_path) as store:
                v = store.latest_with(os_path, sha)
                if v is None or v.kind != "merged" or None in (v.base, v.local, v.remote) \
                        or store.get(os_path, v.local).sha256 != before:  # type: ignore[arg-type]
                    return Synced(sha)
                return Synced(sha, store.content(store.get(os_path, v.base)),  # type: ignore[arg-type]
                              store.content(store.get(os_path, v.remote)), before)  # type: ignore[arg-type]
        except Exception:
            self.log.debug("nbmergesave: could not look up how %s was merged", os_path, exc_info=True)
            return Synced(sha)

    def stored(self, os_path: str, sha: str) -> dict[str, Any] | None:
        """The stored notebook with hash ``sha`` (a room's base), or ``None``."""
        from ..sync import open_store

        try:
            with open_store(os_path) as store:
                version = store.latest_with(os_path, sha)
                return normal(notebook_io.parse_notebook(store.content(version))) if version is not None else None
        except Exception:
            self.log.error("nbmergesave: could not read the base of %s from the store", os_path, exc_info=True)
            return None

    def record_merge(self, os_path: str, base: str, disk: str, room: dict[str, Any], merged: dict[str, Any],
                     conflicts: int) -> int | None:
        """Keep the room's unsaved state and the merge made in the room in the store (``history``, ``undo``
        and the review page find them); the merged version's number."""
        from ..sync import open_store

        try:
            with open_store(os_path) as store:
                base_v, disk_v = store.latest_with(os_path, base), store.latest_with(os_path, disk)
                room_v = store.add(os_path, notebook_io.dumps(room).encode(), "observed", on_disk=False)
                merged_v = store.add(os_path, notebook_io.dumps(merged).encode(), "merged", on_disk=False,
                                     base=base_v.version if base_v else None,
                                     local=disk_v.version if disk_v else None, remote=room_v.version,
                                     conflicts=conflicts)
                return merged_v.version
        except Exception:
            self.log.error("nbmergesave: could not record the merge in the room of %s", os_path, exc_info=True)
            return None


class Nudges:
    """File events for the notebooks open in rooms: a write that closes (or a file renamed into place)
    makes the room look at its file at once, instead of at its next poll (``file_poll_interval``, 1 s).

    Not only faster: two outside writes within one poll would reach the room as one, the first never
    recorded, and the second's base then searched without it. The room's own handling (the stock
    ``maybe_notify``: compare the file's time with the last one seen, then call the rooms) is what runs,
    so a nudge for our own write finds nothing new. One watchdog observer per server, one watch per folder.
    """

    def __init__(self, rooms: Rooms) -> None:
        import weakref

        self.rooms = rooms
        self.log = rooms.log
        self._loaders: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._folders: set[str] = set()
        self._pending: set[str] = set()
        self._observer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def follow(self, os_path: str, loader: Any) -> None:
        """Nudge ``loader`` when ``os_path`` is written (called in the event loop, when a room loads its file)."""
        path = str(Path(os_path).absolute())
        with self._lock:
            self._loaders[path] = loader
            folder = str(Path(path).parent)
            if folder in self._folders:
                return
            self._folders.add(folder)
        try:
            if self._observer is None:
                from watchdog.observers import Observer

                self._loop = asyncio.get_running_loop()
                self._observer = Observer()
                self._observer.daemon = True
                self._observer.start()
            from watchdog.events import FileClosedEvent, FileMovedEvent

            self._observer.schedule(self._handler(), folder, recursive=False,
                                    event_filter=[FileClosedEvent, FileMovedEvent])
        except Exception as e:  # no inotify watch left, say: the room's own poll still sees the change
            self.log.warning("nbmergesave: cannot watch %s for writes (%s); rooms there follow outside writes at "
                             "their poll interval", folder, e)

    def _handler(self) -> Any:
        from watchdog.events import FileSystemEventHandler

        nudges = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event: Any) -> None:
                nudges._nudge(event.src_path)

            def on_moved(self, event: Any) -> None:
                nudges._nudge(event.dest_path)

        return Handler()

    def _nudge(self, path: Any) -> None:
        path = os.fsdecode(path)
        with self._lock:
            loader = self._loaders.get(path)
            if loader is None or self._loop is None:
                return
        # Read now, as the watcher does at a close event: the room's own save may replace these bytes
        # within milliseconds, and then no one would ever have seen them.
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = None
        self._loop.call_soon_threadsafe(lambda: self.rooms.spawn(self._notify(path, loader, data)))

    async def _notify(self, path: str, loader: Any, data: bytes | None) -> None:
        try:
            if data is not None and self.rooms.hold(path, data):
                return  # the room is saving this file: its save looks at these bytes once it has written
            if data is not None:
                await self.rooms.run(self.rooms.sync, path, data, True)
            with self._lock:
                if path in self._pending:
                    return  # a look is on its way; it will see this write too
                self._pending.add(path)
            try:
                await loader.maybe_notify()
            finally:
                with self._lock:
                    self._pending.discard(path)
        except Exception:
            self.log.debug("nbmergesave: could not look at %s after a write", path, exc_info=True)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()


def _rooms_of(loader: Any) -> list[Any]:
    """The rooms subscribed to a file loader (each subscription is a room's bound method)."""
    return [room for cb in list(loader._subscriptions.values()) if (room := getattr(cb, "__self__", None)) is not None]


def _schedule_save(room: Any) -> None:
    """Save the room after its usual delay (none when autosave is off: the room stays dirty, as typing would
    leave it). A save already waiting is left to come: it saves the room as it is then, this change included,
    and restarting its delay at every outside write would keep a room from saving while a script writes."""
    if room._save_delay is None:
        return
    if room._saving_document is not None and not room._saving_document.done():
        return
    room._saving_document = asyncio.create_task(room._maybe_save_document(room._saving_document))


async def _after(task: asyncio.Task[Any] | None, then: Any, *args: Any) -> None:
    """Once ``task`` (a room's save) is over, run ``then`` (a coroutine, or a function called with ``args``)."""
    if task is not None:
        await asyncio.wait([task])
    if asyncio.iscoroutine(then):
        await then
    else:
        then(*args)


def _describe(stats: dict[str, int]) -> str:
    return ", ".join(f"{n} cell(s) {what}" for what, n in stats.items() if n) or "no cell changed"


# --- the patches ------------------------------------------------------------------

def install(root_dir: str, log: Any) -> bool:
    """Patch jupyter-server-ydoc's rooms and file loaders (once per process); ``False`` (and one log
    line) when jupyter-server-ydoc is a version this module does not know."""
    import importlib.metadata

    import jupyter_server_ydoc
    from jupyter_server_ydoc.loaders import FileLoader
    from jupyter_server_ydoc.rooms import DocumentRoom

    version = str(getattr(jupyter_server_ydoc, "__version__", "?"))
    try:
        collaboration = importlib.metadata.version("jupyter-collaboration")
    except importlib.metadata.PackageNotFoundError:
        collaboration = "not installed"
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = -1
    missing = [f"{cls.__name__}.{name}" for cls in (FileLoader, DocumentRoom) for name in NEEDED[cls.__name__]
               if not hasattr(cls, name) and name not in ("_lock", "_subscriptions")]
    if major not in KNOWN_MAJORS or missing:
        log.warning("nbmergesave: jupyter-server-ydoc %s (jupyter-collaboration %s) is not a version nbmergesave knows "
                    "(it knows %s%s); collaboration rooms are left as they are: a change made outside a room replaces "
                    "the room", version, collaboration, ", ".join(f"{m}.x" for m in KNOWN_MAJORS),
                    f"; missing: {', '.join(missing)}" if missing else "")
        return False
    if getattr(FileLoader, "_nbmergesave", None) is None:
        _patch(FileLoader, DocumentRoom, Rooms(root_dir, log))
    log.info("nbmergesave: jupyter-collaboration %s (jupyter-server-ydoc %s): rooms merge changes made outside them "
             "instead of replacing their content, and save through the merge with the exact base",
             collaboration, version)
    return True


def _patch(FileLoader: Any, DocumentRoom: Any, rooms: Rooms) -> None:  # noqa: N803 (the classes patched)
    from jupyter_server.utils import ensure_async

    from .files import as_written
    from .replies import BASE_KEY, REPLY_KEY

    stock_load = FileLoader.load_content
    stock_save = FileLoader.maybe_save_content
    stock_outofband = DocumentRoom._on_outofband_change
    log = rooms.log

    def ours(loader: Any, file_type: str) -> str | None:
        """The file's path on disk when this loader's notebook is ours to handle."""
        return rooms.os_path(loader) if file_type == "notebook" else None

    def serial(loader: Any) -> asyncio.Lock:
        # one of our steps at a time per file: out-of-band handling and saves must not interleave
        lock = loader.__dict__.get("_nbm_lock")
        if lock is None:
            lock = loader._nbm_lock = asyncio.Lock()
        return lock

    async def load_content(self: Any, format: str, file_type: str) -> dict[str, Any]:
        os_path = ours(self, file_type)
        if os_path is None:
            return await stock_load(self, format, file_type)
        for _ in range(3):
            synced = await rooms.run(rooms.sync, os_path)  # an outside write is merged before the room sees it
            model = await stock_load(self, format, file_type)
            # (nbmergesave's get asks for require_hash: the sha256 of the very bytes read)
            if synced.sha is None or model.get("hash") in (None, synced.sha):
                break  # else the file changed again between the two: look again
        self._nbm_base = model.get("hash")
        rooms.nudges.follow(os_path, self)
        return model

    async def maybe_save_content(self: Any, model: dict[str, Any]) -> dict[str, Any] | None:
        os_path = ours(self, model.get("type", ""))
        if os_path is None or getattr(self, "_nbm_base", None) is None:
            return await stock_save(self, model)
        async with serial(self):
            subscribed = _rooms_of(self)
            # Stock compares mtimes here, raises OutOfBandChanges and replaces the room with the file.
            # Here the file's change is merged into the room first, and the room saved as it then is.
            if await rooms.run(_file_sha, os_path) not in (self._nbm_base, None):
                if len(subscribed) != 1:  # (a file open in two formats at once): each room merges, then saves
                    for room in subscribed:
                        rooms.spawn(merge_outside(room, save_now=True))
                    return None
                if not await bring_in(subscribed[0]):
                    return None  # the room holds just the file now: nothing to save
            if len(subscribed) == 1:
                # The room as it is now: the content this save was asked with was read before we had the
                # lock, and a merge from the file may have come in meanwhile (saving that would undo it).
                model = {**model, "content": subscribed[0]._document.get()}
            async with self._lock:
                return await save(self, model, os_path)

    async def save(self: Any, model: dict[str, Any], os_path: str) -> dict[str, Any] | None:
        """The room's save, through nbmergesave's merge with the room's base (holding the loader's locks)."""
        path = self.path
        m = await ensure_async(self._contents_manager.get(path, format=model["format"], type="notebook", content=False))
        if not m["writable"]:
            return None
        sent = normal(model["content"])
        rooms.saving(os_path)
        done = asyncio.Event()
        task = asyncio.create_task(self._save_content({**model, BASE_KEY: self._nbm_base}, done, path))
        saved = None
        try:
            saved = await asyncio.shield(task)  # as stock: a save is never cut halfway
        except asyncio.CancelledError:
            pass
        await done.wait()
        if saved is None:
            try:
                saved = task.result()
            except BaseException:
                rooms._held.pop(os.path.abspath(os_path), None)
                raise
        reply = saved.get(REPLY_KEY) or {}
        # What this save wrote (the merge, or the room as sent): the room's base from now on. Not the hash
        # of the file as read back after the write: an outside write landing just then would be taken for
        # the room's own, and never merged (stock takes its time and hash from that read too).
        meant = as_written(reply["content"] if reply.get("merged") and reply.get("content") else model["content"])
        written = sha256(meant)
        if reply.get("sha256") not in (None, written):
            # The bytes read back differ: the contents manager serialises differently (then they hold the
            # same notebook), or the file changed again right after the write.
            same = await rooms.run(_same_notebook, os_path, reply["sha256"], meant)
            if same is not None:
                meant, written = same, reply["sha256"]
        self._nbm_base = written
        await rooms.run(rooms.own_write, os_path, meant, rooms._held.pop(os.path.abspath(os_path), []))
        if reply.get("sha256") not in (None, written):  # the file changed again right after the write
            log.info("nbmergesave: %s changed again just after room's save; merging it into the room", path)
            for room in _rooms_of(self):
                rooms.spawn(_after(asyncio.current_task(), merge_outside(room)))
        if reply.get("merged") and reply.get("content") is not None:
            merged = normal(reply["content"])
            log.info("nbmergesave: the room's save of %s met a change in the file; merged, updating the room", path)
            for room in _rooms_of(self):
                async with room._update_lock:  # held: the room's observer schedules no save for our change
                    now = normal(room._document.get())
                    # typing done while the save was on its way stays (merged with what the file brought)
                    result = merged if now == sent else merge(sent, merged, now).notebook
                    stats = apply_notebook(room._document, result)
                    pending = normal(room._document.get()) != merged
                    room._document.hash = saved.get("hash") or written
                    room._document.dirty = pending
                log.info("nbmergesave: room %s updated in place (%s)", room.room_id, _describe(stats))
                if pending:  # once this save is over (a save scheduled now would cancel it)
                    rooms.spawn(_after(asyncio.current_task(), _schedule_save, room))
        return saved

    async def bring_in(self: Any) -> bool:
        """Merge the file into the room (the caller holds the loader's ``serial`` lock); whether the room
        now holds more than the file (its edits, to be saved)."""
        loader = self._file
        os_path = rooms.os_path(loader)
        base = loader._nbm_base
        base_nb = await rooms.run(rooms.stored, os_path, base)
        if base_nb is None:
            log.error("nbmergesave: the version room %s last loaded or saved is not in the store; the room is "
                      "replaced by the file, as jupyter-collaboration does", self.room_id)
            await stock_outofband(self)
            return False
        try:
            model = await loader.load_content(self._file_format, self._file_type)  # merged into the file first
        except Exception as e:
            log.error("nbmergesave: could not load %s: %r", loader.path, e)
            return False
        disk, disk_sha = normal(model["content"]), loader._nbm_base
        synced = await rooms.run(rooms.merge_of, os_path, disk_sha, base)
        if synced.outside is not None:
            # The outside write was merged with the room's last save into the file. Merged here from that
            # write's own base instead, the room gets the same changes, and a conflict has the room's side
            # where every other merge into a room has it (after =======); the room's save then writes it.
            merge_base = normal(notebook_io.parse_notebook(synced.base))
            theirs = normal(notebook_io.parse_notebook(synced.outside))
            bases = (sha256(synced.base), sha256(synced.outside))
        else:
            merge_base, theirs, bases = base_nb, disk, (base, disk_sha)
        async with self._update_lock:  # held: our change schedules no save by itself
            room = normal(self._document.get())  # no await from here to the end of apply_notebook
            if room == disk:
                self._document.dirty = False
                self._document.hash = disk_sha
                return False
            result = merge(merge_base, theirs, room)  # as a save: local = the file's side, remote = the room
            stats = apply_notebook(self._document, result.notebook)
            self._document.dirty = result.notebook != disk
            # The front end compares this hash with the file's before a save (JupyterLab's "File Changed"
            # dialog); the room now stands on the file as it is.
            self._document.hash = disk_sha
        unresolved = len(result.unresolved)
        version = None
        if room != base_nb:  # the room had edits of its own: a merge, kept in the store
            version = await rooms.run(rooms.record_merge, os_path, *bases, room, result.notebook, unresolved)
        log.info("nbmergesave: %s changed outside room %s; %s into the room (%s)%s%s", loader.path, self.room_id,
                 "merged with the room's unsaved edits" if room != base_nb else "brought", _describe(stats),
                 f", {unresolved} conflict(s) marked inline" if unresolved else "",
                 f"; version {version} in the store" if version is not None else "")
        return result.notebook != disk

    async def merge_outside(self: Any, save_now: bool = False) -> None:
        """The file changed outside the room: merge it into the room, and save the room if it holds more
        than the file (``save_now``: at once, a save was asked for; else after the room's autosave delay)."""
        loader = self._file
        if ours(loader, self._file_type) is None or getattr(loader, "_nbm_base", None) is None or not self.ready:
            return await stock_outofband(self)
        async with serial(loader):
            if not await bring_in(self):
                return
        if save_now:
            self._saving_document = asyncio.create_task(self._maybe_save_document(self._saving_document, save_now=True))
        else:
            _schedule_save(self)

    async def _on_outofband_change(self: Any) -> None:
        await merge_outside(self)

    FileLoader.load_content = load_content
    FileLoader.maybe_save_content = maybe_save_content
    DocumentRoom._on_outofband_change = _on_outofband_change
    FileLoader._nbmergesave = rooms


def _same_notebook(os_path: str, sha: str, meant: bytes) -> bytes | None:
    """The file's bytes, if they still hash to ``sha`` and hold the notebook ``meant`` holds."""
    try:
        data = Path(os_path).read_bytes()
        if sha256(data) == sha and normal(notebook_io.parse_notebook(data)) == normal(notebook_io.parse_notebook(meant)):
            return data
    except Exception:
        pass
    return None


def _file_sha(os_path: str) -> str | None:
    try:
        return sha256(Path(os_path).read_bytes())
    except OSError:
        return None


__all__ = ["install"]
