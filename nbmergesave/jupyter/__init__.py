"""Jupyter server integration: merge on save with the exact base each client loaded.

Enabled by the ``jupyter_server_config.d/nbmergesave.json`` file the package
installs (``pip install`` puts it in ``etc/jupyter``), together with the
JupyterLab front end (``share/jupyter/labextensions/nbmergesave``). It wraps
the server's contents manager (sync or async, whichever is configured):

* every notebook the server hands out (GET with content) is kept in the
  folder's store, and its sha256 goes back with it (``model["nbmergesave"]``);
  the front end sends that hash back with each save (``nbmergesave_base``), and
  the server finds the base in the store by its hash. So bases survive server
  restarts and saves through another server of the same folder, and no whole
  notebook is kept in memory (only the last few hashes served per path);
* a save without a known base (a REST client, an old tab) is placed the way the
  watcher places saves: against the hashes this server served for the path,
  else by searching the store (:func:`nbmergesave.lineage.find_base`); the log
  says which;
* on a PUT of a notebook, when the file on disk is no longer that base
  (another server, ``git pull``, a sync tool changed it), the incoming
  notebook is replaced by ``merge(base, on disk, incoming)`` before the server
  writes it; conflicts are written inline and logged, and the save's reply
  carries the merged notebook and what happened (``model["nbmergesave"]``) so
  the front end can show it in place;
* every version involved is stored, and the written content is declared with
  its base, so a watcher on the same folder does not merge it again;
* a save made from the very version on disk takes the fast path
  (:mod:`nbmergesave.fastpath`): recorded in one commit, serialised cell by
  cell, and those bytes handed to the server to write (serialised once);
* every save the hook handled is written with compare-then-swap: a temporary
  file renamed over the notebook only if the file still holds what the save
  was merged with (else merged again), with ``RENAME_EXCHANGE`` handing back a
  write that landed during the swap, which is merged in;
* a store that is away (a database down, a driver missing, a folder that
  cannot be written) never stops a save nor its merge: the local spool
  (:mod:`nbmergesave.store.spool`) stands in, seeded with what this server
  served and saved, and is replayed into the store when it is back;
* a failure inside the hook never loses the save: the error is logged, and
  the server saves it as it would have.

HTTP routes (Jupyter's own authentication; paths must name a notebook under
the server's root): ``/nbmergesave/api/state`` and ``/nbmergesave/review``
(:mod:`nbmergesave.jupyter.handlers`).

With jupyter-collaboration installed, its rooms merge changes made outside
them instead of being replaced by the file (:mod:`nbmergesave.jupyter.rooms`).

This module is imported only by Jupyter.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib.util
import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from .. import fastpath, notebook_io
from ..merge import merge
from ..store import Store, Version, sha256
from ..sync import open_store

#: The key of the save model under which the front end sends its base's sha256.
BASE_KEY = "nbmergesave_base"
#: The key of the reply models under which the server says what it did.
REPLY_KEY = "nbmergesave"
#: How often, and how long apart (s), a notebook that does not parse is read again before a tab is told
#: a save cannot be merged with it (another program may be writing it in place).
MERGEABLE_RETRIES, MERGEABLE_WAIT = 10, 0.05
#: Set while this request is saving a notebook: the server's own ``get(content=False)`` at the end of a save
#: need not ask whether the file parses (a parse of the whole file; the save's reply says what happened).
_SAVING: contextvars.ContextVar[bool] = contextvars.ContextVar("nbmergesave_saving", default=False)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbmergesave.jupyter"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "nbmergesave"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .config import apply
    from .handlers import setup_handlers

    settings = apply(serverapp)  # c.NbMergeSave.store_url / project_root / engine / watch_root
    merger = install(serverapp.contents_manager, serverapp.log, engine=settings.engine)
    setup_handlers(serverapp.web_app, merger)
    serverapp.log.info("nbmergesave: merging notebook saves with what changed on disk since each load")
    if settings.watch_root:
        from .watch import start

        merger.watcher = start(serverapp, serverapp.log, engine=settings.engine)
        if merger.watcher is not None:
            _stop_with(serverapp, merger.watcher)
    else:
        serverapp.log.info("nbmergesave: not watching the server's folder (c.NbMergeSave.watch_root = False): "
                           "writes made outside Jupyter replace the file as they always did")
    if importlib.util.find_spec("jupyter_server_ydoc") is not None:  # real-time collaboration is installed
        from .rooms import install as merge_in_rooms

        try:
            merge_in_rooms(serverapp.root_dir, serverapp.log)
        except Exception:
            serverapp.log.error("nbmergesave: could not set up merging in collaboration rooms", exc_info=True)


def _stop_with(serverapp: Any, watcher: Any) -> None:
    """Stop ``watcher`` when the server shuts down. (A server extension that is a module, not an
    ExtensionApp, has no stop hook of its own: we run in the server's extension cleanup.)"""
    cleanup = serverapp.cleanup_extensions

    async def cleanup_extensions() -> None:
        try:
            await asyncio.to_thread(watcher.stop)
        except Exception:
            serverapp.log.error("nbmergesave: the folder's watcher did not stop cleanly", exc_info=True)
        await cleanup()

    serverapp.cleanup_extensions = cleanup_extensions


class SaveMerger:
    """Hashes of what this server served, and the merge done before each notebook save."""

    #: How many served hashes of a path are remembered (one per client is enough).
    REMEMBERED = 16
    #: The bytes of what was served and saved lately, kept to seed the spool if the store goes away.
    KEPT_BYTES = 64 << 20
    #: How many times a save is merged again when the file changed between the merge and the write.
    ATTEMPTS = 8

    def __init__(self, contents_manager: Any, log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
                 engine: str = "cells") -> None:
        self.cm = contents_manager
        self.log = log
        self.engine = engine  # c.NbMergeSave.engine
        self.served: dict[str, list[str]] = {}  # path -> sha256s, oldest first
        self._local = asyncio.Lock()
        self._stores: dict[str, Store] = {}  # folder -> its embedded store, kept open across saves
        self._targets: dict[str, Any] = {}  # folder -> what that store is (:func:`.spool.target_of`): is it away?
        self.serialiser = fastpath.Serialiser()
        # os path -> (text, bytes, content) made once, for the server to write instead of serialising again
        self._prepared: dict[str, tuple[str, bytes, dict[str, Any]]] = {}
        self._wrote: set[str] = set()  # os paths where the server wrote that text
        self._handed: dict[str, bytes] = {}  # os path -> the bytes of the text handed to the server to write
        self._kept: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (path, sha256) -> bytes, oldest first
        self._kept_bytes = 0
        self._expected: dict[str, bytes] = {}  # os path -> the bytes the next write must replace (compare-then-swap)
        # os path -> what the write did, the bytes it displaced, and what the file holds after it
        self._outcome: dict[str, tuple[str, bytes | None, bytes | None]] = {}
        #: The watcher of the server's folder (:mod:`.watch`), when it runs.
        self.watcher: Any = None

    def remember(self, path: str, sha: str) -> None:
        shas = [s for s in self.served.get(path, []) if s != sha]
        self.served[path] = (shas + [sha])[-self.REMEMBERED:]

    def keep(self, path: str, data: bytes, sha: str | None = None) -> None:
        """Keep ``data`` (served or saved; ``sha``: its sha256, when known) in memory, so a spool opened
        later knows the bases tabs hold."""
        key = (path, sha or sha256(data))
        if key in self._kept:
            self._kept.move_to_end(key)
            return
        self._kept[key] = data
        self._kept_bytes += len(data)
        while self._kept_bytes > self.KEPT_BYTES and len(self._kept) > 1:
            self._kept_bytes -= len(self._kept.popitem(last=False)[1])

    def os_path(self, path: str) -> str:
        return str(self.cm._get_os_path(path))

    # --- the store, or the spool standing in for it --------------------------------------------
    #
    # One mechanism for both: an embedded store that answers is kept open for the next save of its
    # folder (opening one costs a connection and its schema check, each save three times over); any
    # store error drops it (closed, forgotten), and the next open goes through open_store, which hands
    # out the spool while the store is away and catches up when it is back. A kept store is used only
    # while no outage of it is noted (one noted elsewhere, say by a lock release, sends the next save
    # through open_store too, so the spool is caught up before the store is written again).

    def _seed(self, store: Store, path: str, os_path: str) -> Store:
        """A spool learns what this server served and saved of ``path`` (the bases its tabs hold)."""
        if store.is_spool:
            for (p, sha), data in list(self._kept.items()):
                if p == path and store.latest_with(os_path, sha) is None:
                    store.add(os_path, data, "observed", on_disk=False)
        return store

    def _open(self, path: str, os_path: str, *, catch_up: bool = True) -> Store:
        """The notebook's store (kept open, for an embedded one); while it is away, the local spool standing
        in for it (seeded). Give it back with :meth:`_close` (or use :meth:`_using`)."""
        from ..store.spool import outage, target_of

        folder = os.path.dirname(os_path)
        kept = self._stores.get(folder)
        if kept is not None:
            if outage(self._targets[folder]) is None:
                return kept
            self._close(kept, failed=True)
        store = open_store(os_path, log=self.log, catch_up=catch_up)
        # kept only when open_store has caught it up (a load's open leaves that to the next save)
        if catch_up and not store.is_spool and getattr(store.backend, "name", None) == "sqlite":
            try:
                target = target_of(os_path)
            except Exception:
                target = None
            if target is not None and outage(target) is None:
                self._stores[folder], self._targets[folder] = store, target
                return store
        try:
            return self._seed(store, path, os_path)
        except BaseException:
            store.close()
            raise

    def _close(self, store: Store, *, failed: bool = False) -> None:
        """Done with ``store`` for now: closed unless kept open; ``failed``: it raised, so it is dropped
        (closed and forgotten) and the next open finds the store again, or its spool."""
        kept = [folder for folder, s in self._stores.items() if s is store]
        if kept and not failed:
            return
        for folder in kept:
            del self._stores[folder], self._targets[folder]
        _quietly(store.close)

    @contextmanager
    def _using(self, path: str, os_path: str, *, catch_up: bool = True) -> Iterator[Store]:
        """:meth:`_open` for one piece of work; a store error drops a kept store."""
        from ..store.spool import is_trouble

        store = self._open(path, os_path, catch_up=catch_up)
        try:
            yield store
        except BaseException as e:
            self._close(store, failed=not isinstance(e, Exception) or is_trouble(e))
            raise
        self._close(store)

    def _spool(self, path: str, os_path: str, error: BaseException) -> Store:
        """After ``error`` from the store mid-save: note the outage (said once) and hand out the spool."""
        from ..store.spool import Spool, note_away, target_of

        target = target_of(os_path)
        note_away(target, error, self.log)
        spool = Spool(target)
        try:
            return self._seed(spool, path, os_path)
        except BaseException:
            spool.close()
            raise

    def _scratch(self, path: str, os_path: str) -> Store:
        """The last resort when even the spool cannot be written (the state folder full or read-only): a
        store in a temporary folder, seeded with what this server holds in memory, so the save is still merged."""
        import tempfile
        from pathlib import Path

        folder = Path(tempfile.mkdtemp(prefix="nbmergesave-scratch-"))
        store = Store(Path(os_path).parent, folder)
        store.is_spool = True  # seeded like one
        original_close = store.close

        def close() -> None:
            import shutil

            try:
                original_close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)

        store.close = close  # type: ignore[method-assign]
        return self._seed(store, path, os_path)

    def _with_store(self, path: str, os_path: str, work: Any) -> Any:
        """``work(store)`` on the notebook's store; if the store fails (away, refused, not writable, a kept
        store that stopped answering), again on the spool; if that fails too, on a scratch store. Only the
        notebook's own errors pass."""
        from ..store.spool import is_trouble

        try:
            with self._using(path, os_path) as store:
                return work(store)
        except Exception as e:
            if not is_trouble(e):
                raise
            first = e
        try:
            with self._spool(path, os_path, first) as spool:
                return work(spool)
        except Exception as e:
            if not is_trouble(e):
                raise
            self.log.error("nbmergesave: the local spool cannot be used either (%s); merging %s from memory", e, path)
        with self._scratch(path, os_path) as scratch:
            return work(scratch)

    def _take_lock(self, path: str) -> tuple[Any, Any] | None:
        """Enter the save lock for ``path``: the store's (a flock for the embedded store, an advisory lock
        for PostgreSQL) or, while it is away, the spool's (a flock: saves of this host one at a time; other
        hosts are kept apart by the compare-then-swap write). ``None`` only when no lock can be had at all."""
        from ..store.spool import is_trouble

        os_path = self.os_path(path)
        error: BaseException | None = None
        for attempt in ("store", "spool"):
            store = None
            try:
                store = self._open(path, os_path) if attempt == "store" else self._spool(path, os_path, error)  # type: ignore[arg-type]
                held = store.save_lock(os_path)
                held.__enter__()
                return store, held
            except Exception as e:
                if store is not None:
                    self._close(store, failed=True)
                if not is_trouble(e) or attempt == "spool":
                    self.log.warning("nbmergesave: no save lock for %s (%s); saving without it", path, e)
                    return None
                error = e
        return None

    def _release(self, taken: tuple[Any, Any] | None) -> None:
        """Leave the save lock. Never raises: a lock whose connection died was released by the server
        already, and the save it guarded has reached the disk (the outage is noted, once)."""
        if taken is None:
            return
        store, held = taken
        failed = False
        try:
            held.__exit__(None, None, None)
        except Exception as e:
            from ..store.spool import is_trouble, note_away, target_of

            failed = True
            if is_trouble(e) and not store.is_spool:
                _quietly(lambda: note_away(target_of(store.root / "_"), e, self.log))
            else:
                self.log.warning("nbmergesave: releasing the save lock failed (%s); the save is done", e)
        finally:
            self._close(store, failed=failed)

    @contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """Hold the store's save lock from reading the file on disk to writing the merge.

        Two servers saving one notebook at once would each merge with the file
        as it was before the other's write, and the later write would drop the
        earlier one's changes; the lock (across processes, and across hosts with
        a PostgreSQL store) makes the second wait and merge with the first's result.
        """
        taken = self._take_lock(path)
        try:
            yield
        finally:
            self._release(taken)

    @asynccontextmanager
    async def alock(self, path: str) -> AsyncIterator[None]:
        """:meth:`lock` for an async server: waits in a thread, never blocking the event loop
        (a blocked loop could not finish the save that holds the lock)."""
        async with self._local:  # saves through this server, one at a time
            taken = await asyncio.to_thread(self._take_lock, path)
            try:
                yield
            finally:
                await asyncio.to_thread(self._release, taken)

    # --- loads -------------------------------------------------------------

    def loaded(self, path: str, model: dict[str, Any]) -> None:
        """Keep the served notebook in the store and tell the client its hash."""
        if model.get("type") != "notebook":
            return
        try:
            os_path = self.os_path(path)
            if model.get("content") is None:
                if not _SAVING.get():
                    model[REPLY_KEY] = {"mergeable": _mergeable(os_path)}
                return
            data = _read(os_path)
            sha = sha256(data) if data is not None else None
            served = model.get("hash")
            if data is not None and served != sha and _pair_hash(served, sha):  # type: ignore[arg-type]
                if notebook_io.parse_notebook(data) != _plain(model["content"]):
                    return  # (Jupytext served a paired text file's inputs that the .ipynb does not hold yet)
            elif data is None or served not in (None, sha) or (
                    served is None and notebook_io.parse_notebook(data) != _plain(model["content"])):
                # The file changed between the server's read and ours (another server's save): keep what
                # was served, as the bytes Jupyter writes for it. A base is needed as a notebook, and this
                # is the notebook the client holds (left out, a later save would be merged against an
                # older version it did not start from, and report conflicts that are none).
                data = _as_written(model["content"])
                sha = sha256(data)
            assert data is not None and sha is not None
            self.keep(path, data, sha)
            self.remember(path, sha)
            model[REPLY_KEY] = {"sha256": sha, "mergeable": True}
            with self._using(path, os_path, catch_up=False) as store:  # on the event loop: no catch-up here
                if store.latest_with(os_path, sha) is None:
                    store.add(os_path, data, "observed", on_disk=False)
                current = store.on_disk(os_path)
            if self.watcher is not None and (current is None or current.sha256 != sha):
                # Not watched before (or changed while nothing watched): the folder's watcher records
                # the file now, before anyone saves it, so an outside write that follows is merged
                # with what the tab loaded and saves, not taken for a first sighting.
                self.watcher.look_at(os_path)
        except Exception:  # an odd model or file is the server's business, not ours
            self.log.debug("nbmergesave: could not record the load of %s", path, exc_info=True)

    # --- saves -------------------------------------------------------------

    def before_save(self, model: dict[str, Any], path: str) -> dict[str, Any] | None:
        """Merge the save with what changed on disk; return what was done (``None``: not a notebook save).
        Either way the write that follows is armed as a compare-then-swap (:meth:`writing`)."""
        sent_base = model.pop(BASE_KEY, None)
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return None
        os_path = self.os_path(path)
        sent = sent_base if isinstance(sent_base, str) else None
        disk = _read(os_path)  # read and hashed once for both paths
        disk_sha = sha256(disk) if disk is not None else None
        try:
            done = self._with_store(path, os_path, lambda store: self._fast_save(store, model, path, os_path, sent,
                                                                                  disk, disk_sha))
        except Exception:
            self.log.warning("nbmergesave: the fast path failed for %s; taking the full one", path, exc_info=True)
            self._prepared.pop(os_path, None)
            self.serialiser.forget(os_path)
            done = None
        if done is not None:
            self._expected[os_path] = done["_disk"]
            return done
        incoming, cut = self._serialised(os_path, model["content"])
        return self._prepare(model, path, incoming, sent, cut=cut, disk=disk, disk_sha=disk_sha)

    def _prepare(self, model: dict[str, Any], path: str, incoming: bytes, sent: str | None, *,
                 base: bytes | None = None, disk: bytes | None = None, expected: bytes | None = None,
                 cut: tuple[list[bytes], list[bytes]] | None = None,
                 disk_sha: str | None = None) -> dict[str, Any] | None:
        """Merge ``incoming`` into the model to write, and arm the compare-then-swap of that write.

        ``base``: the base found by an earlier attempt of this save; ``disk``: the file as read (with its
        ``disk_sha``), else read now; with ``expected``: a save our write displaced (it landed between the
        compare and the swap), to merge with what we wrote. ``cut``: ``incoming``'s pieces, when made.
        """
        os_path = self.os_path(path)
        try:
            done = self._with_store(path, os_path, lambda store: self._merge_into(
                store, model, path, os_path, incoming, sent, base=base, disk=disk, cut=cut, disk_sha=disk_sha))
        except Exception as e:  # the notebook's own trouble (a merge that cannot be done): the save goes as sent
            self.log.error("nbmergesave: could not merge the save of %s (%s); saving it as sent", path, e, exc_info=True)
            self._prepared.pop(os_path, None)
            try:  # ... and is kept, as every version that reaches the disk is
                self._with_store(path, os_path, lambda store: store.latest_with(os_path, sha256(incoming))
                                 or store.add(os_path, incoming, "observed", on_disk=False, cut=cut))
            except Exception:
                self.log.error("nbmergesave: could not store the save of %s either", path, exc_info=True)
            return None
        done.update(incoming=incoming, sent=sent)
        self._expected[os_path] = done["_disk"] if expected is None else expected
        return done

    def save_again(self, model: dict[str, Any], path: str, done: dict[str, Any] | None) -> dict[str, Any] | None:
        """After the write: ``None`` when it is done, else what to write next (merged again). The write
        finds the file changed since it was read (another server's save, an outside write): the save is
        merged with that and written again; or its swap took off the disk a save that landed meanwhile:
        that one is merged in."""
        if done is None:
            return None
        os_path = self.os_path(path)
        self._expected.pop(os_path, None)
        what, displaced, holds = self._outcome.pop(os_path, ("written", None, None))
        again = None
        if what == "changed":
            import nbformat

            self.log.info("nbmergesave: %s changed while its save was merged; merging again", path)
            model["content"] = nbformat.from_dict(notebook_io.parse_notebook(done["incoming"]))
            base = done["_base"]
            if base is None:  # there was no file when the save came, and one is there now: both sides are new
                base = notebook_io.dumps(notebook_io.empty_notebook()).encode()
            self._wrote.discard(os_path)
            again = self._prepare(model, path, done["incoming"], done["sent"], base=base)
        elif what == "displaced" and displaced is not None and displaced != done["declared"]:
            self.log.info("nbmergesave: a save of %s landed during ours; merging it in", path)
            ours = done["declared"]
            import nbformat

            model["content"] = nbformat.from_dict(notebook_io.parse_notebook(ours))
            base = done["_disk"] or notebook_io.dumps(notebook_io.empty_notebook()).encode()
            self._wrote.discard(os_path)
            again = self._prepare(model, path, ours, None, base=base, disk=displaced,
                                  expected=holds if holds is not None else ours)
            if again is not None:
                again["incoming"] = done["incoming"]  # the person's save, as they sent it
        else:
            done["_final"] = True  # what was meant is what the write put on disk
        return again

    @contextmanager
    def writing(self, original: Any, os_path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """The contents manager's ``atomic_writing`` for a notebook this extension merged: the bytes go to a
        temporary file renamed over the notebook (its mode and group kept), so no reader ever sees a partial
        file (jupyter_server writes in place, and a GET landing meanwhile restores its ``.~`` backup over a
        save that succeeded); and only if the notebook still holds what the merge was made from
        (compare-then-swap), else nothing is written and the save is merged again."""
        import io

        expected = self._armed(os_path)
        if expected is None:
            with original(os_path, *args, **kwargs) as f:
                yield f
            return
        text = kwargs.get("text", args[0] if args else True)
        buffer: Any = io.StringIO(newline="\n") if text else io.BytesIO()
        yield buffer
        data = buffer.getvalue()
        self._swap(os_path, data.encode(kwargs.get("encoding") or "utf-8") if isinstance(data, str) else data, expected)

    def write_prepared(self, original: Any, os_path: str, text: str) -> None:
        """Write the ``text`` :meth:`prepared` gave the server: with the compare-then-swap of :meth:`writing`
        when the save armed it (its bytes as made, not encoded again), else through the contents manager's
        ``atomic_writing`` (``original``), as the server would."""
        data = self._handed.pop(os_path, None)
        expected = self._armed(os_path)
        if expected is None:
            with original(os_path, encoding="utf-8") as f:
                f.write(text)
            return
        self._swap(os_path, data if data is not None else text.encode("utf-8"), expected)

    def _armed(self, os_path: str) -> bytes | None:
        """The bytes the write of ``os_path`` must replace, if the save armed a compare-then-swap that can be
        done here (a folder we cannot create files in is written in place, as the server does)."""
        expected = self._expected.pop(os_path, None)
        if expected is None or not os.access(os.path.dirname(os_path) or ".", os.W_OK):
            return None
        return expected

    def _swap(self, os_path: str, payload: bytes, expected: bytes) -> None:
        """Replace ``os_path`` with ``payload`` if it holds ``expected``; what happened goes to :meth:`save_again`."""
        guard = getattr(self.cm, "perm_to_403", None)
        with guard(os_path) if guard is not None else _nothing():
            try:
                replaced = notebook_io.write_atomic(os_path, payload, expected=expected)
            except notebook_io.Changed:
                self._outcome[os_path] = ("changed", None, None)
                return
        unexpected = replaced.unexpected if replaced is not None else None
        if replaced is not None:
            replaced.close()
        if unexpected is None:
            self._outcome[os_path] = ("written", None, None)
            return
        self._outcome[os_path] = ("displaced", unexpected, self._put_back(os_path, unexpected, payload))

    def _put_back(self, os_path: str, displaced: bytes, ours: bytes) -> bytes | None:
        """Our swap took off the disk a save that landed after the compare: put it back at once, so that no
        reader (another server's GET, a tab reloading) sees the file without a save that was done, and build
        on it; ours is merged into it next (:meth:`save_again`). What the file holds now (``None``: ours,
        the save could not be put back, and the merge goes on as before)."""
        guard = getattr(self.cm, "perm_to_403", None)
        try:
            with guard(os_path) if guard is not None else _nothing():
                back = notebook_io.write_atomic(os_path, displaced, expected=ours)
        except Exception:  # changed again meanwhile (a third writer): merge with what is there, as before
            return None
        later = back.unexpected if back is not None else None
        if back is not None:
            back.close()
        if later is None:
            return displaced
        # a third save landed between our swap and the putting back: it goes back on disk (made from ours)
        try:
            with guard(os_path) if guard is not None else _nothing():
                again = notebook_io.write_atomic(os_path, later, expected=displaced)
            if again is not None:
                again.close()
        except Exception:
            self.log.warning("nbmergesave: three saves of %s landed at once; merging with what is there", os_path)
        return None

    def _fast_save(self, store: Store, model: dict[str, Any], path: str, os_path: str, sent: str | None,
                   disk: bytes | None, disk_sha: str | None) -> dict[str, Any] | None:
        """A save made from the very version on disk (the front end's hash is the file's): nothing to merge or
        search for. Record it with its declaration in one commit, serialised cell by cell (only the changed
        cells cost anything), and hand the server these bytes to write (:func:`install`), so the notebook is
        serialised once. ``None``: not such a save (or the fast path is off); the full path decides."""
        if not fastpath.FAST or not sent or disk_sha != sent:
            return None
        from ..pairs import pair_of

        if pair_of(os_path, disk) is not None:
            return None  # a Jupytext pair: its text file may hold an edit to merge with (the full path)
        if store.latest_with(os_path, sent) is None:
            return None
        written = self.serialiser.written(os_path, model["content"])
        if written is None:
            return None
        saved = store.add(os_path, written.data, "observed", on_disk=False, cut=(written.parts, written.digests),
                          declare=(sent, "jupyter"))
        self._prepared[os_path] = (written.text, written.data, written.notebook)
        done: dict[str, Any] = {"merged": False, "declared": written.data, "fast": saved.sha256,
                                "incoming": written.data, "sent": sent, "_base": disk, "_disk": disk}
        if store.is_spool:
            done["spooled"] = True
        return done

    def _serialised(self, os_path: str, nb: dict[str, Any],
                    for_server: bool = False) -> tuple[bytes, tuple[list[bytes], list[bytes]] | None]:
        """``nb`` as Jupyter writes it, and its cut into the store's pieces when the fast path made one (so the
        store does not cut and hash it again); on the fast path serialised cell by cell, and (``for_server``)
        handed to the server to write as it is."""
        written = self.serialiser.written(os_path, nb) if fastpath.FAST else None
        if written is None:
            return _as_written(nb), None
        if for_server:
            self._prepared[os_path] = (written.text, written.data, written.notebook)
        return written.data, (written.parts, written.digests)

    def prepared(self, os_path: str, nb: Any) -> str | None:
        """The text made of ``nb`` for the server to write at ``os_path`` (by :meth:`_fast_save` or a merge),
        when ``nb`` is still that notebook (a pre-save hook or a contents manager above us may have changed it)."""
        found = self._prepared.pop(os_path, None)
        if found is None:
            return None
        text, data, content = found
        hooks = getattr(self.cm, "pre_save_hook", None) or getattr(self.cm, "_pre_save_hooks", None)
        if hooks or not fastpath.same(fastpath.plain(nb), content):
            return None
        self._wrote.add(os_path)
        self._handed[os_path] = data
        return text

    def _base(self, store: Store, path: str, os_path: str, sent: str | None, incoming_nb: dict[str, Any],
              disk: bytes | None) -> tuple[bytes | None, str]:
        """The version the save was made from, and how it was found (for the log)."""
        if sent:
            found = store.latest_with(os_path, sent)
            if found is not None:
                return store.content(found), "sent by the client"
            self.log.warning("nbmergesave: the base %s… sent with the save of %s is not in the store; inferring one",
                             sent[:12], path)
        served = [v for s in self.served.get(path, []) if (v := store.latest_with(os_path, s)) is not None]
        if len(served) == 1:
            return store.content(served[0]), "the version this server served"
        if served:
            from ..lineage import _distance, tokens
            from ..sync import tokens_of

            new = tokens(incoming_nb)  # each served version's tokens come from sync's cache, not a parse per save
            scored = [(_distance(t, new), -i, v) for i, v in enumerate(served) if (t := tokens_of(store, v)) is not None]
            if scored:
                return store.content(min(scored, key=lambda t: t[:2])[2]), "the closest of the versions this server served"
        if disk is None:
            return None, "none (no file on disk)"
        return self._infer(store, os_path, incoming_nb, disk)

    def _infer(self, store: Store, os_path: str, save: dict[str, Any], disk: bytes) -> tuple[bytes | None, str]:
        """Search the store for the version the save was made from, as the watcher does."""
        from ..sync import infer_base

        before = store.latest_with(os_path, sha256(disk))
        if before is None:
            before = store.add(os_path, disk, "observed", on_disk=False)
        base = infer_base(store, os_path, save, before)
        if base is None:
            return disk, "inferred from the store: made from the version on disk"
        return store.content(base), f"inferred from the store: version {base.version}"

    def _merge_into(self, store: Store, model: dict[str, Any], path: str, os_path: str, incoming: bytes,
                    sent: str | None, *, base: bytes | None = None, disk: bytes | None = None,
                    cut: tuple[list[bytes], list[bytes]] | None = None, disk_sha: str | None = None) -> dict[str, Any]:
        """The full path: find the save's base, merge it with the file on disk when that changed since.

        Each notebook is hashed once (1.8 MB: about 2 ms each); the save, the merge and its declaration are
        recorded in one transaction (one commit), after the merge; the notebooks we serialised go into the
        store with their cut (pieces of unchanged cells are not cut and hashed again). ``base``: found by an
        earlier attempt of this save (then not searched for again)."""
        import nbformat

        if disk is None:
            disk = _read(os_path)
            disk_sha = None
        if disk is not None and disk_sha is None:
            disk_sha = sha256(disk)
        on_file = disk  # what the compare-then-swap expects to replace (a pair's text edits are not in the file)
        incoming_nb = notebook_io.parse_notebook(incoming, "the save")
        if disk is not None and store.latest_with(os_path, disk_sha or "") is None:
            store.add(os_path, disk, "observed", on_disk=False)
        paired = _with_paired_text(store, os_path, disk, self.engine)
        if paired is not disk:  # a Jupytext pair's text edits taken in: another notebook, hashed again
            disk, disk_sha = paired, sha256(paired) if paired is not None else None
        if base is None:
            base, how = self._base(store, path, os_path, sent, incoming_nb, disk)
            if not (sent and how == "sent by the client"):
                self.log.info("nbmergesave: the save of %s came without a known base; base: %s", path, how)
            if store.is_spool:
                self.log.debug("nbmergesave: %s merged from the local spool (base: %s)", path, how)
            base_sha = sent if sent and how == "sent by the client" else sha256(base) if base is not None else None
        else:
            base_sha = sha256(base)
            if store.latest_with(os_path, base_sha) is None:
                store.add(os_path, base, "observed", on_disk=False)
        reply: dict[str, Any] = {"merged": False, "_base": base, "_disk": on_file if on_file is not None else b""}
        if store.is_spool:
            reply["spooled"] = True
        if base is None or disk is None or disk in (base, incoming):
            declared = base_sha if base is not None else disk_sha if disk else sha256(incoming)
            store.add(os_path, incoming, "observed", on_disk=False, cut=cut, declare=(declared or "", "jupyter"))
            return {**reply, "declared": incoming}
        disk_nb = notebook_io.parse_notebook(disk, f"'{path}' on disk")
        base_nb = notebook_io.parse_notebook(base, "the loaded version")
        if disk_nb == base_nb:  # same notebook, other bytes
            store.add(os_path, incoming, "observed", on_disk=False, cut=cut, declare=(disk_sha or "", "jupyter"))
            return {**reply, "declared": incoming}
        result = merge(base_nb, disk_nb, incoming_nb, engine=self.engine)
        notebook_io.validate(result.notebook, f"merged '{path}'")
        text, text_cut = self._serialised(os_path, result.notebook, for_server=True)
        unresolved = list(result.unresolved)
        base_v, disk_v = store.latest_with(os_path, base_sha or ""), store.latest_with(os_path, disk_sha or "")
        with store.batch():  # the save, the merge and its declaration: one commit
            saved = store.add(os_path, incoming, "observed", on_disk=False, cut=cut)
            merged_v = store.add(os_path, text, "merged", on_disk=False, base=base_v.version if base_v else None,
                                 local=disk_v.version if disk_v else None, remote=saved.version,
                                 conflicts=len(unresolved), engine=self.engine, cut=text_cut,
                                 declare=(disk_sha or "", "jupyter"))
        model["content"] = nbformat.from_dict(result.notebook)
        if unresolved:
            self.log.warning("nbmergesave: %s changed on disk since it was loaded; merged with %d conflict(s) marked "
                             "inline: %s", path, len(unresolved), "; ".join(_describe(c) for c in unresolved))
        else:
            self.log.info("nbmergesave: %s changed on disk since it was loaded; merged cleanly", path)
        return {
            **reply,
            "merged": True, "declared": text, "version": merged_v.version, "engine": self.engine, "fast": merged_v.sha256,
            "local": disk_sha, "remote": saved.sha256, "base": base_sha,
            "changes": changes(base_nb, disk_nb),
            "conflicts": conflict_cells(result.notebook, unresolved),
            "content": result.notebook,
        }

    def after_save(self, path: str, done: dict[str, Any] | None, saved: dict[str, Any]) -> None:
        """Declare the bytes the server wrote, should they differ from what was declared
        (another serialiser): a watcher must recognise this save as ours, not merge it again.
        Then tell the client what happened, and the hash of what is now on disk."""
        os_path = self.os_path(path)
        wrote = os_path in self._wrote
        self._wrote.discard(os_path)
        self._prepared.pop(os_path, None)
        self._handed.pop(os_path, None)
        self._expected.pop(os_path, None)  # a save given up after ATTEMPTS leaves its last arming unused
        if done is None:
            return
        meant: bytes = done.pop("declared")
        fast = done.pop("fast", None)
        final = done.pop("_final", False)
        incoming = done.pop("incoming", None)
        for internal in ("_base", "_disk", "sent"):
            done.pop(internal, None)
        if incoming is not None:
            # What a client without the front end now holds. Remembered (and kept for a spool) only now:
            # while the save is merged, the save itself must never be taken for its own base.
            incoming_sha = fast if incoming is meant and fast is not None else done.get("remote") or sha256(incoming)
            self.remember(path, incoming_sha)
            self.keep(path, incoming, incoming_sha)
        try:
            if fast is not None and wrote and final:
                # the server wrote the text we made (install's _save_notebook), swapped in as it was meant:
                # it is what was declared, and no need to read it back
                self.keep(path, meant, fast)
                if isinstance(saved, dict):
                    saved[REPLY_KEY] = {**done, "sha256": fast}
                return
            written = _read(os_path)
            if written is None:
                return
            self.keep(path, written)
            if written != meant:
                self.serialiser.forget(os_path)

                def declare(store: Store) -> None:
                    declared = store.declared_base(os_path, sha256(meant))
                    if declared is not None and declared.sha256:
                        store.declare(os_path, sha256(written), declared.sha256, "jupyter")

                self._with_store(path, os_path, declare)
            sha = sha256(written)
            if isinstance(saved, dict):
                saved[REPLY_KEY] = {**done, "sha256": sha}
        except Exception:
            self.log.error("nbmergesave: could not record the save of %s", path, exc_info=True)


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:
        pass


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def changes(base: dict[str, Any], theirs: dict[str, Any]) -> dict[str, int]:
    """What the other side did since the base: cells added, changed and removed (matched by id, else position)."""
    def keyed(nb: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {str(c.get("id") or f"#{i}"): c for i, c in enumerate(nb.get("cells", []))}

    b, t = keyed(base), keyed(theirs)
    changed = sum(1 for k in b.keys() & t.keys()
                  if {f: b[k].get(f) for f in ("source", "outputs", "cell_type")} != {f: t[k].get(f) for f in ("source", "outputs", "cell_type")})
    return {"added": len(t.keys() - b.keys()), "changed": changed, "removed": len(b.keys() - t.keys())}


_WORDS = {
    "source": "both changed the same lines",
    "outputs": "both changed the outputs",
    "metadata": "both changed the cell's metadata",
    "delete-edit": "one side deleted the cell, the other edited it",
    "insert": "both added cells here",
    "notebook-metadata": "both changed the notebook's metadata",
}


def conflict_cells(nb: dict[str, Any], unresolved: list[Any]) -> list[dict[str, Any]]:
    """The cells of the merged notebook that hold conflicts, found from the notebook itself
    (its markers), each with words for a person (from the merge's report where it names the cell)."""
    from ..merge import MARK_KEY
    from ..report import joined, markers

    kinds = {getattr(c, "cell", None): getattr(c, "kind", None) for c in unresolved}
    found = []
    for m in markers(nb):
        index = m["cell"]
        cell = nb["cells"][index] if index is not None else {}
        source = joined(cell.get("source", ""))
        ours = (cell.get("metadata", {}).get(MARK_KEY) or {}).get("conflict")
        if ours == "insert":  # three marker cells around both sides' cells: named by the opening one
            if not source.startswith("<<<<<<<"):
                continue
            kind = "insert"
        elif ours == "delete-edit":  # a note cell before the kept cell: named by the kept cell
            index, kind = index + 1, "delete-edit"
        elif index is None:
            kind = "notebook-metadata"
        elif "CELL DELETED >>>>>>>" in source:  # nbdime's forms, in files merged by nbdime or an older nbmergesave
            kind = "delete-edit"
        elif cell.get("cell_type") == "markdown" and "<<<<<<< local</b>" in source:
            kind = "insert"
        elif ">>>>>>> remote</b>" in source or "=======</b>" in source:
            continue  # the closing and middle marker cells of nbdime's 'insert' conflict
        else:
            kind = kinds.get(index)
            if kind is None or kind == "cell":
                kind = "outputs" if m["where"] == ["outputs"] else "source" if "source" in m["where"] else m["where"][0]
        found.append({"cell": index, "id": nb["cells"][index].get("id") if index is not None else None,
                      "kind": kind, "words": _WORDS.get(kind, "both changed it")})
    return found


def _pair_hash(served: Any, sha: str) -> bool:
    """Whether ``served`` is Jupytext's hash of a paired notebook: the text file's and the .ipynb's joined."""
    return isinstance(served, str) and len(served) == 2 * len(sha) and sha in (served[:len(sha)], served[len(sha):])


def _with_paired_text(store: Store, os_path: str, disk: bytes | None, engine: str = "cells") -> bytes | None:
    """What is on disk, with the edits of a newer Jupytext-paired text file taken in (stored as versions),
    so the save is merged with them rather than writing over them (:func:`nbmergesave.pairs.bring_in`)."""
    if disk is None:
        return None
    from ..pairs import bring_in

    return bring_in(store, os_path, disk, engine) or disk


def _mergeable(os_path: str) -> bool:
    """Whether the file on disk is a notebook a merge can take (so a save need not ask the person)."""
    data = _read(os_path)
    if data is None:
        return False
    try:
        notebook_io.parse_notebook(data)
        return True
    except Exception:
        return False


def _plain(nb: Any) -> dict[str, Any]:
    return notebook_io.parse_notebook(_as_written(nb))


def _as_written(nb: dict[str, Any]) -> bytes:
    """The bytes Jupyter writes for ``nb``: nbformat drops the keys it only keeps in memory
    (cell ``trusted`` marks, ``orig_nbformat``, ``signature``) before writing."""
    transient = notebook_io.TRANSIENT_NB_METADATA
    return notebook_io.dumps({
        **nb,
        "metadata": {k: v for k, v in nb.get("metadata", {}).items() if k not in transient},
        "cells": [{**c, "metadata": {k: v for k, v in c.get("metadata", {}).items() if k != "trusted"}}
                  for c in nb.get("cells", [])],
    }).encode()


def _describe(conflict: Any) -> str:
    from ..report import describe

    return describe(conflict)


def _read(os_path: str) -> bytes | None:
    try:
        with open(os_path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _wants_hash(get: Any) -> bool:
    try:
        return "require_hash" in inspect.signature(get).parameters
    except (TypeError, ValueError):
        return False


def install(contents_manager: Any, log: Any = None, engine: str = "cells") -> SaveMerger:
    """Wrap ``contents_manager.get`` and ``.save`` (async or not) with a :class:`SaveMerger` merging with ``engine``."""
    merger = SaveMerger(contents_manager, log or logging.getLogger("nbmergesave"), engine)
    from ..pairs import guard_text_writes

    guard_text_writes(contents_manager, merger.os_path, merger.log)  # Jupytext's pairs (nbmergesave.pairs)
    original_get, original_save = contents_manager.get, contents_manager.save
    hashable = _wants_hash(original_get)

    def get_kwargs(content: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
        if content and hashable and not kwargs.get("require_hash"):
            kwargs = {**kwargs, "require_hash": True}  # the hash of the very bytes the server read
        return kwargs

    original_writing = getattr(contents_manager, "atomic_writing", None)
    if original_writing is not None:
        def atomic_writing(os_path: str, *args: Any, **kwargs: Any) -> Any:
            return merger.writing(original_writing, os_path, *args, **kwargs)

        contents_manager.atomic_writing = atomic_writing

    if inspect.iscoroutinefunction(original_save):
        async def save(model: dict[str, Any], path: str = "") -> Any:
            async with merger.alock(path.strip("/")):
                done = merger.before_save(model, path.strip("/"))
                saving = _SAVING.set(True)  # this task's own requests only (each request runs in its own context)
                try:
                    for _ in range(merger.ATTEMPTS):
                        saved = await original_save(model, path)
                        again = merger.save_again(model, path.strip("/"), done)
                        if again is None:
                            break
                        done = again
                finally:
                    _SAVING.reset(saving)
                merger.after_save(path.strip("/"), done, saved)
                return saved

        async def get(path: str, content: bool = True, *args: Any, **kwargs: Any) -> Any:
            model = await original_get(path, content, *args, **get_kwargs(content and not args, kwargs))
            merger.loaded(path.strip("/"), model)
            reply = model.get(REPLY_KEY) if isinstance(model, dict) else None
            if reply is not None and reply.get("mergeable") is False:
                # A tab about to save asks whether the file changed; a notebook another program is
                # writing in place (truncated, then written) does not parse for a moment: look
                # again shortly rather than let JupyterLab ask "File Changed" for that moment.
                os_path = merger.os_path(path.strip("/"))
                for _ in range(MERGEABLE_RETRIES):
                    if _read(os_path) is None:
                        break
                    await asyncio.sleep(MERGEABLE_WAIT)
                    if _mergeable(os_path):
                        reply["mergeable"] = True
                        break
            return model
    else:
        def save(model: dict[str, Any], path: str = "") -> Any:  # type: ignore[misc]
            with merger.lock(path.strip("/")):
                done = merger.before_save(model, path.strip("/"))
                saving = _SAVING.set(True)
                try:
                    for _ in range(merger.ATTEMPTS):
                        saved = original_save(model, path)
                        again = merger.save_again(model, path.strip("/"), done)
                        if again is None:
                            break
                        done = again
                finally:
                    _SAVING.reset(saving)
                merger.after_save(path.strip("/"), done, saved)
                return saved

        def get(path: str, content: bool = True, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            model = original_get(path, content, *args, **get_kwargs(content and not args, kwargs))
            merger.loaded(path.strip("/"), model)
            return model

    contents_manager.get, contents_manager.save = get, save
    _share_serialisation(contents_manager, merger)
    return merger


def _share_serialisation(contents_manager: Any, merger: SaveMerger) -> None:
    """Have the server write the text the fast path (or a merge) made of a notebook instead of serialising it
    again (``json.dumps`` with an indent runs in pure Python: 25 ms for 1.8 MB). Only a file contents manager's
    ``_save_notebook`` is wrapped; the notebook is still validated, as ``nbformat.write`` does, and written
    with the save's compare-then-swap (:meth:`SaveMerger.write_prepared`)."""
    original = getattr(contents_manager, "_save_notebook", None)
    if original is None or not hasattr(contents_manager, "atomic_writing"):
        return

    def write(os_path: str, nb: Any, text: str, capture_validation_error: dict[str, Any] | None) -> None:
        import nbformat

        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as e:
            contents_manager.log.error("Notebook JSON is invalid: %s", e)
            if isinstance(capture_validation_error, dict):
                capture_validation_error["ValidationError"] = e
        merger.write_prepared(contents_manager.atomic_writing, os_path, text)

    if inspect.iscoroutinefunction(original):
        async def _save_notebook(os_path: str, nb: Any, capture_validation_error: dict[str, Any] | None = None) -> None:
            text = merger.prepared(os_path, nb)
            if text is None:
                return await original(os_path, nb, capture_validation_error=capture_validation_error)  # type: ignore[no-any-return]
            write(os_path, nb, text, capture_validation_error)
    else:
        def _save_notebook(os_path: str, nb: Any, capture_validation_error: dict[str, Any] | None = None) -> None:  # type: ignore[misc]
            text = merger.prepared(os_path, nb)
            if text is None:
                return original(os_path, nb, capture_validation_error=capture_validation_error)  # type: ignore[no-any-return]
            write(os_path, nb, text, capture_validation_error)

    contents_manager._save_notebook = _save_notebook


__all__ = ["SaveMerger", "install", "Version"]
