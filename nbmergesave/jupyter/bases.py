"""Which version a save to the Jupyter server was made from: the hash the tab sent, else the versions this server
served for the path (the closest to the save), else the store's search (:func:`nbmergesave.sync.infer_base`)."""

from __future__ import annotations

import logging
from typing import Any

from ..store import Store, sha256


def base_of(store: Store, path: str, os_path: str, sent: str | None, served: list[str], incoming_nb: dict[str, Any],
            disk: bytes | None, log: logging.Logger | logging.LoggerAdapter) -> tuple[bytes | None, str]:  # type: ignore[type-arg]
    """The version the save of ``path`` was made from, and how it was found (for the log). ``sent``: the hash
    the client sent with it; ``served``: the hashes this server handed out (and took in) for it, oldest first;
    ``disk``: the file as read for this save."""
    if sent:
        found = store.latest_with(os_path, sent)
        if found is not None:
            return store.content(found), "sent by the client"
        log.warning("nbmergesave: the base %s… sent with the save of %s is not in the store; inferring one",
                    sent[:12], path)
    known = [v for s in served if (v := store.latest_with(os_path, s)) is not None]
    if len(known) == 1:
        return store.content(known[0]), "the version this server served"
    if known:
        from ..lineage import distance, tokens
        from ..sync import tokens_of

        new = tokens(incoming_nb)  # each served version's tokens come from sync's cache, not a parse per save
        scored = [(distance(t, new), -i, v) for i, v in enumerate(known) if (t := tokens_of(store, v)) is not None]
        if scored:
            return store.content(min(scored, key=lambda t: t[:2])[2]), "the closest of the versions this server served"
    if disk is None:
        return None, "none (no file on disk)"
    return _inferred(store, os_path, incoming_nb, disk)


def _inferred(store: Store, os_path: str, save: dict[str, Any], disk: bytes) -> tuple[bytes | None, str]:
    """Search the store for the version the save was made from, as the watcher does."""
    from ..sync import infer_base

    before = store.latest_with(os_path, sha256(disk))
    if before is None:
        before = store.add(os_path, disk, "observed", on_disk=False)
    base = infer_base(store, os_path, save, before)
    if base is None:
        return disk, "inferred from the store: made from the version on disk"
    return store.content(base), f"inferred from the store: version {base.version}"
