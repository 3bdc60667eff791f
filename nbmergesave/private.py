"""Folders and files only their owner can read, whatever the umask; and URLs safe to print.

The rule, in one place:

- The state folder (daemon and Jupyter records, logs) is always private:
  folders ``0700``, files ``0600``. Records hold tokens.
- A version store is private too, unless it is shared on purpose: when the
  folder that holds the store (the project root for ``ROOT/.nbmergesave``),
  or the store folder itself, is **group-writable and setgid** — the usual
  way a team folder is set up (``chgrp team proj && chmod 2770 proj``) — the
  store folder gets ``2770`` and its files ``0660``: the group the setgid bit
  hands down keeps read and write access, others get nothing. Group-writable
  alone is not enough (a umask of 002 makes every folder so); setgid says
  the sharing is deliberate.

Modes are set with ``chmod`` after creation, so the umask of the process
(even ``000``) never widens them, and the umask is never changed (it is
process-wide, and the Jupyter server runs threads). Files and folders owned
by another user (a teammate's, in a shared store) are left as they are.

>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     oct(private_dir(pathlib.Path(tmp) / "state").stat().st_mode & 0o7777)
'0o700'
>>> redact_url("postgresql://me:s3cret@db.example.org/notes")
'postgresql://me:***@db.example.org/notes'
"""

from __future__ import annotations

import os
import re
import stat
import urllib.parse
from pathlib import Path

PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
SHARED_DIR, SHARED_FILE = 0o2770, 0o660


def is_team_folder(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` is group-writable and setgid: a folder shared with a group on purpose."""
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return False
    return bool(mode & stat.S_ISGID) and bool(mode & stat.S_IWGRP)


def _make_parents(folder: Path) -> None:
    missing = []
    parent = folder.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o755)  # 0o755 & ~umask: never writable by others, whatever the umask
        except FileExistsError:
            pass


def set_mode(path: str | os.PathLike[str], mode: int) -> None:
    """Give ``path`` exactly ``mode`` if it is ours. By path, never by opening it: closing any descriptor
    of a file drops the process's POSIX locks on it, and SQLite holds such locks on its database files."""
    st = os.stat(path)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def private_dir(folder: str | os.PathLike[str], *, mode: int = PRIVATE_DIR) -> Path:
    """Create ``folder`` (and missing parents) and give it exactly ``mode`` (default ``0700``); returns it."""
    path = Path(folder)
    _make_parents(path)
    try:
        path.mkdir(mode=mode & 0o777)  # at most ``mode`` from the start; no window where it is wider
    except FileExistsError:
        if not path.is_dir():
            raise
    set_mode(path, mode)
    return path


def private_file(path: str | os.PathLike[str], *, mode: int = PRIVATE_FILE) -> Path:
    """Create ``path`` empty if missing (never truncating it) and give it exactly ``mode`` (default ``0600``)."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode & 0o777)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return p


def open_private_log(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to ``path``, created ``0600`` (a log handed to a child process)."""
    private_file(path)
    return os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))


def store_modes(folder: str | os.PathLike[str]) -> tuple[int, int]:
    """(folder mode, file mode) for a store at ``folder``: shared with the group only in a team folder."""
    path = Path(folder)
    shared = is_team_folder(path.parent) or is_team_folder(path)
    return (SHARED_DIR, SHARED_FILE) if shared else (PRIVATE_DIR, PRIVATE_FILE)


def store_folder(folder: str | os.PathLike[str]) -> Path:
    """Create the store folder at ``folder`` and its lock file with the modes of :func:`store_modes`.

    The lock file is made here, so that in a team store every member can open
    it. The database is left to SQLite (opening and closing a descriptor of
    it here would drop a live connection's POSIX locks); the store gives it
    its mode by path once open, and SQLite gives ``-wal`` and ``-shm`` the
    database's mode.
    """
    dir_mode, file_mode = store_modes(folder)
    path = private_dir(folder, mode=dir_mode)
    private_file(path / "save.lock", mode=file_mode)
    return path


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs, status output and error messages.

    >>> redact_url("postgresql://ann:pw@host:5432/db?sslmode=require")
    'postgresql://ann:***@host:5432/db?sslmode=require'
    >>> redact_url("postgresql://host/db?password=pw&user=ann")
    'postgresql://host/db?password=***&user=ann'
    >>> redact_url("host=db dbname=notes password='p w'")
    'host=db dbname=notes password=***'
    """
    if "://" not in url:  # a libpq keyword string: "host=db dbname=notes password=pw"
        return re.sub(r"(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unprintable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = userinfo.split(":", 1)[0] + ":***@" + host
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in ("password", "passwd", "pass") for k, _ in pairs):
            query = "&".join(f"{k}=***" if k.lower() in ("password", "passwd", "pass") else
                             f"{urllib.parse.quote(k)}={urllib.parse.quote(v)}" for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def state_dir() -> Path:
    """The user's state folder (daemon and Jupyter records, logs, pause markers): ``$NBMERGESAVE_HOME``,
    else ``$XDG_STATE_HOME/nbmergesave``, else ``~/.local/state/nbmergesave``. Never in a project."""
    home = os.environ.get("NBMERGESAVE_HOME")
    if home:
        return Path(home)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "nbmergesave"
