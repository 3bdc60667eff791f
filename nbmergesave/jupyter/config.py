"""Jupyter configuration: the store (``c.NbMergeSave.store_url``, ``c.NbMergeSave.project_root``), the merge
engine (``c.NbMergeSave.engine``) and whether the server watches its folder for writes made outside it
(``c.NbMergeSave.watch_root``).

>>> # jupyter_server_config.py, on every host of a team (the URL from the environment or a secret):
>>> # c.NbMergeSave.store_url = os.environ["NBMERGESAVE_STORE_URL"]
>>> # c.NbMergeSave.engine = "nbdime"      # or: jupyter lab --NbMergeSave.engine=nbdime
>>> # c.NbMergeSave.watch_root = False     # merge only the saves made through this server
"""

from __future__ import annotations

from typing import Any

from traitlets import Bool, Enum, Unicode
from traitlets.config import Configurable


class NbMergeSave(Configurable):
    """nbmergesave's server extension settings."""

    store_url = Unicode(
        "", help="PostgreSQL URL of a store shared by every server of a team (postgresql://user@host:5432/db); "
                 "empty: $NBMERGESAVE_STORE_URL, else the embedded store in each folder's .nbmergesave/.").tag(config=True)
    project_root = Unicode(
        "", help="The folder notebooks are named relative to in a shared store (default: the nearest folder "
                 "holding .nbmergesave-project, else the server's root directory).").tag(config=True)
    watch_root = Bool(
        True, help="Watch the folder the server serves: a notebook written there by anything else (an agent, a "
                   "script, git, a sync tool, another host) is merged with what was saved from Jupyter instead of "
                   "replacing it (git's own writes are recorded, never merged). False: only saves made through "
                   "this server are merged.").tag(config=True)
    engine = Enum(
        ["cells", "nbdime"], default_value="cells",
        help="The merge engine of saves that overlap: 'cells' (nbmergesave's cell-level diff3) or 'nbdime' "
             "(nbdime's merge_notebooks, its decisions and markers). Recorded with each merge.").tag(config=True)


def apply(serverapp: Any) -> NbMergeSave:
    """Read the settings and tell the store (called when the extension loads); say which store is used.
    Returns the settings (the save hook reads its engine there)."""
    from ..store.where import configure, store_url

    settings = NbMergeSave(parent=serverapp)
    if settings.engine != "cells":
        serverapp.log.info("nbmergesave: merging overlapping saves with the %s engine", settings.engine)
    configure(url=settings.store_url or None, project_root=settings.project_root or None,
              roots=[serverapp.root_dir])
    url = store_url()
    if url is None:
        return settings
    from ..store import Store

    try:
        Store.open(serverapp.root_dir).close()  # creates the tables on first use; says now if it cannot
    except Exception as e:
        # One line, and the server runs on, degraded: saves are merged from the local spool meanwhile.
        import os

        from ..store.spool import note_away, target_of

        try:
            note_away(target_of(os.path.join(serverapp.root_dir, "_")), e, serverapp.log)
        except Exception:
            serverapp.log.warning("nbmergesave: %s; saves are still merged, from a local spool", e)
        return settings
    from ..private import redact_url

    serverapp.log.info("nbmergesave: history in the PostgreSQL store at %s", redact_url(url))
    return settings
