"""HTTP routes of the Jupyter extension, behind Jupyter's own authentication.

* ``GET /nbmergesave/api/state?path=P`` (JSON): the sha256 of notebook ``P`` on
  disk, whether it is a notebook a save can be merged with, the newest
  stored merge of it, who made the version on disk (``by``: ``"jupyter"`` for
  a save through a Jupyter server, ``"outside"`` for a write made outside
  Jupyter (merged or not), ``"git"``, ``"paused"`` for a tool writing while
  the folder was paused, ``null`` when the store does not know), and whether
  the server's watcher is still handling a write of it (``settling``: a tab
  waits, rather than show an outside write that is about to be merged); open
  tabs poll it to learn that another writer changed the file. ``degraded`` is
  ``null``, or, while the history store is away, why (``reason``), ``since``
  when (ISO 8601, UTC) and how many versions wait in the local spool
  (``spooled``); polling it is also how the server notices the store is back
  and catches up.
* ``GET /nbmergesave/review?path=P&version=N`` (HTML): what merge ``N`` of
  ``P`` did, as nbdime's diff of the save and of the other version against the
  merged notebook (the text ``nbmergesave review --text`` prints).

Both answer only for a notebook under the server's root, named by a relative
path: absolute paths, ``..``, percent-encoded names and symlinks leading out
of the root are refused (404 says nothing about what exists).
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from collections import OrderedDict
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..store import sha256

AUTH_RESOURCE = "contents"


def safe_notebook_path(root: str, path: str | None) -> str:
    """The real path of notebook ``path`` under ``root``; raises 404 for anything else."""
    if not path or "\x00" in path or "%" in path or "\\" in path or path.startswith(("/", "~")):
        raise web.HTTPError(404)
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts) or not path.endswith(".ipynb"):
        raise web.HTTPError(404)
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, real]) != real_root or not os.path.isfile(real):
        raise web.HTTPError(404)
    return real


class _Base:
    auth_resource = AUTH_RESOURCE
    merger: Any

    def initialize(self, merger: Any) -> None:
        self.merger = merger

    def notebook(self) -> tuple[str, str]:
        path = self.get_argument("path", None)  # type: ignore[attr-defined]
        root = self.settings.get("server_root_dir") or self.merger.cm.root_dir  # type: ignore[attr-defined]
        return path or "", safe_notebook_path(root, path)


#: The last answers of the state route, by file and its stat (open tabs ask every second or so).
_STATES: OrderedDict[tuple[str, int, int, int], dict[str, Any]] = OrderedDict()


class StateHandler(_Base, APIHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        path, os_path = self.notebook()
        try:
            st = os.stat(os_path)
        except OSError:
            raise web.HTTPError(404) from None  # deleted meanwhile
        from ..store.spool import outages

        key = (os_path, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in _STATES and not outages():
            _STATES.move_to_end(key)
            self.finish({**_STATES[key], "path": path, "degraded": None})
            return
        # in a thread: while the store is away this is also what notices it is back, and catches up
        state = await asyncio.to_thread(self._state, path, os_path)
        if state["sha256"] is not None and not state["settling"] and os.stat(os_path).st_mtime_ns == st.st_mtime_ns:
            _STATES[key] = state
            while len(_STATES) > 256:
                _STATES.popitem(last=False)
        self.finish(state)

    def _state(self, path: str, os_path: str) -> dict[str, Any]:
        from ..store.spool import outage, target_of
        from ..sync import open_store
        from .files import mergeable, read

        data = read(os_path)
        state: dict[str, Any] = {"path": path, "sha256": sha256(data) if data is not None else None,
                                 "mergeable": mergeable(os_path), "merge": None, "by": None, "settling": False,
                                 "degraded": None}
        watcher = getattr(self.merger, "watcher", None)
        watching = watcher is not None and watcher.ready.is_set() and watcher.failed is None
        # the store knows the notebook by the path saves use (under the server's root as configured, which may
        # be a symlink), not by its real path (checked above), which may lie outside the project root
        os_path = self.merger.os_path(path)
        try:
            away = outage(target_of(os_path))
        except Exception:
            away = None
        if away is not None:  # said even when the store cannot be opened at all (another user's)
            state["degraded"] = {**away.to_dict(), "spooled": None}
        try:
            with open_store(os_path, log=self.merger.log) as store:
                away = outage(target_of(os_path))
                if away is not None or store.is_spool:
                    state["degraded"] = {**(away.to_dict() if away else {"reason": "catching up", "since": None}),
                                         "spooled": len(store.backend.all_versions()) if store.is_spool else None}
                if state["sha256"] is not None:
                    state["by"] = who_wrote(store, os_path, state["sha256"])
                    # seen by the watcher but not handled yet, or not even seen yet (its event is on the way)
                    state["settling"] = watching and (watcher.settling(os_path) or state["by"] is None)
                for version in reversed(store.history(os_path, last=20)):
                    if version.kind == "merged" and version.sha256 == state["sha256"]:
                        local = store.get(os_path, version.local) if version.local else None
                        remote = store.get(os_path, version.remote) if version.remote else None
                        state["merge"] = {"version": version.version, "conflicts": version.conflicts,
                                          "local": local.sha256 if local else None,
                                          "remote": remote.sha256 if remote else None}
                        break
        except Exception:
            self.log.debug("nbmergesave: no store for %s", path, exc_info=True)
        return state


def who_wrote(store: Any, os_path: str, sha: str) -> str | None:
    """Who made content ``sha`` of ``os_path``, as the store knows it: ``"git"``, ``"paused"`` (a tool
    that wrote while the folder was paused), ``"jupyter"`` (a save through a Jupyter server, merged or
    not), ``"outside"`` (anything else: an agent, a script, a sync tool; merged with what was on disk
    or not), or ``None`` (the store has not seen it)."""
    version = store.latest_with(os_path, sha)
    if version is None:
        return None
    if version.kind in ("git", "paused"):
        return str(version.kind)
    shas = [sha]
    if version.kind == "merged" and version.remote is not None:
        # a merge made by the hook is declared by "jupyter"; one the watcher made names the save it took in
        shas.append(store.get(os_path, version.remote).sha256 or "")
    writers = {store.declared_writer(os_path, s) for s in shas if s}
    if "jupyter" in writers:
        return "jupyter"
    if "git" in writers and version.kind != "merged":
        return "git"
    return "outside"


class ReviewHandler(_Base, JupyterHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from .. import review
        from ..errors import NbMergeSaveError
        from ..sync import open_store

        path, os_path = self.notebook()
        version = self.get_argument("version", None)
        try:
            with open_store(os_path) as store:
                found = review.find_merge(store, os_path, int(version) if version and version.isdigit() else None)
                body = re.sub(r"\x1b\[[0-9;]*m", "", review.text(store, found))  # nbdime's terminal colours
        except (NbMergeSaveError, KeyError, ValueError, LookupError) as e:
            raise web.HTTPError(404, str(e)) from None
        title = f"nbmergesave: merge {found.merged.version} of {path}"
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em;overflow:auto}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>"
            f"<p>The save (version {found.save.version}) and the other writer's version (version {found.other.version}), "
            f"each against the merged notebook (version {found.merged.version}). "
            f"<code>nbmergesave review {html.escape(path)} --version {found.merged.version}</code> opens nbdime's web diff.</p>"
            f"<pre>{html.escape(body)}</pre></body></html>"
        )


def setup_handlers(web_app: Any, merger: Any) -> None:
    base_url = web_app.settings.get("base_url", "/")
    web_app.add_handlers(".*$", [
        (url_path_join(base_url, "nbmergesave", "api", "state"), StateHandler, {"merger": merger}),
        (url_path_join(base_url, "nbmergesave", "review"), ReviewHandler, {"merger": merger}),
    ])
