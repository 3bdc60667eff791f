"""The version store: every notebook version the tool sees, so nothing is ever lost, in little space.

One store per watched root, in ``ROOT/.nbmergesave/`` (``NBMERGESAVE_STORE``
overrides). A version is a row in the history of its notebook pointing at a
content (the file's bytes, by sha256); a content is a small manifest over
shared pieces: the file cut where a cell, an output or a cell's source
starts (:mod:`.pieces`), each piece stored once by its sha256, compressed
where that earns its place. Two versions that differ in one cell cost one
cell; reading a version back joins its pieces into exactly the bytes saved.
Old versions are thinned by a retention rule (:mod:`.retention`) and
unreferenced pieces collected by :meth:`Store.gc`.

The store's logic lives here; the rows live in a backend behind a small
interface (:class:`~.backend.Backend`): SQLite (:mod:`.sqlite`) by default, PostgreSQL
(:mod:`.postgres`) for a team whose folder is shared across hosts, chosen by a URL (:mod:`.where`).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> with Store.open(root) as store:
...     v = store.add(root / "nb.ipynb", b"{}", "observed")
...     [(x.version, x.kind) for x in store.history(root / "nb.ipynb")]
[(1, 'observed')]
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import files, pieces
from .backend import Backend, Version
from .check import FsckMixin
from .collection import GC_EVERY, GcReport, RetentionMixin, StoreStats  # noqa: F401  (GC_EVERY: its name here too)
from .contents import Prepared, put_content, sha256
from .contents import prepare as _prepare  # add() and put_blob() look it up here (a test acts between its two halves)
from .declarations import DeclarationsMixin
from .retention import Retention, time_text

#: Per thread: the stores (by id) whose save lock the thread holds (:meth:`Store.save_lock`).
_HELD = threading.local()

STORE_DIR = ".nbmergesave"
ENV_STORE = "NBMERGESAVE_STORE"
UPGRADE_BATCH = 32  # old blobs turned into pieces per transaction

__all__ = ["ENV_STORE", "STORE_DIR", "Backend", "GcReport", "Retention", "Store", "StoreStats", "Version", "sha256"]


def _now() -> str:
    return time_text(datetime.now(timezone.utc))


def _upgrade(backend: Any) -> None:
    """Turn a store of nbmergesave 0.1 (one zlib blob per content) into pieces, a batch per transaction."""
    from .sqlite_schema import legacy_decompress

    while True:
        with backend.transaction():
            batch = backend.legacy_batch(UPGRADE_BATCH)
            for sha, packed in batch:
                data = legacy_decompress(packed)
                if data is not None and sha256(data) == sha and not backend.has_content(sha):
                    put_content(backend, sha, data)
                # a blob already damaged is dropped too: fsck reports its versions, as before
                backend.drop_legacy_blob(sha)
        if not batch:
            break
    backend.finish_upgrade()


# The store's methods, by job: opening, keys, contents, versions and the save lock here; declarations and the
# base search's index in declarations.py, retention, pins, collection and size in collection.py, the check and
# repair in check.py. Mixins rather than delegating methods: each public method keeps one signature and one
# docstring, where its code is, and callers (and the API docs) still find every one of them on Store.
class Store(DeclarationsMixin, RetentionMixin, FsckMixin):
    """A root's version store. Paths are kept relative to the root, with '/'."""

    is_spool = False  # a stand-in for a store that is away (:mod:`.spool`)

    def __init__(self, root: Path, location: Path, backend: Backend | None = None) -> None:
        self.root = root.resolve()
        self.location = location
        if backend is None:
            from .sqlite import open_backend

            backend = open_backend(location, upgrade=_upgrade)
        self.backend = backend
        self._batches = 0  # batch() calls under way: add() then works inside the open transaction only

    @classmethod
    def open(cls, root: str | os.PathLike[str], location: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating if needed) the store of ``root``: ``location``, ``$NBMERGESAVE_STORE``, or ``ROOT/.nbmergesave``.

        A PostgreSQL URL (as ``location``, configured, or in ``$NBMERGESAVE_STORE_URL``) opens the
        shared store instead, with ``root``'s project root as the root (:mod:`.where`).
        """
        from .where import store_url

        url = store_url(location)
        if url is not None:
            return cls.open_url(url, root)
        root = Path(root)
        where = files.make_private_dir(Path(location or os.environ.get(ENV_STORE) or root / STORE_DIR))
        return cls(root, where)

    @classmethod
    def find(cls, path: str | os.PathLike[str]) -> Store:
        """The store that holds ``path``: walk up from it to a folder with ``.nbmergesave/``."""
        from .where import store_url

        url = store_url()
        if url is not None:
            return cls.open_url(url, path)
        start = Path(path).absolute()
        if os.environ.get(ENV_STORE):
            root = next((p for p in start.parents if (p / STORE_DIR).is_dir()), start.parent)
            return cls.open(root, os.environ[ENV_STORE])
        for folder in start.parents:
            try:
                found = (folder / STORE_DIR / "index.sqlite").exists()
            except PermissionError as e:  # a store is there, another user's
                raise files.denied(folder / STORE_DIR, e) from None
            if found:
                return cls.open(folder)
        raise StoreError(f"no version store holds '{path}' (hint: run 'nbmergesave watch' on its folder first)")

    @classmethod
    def open_url(cls, url: str, path: str | os.PathLike[str]) -> Store:
        """The PostgreSQL store at ``url``, rooted at the project root of ``path`` (a folder or a notebook in it)."""
        from .pg_connect import Location, check_url
        from .postgres import open_backend
        from .where import project_root

        check_url(url)
        root = project_root(path)
        return cls(root, Location(url), open_backend(url))  # type: ignore[arg-type]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _clock(self) -> datetime:
        """Now, in UTC: the clock of every part of the store (``datetime`` is looked up in this module, where a
        test sets the time a collection runs at)."""
        return datetime.now(timezone.utc)

    @property
    def _db(self) -> Any:
        """The SQLite connection (tests and debugging only)."""
        return self.backend._db  # type: ignore[attr-defined]

    # --- names -------------------------------------------------------------

    def key(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the root, as stored."""
        # abspath first (no system calls: the watcher's paths are already under
        # the resolved root), realpath only when that is not under the root.
        root = str(self.root)
        for full in (os.path.abspath(path), os.path.realpath(path)):
            if full.startswith(root + os.sep):
                return full[len(root) + 1:].replace(os.sep, "/")
        raise StoreError(f"'{path}' is outside the watched folder '{self.root}'")

    # --- contents -------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store content ``data`` once under its sha256 (no version refers to it yet); return the digest."""
        digest = sha256(data)
        if not self.backend.has_content(digest):
            prepared = _prepare(self.backend, data)
            with self.backend.transaction():
                if not self.backend.has_content(digest):
                    put_content(self.backend, digest, data, prepared)
        return digest

    def blob(self, digest: str) -> bytes:
        """The bytes of content ``digest``, exactly as they were stored."""
        found = self.backend.manifest(digest)
        if found is None:
            raise StoreError(f"blob {digest[:12]} is missing from the store (hint: nbmergesave fsck)")
        size, manifest = found
        decode, raw = pieces.decode, pieces.RAW
        try:
            data = b"".join([part if codec == raw else decode(codec, part) for codec, part in self.backend.pieces_of(manifest)])
        except Exception as e:  # a piece not decodable (zlib.error, ValueError); a missing one shows in the size
            raise StoreError(f"blob {digest[:12]} is damaged ({type(e).__name__}) (hint: nbmergesave fsck)") from None
        if len(data) != size:
            raise StoreError(f"blob {digest[:12]} is damaged (hint: nbmergesave fsck)")
        return data

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Record many versions in one transaction (one commit, one fsync), as the initial scan does."""
        self._batches += 1
        try:
            with self.backend.transaction():
                yield
        finally:
            self._batches -= 1

    # --- versions ----------------------------------------------------------

    def add(self, path: str | os.PathLike[str], data: bytes | None, kind: str, *, on_disk: bool = True,
            base: int | None = None, local: int | None = None, remote: int | None = None, conflicts: int = 0,
            engine: str | None = None, cut: tuple[list[bytes], list[bytes]] | None = None,
            cells: dict[str, str] | None = None, declare: tuple[str, str | None] | None = None,
            time: str | None = None) -> Version:
        """Record a version (its pieces, manifest and index row in one transaction); ``data=None`` records a deletion.

        ``engine``: the merge engine that made a ``merged`` version (shown by ``history`` and ``review``).

        Only pieces the store does not hold yet are compressed and written, and
        that work is done before the transaction, so writers wait on each other
        only for the rows. A writer that cut ``data`` already (:mod:`nbmergesave.fastpath`)
        passes ``cut`` (its pieces and their sha256 digests). ``cells`` (the content's
        :func:`~.cells.cell_digests`) and ``declare`` (``(base sha256, writer)``) go into
        the same transaction: one commit, one fsync, for a whole save. ``time``: when the
        version was made, if not now (a spool replayed after an outage keeps the times its
        versions were made at).
        """
        key = self.key(path)
        now = time or _now()
        digest = sha256(data) if data is not None else None
        given = Prepared(cut[0], cut[1], {}) if cut is not None else None
        prepared = given
        if data is not None and not self._batches and not self.backend.has_content(digest):  # type: ignore[arg-type]
            prepared = _prepare(self.backend, data, given)  # in a batch, the transaction is ours already: cut once, inside
        with self.backend.transaction():
            if data is not None and not self.backend.has_content(digest):  # type: ignore[arg-type]
                put_content(self.backend, digest, data, prepared)  # type: ignore[arg-type]
            if cells is not None and digest is not None:
                self.backend.record_cells(digest, cells)
            if declare is not None and digest is not None:
                self.backend.declare(key, digest, declare[0], declare[1], now)
            number = self.backend.add_version(key, digest, now, kind, base, local, remote, conflicts, engine)
            if data is None:
                self.backend.set_on_disk(key, None)
            elif on_disk:
                self.backend.set_on_disk(key, number)
        return Version(key, number, digest, now, kind, base, local, remote, conflicts, engine)

    def add_on_disk(self, path: str | os.PathLike[str], version: int) -> None:
        """Mark a stored version as the file's current content."""
        with self.backend.transaction():
            self.backend.set_on_disk(self.key(path), version)

    def history(self, path: str | os.PathLike[str], last: int | None = None) -> list[Version]:
        """Every version of ``path``, oldest first; with ``last``, only the newest ``last`` of them."""
        return self.backend.versions(self.key(path), last)

    def get(self, path: str | os.PathLike[str], version: int) -> Version:
        found = self.backend.version(self.key(path), version)
        if found is None:
            raise StoreError(f"'{path}' has no version {version} (hint: 'nbmergesave history {path}' lists them)")
        return found

    def content(self, version: Version) -> bytes:
        if version.sha256 is None:
            raise StoreError(f"version {version.version} of '{version.path}' records a deletion; it has no content")
        return self.blob(version.sha256)

    def on_disk(self, path: str | os.PathLike[str]) -> Version | None:
        """The version last known to be the file's content."""
        return self.backend.on_disk(self.key(path))

    def tracked(self, under: str | os.PathLike[str] | None = None) -> list[str]:
        """Keys of the notebooks on disk; with ``under``, only those in that folder (a watched root below
        the root of a shared store)."""
        keys = self.backend.tracked()
        if under is None or Path(under).resolve() == self.root:
            return keys
        prefix = self.key(Path(under) / "_")[:-1]
        return [k for k in keys if k.startswith(prefix)]

    def rename(self, old: str | os.PathLike[str], new: str | os.PathLike[str]) -> None:
        """History moves with the file."""
        a, b = self.key(old), self.key(new)
        with self.backend.transaction():
            self.backend.rename(a, b)

    @contextmanager
    def lax(self) -> Iterator[None]:
        """Commits made meanwhile need not wait for the disk (the embedded store's; others commit as they always
        do): for a record the next look at the file would make again if a crash lost it."""
        lax = getattr(self.backend, "lax", None)
        if lax is None:
            yield
            return
        with lax():
            yield

    @property
    def save_lock_path(self) -> Path:
        return self.location / "save.lock"

    @contextmanager
    def save_lock(self, path: str | os.PathLike[str] | None = None) -> Iterator[None]:
        """Exclusive across processes: held by every writer of ours (watcher, Jupyter extension,
        `nbmergesave save`) from reading a notebook to replacing it, so none of them replaces a
        file between another's read and write. (SQLite: a ``flock`` on ``save.lock``, one per store.)
        Re-entrant for this store object in one thread; other threads and other store objects wait."""
        held = _HELD.__dict__.setdefault("stores", set())
        if id(self) in held:  # this thread holds it already (a sync writing its merge): a second flock would wait forever
            yield
            return
        with self.backend.save_lock(self.key(path) if path is not None else None):
            held.add(id(self))
            try:
                yield
            finally:
                held.discard(id(self))
