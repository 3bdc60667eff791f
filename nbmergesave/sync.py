"""sync_file(): the merge-on-save step, shared by the watcher and other doors.

Read the file; if it is a new save, store it, find the version it was made
from (:mod:`nbmergesave.lineage`) and, when that is not the version on disk
before it, write ``merge(base, before, save)`` in its place with
compare-and-swap: if the file changed again meanwhile, start over.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import lineage, notebook_io
from .errors import BadInput, NbMergeSaveError
from .merge import merge
from .store import Store, Version, sha256

#: How many older versions the base search looks at.
HISTORY_WINDOW = 200


@dataclass(frozen=True)
class Outcome:
    """What sync_file did: ``unchanged``, ``recorded``, ``merged``, ``partial`` or ``error``."""

    action: str
    path: str
    version: int | None = None
    base: int | None = None
    local: int | None = None
    remote: int | None = None
    conflicts: int = 0
    message: str = ""


def _load(store: Store, version: Version) -> dict[str, Any] | None:
    try:
        return notebook_io.parse_notebook(store.content(version))
    except NbMergeSaveError:
        return None


_TOKENS: OrderedDict[tuple[str, str], Counter | None] = OrderedDict()


def _tokens(store: Store, version: Version) -> Counter | None:
    """A stored version's lineage tokens, cached by content.

    Stored versions never change, and the base search looks at the same
    ones again on every save of a notebook.
    """
    if version.sha256 is None:
        return None
    key = (str(store.location), version.sha256)
    if key in _TOKENS:
        _TOKENS.move_to_end(key)
        return _TOKENS[key]
    nb = _load(store, version)
    value = _TOKENS[key] = lineage.tokens(nb) if nb is not None else None
    if len(_TOKENS) > 256:
        _TOKENS.popitem(last=False)
    return value


def sync_file(store: Store, path: str | os.PathLike[str], *, own_writes: set[str] | None = None, attempts: int = 5) -> Outcome:
    """Bring the store up to date with ``path`` and merge an overlapping save.

    ``own_writes`` holds sha256s of what this process wrote, which are
    recorded but never treated as a new save. A file that does not parse yet
    (a save in progress) gives ``partial``: the caller retries later.
    """
    own_writes = own_writes if own_writes is not None else set()
    key = store.key(path)
    for _ in range(attempts):
        try:
            data = notebook_io.read_bytes(path)
        except BadInput as e:
            return Outcome("error", key, message=str(e))
        digest = sha256(data)
        before = store.on_disk(path)
        if before is not None and before.sha256 == digest:
            return Outcome("unchanged", key, before.version)
        try:
            save = notebook_io.parse_notebook(data, f"'{key}'")
        except BadInput as e:
            return Outcome("partial", key, message=str(e))
        history = store.history(path)
        if digest in own_writes or before is None or any(v.sha256 == digest for v in history):
            # our own merge result, a first sighting, or a revert to a stored version
            v = store.add(path, data, "observed")
            return Outcome("recorded", key, v.version)
        saved = store.add(path, data, "observed", on_disk=False)  # raw save is kept, whatever happens
        candidates = [v for v in reversed(history[-HISTORY_WINDOW:]) if v.sha256 and v.version != before.version]
        base = lineage.find_base(save, before, candidates, lambda v: _tokens(store, v))
        if base is None:
            store.add_on_disk(path, saved.version)
            return Outcome("recorded", key, saved.version)
        base_nb, before_nb = _load(store, base), _load(store, before)
        if base_nb is None or before_nb is None:
            return Outcome("error", key, saved.version, message=f"a stored version of '{key}' cannot be read")
        result = merge(base_nb, before_nb, save)
        notebook_io.validate(result.notebook, f"merged '{key}'")
        text = notebook_io.dumps(result.notebook).encode("utf-8")
        unresolved = len(result.unresolved)
        # Compare-and-swap: only replace the bytes we merged from.
        try:
            current = Path(path).read_bytes()
        except OSError:
            current = b""
        if current != data:
            continue  # saved again meanwhile: the loop records that save and merges again
        merged = store.add(path, text, "merged", on_disk=False, base=base.version, local=before.version,
                           remote=saved.version, conflicts=unresolved)
        own_writes.add(merged.sha256 or "")
        try:
            notebook_io.write_atomic(path, text)
        except OSError as e:
            store.add_on_disk(path, saved.version)
            return Outcome("error", key, saved.version, message=f"cannot write merged '{key}': {e.strerror}")
        store.add_on_disk(path, merged.version)
        return Outcome("merged", key, merged.version, base.version, before.version, saved.version, unresolved)
    return Outcome("partial", key, message=f"'{key}' kept changing; will look again")
