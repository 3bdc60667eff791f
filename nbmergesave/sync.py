"""sync_file(): the merge-on-save step, shared by the watcher and other doors.

Read the file; if it is a new save, store it, find the version it was made
from (:mod:`nbmergesave.lineage`) and, when that is not the version on disk
before it, write ``merge(base, before, save)`` in its place with
compare-and-swap: if the file changed again meanwhile, start over.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import fastpath, lineage, notebook_io
from .errors import BadInput, NbMergeSaveError, StoreDenied
from .merge import merge
from .merge.options import engine_name
from .store import Store, Version, sha256
from .store.cells import cell_digests
from .store.retention import parse_time

#: How many of the newest versions the base search looks at ...
HISTORY_WINDOW = 200
#: ... and how many more, of any age, sharing the most cells with the save.
SHARING_CELLS = 40

#: How recent (s) a ``NAME.invalid`` beside a notebook must be to be taken for a save jupyter_server
#: stepped back (:func:`stepped_back`); an older one is a crash's leftover, for a person to look at.
STEPPED_BACK_WINDOW = 600

#: What a sync's outcome says of such a save (the watchers log it).
STEPPED_BACK = "jupyter_server had put an older version back over a save"
#: ... brought back once neither it nor the notebook has changed for this long (s: a writer still saving in
#: place would race the write that brings it back, and jupyter_server puts its copy back just after moving
#: the file aside); and how long an older version back in the file is taken for that step back, not for a
#: revert to record.
STEP_BACK_QUIET, STEPPING_BACK = 1.0, 5.0

#: Crash-safety tests set this to slow every merge down, to kill the watcher mid-merge.
_TEST_DELAY = float(os.environ.get("NBMERGESAVE_TEST_MERGE_DELAY", "0") or 0)


@dataclass
class Session:
    """What one process remembers across sync calls.

    ``own_writes``: sha256s of what it wrote. ``replaced``: files it replaced
    whose old inode it still holds open: a writer that had the old file open
    writes into that inode, and the watcher reads it from there (see
    :class:`~nbmergesave.notebook_io.Replaced`). ``displaced``: saves a
    merge's write swapped off the disk (they landed after the merge began),
    by notebook key, waiting to be merged in.
    """

    own_writes: set[str] = field(default_factory=set)
    replaced: list[notebook_io.Replaced] = field(default_factory=list)
    displaced: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What sync_file did: ``unchanged``, ``recorded``, ``merged``, ``partial``, ``skipped`` or ``error``."""

    action: str
    path: str
    version: int | None = None
    base: int | None = None
    local: int | None = None
    remote: int | None = None
    conflicts: int = 0
    message: str = ""
    earlier: tuple[Outcome, ...] = ()  # merges of saves our writes displaced, done in the same call
    writer: str | None = None  # a single writer's save, recorded as theirs ("git", "paused"), never merged


def _load(store: Store, version: Version) -> dict[str, Any] | None:
    try:
        return notebook_io.parse_notebook(store.content(version))
    except NbMergeSaveError:
        return None


_TOKENS: OrderedDict[tuple[str, str], lineage.Tokens | None] = OrderedDict()


def tokens_of(store: Store, version: Version) -> lineage.Tokens | None:
    """A stored version's lineage tokens, cached by content.

    Stored versions never change, and the base search looks at the same
    ones again on every save of a notebook.
    """
    if version.sha256 is None:
        return None
    key = (str(store.location), version.sha256)
    if key in _TOKENS:
        _TOKENS.move_to_end(key)
        return _TOKENS[key]
    nb = _load(store, version)
    value = _TOKENS[key] = lineage.tokens(nb) if nb is not None else None
    if nb is not None:
        store.record_cells(version.sha256, cell_digests(nb))
    _trim()
    return value


def _trim() -> None:
    while len(_TOKENS) > 256:
        _TOKENS.popitem(last=False)


def _add_save(store: Store, path: str | os.PathLike[str], data: bytes, save: dict[str, Any],
              displaced: bool = False) -> Version:
    """Store a new save (not yet the version on disk). On the fast path its lineage tokens are computed
    here, once, and kept for when it is the version on disk, and its cells go into the lineage index in
    the same commit (they would be recorded when its tokens were first loaded back from the store).

    That commit need not wait for the disk: the save is still in the file, and whatever follows (marking
    it on disk, or recording the merge before the file is replaced) commits durably, syncing it too. Not
    so for a save our own write swapped off the disk (``displaced``): the store is then its only copy."""
    if not fastpath.FAST or not isinstance(store, Store):  # (the benchmarks' store of nbmergesave 0.1)
        return store.add(path, data, "observed", on_disk=False)
    with store.lax() if not displaced else contextlib.nullcontext():
        saved = store.add(path, data, "observed", on_disk=False, cells=cell_digests(save))
    if saved.sha256 is not None:
        key = (str(store.location), saved.sha256)
        _TOKENS[key] = lineage.tokens(save)
        _TOKENS.move_to_end(key)
        _trim()
    return saved


def _save_tokens(store: Store, saved: Version | None) -> lineage.Tokens | None:
    """The save's tokens when :func:`_add_save` kept them (``None``: computed by the search)."""
    if saved is None or saved.sha256 is None or not fastpath.FAST:
        return None
    return _TOKENS.get((str(store.location), saved.sha256))


def _merge_and_write(store: Store, path: str | os.PathLike[str], base: Version, before: Version,
                     save: dict[str, Any], saved: Version, expected: bytes, session: Session,
                     engine: str = "cells") -> Outcome | None:
    """Write ``merge(base, before, save)`` over ``path`` if it still holds ``expected``.

    The merge is recorded first. If the file changed meanwhile (a newer save
    is on disk), the merge is still recorded as the current version, so the
    newer save is merged against it and nothing of this one is lost; the
    caller then handles the newer save (``None`` is returned).
    """
    key = store.key(path)
    base_nb, before_nb = _load(store, base), _load(store, before)
    if base_nb is None or before_nb is None:
        return Outcome("error", key, saved.version, message=f"a stored version of '{key}' cannot be read")
    result = merge(base_nb, before_nb, save, engine=engine)
    notebook_io.validate(result.notebook, f"merged '{key}'")
    text = notebook_io.dumps(result.notebook).encode("utf-8")
    unresolved = len(result.unresolved)
    merged = store.add(path, text, "merged", on_disk=False, base=base.version, local=before.version,
                       remote=saved.version, conflicts=unresolved, engine=engine_name(engine))
    return _write_merged(store, path, merged, expected, session)


def _write_merged(store: Store, path: str | os.PathLike[str], merged: Version, expected: bytes,
                  session: Session) -> Outcome | None:
    key = store.key(path)
    if _read_only(path):
        return Outcome("error", key, merged.version,
                       message=f"'{key}' is read-only: left untouched; the merge is version {merged.version} in the store")
    session.own_writes.add(merged.sha256 or "")
    if _TEST_DELAY:  # test hook: widen the window between recording and writing a merge
        time.sleep(_TEST_DELAY)
    merged_from = store.get(path, merged.local).sha256 if merged.local is not None else None
    try:
        _swap_in(store, path, store.content(merged), expected, session, merged_from)
    except notebook_io.Changed:
        # A newer save is on disk: the merge is still the current version, and
        # the newer save will be merged against it, so nothing of this one is lost.
        store.add_on_disk(path, merged.version)
        return None
    except OSError as e:
        return Outcome("error", key, merged.version,
                       message=f"cannot write merged '{key}': {e.strerror}; left untouched, the merge is version {merged.version}")
    store.add_on_disk(path, merged.version)
    if merged.kind != "merged":
        return Outcome("recorded", key, merged.version)
    return Outcome("merged", key, merged.version, merged.base, merged.local, merged.remote, merged.conflicts)


def _untear(store: Store, path: str | os.PathLike[str], key: str, torn: bytes, whole: bytes,
            session: Session) -> Outcome | None:
    """Put back the notebook a torn file starts with (see :func:`~nbmergesave.notebook_io.torn_prefix`).

    The torn bytes are kept (kind ``torn``, never used as a base); the caller
    then reads the file again and handles that notebook as a save.
    """
    store.add(path, torn, "torn", on_disk=False)
    try:
        _swap_in(store, path, whole, torn, session)
    except notebook_io.Changed:
        return None  # a newer save replaced the torn file: handle that one
    except OSError as e:
        return Outcome("error", key, message=f"'{key}' was torn by two writers at once and cannot be mended: {e.strerror}")
    return None


def _swap_in(store: Store, path: str | os.PathLike[str], data: bytes, expected: bytes, session: Session,
             known: str | None = None) -> None:
    """Replace ``path`` with ``data`` if it holds ``expected`` (raises :class:`~nbmergesave.notebook_io.Changed`
    if not), under the save lock. The replaced file stays watched (``session.replaced``), and a save the
    swap took off the disk, unless it is ours or ``known`` (a sha256 already merged in), waits in
    ``session.displaced`` to be merged next."""
    with store.save_lock():
        replaced = notebook_io.write_atomic(path, data, expected=expected)
    if replaced is None:
        return
    session.replaced.append(replaced)
    displaced = replaced.unexpected
    if displaced is not None and sha256(displaced) not in session.own_writes | {known}:
        session.displaced.setdefault(store.key(path), []).append(displaced)


def _read_only(path: str | os.PathLike[str]) -> bool:
    """No write permission for us, or (as root, who may write anyway) none for anyone."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    return not os.access(path, os.W_OK) or not mode & 0o222


def _read_or_empty(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


_SYNCTHING = re.compile(r"^(?P<stem>.+)\.sync-conflict-\d{8}-\d{6}(-[A-Za-z0-9]+)?\.ipynb$")
_DROPBOX = re.compile(r"^(?P<stem>.+) \([^()]*conflicted copy[^()]*(\(\d+\))?[^()]*\)\.ipynb$")


def conflict_copy_of(path: str | os.PathLike[str]) -> Path | None:
    """The notebook a sync tool's conflict copy belongs to, or ``None``.

    >>> conflict_copy_of("a/nb.sync-conflict-20261130-101500-ABCDEF1.ipynb")
    PosixPath('a/nb.ipynb')
    >>> conflict_copy_of("a/nb (Ana's conflicted copy 2026-11-30).ipynb")
    PosixPath('a/nb.ipynb')
    """
    p = Path(path)
    match = _SYNCTHING.match(p.name) or _DROPBOX.match(p.name)
    return p.with_name(match["stem"] + ".ipynb") if match else None


def merge_copy(store: Store, copy: str | os.PathLike[str], *, session: Session | None = None,
               engine: str = "cells") -> Outcome:
    """Merge a sync tool's conflict copy into its notebook, then remove the copy.

    The copy is stored as a version of the notebook, its base found among
    the notebook's stored versions, and the copy is deleted only once the
    merge (conflicts or not) is recorded.
    """
    session = session if session is not None else Session()
    original = conflict_copy_of(copy)
    key = store.key(copy)
    if original is None:
        return Outcome("error", key, message=f"'{key}' is not a conflict copy")
    synced = sync_file(store, original, session=session, engine=engine)  # the store must know the file as it is now
    if synced.action in ("partial", "error"):
        return Outcome("partial", key, message=synced.message)
    try:
        data = notebook_io.read_bytes(copy)
        save = notebook_io.parse_notebook(data, f"'{key}'")
    except BadInput as e:
        return Outcome("partial", key, message=str(e))
    before = store.on_disk(original)
    if before is None:
        return Outcome("error", key, message=f"'{key}' is a conflict copy of an untracked notebook; left as it is")
    saved = store.add(original, data, "conflict-copy", on_disk=False)
    if saved.sha256 == before.sha256:
        os.unlink(copy)
        return Outcome("recorded", key, saved.version)
    history = [v for v in store.history(original) if v.sha256 and v.version not in (before.version, saved.version)]
    base = lineage.find_base(save, before, list(reversed(history[-HISTORY_WINDOW:])), lambda v: tokens_of(store, v)) or before
    expected = Path(original).read_bytes()
    if sha256(expected) != before.sha256:
        return Outcome("partial", key, message=f"'{original}' changed; will look again")
    outcome = _merge_and_write(store, original, base, before, save, saved, expected, session, engine)
    if outcome is not None and outcome.action == "error":
        return outcome
    os.unlink(copy)  # the merge is recorded (and written, or a newer save will be merged against it)
    return outcome or Outcome("merged", key, saved.version, message=f"'{original}' changed meanwhile")


def sync_file(store: Store, path: str | os.PathLike[str], *, data: bytes | None = None,
              session: Session | None = None, attempts: int = 5,
              writer_of: Callable[[bytes], str | None] | None = None, engine: str = "cells") -> Outcome:
    """Bring the store up to date with ``path`` and merge an overlapping save.

    ``data`` is the file's content when the caller read it already (the
    watcher reads at the close event, before a quick second save can replace
    it); otherwise the file is read. ``session`` carries what this process
    wrote (recorded, never taken for a new save) across calls. A file that
    does not parse yet (a save in progress) gives ``partial``: retry later.

    ``writer_of(data)`` names a single writer that wrote ``data`` whole, when
    the caller can tell (``"git"`` for a blob git holds, ``"paused"`` while the
    user said a tool rewrites the folder), else ``None``. Such a save is
    recorded as made from the version on disk (kind and declared writer that
    name) and never merged: one writer cannot overlap itself.

    ``engine`` merges overlapping saves (``cells`` or ``nbdime``, see
    :func:`nbmergesave.merge.merge`) and is recorded with each merge.
    """
    engine = engine_name(engine)
    session = session if session is not None else Session()
    key = store.key(path)
    # Work in order: saves our own writes swapped off the disk (merged first, they are older),
    # then this save, then the file again whenever a newer save got in the way of a write.
    data, forwarded = _forward(store, path, key, data, session, engine)
    queue: list[tuple[bytes | None, bool]] = [(d, True) for d in session.displaced.pop(key, [])] + [(data, False)]
    done: list[Outcome] = [forwarded] if forwarded is not None else []
    rereads = 0
    while queue:
        data, displaced = queue.pop(0)
        if data is None:
            try:
                data = notebook_io.read_bytes(path)
            except BadInput as e:
                return Outcome("error", key, message=str(e), earlier=tuple(done))
        # Under the save lock: two watchers of one folder (the Jupyter server's and a `nbmergesave watch`)
        # seeing the same write would otherwise both find it new, and both merge it.
        with store.save_lock(path):
            outcome = _sync_once(store, path, key, data, session, displaced, None if displaced else writer_of, engine)
        queue[:0] = [(d, True) for d in session.displaced.pop(key, [])]
        if outcome is not None:
            done.append(outcome)
        elif rereads < attempts:  # a newer save replaced the file while we merged: merge it against our result
            rereads += 1
            queue.append((None, False))
        else:
            done.append(Outcome("partial", key, message=f"'{key}' kept changing; will look again"))
    return replace(done[-1], earlier=tuple(done[:-1])) if len(done) > 1 else done[0]


def _sync_once(store: Store, path: str | os.PathLike[str], key: str, data: bytes, session: Session,
               displaced: bool = False, writer_of: Callable[[bytes], str | None] | None = None,
               engine: str = "cells") -> Outcome | None:
    """``displaced``: ``data`` was swapped off the disk by our own write, so it is merged
    even if the store knows it (the merge is a no-op when our write already held it)."""
    digest = sha256(data)
    before = store.on_disk(path)
    if before is not None and before.sha256 == digest:
        return Outcome("unchanged", key, before.version)
    match = None if displaced or before is None else store.latest_with(path, digest)
    if match is not None and _read_or_empty(path) != data and _handled(store, path, match, before, digest, session):
        # Content handled already, seen again late (two events for one save, or one
        # of our writes), and no longer the file: nothing to do.
        return Outcome("unchanged", key, match.version)
    # Asked only of a notebook we know, on disk or back after a deletion (a first sighting is recorded as it is
    # anyway, and asking git about every notebook of a first scan would cost a blob check each), never of our writes.
    known = before is not None or (writer_of is not None and bool(store.history(path, last=1)))
    writer = writer_of(data) if writer_of is not None and known \
        and not (match is not None and digest in session.own_writes) else None
    if writer is not None:
        return _record_single_writer(store, path, key, data, digest, before, writer)
    if before is not None and match is None and not displaced and notebook_io.marked(path, digest):
        # Written by a Jupyter server that merged it with what it replaced (compare-then-swap), whose
        # declaration this store has not seen (another host's, spooling while the database is away): merged
        # already, and a second merge here, from an inferred base, could only add conflicts that are none.
        return _record_single_writer(store, path, key, data, digest, before, "jupyter", kind="observed")
    try:
        save = notebook_io.parse_notebook(data, f"'{key}'")
    except BadInput as e:
        if before is None and writer_of is not None and (writer := writer_of(data)) is not None:
            # e.g. a notebook both branches added, with git's conflict markers: nothing to wait for
            return Outcome("skipped", key, message=f"{e} (written by {writer}); left alone until it is saved again")
        whole = notebook_io.torn_prefix(data)
        if whole is None or _read_or_empty(path) != data:
            return Outcome("partial", key, message=str(e))
        return _untear(store, path, key, data, whole, session)
    if before is None:  # first sighting (or back after a deletion)
        return Outcome("recorded", key, store.add(path, data, "observed").version)
    history = store.history(path, last=HISTORY_WINDOW + 1)
    latest = history[-1]
    if match is not None and digest in session.own_writes:
        # The file holds an older write of ours, and the current version (a merge
        # whose write found a newer save in the way) never reached it: write it now.
        if before.kind == "merged":
            return _write_merged(store, path, before, data, session)
        return Outcome("unchanged", key, match.version)
    if match is not None and match.version == latest.version and match.kind in ("observed", "conflict-copy"):
        saved = match  # recorded, then interrupted (a crash) before it was handled: handle it now
    elif match is not None and match.version == latest.version:
        store.add_on_disk(path, match.version)  # written, then interrupted before it was marked current
        return Outcome("recorded", key, match.version)
    elif match is not None and latest.kind == "merged" and latest.remote == match.version:
        return _write_merged(store, path, latest, data, session)  # a merge recorded but not yet written
    elif match is not None and _stepping_back(path):
        # jupyter_server's read has just put an older version back and the save it moved aside is still being
        # written there: not a revert, a step back to undo once that save is whole (stepped_back)
        return Outcome("partial", key, message=f"'{key}' was just put back to an older version by a read; "
                                               f"looking again shortly")
    elif match is not None:
        # equal to an earlier version: an intentional revert (undo, git checkout), never merged
        return Outcome("recorded", key, store.add(path, data, "observed").version)
    else:
        saved = _add_save(store, path, data, save, displaced)  # the raw save is kept, whatever happens
    declared = store.declared_base(path, digest)
    if declared is not None:  # the writer said what it started from: no guessing
        # ... and when that was made from the version on disk (a writer that merged with
        # the file itself, like the Jupyter extension, or saves we have not seen yet), the
        # save simply follows it: merging against the older version would undo the newer.
        follows = declared.sha256 == before.sha256 or store.descends(path, declared.sha256 or "", before.sha256 or "")
        base = None if follows else declared
    else:
        base = infer_base(store, path, save, before, saved, history)
    on_disk = store.content(before) if displaced else data
    if base is None:  # made from the version on disk: it is the new version as it stands
        if displaced:  # ... and our write took its place: put it back
            return _write_merged(store, path, saved, on_disk, session)
        store.add_on_disk(path, saved.version)
        return Outcome("recorded", key, saved.version)
    return _merge_and_write(store, path, base, before, save, saved, on_disk, session, engine)


def put_aside(path: str | os.PathLike[str]) -> Path:
    """Where jupyter_server moves a notebook it cannot read, when it puts its ``.~`` copy back (its
    ``path_to_invalid``): ``NAME.invalid``."""
    return Path(f"{os.fspath(path)}.invalid")


def stepped_back(store: Store, path: str | os.PathLike[str]) -> bytes | None:
    """A save jupyter_server stepped back, not yet in the store: the bytes of ``NAME.invalid``.

    jupyter_server, reading a notebook that does not parse while its ``.~NAME`` copy of the version before
    is beside it, takes the file for a write that crashed: it renames the file ``NAME.invalid`` and puts the
    copy back. When the file was a save still being written in place (another server, a script), that
    save finishes into ``NAME.invalid``, and the notebook is a version behind. A recent, whole notebook
    there that the store has never seen is that save, and so is the store's version on disk when the file
    no longer holds it (an old one is a crash's leftover, left alone)."""
    aside = put_aside(path)
    try:
        if time.time() - aside.stat().st_ctime > STEPPED_BACK_WINDOW:  # (the rename sets the ctime)
            return None
        data = aside.read_bytes()
        notebook_io.parse_notebook(data)
    except (OSError, BadInput):
        return None  # none, or still being written: its close event brings the watcher back
    on_disk, digest = store.on_disk(path), sha256(data)
    if on_disk is None:
        return None
    if store.latest_with(path, digest) is None:
        return data
    # ... or the version on disk, which the watcher read whole before the read moved it aside
    return data if on_disk.sha256 == digest and _read_or_empty(path) != data else None


def _stepping_back(path: str | os.PathLike[str]) -> bool:
    """Whether a read moved ``path`` aside as ``NAME.invalid`` within the last :data:`STEPPING_BACK` seconds."""
    try:
        return time.time() - put_aside(path).stat().st_ctime < STEPPING_BACK
    except OSError:
        return False


def _forward(store: Store, path: str | os.PathLike[str], key: str, data: bytes | None, session: Session,
             engine: str) -> tuple[bytes | None, Outcome | None]:
    """Bring back a save a read stepped back (:func:`stepped_back`), before anything else is done; what is
    left of ``data`` to sync, and what was done.

    When the file still holds what the read put back (older than the save), the save is merged with it: a
    merge whose local side is that version, so a snapshot of it read at its event and handled late is known
    for what it was, not taken for a revert (``data`` is dropped if it is that version). When nothing came
    back in the file's place (the writer removed its copy first), the save is the file again. When the file
    was written after the save was finished (the writer saved again), the save is only kept in the history."""
    forward = stepped_back(store, path)
    if forward is None:
        return data, None
    aside = put_aside(path)
    try:  # a writer still at work in place (the one the read stepped back, most often): not while it writes
        aside_st = aside.stat()
        quiet = time.time() - max(aside_st.st_mtime, aside_st.st_ctime,
                                  os.stat(path).st_mtime if os.path.lexists(path) else 0.0)
    except OSError:
        return data, None
    if quiet < STEP_BACK_QUIET:  # (nor when the notebook is missing: its copy may be on its way back)
        return data, Outcome("partial", key, message=f"'{key}': a save a read put aside waits until its writer "
                                                     f"is done; looking again shortly")
    note = f"{STEPPED_BACK} (kept as '{aside.name}')"
    save = notebook_io.parse_notebook(forward)
    with store.save_lock(path):
        before, on_file = store.on_disk(path), _read_or_empty(path)
        if not os.path.lexists(path):
            try:
                notebook_io.write_atomic(path, forward, expected=b"")  # (only where no file has come since)
            except (notebook_io.Changed, OSError):
                return data, None
            outcome = Outcome("recorded", key, _add_save(store, path, forward, save, True).version)
            store.add_on_disk(path, outcome.version)  # type: ignore[arg-type]
            return data, replace(outcome, message=f"{note}; that save is merged forward")
        try:
            newer = aside_st.st_mtime >= os.stat(path).st_mtime  # (a restored copy keeps its old mtime)
        except OSError:
            return data, None
        if not newer:  # written again since the read put the older version back
            kept = store.latest_with(path, sha256(forward)) or _add_save(store, path, forward, save, True)
            if store.latest_with(path, sha256(on_file)) is None and before is not None \
                    and parse_time(before.time).timestamp() < aside_st.st_mtime:
                # ... and that write is yet to be synced, and nothing was since the save: it was made over the
                # save, not over the older version (which no writer chose), so it is judged against the save
                store.add_on_disk(path, kept.version)
            return data, Outcome("recorded", key, kept.version, message=f"{note}; the file was saved again since, "
                                                                       f"and is judged against that save")
        if before is not None and before.sha256 == sha256(on_file):
            saved = _add_save(store, path, forward, save, True)  # (durable at once: NAME.invalid is its only copy)
            base = infer_base(store, path, save, before, saved) or before
            outcome = _merge_and_write(store, path, base, before, save, saved, on_file, session, engine)
        elif before is not None and before.sha256 == sha256(forward) \
                and (back := store.latest_with(path, sha256(on_file))) is not None:
            # the save was the version on disk already, and the read put an older version back over it
            outcome = _merge_and_write(store, path, back, back, save, before, on_file, session, engine)
        else:  # the file holds what the store has not seen: merged in as a save our own write displaced
            session.displaced.setdefault(key, []).insert(0, forward)
            outcome = None
    if data is not None and store.latest_with(path, sha256(data)) is not None:
        data = None
    return data, replace(outcome, message=f"{note}; that save is merged forward") if outcome is not None else None


def infer_base(store: Store, path: str | os.PathLike[str], save: dict[str, Any], before: Version,
               saved: Version | None = None, history: list[Version] | None = None) -> Version | None:
    """The stored version an undeclared ``save`` was made from (``lineage.find_base``'s rule), or
    ``None`` when it was made from ``before``, the version on disk.

    Candidates are the newest versions and those sharing the most cells with the save, wherever
    they are in the history: a writer who loaded long ago (hundreds of versions) saves the cells
    it did not touch exactly as it loaded them.
    """
    if history is None:
        history = store.history(path, last=HISTORY_WINDOW + 1)
    recent = [v for v in reversed(history) if v.sha256]
    skip = {before.version} | ({saved.version} if saved is not None else set())
    seen = {v.version for v in recent} | skip
    alike = [v for v in store.sharing_cells(path, cell_digests(save), SHARING_CELLS) if v.version not in seen]
    # Nor a version equal to the save (two doors recording one save, as a Jupytext text edit is): made
    # "from itself", the save would change nothing and the merge would drop it.
    same = saved.sha256 if saved is not None else None
    candidates = [v for v in recent if v.version not in skip and v.sha256 != same] + \
        [v for v in alike if v.sha256 != same]
    return lineage.find_base(save, before, candidates, lambda v: tokens_of(store, v), _save_tokens(store, saved))


def _handled(store: Store, path: str | os.PathLike[str], match: Version, before: Version, digest: str,
             session: Session) -> bool:
    """Whether content equal to stored version ``match`` was this very save, seen before.

    It was if it is ours, or the version on disk (or newer), or what a later merge took in.
    Otherwise it is a new save of older content (a revert: a checkout back, an undo) that the
    file no longer holds because a newer save followed quickly: it must still be recorded,
    or that newer save would be judged against the wrong version on disk.
    """
    if digest in session.own_writes or match.version >= before.version:
        return True
    later = store.history(path, last=HISTORY_WINDOW)
    return any(v.kind == "merged" and match.version in (v.local, v.remote) for v in later if v.version > match.version)


def _record_single_writer(store: Store, path: str | os.PathLike[str], key: str, data: bytes, digest: str,
                          before: Version | None, writer: str, kind: str | None = None) -> Outcome:
    """Record ``data`` as ``writer`` made it from the version on disk: the new current version, never merged
    (its kind ``kind``, else the writer's name)."""
    try:
        notebook_io.parse_notebook(data, f"'{key}'")
    except BadInput as e:
        # Git writes conflict markers into a notebook it could not merge: not a notebook to
        # record, and nothing to retry until someone saves the file again.
        return Outcome("skipped", key, before.version if before else None,
                       message=f"{e} (written by {writer}); left alone until it is saved again")
    if before is not None and before.sha256:
        store.declare(path, digest, before.sha256, writer)
    version = store.add(path, data, kind or writer)
    return Outcome("recorded", key, version.version, message=f"written by {writer}", writer=writer)


# --- writers that know their base ------------------------------------------

def _as_sha(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return sha256(value)
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value
    raise ValueError(f"expected bytes or a sha256 hex digest, got {value[:20]!r}")


def _open_configured(path: str | os.PathLike[str]) -> Store:
    try:
        return Store.find(path)
    except StoreDenied:
        raise  # there is one, another user's: a new store beside it would not be found again
    except NbMergeSaveError as e:
        if str(e).startswith("no version store holds"):  # none yet: a new one beside the notebook
            return Store.open(Path(path).absolute().parent)
        raise


def open_store(path: str | os.PathLike[str], *, spool: bool = True, log: Any = None,
               catch_up: bool = True) -> Store:
    """The store holding ``path``, or a new one in its folder when none does.

    While that store is away (a database that does not answer, a driver not installed, a folder
    we cannot write), ``spool=True`` hands out the local spool that stands in for it
    (:mod:`nbmergesave.store.spool`, ``store.is_spool``), and the first open that finds it back
    replays the spool into it (``catch_up=False``: not now, leave it to the next save).
    """
    if not spool:
        return _open_configured(path)
    from .store.spool import open_or_spool

    return open_or_spool(path, _open_configured, log=log, catch_up_now=catch_up)


def declare(path: str | os.PathLike[str], content: bytes | str, *, base: bytes | str, writer: str | None = None) -> None:
    """Record that content ``content`` at ``path`` was made from ``base``.

    Both may be the file's bytes or their sha256 (hex). A base given as bytes
    is stored, so a base the store has not seen yet becomes usable. When a watcher later
    sees ``content`` at ``path``, it merges against the declared base instead
    of inferring one.

    >>> # nbmergesave.declare("nb.ipynb", new_bytes, base=loaded_bytes, writer="my-sync-tool")
    """
    with open_store(path) as store:
        # The base becomes a stored version (it may be new to the store); the
        # content does not: it becomes one when it is seen on disk, as a save.
        if isinstance(base, bytes) and store.latest_with(path, sha256(base)) is None:
            store.add(path, base, "declared", on_disk=False)
        store.declare(path, _as_sha(content), _as_sha(base), writer)


@dataclass(frozen=True)
class SaveResult:
    """What :func:`save_file` wrote: ``merged`` is False when the file still held the base."""

    merged: bool
    conflicts: tuple[Any, ...]
    version: int


def save_file(path: str | os.PathLike[str], new: bytes, base: bytes, *, writer: str | None = None,
              attempts: int = 5, engine: str = "cells") -> SaveResult:
    """Merge-on-save for a writer that knows its base: write ``merge(base, on disk, new)`` to ``path``.

    Every input is stored first; the write is atomic, with compare-and-swap
    (if the file changes while we merge, we merge again). ``engine`` merges
    (``cells`` or ``nbdime``) and is recorded with the merge. Raises
    :class:`~nbmergesave.errors.BadInput` for unreadable input, naming it.
    """
    engine = engine_name(engine)
    new_nb = notebook_io.parse_notebook(new, "the new content")
    base_nb = notebook_io.parse_notebook(base, "BASE")
    p = Path(path)
    with open_store(p) as store:
        if store.latest_with(p, sha256(base)) is None:
            store.add(p, base, "declared", on_disk=False)
        saved = store.add(p, new, "observed", on_disk=False)
        for _ in range(attempts):
            disk = p.read_bytes() if p.exists() else None
            if disk is None or sha256(disk) == sha256(base) or sha256(disk) == sha256(new):
                text, conflicts, merged = new, (), False
            else:
                disk_nb = notebook_io.parse_notebook(disk, f"'{p}' on disk")
                if store.latest_with(p, sha256(disk)) is None:
                    store.add(p, disk, "observed", on_disk=False)
                result = merge(base_nb, disk_nb, new_nb, engine=engine)
                notebook_io.validate(result.notebook, f"merged '{p}'")
                text, conflicts, merged = notebook_io.dumps(result.notebook).encode(), result.conflicts, True
            with store.save_lock():
                current = p.read_bytes() if p.exists() else None
                if current != disk:
                    continue
                if merged:
                    disk_v = store.latest_with(p, sha256(disk))  # type: ignore[arg-type]
                    base_v = store.latest_with(p, sha256(base))
                    v = store.add(p, text, "merged", on_disk=False, base=base_v.version if base_v else None,
                                  local=disk_v.version if disk_v else None, remote=saved.version,
                                  conflicts=sum(c.resolution == "inline" for c in conflicts), engine=engine)
                else:
                    v = saved
                store.declare(p, sha256(text), sha256(disk) if disk is not None and merged else sha256(base), writer)
                notebook_io.write_atomic(p, text)
                store.add_on_disk(p, v.version)
                return SaveResult(merged, tuple(conflicts), v.version)
    raise NbMergeSaveError(f"'{path}' kept changing while we merged; try again")
