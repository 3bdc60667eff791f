"""Move a project's whole history between stores: SQLite -> PostgreSQL when a team moves to a hub, and back.

Every content is read back from the source (its sha256 checked), stored in
the target, and the rows (versions with their numbers, times and merge
inputs, the on-disk marks, declarations, pins, settings) are copied in one
transaction, and the lineage index (which versions hold which cells) is
rebuilt from the contents; then every version is compared, field by
field and byte by byte, with the source. The target must hold no version
yet. Interrupted, a copy can simply be run again (contents already copied
are skipped; the rows appear all at once or not at all).

>>> # copy_store("~/projects/survey", "postgresql://ann@db.team/notebooks")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import notebook_io
from ..errors import StoreError
from . import STORE_DIR, Store
from .backend import COPIED
from .cells import cell_digests
from .contents import put_content, sha256
from .pg_connect import Location, check_url, is_url
from .postgres import open_backend

_INTERNAL_SETTINGS = ("schema", "pg_schema")  # each backend's own layout version


@dataclass(frozen=True)
class CopyReport:
    """What a copy moved (all verified)."""

    source: str
    target: str
    notebooks: int
    versions: int
    contents: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_location(where: str, *, create: bool) -> Store:
    """The store named by a URL, or the embedded store of a project folder (``create``: make it if missing)."""
    if is_url(where):
        check_url(where)
        return Store(Path.cwd(), Location(where), open_backend(where))  # type: ignore[arg-type]
    root = Path(where).expanduser()
    if not root.is_dir():
        raise StoreError(f"'{where}' is neither a PostgreSQL URL nor a folder")
    location = root / STORE_DIR
    if not create and not (location / "index.sqlite").is_file():
        raise StoreError(f"'{where}' has no version store (no {STORE_DIR}/index.sqlite in it)")
    return Store.open(root, location)


def copy_store(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
               progress: Callable[[str], None] | None = None) -> CopyReport:
    """Copy every version of ``source`` into the empty store ``target`` (each a URL or a project folder)."""
    step = progress or (lambda _: None)
    with open_location(str(source), create=False) as src, open_location(str(target), create=True) as dst:
        if str(src.location) == str(dst.location):
            raise StoreError("the source and the target are the same store")
        existing = dst.backend.all_versions()
        if existing:
            raise StoreError(f"'{dst.location}' already holds {len(existing)} versions (hint: copy into an empty "
                             "store: a new database or schema, or a folder without .nbmergesave)")
        contents = [sha for sha, _, _ in src.backend.contents()]
        step(f"copying {len(contents)} contents")
        copied_bytes, batch = 0, 0
        dst_backend = dst.backend
        for n, sha in enumerate(contents):
            if dst_backend.has_content(sha):
                continue
            data = src.blob(sha)  # raises on a damaged content: fsck the source first
            if sha256(data) != sha:
                raise StoreError(f"content {sha[:12]} of the source is damaged (hint: nbmergesave fsck)")
            with dst_backend.transaction():
                put_content(dst_backend, sha, data)
            _index_cells(dst, sha, data)
            copied_bytes += len(data)
            batch += 1
            if batch % 200 == 0:
                step(f"{n + 1} of {len(contents)} contents")
        step("copying histories")
        with dst_backend.transaction():
            for table in COPIED:
                rows = src.backend.rows(table)
                if table == "settings":
                    rows = [r for r in rows if r[0] not in _INTERNAL_SETTINGS]
                dst_backend.put_rows(table, rows)
        step("verifying")
        versions = _verify(src, dst)
        return CopyReport(str(src.location), str(dst.location), len({v.path for v in versions}), len(versions),
                          len(contents), copied_bytes)


def _index_cells(store: Store, sha: str, data: bytes) -> None:
    """Record which cells content ``sha`` holds, as the base search does when it reads a version."""
    try:
        nb = notebook_io.parse_notebook(data)
    except Exception:  # torn or not a notebook: never a base, nothing to index
        return
    store.record_cells(sha, cell_digests(nb))


def _verify(src: Store, dst: Store) -> list[Any]:
    """Every version of ``src`` is in ``dst`` with the same fields and the same bytes; the other rows match."""
    versions = src.backend.all_versions()
    for v in versions:
        there = dst.backend.version(v.path, v.version)
        if there != v:
            raise StoreError(f"copy check failed: {v.path} v{v.version} differs in the target")
        if v.sha256 is not None and v.kind != "lost" and dst.blob(v.sha256) != src.blob(v.sha256):
            raise StoreError(f"copy check failed: the content of {v.path} v{v.version} differs in the target")
    for table in ("on_disk", "declarations", "pins"):
        if sorted(src.backend.rows(table), key=repr) != sorted(dst.backend.rows(table), key=repr):
            raise StoreError(f"copy check failed: table {table} differs in the target")
    return versions
