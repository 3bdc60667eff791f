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
import importlib.util
import inspect
import logging
from typing import Any

from .files import LOOK_AGAIN, MID_WRITE_WAIT, mergeable, read
from .replies import BASE_KEY, REPLY_KEY, changes, conflict_cells
from .saves import SAVING, SaveMerger

#: How often, and how long apart (s), a notebook that does not parse is read again before a tab is told
#: a save cannot be merged with it (another program may be writing it in place).
MERGEABLE_RETRIES, MERGEABLE_WAIT = 10, 0.05


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


def wants_hash(get: Any) -> bool:
    """Whether the contents manager's ``get`` can hand out the hash of the bytes it read (jupyter_server 2.11+)."""
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
    hashable = wants_hash(original_get)

    def get_kwargs(content: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
        if content and hashable and not kwargs.get("require_hash"):
            kwargs = {**kwargs, "require_hash": True}  # the hash of the very bytes the server read
        return kwargs

    original_writing = getattr(contents_manager, "atomic_writing", None)
    if original_writing is not None:
        def atomic_writing(os_path: str, *args: Any, **kwargs: Any) -> Any:
            return merger.writes.writing(original_writing, os_path, *args, **kwargs)

        contents_manager.atomic_writing = atomic_writing

    if inspect.iscoroutinefunction(original_save):
        async def save(model: dict[str, Any], path: str = "") -> Any:
            async with merger.stores.alock(path.strip("/")):
                done = merger.before_save(model, path.strip("/"))
                saving = SAVING.set(True)  # this task's own requests only (each request runs in its own context)
                try:
                    for _ in range(merger.ATTEMPTS):
                        saved = await original_save(model, path)
                        again = merger.save_again(model, path.strip("/"), done)
                        if again is None:
                            break
                        done = again
                finally:
                    SAVING.reset(saving)
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
                    if read(os_path) is None:
                        break
                    await asyncio.sleep(MERGEABLE_WAIT)
                    if mergeable(os_path):
                        reply["mergeable"] = True
                        break
            return model
    else:
        def save(model: dict[str, Any], path: str = "") -> Any:  # type: ignore[misc]
            with merger.stores.lock(path.strip("/")):
                done = merger.before_save(model, path.strip("/"))
                saving = SAVING.set(True)
                try:
                    for _ in range(merger.ATTEMPTS):
                        saved = original_save(model, path)
                        again = merger.save_again(model, path.strip("/"), done)
                        if again is None:
                            break
                        done = again
                finally:
                    SAVING.reset(saving)
                merger.after_save(path.strip("/"), done, saved)
                return saved

        def get(path: str, content: bool = True, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            model = original_get(path, content, *args, **get_kwargs(content and not args, kwargs))
            merger.loaded(path.strip("/"), model)
            return model

    contents_manager.get, contents_manager.save = get, save
    _share_serialisation(contents_manager, merger)
    _wait_out_writes(contents_manager)
    return merger


def _wait_out_writes(contents_manager: Any) -> None:
    """Let a read wait for a write in progress instead of stepping the notebook back.

    jupyter_server, reading a notebook that does not parse while its ``.~NAME`` copy of the version before
    is beside it, takes the file for a write that crashed: it renames it ``NAME.invalid`` and puts the copy
    back. When another server or a script is writing that file in place, the read steps the notebook back
    over a save that succeeded (the watchers merge it forward: :func:`nbmergesave.sync.stepped_back`). Here
    the read first waits, up to :data:`MID_WRITE_WAIT`, for the file to be whole; only a file that stays
    broken gets jupyter_server's rule."""
    import os
    import time

    original = getattr(contents_manager, "_read_notebook", None)
    if original is None:
        return
    from jupyter_server.services.contents.fileio import path_to_intermediate

    def writing(os_path: str) -> bool:
        return os.path.exists(path_to_intermediate(os_path)) and not mergeable(os_path)

    if inspect.iscoroutinefunction(original):
        async def _read_notebook(os_path: str, *args: Any, **kwargs: Any) -> Any:
            deadline = time.monotonic() + MID_WRITE_WAIT
            while writing(os_path) and time.monotonic() < deadline:
                await asyncio.sleep(LOOK_AGAIN)
            return await original(os_path, *args, **kwargs)
    else:
        def _read_notebook(os_path: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            deadline = time.monotonic() + MID_WRITE_WAIT
            while writing(os_path) and time.monotonic() < deadline:
                time.sleep(LOOK_AGAIN)
            return original(os_path, *args, **kwargs)

    contents_manager._read_notebook = _read_notebook


def _share_serialisation(contents_manager: Any, merger: SaveMerger) -> None:
    """Have the server write the text the fast path (or a merge) made of a notebook instead of serialising it
    again (``json.dumps`` with an indent runs in pure Python: 25 ms for 1.8 MB). Only a file contents manager's
    ``_save_notebook`` is wrapped; the notebook is still validated, as ``nbformat.write`` does, and written
    with the save's compare-then-swap (:meth:`.Writes.write_prepared`)."""
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
        merger.writes.write_prepared(contents_manager.atomic_writing, os_path, text)

    if inspect.iscoroutinefunction(original):
        async def _save_notebook(os_path: str, nb: Any, capture_validation_error: dict[str, Any] | None = None) -> None:
            text = merger.writes.prepared(os_path, nb)
            if text is None:
                return await original(os_path, nb, capture_validation_error=capture_validation_error)  # type: ignore[no-any-return]
            write(os_path, nb, text, capture_validation_error)
    else:
        def _save_notebook(os_path: str, nb: Any, capture_validation_error: dict[str, Any] | None = None) -> None:  # type: ignore[misc]
            text = merger.writes.prepared(os_path, nb)
            if text is None:
                return original(os_path, nb, capture_validation_error=capture_validation_error)  # type: ignore[no-any-return]
            write(os_path, nb, text, capture_validation_error)

    contents_manager._save_notebook = _save_notebook


__all__ = ["BASE_KEY", "REPLY_KEY", "SaveMerger", "changes", "conflict_cells", "install"]
