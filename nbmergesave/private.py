"""Folders and files only their owner can read, whatever the umask; and URLs safe to print.

The rule, in one place:

- The state folder (daemon and Jupyter records, logs) is always private:
  folders ``0700``, files ``0600``. Records hold tokens.
- A version store is private too, unless the folder it is created in (the
  project root for ``ROOT/.nbmergesave``) is **group-writable**, setgid or
  not (``chmod 775 proj`` or ``chmod 2775 proj``): that folder's group can
  already write every notebook in it, so the store is made theirs too. The
  store folder gets the folder's group and ``2770`` (setgid, so what is made
  in it inherits the group), its files ``0660`` and that group; others get
  nothing. Without it, whoever saved first would own a store the rest of the
  group cannot open, and their saves could not be merged.
- A store that exists keeps its own choice: shared when its folder is
  group-writable, private otherwise (one made private by an older version is
  left so; :func:`denied_hint` says how to share it).

Modes (and the group) are set with ``chmod`` and ``chown`` after creation, so the umask of the process
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
import shlex
import stat
import urllib.parse
from pathlib import Path
from typing import NamedTuple

PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
SHARED_DIR, SHARED_FILE = 0o2770, 0o660


class StoreModes(NamedTuple):
    """How a store's folders and files are made: their modes, and the group they get (``None``: left as made)."""

    folder: int
    file: int
    group: int | None = None


PRIVATE_STORE = StoreModes(PRIVATE_DIR, PRIVATE_FILE)


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


def set_mode(path: str | os.PathLike[str], mode: int, group: int | None = None) -> None:
    """Give ``path`` exactly ``mode`` (and the group ``group``, when given) if it is ours. By path, never by
    opening it: closing any descriptor of a file drops the process's POSIX locks on it, and SQLite holds
    such locks on its database files.

    A member of ``group`` may give it to what they own; where that is refused (not a member), the file
    keeps the group it has. The group is set before the mode: changing it can clear a setgid bit.
    """
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        return
    if group is not None and st.st_gid != group:
        try:
            os.chown(path, -1, group)
        except PermissionError:
            pass
        st = os.stat(path)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def private_dir(folder: str | os.PathLike[str], *, mode: int = PRIVATE_DIR, group: int | None = None) -> Path:
    """Create ``folder`` (and missing parents) and give it exactly ``mode`` (default ``0700``), and
    ``group`` when given; returns it."""
    path = Path(folder)
    _make_parents(path)
    try:
        # ours alone until it has its group: the group it is born with (our own) never gets a look in
        path.mkdir(mode=mode & 0o700)
    except FileExistsError:
        if not path.is_dir():
            raise
    set_mode(path, mode, group)
    return path


def private_file(path: str | os.PathLike[str], *, mode: int = PRIVATE_FILE, group: int | None = None) -> Path:
    """Create ``path`` empty if missing (never truncating it) and give it exactly ``mode`` (default ``0600``),
    and ``group`` when given."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode & 0o700)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid():
            if group is not None and st.st_gid != group:
                try:
                    os.fchown(fd, -1, group)
                except PermissionError:
                    pass
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return p


def open_private_log(path: str | os.PathLike[str]) -> int:
    """A file descriptor appending to ``path``, created ``0600`` (a log handed to a child process)."""
    private_file(path)
    return os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))


def store_modes(folder: str | os.PathLike[str]) -> StoreModes:
    """How the store at ``folder`` makes its folders and files.

    A store that exists says it itself: shared (``2770``/``0660``, its own group) when its folder is
    group-writable, private (``0700``/``0600``) otherwise. A new one follows the folder it is made
    in: shared with that folder's group when that folder is group-writable, setgid or not.
    """
    path = Path(folder)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            st = os.stat(path.parent)
        except OSError:
            return PRIVATE_STORE
    except OSError:
        return PRIVATE_STORE
    if st.st_mode & stat.S_IWGRP:
        return StoreModes(SHARED_DIR, SHARED_FILE, st.st_gid)
    return PRIVATE_STORE


def _name(lookup: str, number: int) -> str:
    import grp
    import pwd

    try:
        return pwd.getpwuid(number).pw_name if lookup == "user" else grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def denied_hint(folder: str | os.PathLike[str]) -> str:
    """What to do about a store at ``folder`` this user may not use: the owner shares it with the group
    of the folder that holds it (the commands, ready to paste).

    >>> "chgrp -R" in denied_hint("/nonexistent/.nbmergesave")
    True
    """
    path = Path(folder).absolute()
    try:
        owner = _name("user", os.stat(path).st_uid)
    except OSError:
        owner = "its owner"
    try:
        group = _name("group", os.stat(path.parent).st_gid)
    except OSError:
        group = "GROUP"
    where = shlex.quote(str(path))
    return (f"the store is private to {owner}; to share it with the group '{group}' of the folder, {owner} "
            f"(or root) runs: chgrp -R {shlex.quote(group)} {where} && chmod -R g+rwX {where} && chmod g+s {where}")


def store_folder(folder: str | os.PathLike[str]) -> Path:
    """Create the store folder at ``folder`` and its lock file with the modes and group of :func:`store_modes`.

    The lock file is made here, so that in a team store every member can open
    it. The database is left to SQLite (opening and closing a descriptor of
    it here would drop a live connection's POSIX locks); the store gives it
    its mode by path once open, and SQLite gives ``-wal`` and ``-shm`` the
    database's mode.
    """
    modes = store_modes(folder)
    path = private_dir(folder, mode=modes.folder, group=modes.group)
    private_file(path / "save.lock", mode=modes.file, group=modes.group)
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
