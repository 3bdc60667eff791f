"""When the configured store is away: a local spool that keeps every save merged, and the catch-up when it is back.

A store can be away at start or mid-run: the PostgreSQL server is stopped or
killed, its port closed, the password wrong, the ``psycopg`` driver not
installed; an embedded store whose folder became read-only or full, or
belongs to another user. Merging must not depend on it. While it is away,
:func:`open_or_spool` hands out a :class:`Spool` instead: an embedded
(SQLite) store in the user's state folder (never in the project), with the
same root and so the same notebook keys, holding what this host served,
saved and saw, so exact bases (the hash a tab sends) and inferred bases keep
working, and its ``flock`` serialises the saves of this host.

When the store answers again, :func:`catch_up` replays the spooled versions
into it, notebook by notebook, oldest first, with their times, kinds and
merge inputs (version numbers remapped), skipping contents the notebook's
history held by then already (content the store got only later, from another
host recording the file meanwhile, is added at its own time); one catch-up at
a time (an exclusive ``flock`` on the spool, and the store's save lock of each
notebook while it is replayed);
then the spool is emptied. Until a catch-up has succeeded, saves keep going
to the spool, so the store's history stays in the order things happened.

The spool is bounded: above :data:`MAX_BYTES` (512 MiB, or
``$NBMERGESAVE_SPOOL_MAX_MB``) it keeps only the newest
:data:`KEEP_WHEN_FULL` versions of each notebook (the files on disk, which
hold every merged edit, are never touched by this).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import StoreDenied, StoreError
from . import ENV_STORE, STORE_DIR, Store

SPOOL_DIR = "spool"
MAX_BYTES = int(float(os.environ.get("NBMERGESAVE_SPOOL_MAX_MB", "512") or 512) * 2 ** 20)
KEEP_WHEN_FULL = 100
RETRY_EVERY = 3.0  # seconds: while away, the configured store is tried again at most this often
CATCH_UP_WAIT = 2.0  # seconds to wait for another process's catch-up (or a spool in use) before spooling on

_log = logging.getLogger("nbmergesave")


@dataclass(frozen=True)
class Target:
    """The configured store of a notebook, named without opening it."""

    ident: str  # a digest of the store and its root: the spool's folder name
    shown: str  # for people: the URL without its password, or the store's folder
    root: Path  # what notebook keys are relative to


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def _sqlite_place(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(store folder, root)`` of the embedded store :func:`nbmergesave.sync.open_store` would open for ``path``."""
    start = Path(path).absolute()
    if os.environ.get(ENV_STORE):
        root = next((p for p in start.parents if (p / STORE_DIR).is_dir()), start.parent)
        return Path(os.environ[ENV_STORE]), root
    for folder in start.parents:
        if _there(folder / STORE_DIR / "index.sqlite"):
            return folder / STORE_DIR, folder
    return start.parent / STORE_DIR, start.parent


def _there(path: Path) -> bool:
    """Whether ``path`` exists; one we may not look at (another user's private store) is there all the same."""
    try:
        return path.exists()
    except PermissionError:
        return True


def target_of(path: str | os.PathLike[str]) -> Target:
    """The store configured for ``path`` (a :class:`StoreError` when a PostgreSQL store cannot name its project:
    a setting to fix, not an outage)."""
    from ..private import redact_url
    from .where import project_root, store_url

    url = store_url()
    if url is not None:
        root = project_root(path)
        shown = redact_url(url)
        return Target(_digest("postgresql", shown, str(root)), shown, root)
    location, root = _sqlite_place(path)
    shown = os.path.realpath(location)
    return Target(_digest("sqlite", shown), shown, root)


def state_folder() -> Path:
    from ..daemon import state_dir

    return state_dir() / SPOOL_DIR


def spool_folder(target: Target) -> Path:
    return state_folder() / target.ident


# --- outages ------------------------------------------------------------------------------------


@dataclass
class Outage:
    """A store this process found away: since when, why, and when to try it again."""

    store: str
    reason: str
    since: str  # ISO 8601, UTC
    retry_at: float = 0.0  # time.monotonic()

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "retry_at"}


_outages: dict[str, Outage] = {}
_guard = threading.Lock()


def is_trouble(error: BaseException) -> bool:
    """Whether ``error`` is the store's (unreachable, refused, not writable, full), not the notebook's."""
    if isinstance(error, (StoreError, sqlite3.Error, OSError)):
        return True
    return type(error).__module__.split(".")[0] in ("psycopg", "psycopg_pool")


def reason_of(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, StoreError) else f"{type(error).__name__}: {text}"


def note_away(target: Target, error: BaseException, log: Any = None) -> Outage:
    """Remember that ``target`` is away; the first time in an outage, say so (once, not once per save)."""
    with _guard:
        found = _outages.get(target.ident)
        if found is not None:
            found.retry_at = time.monotonic() + RETRY_EVERY
            return found
        since = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        found = _outages[target.ident] = Outage(target.shown, reason_of(error), since, time.monotonic() + RETRY_EVERY)
    (log or _log).warning(
        "nbmergesave: the history store is away (%s); saves are still merged on this host, from a local spool "
        "(%s), and will be recorded in the store when it is back", found.reason, spool_folder(target))
    return found


def note_back(target: Target, replayed: int, log: Any = None) -> None:
    with _guard:
        found = _outages.pop(target.ident, None)
    if found is not None or replayed:
        (log or _log).warning("nbmergesave: the history store %s is back; %d version(s) made meanwhile recorded in it",
                              target.shown, replayed)


def outage(target: Target) -> Outage | None:
    with _guard:
        return _outages.get(target.ident)


def outages() -> list[Outage]:
    with _guard:
        return list(_outages.values())


# --- the spool ----------------------------------------------------------------------------------

_in_use: Counter[str] = Counter()  # spools this process holds open, by target: it must not wait for itself


def _flock(path: Path, how: int, wait: float | None = None) -> int | None:
    """An fd holding ``flock(how)`` on ``path``; with ``wait``, ``None`` if not had within that many seconds."""
    from ..private import private_file

    fd = os.open(private_file(path), os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, how | (fcntl.LOCK_NB if deadline is not None else 0))
            return fd
        except BlockingIOError:
            if deadline is None or time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)


class Spool(Store):
    """The spool of one configured store: an embedded store in the user's state folder, same root, same keys.

    Held open with a shared ``flock`` on its ``use.lock``, so a catch-up (which takes it exclusively)
    never empties it under a save.
    """

    is_spool = True

    def __init__(self, target: Target) -> None:
        from ..private import private_dir
        from . import files

        folder = spool_folder(target)
        private_dir(folder)  # 0700 whatever the umask: it holds notebooks
        fd = _flock(folder / "use.lock", fcntl.LOCK_SH)
        assert fd is not None
        self._use = fd
        self.target = target
        _in_use[target.ident] += 1
        try:
            about = folder / "about.json"
            if not about.exists():
                from ..notebook_io import write_atomic
                from ..private import private_file

                write_atomic(private_file(about), json.dumps({"store": target.shown, "root": str(target.root)}))
            super().__init__(target.root, files.make_private_dir(folder))
        except BaseException:
            self._let_go()
            raise

    def _let_go(self) -> None:
        if self._use >= 0:
            os.close(self._use)  # closing releases the shared lock
            self._use = -1
            _in_use[self.target.ident] -= 1

    def close(self) -> None:
        try:
            if self.backend.disk_usage() > MAX_BYTES:
                prune(self)
            super().close()
        finally:
            self._let_go()


def open_or_spool(path: str | os.PathLike[str], opener: Callable[[str | os.PathLike[str]], Store], *,
                  log: Any = None, catch_up_now: bool = True) -> Store:
    """``opener(path)``'s store, or, while it is away, the spool of it (:class:`Spool`).

    A store found back after an outage (or with a spool left by another process) is first caught up
    (:func:`caught_up`); until that has been done, the spool is used, so the history stays in order.
    With ``catch_up_now=False`` (a load, on the server's event loop) a store that answers is used as
    it is, and the catch-up left to the next save.
    """
    target = target_of(path)
    if spooling(target):
        return Spool(target)
    try:
        store = opener(path)
    except StoreDenied:
        # another user's store: a setting to fix, said with how (the CLI refuses with that hint); the
        # Jupyter hook, which must not fail a save, stands in with the spool itself
        raise
    except Exception as e:
        if not is_trouble(e):
            raise
        note_away(target, e, log)
        return Spool(target)
    if not catch_up_now:
        return store
    try:
        ready = caught_up(store, target, log)
    except BaseException:
        store.close()
        raise
    if ready:
        return store
    store.close()
    return Spool(target)


def spooling(target: Target) -> bool:
    """Whether ``target`` is away and not due to be tried again yet: its spool is to be used as it is."""
    away = outage(target)
    return away is not None and time.monotonic() < away.retry_at


def caught_up(store: Store, target: Target, log: Any = None) -> bool:
    """Whether ``store`` (open, standing for ``target``) can be used now: it has nothing waiting in the spool, or
    the spool has just been replayed into it (and that said). ``False``: it is still away (noted), or the spool is
    being replayed or used elsewhere: use the spool meanwhile."""
    if outage(target) is None and not pending(target):
        return True
    try:
        replayed = catch_up(store, target, log)
    except Exception as e:
        if not is_trouble(e):
            raise
        note_away(target, e, log)
        return False
    if replayed is None:  # another process is catching up, or a save of ours is in the spool: spool on
        return False
    note_back(target, replayed, log)
    return True


def pending(target: Target) -> bool:
    """Whether a spool of ``target`` holds versions not yet replayed."""
    return (spool_folder(target) / "index.sqlite").exists()


def catch_up(store: Store, target: Target, log: Any = None) -> int | None:
    """Replay the spool of ``target`` into ``store`` (the store it stands for); the number of versions
    recorded, or ``None`` when it cannot be done now (another catch-up runs, or the spool is in use, here
    or elsewhere)."""
    folder = spool_folder(target)
    if not (folder / "index.sqlite").exists():
        return 0
    if _in_use[target.ident]:
        return None
    fd = _flock(folder / "use.lock", fcntl.LOCK_EX, wait=CATCH_UP_WAIT)
    if fd is None:
        return None
    try:
        if not (folder / "index.sqlite").exists():
            return 0  # done by another process meanwhile
        spool = Store(store.root, folder)
        try:
            replayed = sum(_replay(spool, store, key) for key in _keys(spool))
        finally:
            spool.close()
        _empty(folder)
        return replayed
    finally:
        os.close(fd)


def _keys(spool: Store) -> list[str]:
    seen: dict[str, None] = {}
    for v in spool.backend.all_versions():
        seen.setdefault(v.path, None)
    return list(seen)


def _replay(spool: Store, store: Store, key: str) -> int:
    """Replay one notebook's spooled versions, oldest first, under the store's save lock of that notebook."""
    path = store.root / key
    added = 0
    with store.save_lock(path):
        numbers: dict[int, int] = {}
        # content -> its earliest version in the store, and when: a spooled version whose content the store
        # got only later (another host recording the file while this one spooled; a watcher's look) is still
        # added, at its own time, so the history says when each save was made
        earliest: dict[str, tuple[str, int]] = {}
        for h in store.history(path):
            if h.sha256 and (h.sha256 not in earliest or h.time < earliest[h.sha256][0]):
                earliest[h.sha256] = (h.time, h.version)
        for v in spool.history(path):
            if v.sha256 is None:
                latest = store.history(path, last=1)
                if latest and latest[-1].sha256 is not None:
                    numbers[v.version] = store.add(path, None, v.kind, time=v.time).version
                    added += 1
                continue
            there = earliest.get(v.sha256)
            if there is not None and there[0] <= v.time:
                # the store had this content by then already (served before the outage, or replayed)
                numbers[v.version] = there[1]
                continue
            made = store.add(path, spool.content(v), v.kind, on_disk=False, base=numbers.get(v.base or -1),
                             local=numbers.get(v.local or -1), remote=numbers.get(v.remote or -1),
                             conflicts=v.conflicts, engine=v.engine, time=v.time)
            numbers[v.version] = made.version
            earliest[v.sha256] = (v.time, made.version)
            added += 1
        for row in spool.backend.rows("declarations"):
            if row[0] == key:
                with store.backend.transaction():
                    store.backend.declare(*row)
        current = spool.on_disk(path)
        if current is not None and current.version in numbers:
            try:
                on_disk = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                on_disk = None
            if on_disk == current.sha256:
                store.add_on_disk(path, numbers[current.version])
    return added


def _empty(folder: Path) -> None:
    """Remove what the spool holds; ``use.lock`` stays (a process may be waiting on it)."""
    for entry in folder.iterdir():
        if entry.name == "use.lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def prune(spool: Store) -> int:
    """Keep the newest :data:`KEEP_WHEN_FULL` versions of each notebook (and those on disk); the rest go."""
    by_key: dict[str, list[Any]] = {}
    for v in spool.backend.all_versions():
        by_key.setdefault(v.path, []).append(v)
    keep = {(v.path, v.version) for k in spool.backend.tracked() if (v := spool.backend.on_disk(k)) is not None}
    drop = [(v.path, v.version) for vs in by_key.values() for v in vs[:-KEEP_WHEN_FULL] if (v.path, v.version) not in keep]
    if not drop:
        return 0
    with spool.backend.transaction():
        spool.backend.drop_versions(drop)
    with spool.backend.transaction():
        contents, orphan = spool._unreferenced()
        spool.backend.drop_contents(contents)
        spool.backend.drop_pieces(orphan)
    _log.warning("nbmergesave: the local spool passed %d MiB; kept the newest %d versions of each notebook",
                 MAX_BYTES >> 20, KEEP_WHEN_FULL)
    return len(drop)


# --- what status shows ----------------------------------------------------------------------------


def spools() -> list[dict[str, Any]]:
    """Every spool of this user waiting for its store: which store, its root, versions, bytes."""
    found = []
    folder = state_folder()
    if not folder.is_dir():
        return found
    for entry in sorted(folder.iterdir()):
        db = entry / "index.sqlite"
        if not db.exists():
            continue
        try:
            about = json.loads((entry / "about.json").read_text())
        except (OSError, ValueError):
            about = {}
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                versions = con.execute("SELECT count(*) FROM versions").fetchone()[0]
        except sqlite3.Error:
            versions = None
        size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
        found.append({"store": about.get("store"), "root": about.get("root"), "folder": str(entry),
                      "versions": versions, "bytes": size})
    return found
