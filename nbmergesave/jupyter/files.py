"""Small helpers of the Jupyter integration: reading a notebook's file, the bytes Jupyter writes for a
notebook, what a Jupytext pair's text file adds, and the guards around a store's work."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .. import notebook_io
from ..store import Store

#: How long (s) a read waits for a notebook that another program is writing in place to be whole (see
#: :func:`whole`; for a GET, before jupyter_server's own rule for a file that does not parse).
MID_WRITE_WAIT = 2.0
#: How long (s) a file that does not parse must stay unchanged to be taken for broken rather than being written.
STILL = 0.5
#: How often (s) such a file is read again.
LOOK_AGAIN = 0.025


def quietly(action: Any) -> None:
    try:
        action()
    except Exception:
        pass


@contextmanager
def nothing() -> Iterator[None]:
    yield


def pair_hash(served: Any, sha: str) -> bool:
    """Whether ``served`` is Jupytext's hash of a paired notebook: the text file's and the .ipynb's joined."""
    return isinstance(served, str) and len(served) == 2 * len(sha) and sha in (served[:len(sha)], served[len(sha):])


def with_paired_text(store: Store, os_path: str, disk: bytes | None, engine: str = "cells") -> bytes | None:
    """What is on disk, with the edits of a newer Jupytext-paired text file taken in (stored as versions),
    so the save is merged with them rather than writing over them (:func:`nbmergesave.pairs.bring_in`)."""
    if disk is None:
        return None
    from ..pairs import bring_in

    return bring_in(store, os_path, disk, engine) or disk


def mergeable(os_path: str) -> bool:
    """Whether the file on disk is a notebook a merge can take (so a save need not ask the person)."""
    data = read(os_path)
    if data is None:
        return False
    try:
        notebook_io.parse_notebook(data)
        return True
    except Exception:
        return False


def plain(nb: Any) -> dict[str, Any]:
    return notebook_io.parse_notebook(as_written(nb))


def as_written(nb: dict[str, Any]) -> bytes:
    """The bytes Jupyter writes for ``nb``: nbformat drops the keys it only keeps in memory
    (cell ``trusted`` marks, ``orig_nbformat``, ``signature``) before writing."""
    transient = notebook_io.TRANSIENT_NB_METADATA
    return notebook_io.dumps({
        **nb,
        "metadata": {k: v for k, v in nb.get("metadata", {}).items() if k not in transient},
        "cells": [{**c, "metadata": {k: v for k, v in c.get("metadata", {}).items() if k != "trusted"}}
                  for c in nb.get("cells", [])],
    }).encode()


def whole(data: bytes, again: Callable[[], bytes | None]) -> tuple[bytes, dict[str, Any] | None]:
    """``data`` and its notebook; when it does not parse, read ``again`` (the file, or the inode a swap took
    off the disk) until it does: another program writing a notebook in place (truncated, then written) leaves
    it half written for a moment, and a save merged with that moment would take it for a broken file and
    write over the other program's edit. Waited for while the bytes change, up to :data:`MID_WRITE_WAIT`;
    bytes that stay as they are for :data:`STILL` are a broken file (returned with ``None``). (On the server's
    event loop: the wait is short when a write is under way, and a broken file costs each save :data:`STILL`.)"""
    deadline = time.monotonic() + MID_WRITE_WAIT
    changed = time.monotonic()
    while True:
        try:
            return data, notebook_io.parse_notebook(data)
        except Exception:
            pass
        now = time.monotonic()
        if now > deadline or now - changed > STILL:
            return data, None
        time.sleep(LOOK_AGAIN)
        later = again()
        if later is None:
            return data, None
        if later != data:
            data, changed = later, time.monotonic()


def read(os_path: str) -> bytes | None:
    try:
        with open(os_path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None
