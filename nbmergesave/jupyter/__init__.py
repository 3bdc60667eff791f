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
* a failure inside the hook never loses the save: the incoming content is
  stored, the error logged, and the server saves it as it would have.

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

    def __init__(self, contents_manager: Any, log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
                 engine: str = "cells") -> None:
        self.cm = contents_manager
        self.log = log
        self.engine = engine  # c.NbMergeSave.engine
        self.served: dict[str, list[str]] = {}  # path -> sha256s, oldest first
        self._local = asyncio.Lock()
        self._stores: dict[str, Store] = {}  # folder -> its embedded store, kept open across saves
        self.serialiser = fastpath.Serialiser()
        self._prepared: dict[str, tuple[str, dict[str, Any]]] = {}  # os path -> (text, content) for the server to write
        self._wrote: set[str] = set()  # os paths where the server wrote that text
        self._denied: set[str] = set()  # stores of another user this server was refused, said once each
        #: The watcher of the server's folder (:mod:`.watch`), when it runs.
        self.watcher: Any = None

    def remember(self, path: str, sha: str) -> None:
        shas = [s for s in self.served.get(path, []) if s != sha]
        self.served[path] = (shas + [sha])[-self.REMEMBERED:]

    def os_path(self, path: str) -> str:
        return str(self.cm._get_os_path(path))

    def _take_lock(self, path: str) -> tuple[Any, Any] | None:
        """Enter the store's save lock for ``path`` (a flock for the embedded store, an advisory lock
        for PostgreSQL); ``None`` when there is none to be had (a read-only folder, the database
        down): the save goes ahead as before, and the error is logged."""
        from ..errors import StoreDenied, StoreUnavailable

        store = None
        try:
            os_path = self.os_path(path)
            store = self._store(os_path)
            held = store.save_lock(os_path)
            held.__enter__()
            return store, held
        except Exception as e:
            if store is not None:
                self._close(store)
            # a database that is down is news, and so is another user's store, once (its first error says how
            # to share it); a folder we cannot write to (no lock file) was never locked
            news = isinstance(e, StoreUnavailable) or (isinstance(e, StoreDenied) and self._first_denial(e))
            (self.log.error if news else self.log.debug)("nbmergesave: no save lock for %s (%s); saving without it",
                                                         path, e)
            return None

    def _first_denial(self, error: BaseException) -> bool:
        """Whether this refusal of another user's store is the first of its kind here (then it is logged)."""
        said = str(error).split(":")[0]  # "cannot use the store at '...'"
        if said in self._denied:
            return False
        self._denied.add(said)
        return True

    def _release(self, taken: tuple[Any, Any] | None) -> None:
        if taken is not None:
            store, held = taken
            try:
                held.__exit__(None, None, None)
            finally:
                self._close(store)

    def _store(self, os_path: str) -> Store:
        """The store holding ``os_path``. An embedded store is kept open for the next save of its folder
        (opening one costs a connection and its schema check, each save three times over); a remote one is
        opened per save, as :func:`~nbmergesave.sync.open_store` decides each time how to reach it."""
        import os

        folder = os.path.dirname(os_path)
        store = self._stores.get(folder)
        if store is not None:
            return store
        store = open_store(os_path)
        if getattr(store.backend, "name", None) == "sqlite":
            self._stores[folder] = store
        return store

    def _close(self, store: Store, *, failed: bool = False) -> None:
        """Done with ``store`` for this save: closed unless kept (and then only after a failure)."""
        kept = [folder for folder, s in self._stores.items() if s is store]
        if kept and not failed:
            return
        for folder in kept:
            del self._stores[folder]
        store.close()

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
            if data is None:
                return
            sha = sha256(data)
            if model.get("hash") not in (None, sha) and not _pair_hash(model["hash"], sha):
                return  # the file changed between the server's read and ours: no hash we can vouch for
            if model.get("hash") != sha and notebook_io.parse_notebook(data) != _plain(model["content"]):
                return  # (Jupytext served a paired text file's inputs that the .ipynb does not hold yet)
            with open_store(os_path) as store:
                if store.latest_with(os_path, sha) is None:
                    store.add(os_path, data, "observed", on_disk=False)
                current = store.on_disk(os_path)
            if self.watcher is not None and (current is None or current.sha256 != sha):
                # Not watched before (or changed while nothing watched): the folder's watcher records
                # the file now, before anyone saves it, so an outside write that follows is merged
                # with what the tab loaded and saves, not taken for a first sighting.
                self.watcher.look_at(os_path)
            self.remember(path, sha)
            model[REPLY_KEY] = {"sha256": sha, "mergeable": True}
        except Exception:  # an odd model or file is the server's business, not ours
            self.log.debug("nbmergesave: could not record the load of %s", path, exc_info=True)

    # --- saves -------------------------------------------------------------

    def before_save(self, model: dict[str, Any], path: str) -> dict[str, Any] | None:
        """Merge the save with what changed on disk; return what was done (``None``: not a notebook save)."""
        sent_base = model.pop(BASE_KEY, None)
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return None
        os_path = self.os_path(path)
        sent = sent_base if isinstance(sent_base, str) else None
        disk = _read(os_path)  # read and hashed once for both paths
        disk_sha = sha256(disk) if disk is not None else None
        try:
            done = self._fast_save(model, path, os_path, sent, disk, disk_sha)
        except Exception:
            self.log.warning("nbmergesave: the fast path failed for %s; taking the full one", path, exc_info=True)
            self._prepared.pop(os_path, None)
            self.serialiser.forget(os_path)
            done = None
        if done is not None:
            return done
        incoming, cut = self._written(os_path, model["content"])
        try:
            return self._merge_into(model, path, os_path, incoming, cut, sent, disk, disk_sha)
        except Exception as e:
            from ..errors import StoreDenied

            if isinstance(e, StoreDenied):  # the same every save: said once, not a traceback a save
                (self.log.error if self._first_denial(e) else self.log.debug)(
                    "nbmergesave: could not merge the save of %s (%s); saving it as sent", path, e)
                return None
            self.log.error("nbmergesave: could not merge the save of %s (%s); saving it as sent", path, e, exc_info=True)
            try:
                with open_store(os_path) as store:
                    store.add(os_path, incoming, "observed", on_disk=False)
            except Exception:
                self.log.error("nbmergesave: could not store the save of %s either", path, exc_info=True)
            return None

    def _fast_save(self, model: dict[str, Any], path: str, os_path: str, sent: str | None, disk: bytes | None,
                   disk_sha: str | None) -> dict[str, Any] | None:
        """A save made from the very version on disk (the front end's hash is the file's): nothing to merge or
        search for. Record it with its declaration in one commit, serialised cell by cell (only the changed
        cells cost anything), and hand the server these bytes to write (:func:`install`), so the notebook is
        serialised once. ``None``: not such a save (or the fast path is off); the full path decides."""
        if not fastpath.FAST or not sent or disk_sha != sent:
            return None
        from ..pairs import pair_of

        if pair_of(os_path, disk) is not None:
            return None  # a Jupytext pair: its text file may hold an edit to merge with (the full path)
        store = self._store(os_path)
        try:
            if store.latest_with(os_path, sent) is None:
                return None
            written = self.serialiser.written(os_path, model["content"])
            if written is None:
                return None
            saved = store.add(os_path, written.data, "observed", on_disk=False, cut=(written.parts, written.digests),
                              declare=(sent, "jupyter"))
        except Exception:
            self._close(store, failed=True)
            raise
        self._close(store)
        self.remember(path, saved.sha256 or "")
        self._prepared[os_path] = (written.text, written.notebook)
        return {"merged": False, "declared": written.data, "fast": saved.sha256}

    def _written(self, os_path: str, nb: dict[str, Any],
                 for_server: bool = False) -> tuple[bytes, tuple[list[bytes], list[bytes]] | None]:
        """``nb`` as Jupyter writes it, and its cut into the store's pieces when the fast path made one (so the
        store does not cut and hash it again); on the fast path serialised cell by cell, and (``for_server``)
        handed to the server to write as it is."""
        written = self.serialiser.written(os_path, nb) if fastpath.FAST else None
        if written is None:
            return _as_written(nb), None
        if for_server:
            self._prepared[os_path] = (written.text, written.notebook)
        return written.data, (written.parts, written.digests)

    def prepared(self, os_path: str, nb: Any) -> str | None:
        """The text :meth:`_fast_save` made of ``nb`` for the server to write at ``os_path``, when ``nb`` is
        still that notebook (a pre-save hook or a contents manager above us may have changed it)."""
        found = self._prepared.pop(os_path, None)
        if found is None:
            return None
        text, content = found
        hooks = getattr(self.cm, "pre_save_hook", None) or getattr(self.cm, "_pre_save_hooks", None)
        if hooks or not fastpath.same(fastpath.plain(nb), content):
            return None
        self._wrote.add(os_path)
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

    def _merge_into(self, model: dict[str, Any], path: str, os_path: str, incoming: bytes,
                    cut: tuple[list[bytes], list[bytes]] | None, sent: str | None, disk: bytes | None,
                    disk_sha: str | None) -> dict[str, Any]:
        """The full path: find the save's base, merge it with the file on disk when that changed since.

        Each notebook is hashed once (1.8 MB: about 2 ms each, and this path used to hash it a dozen
        times); the save, the merge and its declaration are recorded in one transaction (one commit),
        after the merge; the notebooks we serialised go into the store with their cut (pieces of
        unchanged cells are not cut and hashed again)."""
        import nbformat

        incoming_nb = notebook_io.parse_notebook(incoming, "the save")
        store = self._store(os_path)
        try:
            if disk is not None and store.latest_with(os_path, disk_sha or "") is None:
                store.add(os_path, disk, "observed", on_disk=False)
            paired = _with_paired_text(store, os_path, disk, self.engine)
            if paired is not disk:  # a Jupytext pair's text edits taken in: another notebook, hashed again
                disk, disk_sha = paired, sha256(paired) if paired is not None else None
            base, how = self._base(store, path, os_path, sent, incoming_nb, disk)
            if not (sent and how == "sent by the client"):
                self.log.info("nbmergesave: the save of %s came without a known base; base: %s", path, how)
            base_sha = sent if sent and how == "sent by the client" else sha256(base) if base is not None else None
            reply: dict[str, Any] = {"merged": False}
            if base is None or disk is None or disk in (base, incoming):
                declared = base_sha if base is not None else disk_sha if disk else sha256(incoming)
                saved = store.add(os_path, incoming, "observed", on_disk=False, cut=cut, declare=(declared or "", "jupyter"))
                self.remember(path, saved.sha256 or "")  # what a client without the front end now holds
                return {**reply, "declared": incoming}
            disk_nb = notebook_io.parse_notebook(disk, f"'{path}' on disk")
            base_nb = notebook_io.parse_notebook(base, "the loaded version")
            if disk_nb == base_nb:  # same notebook, other bytes
                saved = store.add(os_path, incoming, "observed", on_disk=False, cut=cut, declare=(disk_sha or "", "jupyter"))
                self.remember(path, saved.sha256 or "")
                return {**reply, "declared": incoming}
            result = merge(base_nb, disk_nb, incoming_nb, engine=self.engine)
            notebook_io.validate(result.notebook, f"merged '{path}'")
            text, text_cut = self._written(os_path, result.notebook, for_server=True)
            unresolved = list(result.unresolved)
            base_v, disk_v = store.latest_with(os_path, base_sha or ""), store.latest_with(os_path, disk_sha or "")
            with store.batch():  # the save, the merge and its declaration: one commit
                saved = store.add(os_path, incoming, "observed", on_disk=False, cut=cut)
                merged_v = store.add(os_path, text, "merged", on_disk=False, base=base_v.version if base_v else None,
                                     local=disk_v.version if disk_v else None, remote=saved.version,
                                     conflicts=len(unresolved), engine=self.engine, cut=text_cut,
                                     declare=(disk_sha or "", "jupyter"))
            self.remember(path, saved.sha256 or "")
        except Exception:
            self._close(store, failed=True)
            raise
        self._close(store)
        model["content"] = nbformat.from_dict(result.notebook)
        if unresolved:
            self.log.warning("nbmergesave: %s changed on disk since it was loaded; merged with %d conflict(s) marked "
                             "inline: %s", path, len(unresolved), "; ".join(_describe(c) for c in unresolved))
        else:
            self.log.info("nbmergesave: %s changed on disk since it was loaded; merged cleanly", path)
        return {
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
        if done is None:
            return
        meant: bytes = done.pop("declared")
        fast = done.pop("fast", None)
        wrote = self.os_path(path) in self._wrote
        self._wrote.discard(self.os_path(path))
        try:
            os_path = self.os_path(path)
            self._prepared.pop(os_path, None)
            if fast is not None and wrote:
                # the server wrote the text we made (install's _save_notebook): it is what was declared
                if isinstance(saved, dict):
                    saved[REPLY_KEY] = {**done, "sha256": fast}
                return
            written = _read(os_path)
            if written is None:
                return
            if written != meant:
                self.serialiser.forget(os_path)
                with open_store(os_path) as store:
                    declared = store.declared_base(os_path, sha256(meant))
                    if declared is not None and declared.sha256:
                        store.declare(os_path, sha256(written), declared.sha256, "jupyter")
            sha = sha256(written)
            if isinstance(saved, dict):
                saved[REPLY_KEY] = {**done, "sha256": sha}
        except Exception:
            self.log.error("nbmergesave: could not record the save of %s", path, exc_info=True)


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

    if inspect.iscoroutinefunction(original_save):
        async def save(model: dict[str, Any], path: str = "") -> Any:
            async with merger.alock(path.strip("/")):
                done = merger.before_save(model, path.strip("/"))
                saving = _SAVING.set(True)  # this task's own requests only (each request runs in its own context)
                try:
                    saved = await original_save(model, path)
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
                    saved = original_save(model, path)
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
    """Have the server write the text the fast path made of a notebook instead of serialising it again
    (``json.dumps`` with an indent runs in pure Python: 25 ms for 1.8 MB). Only a file contents manager's
    ``_save_notebook`` is wrapped; the notebook is still validated, as ``nbformat.write`` does."""
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
        with contents_manager.atomic_writing(os_path, encoding="utf-8") as f:
            f.write(text)

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
