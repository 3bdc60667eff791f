"""The one place the store creates folders and files, so who may read them is decided here."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(where: Path) -> Path:
    """Create ``where`` (and its parents) if needed; the store folder is its owner's only (notebooks hold secrets)."""
    old = os.umask(0o077)
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the store at '{where}': {e.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(where, DIR_MODE)
    return where


def make_private(path: Path) -> None:
    """Restrict a file the store created (the database and its journals) to its owner."""
    if path.exists():
        os.chmod(path, FILE_MODE)


def open_private(path: Path) -> int:
    """Open (creating) a file of the store for reading and writing, its owner's only; returns the fd."""
    return os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
