"""The one place the store creates folders and files; who may read them is decided by :mod:`nbmergesave.private`.

A store is its owner's only (``0700``/``0600``; notebooks hold secrets),
unless it sits in a team folder shared on purpose (group-writable and
setgid), where the group keeps access (``2770``/``0660``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import private
from ..errors import StoreError


def make_private_dir(where: Path) -> Path:
    """Create the store folder ``where`` (and its parents) with the store's mode, and its lock file."""
    try:
        return private.store_folder(where)
    except OSError as e:
        raise StoreError(f"cannot create the store at '{where}': {e.strerror}") from None


def make_private(path: Path) -> None:
    """Give a file the store created (the database and its journals) the store's file mode."""
    if path.exists():
        private.set_mode(path, private.store_modes(path.parent)[1])


def open_private(path: Path) -> int:
    """Open (creating) a file of the store for reading and writing with the store's file mode; returns the fd."""
    return os.open(path, os.O_RDWR | os.O_CREAT, private.store_modes(path.parent)[1])
