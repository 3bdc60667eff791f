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

import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import files, pieces
from .backend import Backend, Version
from .retention import Retention, parse_time

#: Per thread: the stores (by id) whose save lock the thread holds (:meth:`Store.save_lock`).
_HELD = threading.local()

STORE_DIR = ".nbmergesave"
ENV_STORE = "NBMERGESAVE_STORE"
GC_EVERY = timedelta(days=1)  # automatic collections (watcher, daemon) at most this often
UPGRADE_BATCH = 32  # old blobs turned into pieces per transaction

__all__ = ["ENV_STORE", "STORE_DIR", "Backend", "GcReport", "Retention", "Store", "StoreStats", "Version", "sha256"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class GcReport:
    """What a collection removed (or, with ``dry_run``, would remove)."""

    dry_run: bool
    versions_removed: int
    versions_kept: int
    contents_removed: int
    pieces_removed: int
    bytes_freed: int  # on disk, measured (dry run: the pieces' bytes plus space already unused)
    retention: Retention

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "retention": asdict(self.retention)}


@dataclass(frozen=True)
class StoreStats:
    """The size of a store and what a collection would give back."""

    location: str
    size_bytes: int
    notebooks: int
    versions: int
    contents: int
    pieces: int
    reclaimable_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Prepared:
    parts: list[bytes]
    digests: list[bytes]
    encoded: dict[bytes, tuple[int, bytes]]


def _cut(data: bytes) -> _Prepared:
    parts = pieces.split(data)
    return _Prepared(parts, [hashlib.sha256(p).digest() for p in parts], {})


def _prepare(backend: Backend, data: bytes, cut: _Prepared | None = None) -> _Prepared:
    """Cut ``data`` (unless ``cut`` is that cut, done already) and encode the pieces the store does not hold yet
    (outside any transaction)."""
    cut = cut or _cut(data)
    known = backend.piece_ids(set(cut.digests))
    cut.encoded.update((d, pieces.encode(p)) for d, p in zip(cut.digests, cut.parts) if d not in known)
    return cut


def _put_content(backend: Backend, sha: str, data: bytes, prepared: _Prepared | None = None) -> None:
    """Store content ``data`` (digest ``sha``) as a manifest over pieces; inside a transaction.

    What was prepared before the transaction is checked again inside it: a piece
    collected meanwhile is stored again, so no manifest ever points at nothing.
    """
    prepared = prepared or _cut(data)
    ids = backend.piece_ids(set(prepared.digests))
    for digest, part in zip(prepared.digests, prepared.parts):
        if digest not in ids:
            codec, stored = prepared.encoded.get(digest) or pieces.encode(part)
            ids[digest] = backend.put_piece(digest, codec, len(part), stored)
    backend.put_content(sha, len(data), pieces.pack_ids([ids[d] for d in prepared.digests]))


def _upgrade(backend: Any) -> None:
    """Turn a store of nbmergesave 0.1 (one zlib blob per content) into pieces, a batch per transaction."""
    from .sqlite import legacy_decompress

    while True:
        with backend.transaction():
            batch = backend.legacy_batch(UPGRADE_BATCH)
            for sha, packed in batch:
                data = legacy_decompress(packed)
                if data is not None and sha256(data) == sha and not backend.has_content(sha):
                    _put_content(backend, sha, data)
                # a blob already damaged is dropped too: fsck reports its versions, as before
                backend.drop_legacy_blob(sha)
        if not batch:
            break
    backend.finish_upgrade()


class Store:
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
                    _put_content(self.backend, digest, data, prepared)
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
        given = _Prepared(cut[0], cut[1], {}) if cut is not None else None
        prepared = given
        if data is not None and not self._batches and not self.backend.has_content(digest):  # type: ignore[arg-type]
            prepared = _prepare(self.backend, data, given)  # in a batch, the transaction is ours already: cut once, inside
        with self.backend.transaction():
            if data is not None and not self.backend.has_content(digest):  # type: ignore[arg-type]
                _put_content(self.backend, digest, data, prepared)  # type: ignore[arg-type]
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

    # --- declarations: writers saying which version a save was made from ----

    def declare(self, path: str | os.PathLike[str], sha: str, base_sha: str, writer: str | None = None) -> None:
        with self.backend.transaction():
            self.backend.declare(self.key(path), sha, base_sha, writer, _now())

    def declared_base(self, path: str | os.PathLike[str], sha: str) -> Version | None:
        """The stored version a declaration names as the base of content ``sha``, if both are known."""
        return self.backend.declared_base(self.key(path), sha)

    def declared_writer(self, path: str | os.PathLike[str], sha: str) -> str | None:
        """Who declared content ``sha`` of ``path`` (``"jupyter"``, ``"git"``, a tool's name), if anyone did."""
        return self.backend.declared_writer(self.key(path), sha)

    def descends(self, path: str | os.PathLike[str], sha: str, ancestor: str, *, steps: int = 64) -> bool:
        """Whether content ``sha`` was made, through declarations and recorded merges, from ``ancestor``."""
        key, seen, frontier = self.key(path), set(), [sha]
        while frontier and len(seen) < steps:
            current = frontier.pop()
            if current == ancestor:
                return True
            if current in seen:
                continue
            seen.add(current)
            frontier += self.backend.parents(key, current)
        return False

    # --- the base search's index: which contents hold which cells ------------

    def record_cells(self, sha: str, cells: dict[str, str]) -> None:
        """Note that content ``sha`` holds, for each cell key, a source with that digest (once per content)."""
        self.backend.record_cells(sha, cells)

    def sharing_cells(self, path: str | os.PathLike[str], cells: dict[str, str], limit: int) -> list[Version]:
        """The versions of ``path`` with the most cells identical to ``cells`` (newest first at a tie)."""
        if not cells:
            return []
        return self.backend.sharing_cells(self.key(path), cells, limit)

    def latest_with(self, path: str | os.PathLike[str], sha: str) -> Version | None:
        return self.backend.latest_with(self.key(path), sha)

    # --- retention, pins, collection ---------------------------------------------

    def retention(self) -> Retention:
        """The store's retention rule (the default until one is saved with :meth:`set_retention`)."""
        return Retention.from_json(self.backend.setting("retention"))

    def set_retention(self, policy: Retention) -> None:
        self.backend.set_setting("retention", policy.to_json())

    def pin(self, path: str | os.PathLike[str], version: int, pinned: bool = True) -> Version:
        """Keep ``version`` of ``path`` whatever the retention rule says (``pinned=False`` lets it go again)."""
        found = self.get(path, version)
        with self.backend.transaction():
            self.backend.set_pin(found.path, found.version, pinned)
        return found

    def pinned(self, path: str | os.PathLike[str] | None = None) -> list[tuple[str, int]]:
        key = self.key(path) if path is not None else None
        return sorted(p for p in self.backend.pins() if key is None or p[0] == key)

    def _protected(self, policy: Retention, now: datetime) -> set[tuple[str, int]]:
        since = (now - timedelta(days=policy.keep_all)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        keep = set(self.backend.pins())
        versions = self.backend.all_versions()
        declared = self.backend.declared_bases_since(since)
        for key in self.backend.tracked():
            v = self.backend.on_disk(key)
            if v is not None:
                keep.add((v.path, v.version))
        for v in versions:
            if v.kind == "merged" and v.time >= since:
                keep.update((v.path, n) for n in (v.version, v.base, v.local, v.remote) if n is not None)
            if v.sha256 is not None and (v.path, v.sha256) in declared:
                keep.add((v.path, v.version))
        return keep

    def _plan(self, policy: Retention, now: datetime) -> list[Version]:
        from .retention import drop

        return drop(self.backend.all_versions(), policy, now=now, protected=self._protected(policy, now))

    def _unreferenced(self, dropped: set[tuple[str, int]] | None = None) -> tuple[list[str], dict[int, int]]:
        """The contents no version needs (once the versions ``dropped`` are gone), and ``id -> bytes`` of the
        pieces no other content uses."""
        contents = list(self.backend.contents())  # every manifest, read once
        if dropped is None:
            gone = self.backend.unreferenced_contents()
        else:
            live = {v.sha256 for v in self.backend.all_versions() if v.sha256 is not None and
                    (v.path, v.version) not in dropped}
            gone = [sha for sha, _, _ in contents if sha not in live]
        gone_set, needed = set(gone), set()
        for sha, _, manifest in contents:
            if sha not in gone_set:
                needed.update(pieces.unpack_ids(manifest))
        sizes = self.backend.piece_sizes()
        return gone, {i: n for i, n in sizes.items() if i not in needed}

    def gc(self, policy: Retention | None = None, *, dry_run: bool = False, now: datetime | None = None,
           progress: Callable[[str], None] | None = None) -> GcReport:
        """Thin old versions by ``policy`` (default: the store's) and collect what no version needs.

        Safe while writers run: versions are dropped in one transaction, then
        contents and pieces no remaining version refers to are found and
        removed in a second one; both are serialised with every writer's
        transaction, so a save landing meanwhile either commits first (and its
        pieces count as needed) or finds the pieces gone and stores them again.
        A crash at any point leaves a consistent store (the next gc finishes
        the job).

        >>> # report = store.gc(Retention(keep_all=14), dry_run=True); report.bytes_freed
        """
        policy = policy or self.retention()
        now = now or datetime.now(timezone.utc)
        step = progress or (lambda _: None)
        if dry_run:
            plan = self._plan(policy, now)
            contents, orphan = self._unreferenced({(v.path, v.version) for v in plan})
            total = len(self.backend.all_versions())
            return GcReport(True, len(plan), total - len(plan), len(contents), len(orphan),
                            sum(orphan.values()) + self.backend.free_bytes(), policy)
        before = self.backend.disk_usage()
        with self.backend.transaction():
            plan = self._plan(policy, now)
            step(f"removing {len(plan)} versions")
            self.backend.drop_versions((v.path, v.version) for v in plan)
        with self.backend.transaction():
            contents, orphan = self._unreferenced()
            step(f"removing {len(contents)} contents and {len(orphan)} pieces")
            self.backend.drop_contents(contents)
            self.backend.drop_pieces(orphan)
        step("compacting")
        self.backend.compact()
        self.backend.set_setting("last_gc", _now())
        return GcReport(False, len(plan), len(self.backend.all_versions()), len(contents), len(orphan),
                        max(0, before - self.backend.disk_usage()), policy)

    def gc_due(self, now: datetime | None = None) -> bool:
        """Whether an automatic collection is due (none in the last :data:`GC_EVERY`)."""
        last = self.backend.setting("last_gc")
        return last is None or (now or datetime.now(timezone.utc)) - parse_time(last) >= GC_EVERY

    def maybe_gc(self, now: datetime | None = None) -> GcReport | None:
        """Collect with the store's retention rule if :meth:`gc_due`; what the watcher and the daemon call."""
        if not self.gc_due(now):
            return None
        return self.gc(now=now)

    def stats(self) -> StoreStats:
        """The store's size, what it holds, and the bytes a collection would free now."""
        versions = self.backend.all_versions()
        report = self.gc(dry_run=True)
        return StoreStats(str(self.location), self.backend.disk_usage(), len({v.path for v in versions}),
                          len(versions), sum(1 for _ in self.backend.contents()), len(self.backend.piece_sizes()),
                          report.bytes_freed)

    # --- checking ---------------------------------------------------------------------

    def fsck(self, *, repair: bool = True) -> dict[str, Any]:
        """Check the store; with ``repair``, mend what can be mended.

        Runs the database's integrity check, verifies every piece against its
        sha256 and every manifest (its pieces present, the bytes they join to
        matching the content's sha256), and finds versions whose content is
        missing or damaged. A damaged piece is dropped; a content that cannot
        be read is taken back from the notebook on disk when the file still
        holds those bytes, otherwise its versions are marked ``lost`` (and are
        no longer the current one). Returns what was found and done.
        """
        report: dict[str, Any] = {"integrity": self.backend.integrity(), "contents": 0, "pieces": 0,
                                  "damaged": [], "missing": [], "restored": [], "lost": []}
        bad_pieces = []
        for i, digest, codec, stored in self.backend.iter_pieces():
            report["pieces"] += 1
            try:
                ok = hashlib.sha256(pieces.decode(codec, stored)).digest() == digest
            except Exception:  # zlib.error, unknown codec
                ok = False
            if not ok:
                bad_pieces.append(i)
                report["damaged"].append(f"piece {digest.hex()[:12]}")
        unreadable = set()
        for sha, _, _ in list(self.backend.contents()):
            report["contents"] += 1
            try:
                ok = sha256(self.blob(sha)) == sha
            except StoreError:
                ok = False
            if not ok:
                unreadable.add(sha)
                report["damaged"].append(f"content {sha[:12]}")
        with self.backend.transaction():
            if repair:
                self.backend.drop_pieces(bad_pieces)
                self.backend.drop_contents(unreadable)
            present = {sha for sha, _, _ in self.backend.contents()} - unreadable
            for v in self.backend.all_versions():
                if v.sha256 is None or v.kind == "lost" or v.sha256 in present:
                    continue
                report["missing"].append(f"{v.path} v{v.version}")
                if not repair:
                    continue
                try:
                    data = (self.root / v.path).read_bytes()
                except OSError:
                    data = b""
                if sha256(data) == v.sha256:
                    _put_content(self.backend, v.sha256, data)
                    present.add(v.sha256)
                    report["restored"].append(f"{v.path} v{v.version}")
                else:
                    self.backend.mark_lost(v.path, v.version)
                    report["lost"].append(f"{v.path} v{v.version}")
        report["ok"] = report["integrity"] == "ok" and not report["damaged"] and not report["missing"]
        return report
