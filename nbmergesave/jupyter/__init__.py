"""Jupyter server integration: merge on save with the exact base each server saw.

Enabled by the ``jupyter_server_config.d/nbmergesave.json`` file the package
installs (or ``jupyter server extension enable nbmergesave``). It wraps the
server's contents manager (sync or async, whichever is configured):

* the base of a save through this server is the last content this server
  returned for that path (GET with content) or received for it (PUT); with
  several clients on one server, the one of its recent GETs and PUTs that the
  incoming notebook is closest to;
* on a PUT of a notebook, when the file on disk is no longer that base
  (another server, ``git pull``, a sync tool changed it), the incoming
  notebook is replaced by ``merge(base, on disk, incoming)`` before the server
  writes it; conflicts are written inline and logged;
* every version involved is stored, and the written content is declared with
  its base, so a watcher on the same folder does not merge it again;
* a failure inside the hook never loses the save: the incoming content is
  stored, the error logged, and the server saves it as it would have.

This module is imported only by Jupyter.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from .. import notebook_io
from ..merge import merge
from ..store import sha256
from ..sync import open_store


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbmergesave.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .config import apply

    apply(serverapp)  # c.NbMergeSave.store_url / project_root
    install(serverapp.contents_manager, serverapp.log)
    serverapp.log.info("nbmergesave: merging notebook saves with what changed on disk since each load")


class SaveMerger:
    """The per-server memory of bases, and the merge done before each notebook save."""

    #: How many served versions of a path are remembered (one per client is enough).
    REMEMBERED = 16

    def __init__(self, contents_manager: Any, log: logging.Logger | logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        self.cm = contents_manager
        self.log = log
        self.served: dict[str, list[bytes]] = {}
        self._local = asyncio.Lock()

    def remember(self, path: str, data: bytes) -> None:
        versions = [v for v in self.served.get(path, []) if v != data]
        self.served[path] = (versions + [data])[-self.REMEMBERED:]

    def base_of(self, path: str, incoming: bytes) -> bytes | None:
        """The content this server last gave or took for ``path``; with several clients on one
        server, the one of those the incoming notebook is closest to (each client saves what it
        was given plus its own edits)."""
        versions = self.served.get(path, [])
        if len(versions) <= 1:
            return versions[-1] if versions else None
        from ..lineage import _distance, tokens

        new = tokens(notebook_io.parse_notebook(incoming))
        scored = [(_distance(tokens(notebook_io.parse_notebook(v)), new), -i, v) for i, v in enumerate(versions)]
        return min(scored)[2]

    def _take_lock(self, path: str) -> tuple[Any, Any] | None:
        """Enter the store's save lock for ``path`` (a flock for the embedded store, an advisory lock
        for PostgreSQL); ``None`` when there is none to be had (a read-only folder, the database
        down): the save goes ahead as before, and the error is logged."""
        from ..errors import StoreUnavailable

        store = None
        try:
            os_path = self.cm._get_os_path(path)
            store = open_store(os_path)
            held = store.save_lock(os_path)
            held.__enter__()
            return store, held
        except Exception as e:
            if store is not None:
                store.close()
            # a database that is down is news; a folder we cannot write to (no lock file) was never locked
            (self.log.error if isinstance(e, StoreUnavailable) else self.log.debug)(
                "nbmergesave: no save lock for %s (%s); saving without it", path, e)
            return None

    @staticmethod
    def _release(taken: tuple[Any, Any] | None) -> None:
        if taken is not None:
            store, held = taken
            try:
                held.__exit__(None, None, None)
            finally:
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

    def loaded(self, path: str, model: dict[str, Any]) -> None:
        if model.get("type") == "notebook" and model.get("content") is not None:
            try:
                self.remember(path, _as_written(model["content"]))
            except Exception:  # an odd model is the server's business, not ours
                pass

    def before_save(self, model: dict[str, Any], path: str) -> bytes | None:
        """Merge the save with what changed on disk; return the bytes declared for it (``None``: none)."""
        if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
            return None
        incoming = _as_written(model["content"])
        os_path = self.cm._get_os_path(path)
        try:
            return self._merge_into(model, path, os_path, incoming, self.base_of(path, incoming))
        except Exception as e:
            self.log.error("nbmergesave: could not merge the save of %s (%s); saving it as sent", path, e, exc_info=True)
            try:
                with open_store(os_path) as store:
                    store.add(os_path, incoming, "observed", on_disk=False)
            except Exception:
                self.log.error("nbmergesave: could not store the save of %s either", path, exc_info=True)
            return None
        finally:
            self.remember(path, incoming)  # what this client now holds

    def _merge_into(self, model: dict[str, Any], path: str, os_path: str, incoming: bytes, base: bytes | None) -> bytes:
        import nbformat

        disk = _read(os_path)
        with open_store(os_path) as store:
            for data in (base, disk):
                if data is not None and store.latest_with(os_path, sha256(data)) is None:
                    store.add(os_path, data, "observed", on_disk=False)
            saved = store.add(os_path, incoming, "observed", on_disk=False)
            if base is None or disk is None or disk in (base, incoming):
                store.declare(os_path, saved.sha256 or "", sha256(base if base is not None else disk or incoming), "jupyter")
                return incoming
            disk_nb = notebook_io.parse_notebook(disk, f"'{path}' on disk")
            base_nb = notebook_io.parse_notebook(base, "the loaded version")
            if disk_nb == base_nb:  # same notebook, other bytes
                store.declare(os_path, saved.sha256 or "", sha256(disk), "jupyter")
                return incoming
            result = merge(base_nb, disk_nb, notebook_io.parse_notebook(incoming, "the save"))
            notebook_io.validate(result.notebook, f"merged '{path}'")
            text = notebook_io.dumps(result.notebook).encode()
            unresolved = len(result.unresolved)
            base_v, disk_v = store.latest_with(os_path, sha256(base)), store.latest_with(os_path, sha256(disk))
            store.add(os_path, text, "merged", on_disk=False, base=base_v.version if base_v else None,
                      local=disk_v.version if disk_v else None, remote=saved.version, conflicts=unresolved)
            store.declare(os_path, sha256(text), sha256(disk), "jupyter")
        model["content"] = nbformat.from_dict(result.notebook)
        if unresolved:
            self.log.warning("nbmergesave: %s changed on disk since it was loaded; merged with %d conflict(s) marked "
                             "inline: %s", path, unresolved, "; ".join(_describe(c) for c in result.unresolved))
        else:
            self.log.info("nbmergesave: %s changed on disk since it was loaded; merged cleanly", path)
        return text


    def after_save(self, path: str, meant: bytes | None) -> None:
        """Declare the bytes the server wrote, should they differ from ``meant``, what was declared
        (another serialiser): a watcher must recognise this save as ours, not merge it again."""
        if meant is None:
            return
        try:
            os_path = self.cm._get_os_path(path)
            written = _read(os_path)
            if written is None or written == meant:
                return
            with open_store(os_path) as store:
                declared = store.declared_base(os_path, sha256(meant))
                if declared is not None and declared.sha256:
                    store.declare(os_path, sha256(written), declared.sha256, "jupyter")
        except Exception:
            self.log.error("nbmergesave: could not record the save of %s", path, exc_info=True)


def _as_written(nb: dict[str, Any]) -> bytes:
    """The bytes Jupyter writes for ``nb``: nbformat drops the keys it only keeps in memory
    (cell ``trusted`` marks, ``orig_nbformat``, ``signature``) before writing."""
    transient = ("orig_nbformat", "orig_nbformat_minor", "signature")
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


def install(contents_manager: Any, log: Any = None) -> SaveMerger:
    """Wrap ``contents_manager.get`` and ``.save`` (async or not) with a :class:`SaveMerger`."""
    merger = SaveMerger(contents_manager, log or logging.getLogger("nbmergesave"))
    original_get, original_save = contents_manager.get, contents_manager.save

    if inspect.iscoroutinefunction(original_save):
        async def save(model: dict[str, Any], path: str = "") -> Any:
            async with merger.alock(path.strip("/")):
                meant = merger.before_save(model, path.strip("/"))
                saved = await original_save(model, path)
                merger.after_save(path.strip("/"), meant)
                return saved

        async def get(path: str, content: bool = True, *args: Any, **kwargs: Any) -> Any:
            model = await original_get(path, content, *args, **kwargs)
            if content:
                merger.loaded(path.strip("/"), model)
            return model
    else:
        def save(model: dict[str, Any], path: str = "") -> Any:  # type: ignore[misc]
            with merger.lock(path.strip("/")):
                meant = merger.before_save(model, path.strip("/"))
                saved = original_save(model, path)
                merger.after_save(path.strip("/"), meant)
                return saved

        def get(path: str, content: bool = True, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            model = original_get(path, content, *args, **kwargs)
            if content:
                merger.loaded(path.strip("/"), model)
            return model

    contents_manager.get, contents_manager.save = get, save
    return merger
