"""What a storage backend provides: the operations :class:`~nbmergesave.store.Store` is built on.

The store's logic (cutting versions into pieces, dedup, retention, gc
planning, fsck's checks) lives in the :class:`Store` facade and is shared;
a backend only keeps rows. SQLite (:mod:`.sqlite`) is the embedded default;
a PostgreSQL backend implements the same protocol, and the store's test
suite runs against every backend (``tests/test_store*.py``, fixture
``store``).

Keys (``key``) are notebook paths relative to the store's root with ``/``.
Content digests (``sha``) are the sha256 hex of a version's whole bytes;
piece digests are raw 32-byte sha256 of the piece. Piece ids are integers
the backend assigns; manifests (opaque bytes to the backend) list them.

Contract for concurrency: :meth:`transaction` is serialised store-wide
with every other write transaction (SQLite: ``BEGIN IMMEDIATE``), so a
writer that finds a piece or content present inside its transaction may
rely on it until commit, and gc's sweep, done in one transaction, never
removes a piece a committed or committing manifest needs. Reads outside a
transaction see committed data only. (A PostgreSQL backend can meet this by
taking one transaction-scoped advisory lock at the start of every write
transaction, and serve :meth:`save_lock` with a per-notebook advisory lock.)

A new backend also needs: a way for :class:`Store` to be built on it
(``Store(root, location, backend=...)``), a parameter in the ``store``
fixture of ``tests/conftest.py``, and nothing else: cutting, manifests,
retention, gc planning and fsck's checks are shared.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Union


@dataclass(frozen=True)
class Version:
    """One stored version of one notebook; ``sha256`` is ``None`` for a deletion.

    ``engine`` names the merge engine that made a ``merged`` version (``cells`` or ``nbdime``;
    ``None`` for every other kind, and for merges stored before the engine was recorded).

    The row every backend returns, so it is defined beside the protocol (the backends need not import the
    :class:`Store` facade above them); ``nbmergesave.store.Version`` is the name callers use.
    """

    path: str
    version: int
    sha256: str | None
    time: str
    kind: str
    base: int | None = None
    local: int | None = None
    remote: int | None = None
    conflicts: int = 0
    engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_version(row: Sequence[Any] | None) -> Version | None:
    """The :class:`Version` of a ``versions`` row (its columns in their order), or ``None`` for no row."""
    return Version(*row) if row else None


Buffer = Union[bytes, memoryview]  # a piece's stored bytes: a memoryview where a backend maps them


class Backend(Protocol):
    """Rows of a version store. Every method is one statement's worth of work; no logic."""

    name: str  # "sqlite", "postgresql"

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic write, serialised with all other writers; nested calls join the outer one."""

    def save_lock(self, key: str | None) -> AbstractContextManager[None]:
        """Exclusive across processes while a notebook is read, merged and replaced (``key``: which notebook,
        ``None``: the whole store; a backend may lock more than asked, never less)."""

    # --- pieces and contents ------------------------------------------------

    def piece_ids(self, digests: Collection[bytes]) -> dict[bytes, int]:
        """The ids of those pieces the store holds."""

    def put_piece(self, digest: bytes, codec: int, size: int, data: bytes) -> int:
        """Store a piece (``size``: its length before encoding) and return its id; inside a transaction."""

    def pieces_of(self, manifest: bytes) -> list[tuple[int, Buffer]]:
        """The pieces a manifest lists, in its order: ``(codec, stored bytes)`` (any bytes-like object);
        a piece missing from the store is left out (the joined size then tells)."""

    def has_content(self, sha: str) -> bool: ...

    def put_content(self, sha: str, size: int, manifest: bytes) -> None:
        """Record a content's manifest (a no-op when present); inside a transaction."""

    def manifest(self, sha: str) -> tuple[int, bytes] | None:
        """``(size, manifest)`` of a content, or ``None``."""

    # --- versions -------------------------------------------------------------

    def add_version(self, key: str, sha: str | None, time: str, kind: str, base: int | None,
                    local: int | None, remote: int | None, conflicts: int, engine: str | None = None) -> int:
        """Append a version to ``key``'s history (number = highest so far + 1); inside a transaction."""

    def set_on_disk(self, key: str, version: int | None) -> None:
        """Mark ``version`` as the file's content (``None``: the file is gone)."""

    def on_disk(self, key: str) -> Version | None: ...

    def versions(self, key: str, last: int | None) -> list[Version]:
        """Oldest first; with ``last``, the newest ``last`` only."""

    def version(self, key: str, number: int) -> Version | None: ...

    def latest_with(self, key: str, sha: str) -> Version | None: ...

    def tracked(self) -> list[str]:
        """Keys of the notebooks currently on disk, sorted."""

    def rename(self, old: str, new: str) -> None:
        """Move a history (versions, on-disk mark, declarations, pins) unless ``new`` has one; in a transaction."""

    def mark_lost(self, key: str, number: int) -> None:
        """A version whose content cannot be found any more: kind ``lost``, no longer on disk."""

    # --- declarations -------------------------------------------------------

    def declare(self, key: str, sha: str, base_sha: str, writer: str | None, time: str) -> None: ...

    def declared_base(self, key: str, sha: str) -> Version | None:
        """The newest version holding the base declared for content ``sha``."""

    def declared_writer(self, key: str, sha: str) -> str | None:
        """The writer named by the declaration of content ``sha``, if any."""

    def parents(self, key: str, sha: str) -> list[str]:
        """Contents ``sha`` was made from: declared bases, and the inputs of merges that produced it."""

    # --- the lineage index -------------------------------------------------------

    def record_cells(self, sha: str, cells: dict[str, str]) -> None: ...

    def sharing_cells(self, key: str, cells: dict[str, str], limit: int) -> list[Version]: ...

    # --- retention and collection --------------------------------------------------

    def all_versions(self) -> list[Version]:
        """Every version of every notebook."""

    def pins(self) -> set[tuple[str, int]]: ...

    def set_pin(self, key: str, number: int, pinned: bool) -> None: ...

    def declared_bases_since(self, time: str) -> set[tuple[str, str]]:
        """``(key, base sha)`` of declarations made at or after ``time``."""

    def drop_versions(self, which: Iterable[tuple[str, int]]) -> None:
        """Remove versions from histories; inside a transaction."""

    def contents(self) -> Iterator[tuple[str, int, bytes]]:
        """Every content: ``(sha, size, manifest)``."""

    def unreferenced_contents(self) -> list[str]:
        """Contents no version refers to."""

    def drop_contents(self, shas: Iterable[str]) -> None: ...

    def piece_sizes(self) -> dict[int, int]:
        """``id -> stored bytes`` of every piece."""

    def drop_pieces(self, ids: Iterable[int]) -> None: ...

    def iter_pieces(self) -> Iterator[tuple[int, bytes, int, bytes]]:
        """Every piece: ``(id, digest, codec, stored bytes)``, for fsck."""

    def setting(self, name: str) -> str | None: ...

    def set_setting(self, name: str, value: str) -> None: ...

    def disk_usage(self) -> int:
        """Bytes the store occupies where it lives."""

    def free_bytes(self) -> int:
        """Bytes the store occupies but does not use (given back by :meth:`compact`)."""

    def compact(self) -> None:
        """Give unused space back (after gc); outside a transaction."""

    def integrity(self) -> str:
        """The database's own consistency check: ``"ok"`` or what is wrong."""

    # --- copying a whole store to another backend (``nbmergesave store copy``) ----------

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of ``table`` (one of :data:`COPIED`), its columns in that order."""

    def put_rows(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows as :meth:`rows` gives them (rows already present are kept); inside a transaction."""


#: The tables a copy moves row for row, and their columns (contents and pieces are copied by
#: content, since piece and content ids are each backend's own; the lineage index is rebuilt).
COPIED: dict[str, tuple[str, ...]] = {
    "versions": ("path", "version", "sha256", "time", "kind", "base", "local", "remote", "conflicts", "engine"),
    "on_disk": ("path", "version"),
    "declarations": ("path", "sha256", "base_sha256", "writer", "time"),
    "pins": ("path", "version"),
    "settings": ("name", "value"),
}


def chunked(items: Sequence[object] | list[object], size: int = 500) -> Iterator[Sequence[object]]:
    """``items`` in slices of ``size`` (bound-parameter limits)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


class PieceCache:
    """Pieces a process has read, by id, for a backend whose piece ids are never reused (SQLite's
    ``AUTOINCREMENT``, PostgreSQL's ``BIGSERIAL``): a piece cached under its id is that piece for good,
    so reading a version again costs its manifest and one copy. Up to ``limit`` bytes (a mapped piece
    counts its length); when full, all are let go at once, into a new dict, so that a reader in another
    thread keeps the one it holds."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit = limit
        self._pieces: dict[int, tuple[int, Buffer]] = {}
        self._bytes = 0

    def get(self, ids: list[int], fetch: Callable[[list[int]], dict[int, tuple[int, Buffer]]]) -> list[tuple[int, Buffer]]:
        """The pieces ``ids`` in order, ``fetch``-ing those not held; a piece the store lacks is left out."""
        held = self._pieces
        missing = [i for i in ids if i not in held]
        if not missing:
            return [held[i] for i in ids]
        found = fetch(missing)
        size = sum(len(data) for _, data in found.values())
        if self._bytes + size > self.limit:
            self._pieces, self._bytes = {}, 0
        self._pieces.update(found)
        self._bytes += size
        parts = [found.get(i) or held.get(i) for i in ids]
        return [p for p in parts if p is not None]

    def drop(self, ids: Iterable[int]) -> None:
        """Let go of pieces this process removed (a removed file's space is freed once nothing maps it)."""
        for i in ids:
            piece = self._pieces.pop(i, None)
            self._bytes -= len(piece[1]) if piece else 0

    def clear(self) -> None:
        self._pieces, self._bytes = {}, 0
