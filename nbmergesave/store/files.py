"""The one place the store creates folders and files; who may read them is decided by :mod:`nbmergesave.private`.

A store is its owner's only (``0700``/``0600``; notebooks hold secrets),
unless it is made in a folder its group can write (setgid or not), where
that group gets it too (``2770``/``0660``, the folder's group): every folder
and file below, the database, SQLite's ``-wal`` and ``-shm`` (which SQLite
makes with the database's mode, and which inherit the setgid folder's
group), the lock file and the pieces' folders and files.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Collection, Iterable
from pathlib import Path

from .. import private
from ..errors import StoreDenied, StoreError


#: In every store folder: keeps the store out of git (``git status`` does not list it), as pytest's
#: and mypy's caches do. Written when the folder is made, and when an older store without it is opened.
GITIGNORE = ".gitignore"
GITIGNORE_TEXT = "# nbmergesave's version store: kept out of version control\n*\n"


def make_private_dir(where: Path) -> Path:
    """Create the store folder ``where`` (and its parents) with the store's mode, its lock file,
    and its ``.gitignore``."""
    try:
        folder = private.store_folder(where)
    except PermissionError as e:
        raise denied(where, e) from None
    except OSError as e:
        raise StoreError(f"cannot create the store at '{where}': {e.strerror}") from None
    keep_out_of_git(folder)
    return folder


_told: set[str] = set()  # stores whose denial this process has explained already
_told_lock = threading.Lock()


def denied(where: Path, error: BaseException | str) -> StoreDenied:
    """The error for a store this user may not open or write: another's, not shared.

    The first such error for a store in a process says what to do (the owner shares it with the
    folder's group); later ones say it was said, so a server that meets it on every save does not
    repeat the paragraph in its log each time.
    """
    why = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    key = str(Path(where).absolute())
    with _told_lock:
        first = key not in _told
        _told.add(key)
    if first:
        return StoreDenied(f"cannot use the store at '{where}': {why} (hint: {private.denied_hint(where)})")
    return StoreDenied(f"cannot use the store at '{where}': {why} (another user's; what to do was said above)")


def usable(where: Path) -> bool:
    """Whether this user may read and write the store at ``where`` (its folder and database files)."""
    kw = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if not os.access(where, os.R_OK | os.W_OK | os.X_OK, **kw):
        return False
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "save.lock"):
        path = where / name
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK, **kw):
            return False
    return True


def keep_out_of_git(folder: Path) -> None:
    """Write ``folder/.gitignore`` (``*``) unless it is there; a store we may not write to is left as it is."""
    path = folder / GITIGNORE
    if os.path.lexists(path):
        return  # one stat on each open; a file the user changed is theirs
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        return  # made meanwhile by another process, or a read-only store: nothing to do
    try:
        os.write(fd, GITIGNORE_TEXT.encode())
    finally:
        os.close(fd)
    modes = private.store_modes(folder)
    private.set_mode(path, modes.file, modes.group)


def make_private(path: Path) -> None:
    """Give a file the store created (the database and its journals) the store's file mode and group."""
    if path.exists():
        modes = private.store_modes(path.parent)
        private.set_mode(path, modes.file, modes.group)


def open_private(path: Path) -> int:
    """Open (creating) a file of the store for reading and writing with the store's file mode; returns the fd.
    (It is made with the store folder, so this creates it only if someone removed it.)"""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, private.store_modes(path.parent).file)
    except PermissionError as e:
        raise denied(path.parent, e) from None


class PieceFiles:
    """Large pieces as files of their own, ``pieces/ab/abcdef…`` by sha256, read through memory maps.

    A piece's file is written once, under a temporary name, flushed to disk
    and renamed into place, and never changed after: a file holds exactly the
    stored bytes of the piece its name says, so a map of it stays right for
    as long as the process keeps it, even after the file is removed (a
    removed file's pages live on until the map is closed; it is never
    truncated, which is what could fault a map). Reading a version joins
    views of these maps: the bytes are copied once, as reading a file does.
    """

    def __init__(self, location: Path) -> None:
        self.folder = location / "pieces"
        self._modes = private.store_modes(location)

    def _path(self, digest: bytes) -> Path:
        name = digest.hex()
        return self.folder / name[:2] / name

    def _folder(self, path: Path) -> None:
        for folder in (path.parent.parent, path.parent):
            if not folder.is_dir():
                try:
                    os.mkdir(folder, 0o700)  # ours alone until it has the store's group and mode
                except FileExistsError:
                    continue
                private.set_mode(folder, self._modes.folder, self._modes.group)

    def write(self, digest: bytes, data: bytes) -> None:
        """Put a piece's stored bytes in place, durably (called inside the write transaction)."""
        path = self._path(digest)
        self._folder(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        private.set_mode(tmp, self._modes.file, self._modes.group)  # by path, before anyone can see it
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename too, before the row that names the file commits
        finally:
            os.close(dfd)

    def map(self, digest: bytes) -> memoryview:
        """The piece's stored bytes, mapped (``FileNotFoundError`` when its file is gone)."""
        name = digest.hex()
        fd = os.open(f"{self.folder}/{name[:2]}/{name}", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError):  # a file system that cannot map, or an empty (damaged) file
            return memoryview(os.read(fd, 1 << 30))
        finally:
            os.close(fd)

    def read(self, digest: bytes) -> bytes:
        """The piece's stored bytes, read (``b""`` when its file is gone: fsck then finds it damaged)."""
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            return b""

    def remove(self, digests: Iterable[bytes]) -> None:
        for digest in digests:
            self._path(digest).unlink(missing_ok=True)

    def sweep(self, named: Collection[bytes]) -> None:
        """Remove every file no row names, and temporary files: what a writer that crashed or rolled
        back left behind (called under the write lock, so no writer is half way now)."""
        if not self.folder.is_dir():
            return
        for folder in self.folder.iterdir():
            for path in folder.iterdir():
                try:
                    keep = bytes.fromhex(path.name) in named
                except ValueError:  # a temporary file
                    keep = False
                if not keep:
                    path.unlink(missing_ok=True)

    def disk_usage(self) -> int:
        total = 0
        for folder in self.folder.iterdir() if self.folder.is_dir() else ():
            for path in folder.iterdir():
                try:
                    total += path.stat().st_size
                except FileNotFoundError:  # removed by a collection meanwhile
                    continue
        return total
