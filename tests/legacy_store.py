# nbmergesave 0.1's version store (git show 5adfcb3:nbmergesave/store.py), verbatim but for
# the errors import: one zlib blob per content in table "blobs". Used to write stores in the old
# layout (the upgrade test) and to measure that layout beside the new one (benchmarks/bench_store.py).
"""The version store: every notebook version the tool sees, so nothing is ever lost.

One store per watched root, in ``ROOT/.nbmergesave/`` (``NBMERGESAVE_STORE``
overrides): one SQLite database in WAL mode holding the index of versions and
the content-addressed, zlib-compressed blobs, keyed by the sha256 of the
file's bytes, so identical content is kept once. A blob and its index row
are written in one transaction: after a crash both are there or neither.
(Blobs in SQLite rather than one file each: the initial scan of 10,000
notebooks spent most of its time creating files.) Store files are readable by
their owner only (notebooks hold secrets).

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
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nbmergesave.errors import StoreError

STORE_DIR = ".nbmergesave"
ENV_STORE = "NBMERGESAVE_STORE"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    base INTEGER, local INTEGER, remote INTEGER,
    conflicts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (path, version)
);
CREATE INDEX IF NOT EXISTS versions_by_content ON versions (path, sha256);
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cell_sources (
    sha256 TEXT NOT NULL,
    cell TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (sha256, cell)
);
CREATE INDEX IF NOT EXISTS cell_sources_by_source ON cell_sources (source);
CREATE TABLE IF NOT EXISTS on_disk (
    path TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS declarations (
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    base_sha256 TEXT NOT NULL,
    writer TEXT,
    time TEXT NOT NULL,
    PRIMARY KEY (path, sha256)
);
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Version:
    """One stored version of one notebook; ``sha256`` is ``None`` for a deletion."""

    path: str
    version: int
    sha256: str | None
    time: str
    kind: str
    base: int | None = None
    local: int | None = None
    remote: int | None = None
    conflicts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    """A root's version store. Paths are kept relative to the root, with '/'."""

    def __init__(self, root: Path, location: Path) -> None:
        self.root = root.resolve()
        self.location = location
        self._db = sqlite3.connect(location / "index.sqlite", timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            if (location / name).exists():
                os.chmod(location / name, 0o600)

    @classmethod
    def open(cls, root: str | os.PathLike[str], location: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating if needed) the store of ``root``: ``location``, ``$NBMERGESAVE_STORE``, or ``ROOT/.nbmergesave``."""
        root = Path(root)
        where = Path(location or os.environ.get(ENV_STORE) or root / STORE_DIR)
        old = os.umask(0o077)
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store at '{where}': {e.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(where, 0o700)
        return cls(root, where)

    @classmethod
    def find(cls, path: str | os.PathLike[str]) -> Store:
        """The store that holds ``path``: walk up from it to a folder with ``.nbmergesave/``."""
        start = Path(path).absolute()
        if os.environ.get(ENV_STORE):
            root = next((p for p in start.parents if (p / STORE_DIR).is_dir()), start.parent)
            return cls.open(root, os.environ[ENV_STORE])
        for folder in start.parents:
            if (folder / STORE_DIR / "index.sqlite").exists():
                return cls.open(folder)
        raise StoreError(f"no version store holds '{path}' (hint: run 'nbmergesave watch' on its folder first)")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    # --- blobs ---------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` once under its sha256 (zlib-compressed); return the digest."""
        digest = sha256(data)
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?)", (digest, zlib.compress(data, 1)))
        return digest

    def blob(self, digest: str) -> bytes:
        row = self._db.execute("SELECT data FROM blobs WHERE sha256 = ?", (digest,)).fetchone()
        if row is None:
            raise StoreError(f"blob {digest[:12]} is missing from the store (hint: nbmergesave fsck)")
        try:
            return zlib.decompress(row[0])
        except zlib.error:
            raise StoreError(f"blob {digest[:12]} is damaged (hint: nbmergesave fsck)") from None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Record many versions in one transaction (one commit, one fsync), as the initial scan does."""
        with self._transaction():
            yield

    # --- versions ----------------------------------------------------------

    def add(self, path: str | os.PathLike[str], data: bytes | None, kind: str, *, on_disk: bool = True,
            base: int | None = None, local: int | None = None, remote: int | None = None, conflicts: int = 0) -> Version:
        """Record a version (the blob first, then the index row); ``data=None`` records a deletion."""
        key = self.key(path)
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._transaction():  # blob and index row commit together
            digest = self.put_blob(data) if data is not None else None
            number = self._db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE path = ?", (key,)).fetchone()[0]
            self._db.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, number, digest, now, kind, base, local, remote, conflicts),
            )
            if data is None:
                self._db.execute("DELETE FROM on_disk WHERE path = ?", (key,))
            elif on_disk:
                self._db.execute("INSERT OR REPLACE INTO on_disk VALUES (?, ?)", (key, number))
        return Version(key, number, digest, now, kind, base, local, remote, conflicts)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._db.in_transaction:  # inside batch() or add(): one commit for all
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_on_disk(self, path: str | os.PathLike[str], version: int) -> None:
        """Mark a stored version as the file's current content."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO on_disk VALUES (?, ?)", (self.key(path), version))

    def history(self, path: str | os.PathLike[str], last: int | None = None) -> list[Version]:
        """Every version of ``path``, oldest first; with ``last``, only the newest ``last`` of them."""
        rows = self._db.execute("SELECT * FROM (SELECT * FROM versions WHERE path = ? ORDER BY version DESC LIMIT ?)"
                                " ORDER BY version", (self.key(path), -1 if last is None else last))
        return [Version(*row) for row in rows]

    def get(self, path: str | os.PathLike[str], version: int) -> Version:
        row = self._db.execute("SELECT * FROM versions WHERE path = ? AND version = ?", (self.key(path), version)).fetchone()
        if row is None:
            raise StoreError(f"'{path}' has no version {version} (hint: 'nbmergesave history {path}' lists them)")
        return Version(*row)

    def content(self, version: Version) -> bytes:
        if version.sha256 is None:
            raise StoreError(f"version {version.version} of '{version.path}' records a deletion; it has no content")
        return self.blob(version.sha256)

    def on_disk(self, path: str | os.PathLike[str]) -> Version | None:
        """The version last known to be the file's content."""
        row = self._db.execute(
            "SELECT v.* FROM on_disk d JOIN versions v ON v.path = d.path AND v.version = d.version WHERE d.path = ?",
            (self.key(path),),
        ).fetchone()
        return Version(*row) if row else None

    def tracked(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT path FROM on_disk ORDER BY path")]

    def rename(self, old: str | os.PathLike[str], new: str | os.PathLike[str]) -> None:
        """History moves with the file."""
        a, b = self.key(old), self.key(new)
        with self._transaction():
            if self._db.execute("SELECT 1 FROM versions WHERE path = ?", (b,)).fetchone():
                return  # the new name has a history of its own; keep both
            self._db.execute("UPDATE versions SET path = ? WHERE path = ?", (b, a))
            self._db.execute("UPDATE on_disk SET path = ? WHERE path = ?", (b, a))
            self._db.execute("UPDATE declarations SET path = ? WHERE path = ?", (b, a))

    @property
    def save_lock_path(self) -> Path:
        return self.location / "save.lock"

    @contextmanager
    def save_lock(self) -> Iterator[None]:
        """Exclusive across processes (flock on ``save.lock``): held by every writer of ours
        (watcher, Jupyter extension, `nbmergesave save`) from reading a notebook to replacing it,
        so none of them replaces a file between another's read and write."""
        import fcntl

        fd = os.open(self.save_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- declarations: writers saying which version a save was made from ----

    def declare(self, path: str | os.PathLike[str], sha: str, base_sha: str, writer: str | None = None) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO declarations VALUES (?, ?, ?, ?, ?)",
                             (self.key(path), sha, base_sha, writer, now))

    def declared_base(self, path: str | os.PathLike[str], sha: str) -> Version | None:
        """The stored version a declaration names as the base of content ``sha``, if both are known."""
        row = self._db.execute(
            "SELECT v.* FROM declarations d JOIN versions v ON v.path = d.path AND v.sha256 = d.base_sha256 "
            "WHERE d.path = ? AND d.sha256 = ? ORDER BY v.version DESC LIMIT 1",
            (self.key(path), sha),
        ).fetchone()
        return Version(*row) if row else None

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
            frontier += [row[0] for row in self._db.execute(
                "SELECT base_sha256 FROM declarations WHERE path = ? AND sha256 = ? UNION "
                "SELECT p.sha256 FROM versions m JOIN versions p ON p.path = m.path AND p.version IN (m.local, m.remote) "
                "WHERE m.path = ? AND m.sha256 = ? AND m.kind = 'merged' AND p.sha256 IS NOT NULL",
                (key, current, key, current))]
        return False

    # --- the base search's index: which contents hold which cells ------------

    def record_cells(self, sha: str, cells: dict[str, str]) -> None:
        """Note that content ``sha`` holds, for each cell key, a source with that digest (once per content)."""
        if self._db.execute("SELECT 1 FROM cell_sources WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
            return  # a read, where inserting again would be a write transaction for nothing
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO cell_sources VALUES (?, ?, ?)",
                                 [(sha, cell, source) for cell, source in cells.items()])

    def sharing_cells(self, path: str | os.PathLike[str], cells: dict[str, str], limit: int) -> list[Version]:
        """The versions of ``path`` with the most cells identical to ``cells`` (newest first at a tie)."""
        if not cells:
            return []
        pairs = " OR ".join("(c.cell = ? AND c.source = ?)" for _ in cells)
        rows = self._db.execute(
            f"SELECT v.* FROM (SELECT c.sha256, count(*) AS n FROM cell_sources c WHERE {pairs} GROUP BY c.sha256) m "
            "JOIN versions v ON v.sha256 = m.sha256 AND v.path = ? ORDER BY m.n DESC, v.version DESC LIMIT ?",
            [x for pair in cells.items() for x in pair] + [self.key(path), limit])
        return [Version(*row) for row in rows]

    def latest_with(self, path: str | os.PathLike[str], sha: str) -> Version | None:
        row = self._db.execute(
            "SELECT * FROM versions WHERE path = ? AND sha256 = ? ORDER BY version DESC LIMIT 1", (self.key(path), sha)
        ).fetchone()
        return Version(*row) if row else None

    def fsck(self, *, repair: bool = True) -> dict[str, Any]:
        """Check the store; with ``repair``, mend what can be mended.

        Runs SQLite's integrity check, verifies every blob against its sha256,
        and finds versions whose blob is missing. A damaged blob is dropped; a
        missing one is taken back from the notebook on disk when the file still
        holds those bytes, otherwise its version is marked ``lost`` (and is no
        longer the current one). Returns what was found and done.
        """
        report: dict[str, Any] = {"integrity": self._db.execute("PRAGMA integrity_check").fetchone()[0],
                                  "blobs": 0, "damaged": [], "missing": [], "restored": [], "lost": []}
        for digest, data in self._db.execute("SELECT sha256, data FROM blobs").fetchall():
            report["blobs"] += 1
            try:
                ok = sha256(zlib.decompress(data)) == digest
            except zlib.error:
                ok = False
            if not ok:
                report["damaged"].append(digest)
        with self._transaction():
            if repair:
                for digest in report["damaged"]:
                    self._db.execute("DELETE FROM blobs WHERE sha256 = ?", (digest,))
            rows = self._db.execute(
                "SELECT path, version, sha256 FROM versions WHERE sha256 IS NOT NULL AND kind != 'lost' "
                "AND sha256 NOT IN (SELECT sha256 FROM blobs)").fetchall()
            for path, version, digest in rows:
                report["missing"].append(f"{path} v{version}")
                if not repair:
                    continue
                try:
                    data = (self.root / path).read_bytes()
                except OSError:
                    data = b""
                if sha256(data) == digest:
                    self.put_blob(data)
                    report["restored"].append(f"{path} v{version}")
                else:
                    self._db.execute("UPDATE versions SET kind = 'lost' WHERE path = ? AND version = ?", (path, version))
                    self._db.execute("DELETE FROM on_disk WHERE path = ? AND version = ?", (path, version))
                    report["lost"].append(f"{path} v{version}")
        report["ok"] = report["integrity"] == "ok" and not report["damaged"] and not report["missing"]
        return report
