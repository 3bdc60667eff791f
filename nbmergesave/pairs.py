"""Jupytext pairs: a write to a notebook's paired text file is a write of the notebook.

Jupytext keeps a notebook as an ``.ipynb`` and one or more text files
(``ipynb,py:percent``, ``ipynb,md``, ...), paired by the notebook's
``jupytext.formats`` metadata or by a Jupytext configuration file. People pair
notebooks so that reviewers, editors, scripts and agents can edit the plain
text file; Jupytext's contents manager then reads the inputs from the text
file and the outputs from the ``.ipynb``, and writes both files from every
save. A tab whose content predates an edit of the text file would silently
overwrite that edit in both files, and a watcher that looks at ``.ipynb``
files only never sees it.

So here a text file is read as Jupytext reads it (inputs from the text file,
outputs from the ``.ipynb``: :func:`jupytext.combine.combine_inputs_with_outputs`)
and the notebook that gives is a save of the ``.ipynb``, under the notebook's
key in the store:

* :meth:`Pairs.sync_text` (the watcher, ``nbmergesave watch`` and the one a
  Jupyter server runs): merged like any outside write by
  :func:`nbmergesave.sync.sync_file`, written to the ``.ipynb``, then every
  text file of the pair is written from the result, so the pair stays
  consistent;
* :func:`bring_in` (the Jupyter save hook, under the store's save lock): the
  edits of a text file newer than the ``.ipynb`` become part of the version on
  disk a tab's save is merged with; Jupytext's contents manager then writes
  both files from the merge.

Jupytext stays optional: it is imported only when installed, and without it
(or for a notebook that is not paired) nothing here does anything.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import notebook_io
from .errors import BadInput, NbMergeSaveError
from .store import Store, sha256
from .sync import Outcome, Session, infer_base, sync_file

#: Gives, for a notebook, who wrote its bytes whole if a single writer did (the watcher's git question).
WriterFor = Callable[[Path], Callable[[bytes], str | None] | None]

#: Gives, for a notebook, the merge engine configured for its folder.
EngineFor = Callable[[Path], str]

#: The writer named in the store for a notebook read from its paired text file.
WRITER = "jupytext"

_available: bool | None = None


def available() -> bool:
    """Whether Jupytext can be imported (asked once)."""
    global _available
    if _available is None:
        try:
            import jupytext  # noqa: F401
            _available = True
        except ImportError:
            _available = False
    return _available


@dataclass(frozen=True)
class Pair:
    """A paired notebook: its ``.ipynb``, each text file with its Jupytext format, and the configuration
    that applies (``None``: the pairing is in the notebook's metadata only)."""

    notebook: Path
    texts: tuple[tuple[Path, dict[str, str]], ...]
    config: Any = None

    def fmt(self, text: Path) -> dict[str, str] | None:
        return next((f for p, f in self.texts if p == text), None)


#: Jupytext configuration files are looked up at most this often per folder (seconds).
CONFIG_TTL = 5.0
_configs: dict[Path, tuple[float, Any]] = {}
_configs_lock = threading.Lock()


def _config(folder: Path) -> Any:
    """The Jupytext configuration that applies in ``folder`` (``jupytext.toml``, ``pyproject.toml``'s
    ``[tool.jupytext]``, ... up the parents), or ``None``. Cached briefly: every save asks."""
    now = time.monotonic()
    with _configs_lock:
        hit = _configs.get(folder)
        if hit is not None and now - hit[0] < CONFIG_TTL:
            return hit[1]
    from jupytext.config import load_jupytext_config

    try:
        config = load_jupytext_config(str(folder))
    except Exception:  # a broken configuration is Jupytext's to report; no pairs from it
        config = None
    with _configs_lock:
        if len(_configs) > 1024:
            _configs.clear()
        _configs[folder] = (now, config)
    return config


def text_extensions() -> frozenset[str]:
    """The extensions of the text files Jupytext pairs notebooks with (``.py``, ``.md``, ...)."""
    if not available():
        return frozenset()
    from jupytext.formats import NOTEBOOK_EXTENSIONS

    return frozenset(e for e in NOTEBOOK_EXTENSIONS if e != ".ipynb")


def _pair(path: Path, nb: Any, config: Any) -> Pair | None:
    """The pair ``path`` (the ``.ipynb`` or one of its text files, holding notebook ``nb``) belongs to."""
    from jupytext.config import notebook_formats
    from jupytext.paired_paths import find_base_path_and_format, paired_paths

    try:
        formats = notebook_formats(nb, config, str(path), fallback_on_current_fmt=False)
        if not formats or len(formats) < 2:
            return None
        _, fmt = find_base_path_and_format(str(path), formats)
        paths = paired_paths(str(path), fmt, formats)
    except Exception:  # a pairing Jupytext itself could not follow (InconsistentPath, a bad format)
        return None
    notebooks = [Path(p) for p, f in paths if f.get("extension") == ".ipynb"]
    texts = tuple((Path(p), dict(f)) for p, f in paths if f.get("extension") != ".ipynb")
    if len(notebooks) != 1 or not texts:
        return None  # no .ipynb (a text-only pair), or two: not ours to reconcile
    return Pair(notebooks[0], texts, config)


def pair_of(notebook: str | os.PathLike[str], data: bytes | None = None) -> Pair | None:
    """The text files paired with ``notebook`` (``data``: its bytes, when read already), or ``None``
    when it is not paired or Jupytext is not installed.

    >>> # pair_of("analysis.ipynb")  ->  Pair(notebook=analysis.ipynb, texts=((analysis.py, {...percent}),), ...)
    """
    if not available():
        return None
    path = Path(notebook)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
    config = _config(path.parent)
    if config is None and b'"jupytext"' not in data:
        return None  # most notebooks: no pairing anywhere, and no parse to find that out
    try:
        nb = notebook_io.parse_notebook(data)
    except BadInput:
        return None
    return _pair(path, {"metadata": nb.get("metadata", {})}, config)


def _read_text(text: Path, fmt: dict[str, str] | str, config: Any) -> Any:
    import jupytext

    return jupytext.reads(text.read_text(encoding="utf-8"), fmt=fmt, config=config)


def pair_of_text(text: str | os.PathLike[str]) -> Pair | None:
    """The pair a text file belongs to, found from the text file itself (its Jupytext header, or a
    configuration file), when its ``.ipynb`` exists; else ``None``."""
    path = Path(text)
    if path.suffix not in text_extensions():
        return None
    config = _config(path.parent)
    try:
        nb = _read_text(path, {"extension": path.suffix}, config)
    except Exception:  # not a file Jupytext reads (or gone): not a pair
        return None
    pair = _pair(path, nb, config)
    if pair is None or pair.fmt(path) is None or not pair.notebook.is_file():
        return None
    return pair


def combined(pair: Pair, text: Path, data: bytes, ipynb: bytes) -> bytes | None:
    """The notebook text file ``text`` (holding ``data``) says, as Jupytext reads a pair: its inputs,
    with the outputs of ``ipynb``; ``None`` when that is the ``.ipynb`` as it is (the pair agrees).

    Raises :class:`~nbmergesave.errors.BadInput` when either file cannot be read as a notebook.
    """
    import jupytext
    import nbformat
    from jupytext.combine import combine_inputs_with_outputs
    from jupytext.jupytext import drop_text_representation_metadata

    fmt = pair.fmt(text)
    if fmt is None:
        raise BadInput(f"'{text}' is not paired with '{pair.notebook}'")
    current = notebook_io.parse_notebook(ipynb, f"'{pair.notebook}'")
    try:
        outputs = nbformat.reads(ipynb.decode("utf-8"), as_version=4)
        inputs = jupytext.reads(data.decode("utf-8"), fmt=fmt, config=pair.config)
        nb = drop_text_representation_metadata(combine_inputs_with_outputs(inputs, outputs, fmt=fmt))
    except Exception as e:
        raise BadInput(f"'{text}' cannot be read with the outputs of '{pair.notebook}': {e}") from None
    new = notebook_io.parse_notebook(notebook_io.dumps(_plain(nb)).encode("utf-8"), f"'{text}'")
    if new == current:
        return None
    notebook_io.validate(new, f"'{text}' read as a notebook")
    return notebook_io.dumps(new).encode("utf-8")


def _plain(nb: Any) -> Any:
    """An nbformat node as plain dicts and lists (what notebook_io serialises)."""
    if isinstance(nb, dict):
        return {k: _plain(v) for k, v in nb.items()}
    if isinstance(nb, list):
        return [_plain(v) for v in nb]
    return nb


def text_of(pair: Pair, text: Path, ipynb: bytes) -> bytes:
    """What Jupytext writes to ``text`` for the notebook ``ipynb``."""
    import jupytext
    import nbformat

    nb = nbformat.reads(ipynb.decode("utf-8"), as_version=4)
    return jupytext.writes(nb, fmt=pair.fmt(text), config=pair.config).encode("utf-8")


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _writing(fd: int) -> bool | None:
    """Whether some process has the file open for writing (Linux: a read lease cannot be had then);
    ``None`` where that cannot be asked (another system, a file system without leases, not our file)."""
    import fcntl

    setlease = getattr(fcntl, "F_SETLEASE", None)
    if setlease is None:
        return None
    try:
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
    except OSError as e:
        import errno

        return True if e.errno == errno.EAGAIN else None
    fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)  # released at once: no lease-break signal can come
    return False


def _read_whole(path: Path) -> bytes | None:
    """A text file as its writer finished it, or ``None`` (gone, empty, or being written now).

    Without an event to say a write was closed, a file read while its writer is between truncating
    and writing it would read as a notebook that lost its cells: so not while anyone has it open for
    writing, and not if it changed while we read it.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        if _writing(fd):
            return None
        data = os.pread(fd, before.st_size + 1, 0)
        after = os.fstat(fd)
        if _writing(fd) or len(data) != before.st_size or \
                (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            return None
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if data.strip() else None


# --- the Jupyter save hook ---------------------------------------------------

def bring_in(store: Store, notebook: str | os.PathLike[str], disk: bytes, engine: str = "cells") -> bytes | None:
    """The notebook on disk with the edits of its newer paired text files brought in, or ``None``
    (not paired, or every text file agrees with the ``.ipynb``).

    For the Jupyter save hook, which holds the store's save lock: a tab's save is then merged with
    the text file's edits instead of overwriting them (Jupytext's contents manager writes both files
    from that merge). Only a text file at least as new as the ``.ipynb`` is an edit, as Jupytext
    itself reads a pair: an older one was written before the ``.ipynb`` changed. Each text edit is
    stored as a version of the notebook and merged with the version on disk as the watcher merges an
    outside write (its base found in the store), nothing is written here.
    """
    path = Path(notebook)
    pair = pair_of(path, disk)
    if pair is None:
        return None
    for text, _ in pair.texts:  # what Jupytext may overwrite with this save (see guard_text_writes)
        _expected[text] = _read(text)
    result = disk
    for _, text in sorted((_mtime(t) or 0, t) for t, _ in pair.texts):  # oldest edit first
        data = _read_whole(text)
        if data is None:
            continue  # being written: taken in when its writer is done (the watcher sees the close)
        try:
            wanted = combined(pair, text, data, result)
        except NbMergeSaveError:
            continue  # a text file Jupytext cannot read either: Jupytext will say so
        if wanted is not None and not accounted(store, pair, text, data):
            result = _take(store, path, result, wanted, data, engine)
    return result if result != disk else None


#: How many of a notebook's newest versions a text file is compared with to tell a pair write from an edit.
RECENT = 16
_texts: dict[tuple[str, str], bytes] = {}


def _text_of_version(store: Store, pair: Pair, text: Path, sha: str) -> bytes | None:
    """What Jupytext writes to ``text`` for the stored content ``sha`` (cached: stored contents never change)."""
    key = (sha, str(text))
    if key not in _texts:
        version = store.latest_with(pair.notebook, sha)
        try:
            _texts[key] = text_of(pair, text, store.content(version)) if version is not None else b""
        except Exception:
            _texts[key] = b""
        if len(_texts) > 512:
            _texts.pop(next(iter(_texts)))
    return _texts[key] or None


def accounted(store: Store, pair: Pair, text: Path, data: bytes) -> bool:
    """Whether text file content ``data`` is no edit: what Jupytext wrote to it for one of the notebook's
    newest versions (a pair write, seen after the ``.ipynb`` moved on), or an edit taken in already.

    Timestamps cannot tell: a pair write left behind by a writer of the ``.ipynb`` alone is older than
    it, and so is an edit a Jupyter save left alone (:func:`guard_text_writes`) when it wrote the ``.ipynb``.
    """
    if store.declared_base(pair.notebook, sha256(data)) is not None:
        return True
    recent = store.history(pair.notebook, last=RECENT)
    read = {v.sha256 for v in recent if v.kind == WRITER}  # read from a text file: its text is that very edit
    return any(v.sha256 and v.sha256 not in read and _text_of_version(store, pair, text, v.sha256) == data
               for v in reversed(recent))


#: The text files of the pair being saved through Jupyter, as the save read them (see guard_text_writes).
_expected: dict[Path, bytes | None] = {}


def guard_text_writes(contents_manager: Any, os_path: Callable[[str], str], log: Any) -> bool:
    """Make Jupytext's contents manager leave a text file alone that changed during the save.

    Jupytext writes the ``.ipynb`` and then each text file of the pair from the saved model. A text file
    written by someone else after :func:`bring_in` read it (an agent writing at that very moment) would
    be overwritten, unseen. Its contents manager writes each file through ``self.super.save``; that is
    wrapped here: a text file that is no longer what the save read is left as it is, newer than the
    ``.ipynb``, so the watcher (or the next save) takes its edit in. ``False`` when this is no Jupytext
    contents manager (nothing to do).
    """
    inner = getattr(contents_manager, "super", None)
    if inner is None or not hasattr(contents_manager, "paired_notebooks") or isinstance(inner, _Guarded):
        return False
    contents_manager.super = _Guarded(inner, os_path, log)
    return True


class _Guarded:
    """Jupytext's ``self.super`` (the wrapped contents manager's methods), with text file writes checked."""

    def __init__(self, inner: Any, os_path: Callable[[str], str], log: Any) -> None:
        self._inner, self._os_path, self._log = inner, os_path, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def save(self, model: dict[str, Any], path: str = "") -> Any:
        if model.get("type") == "file":
            text = Path(self._os_path(path.strip("/")))
            if text in _expected and _read(text) != _expected.pop(text):
                self._log.warning("nbmergesave: %s was written while its paired notebook was being saved; left as "
                                  "written, to be merged in next", path)
                return self._inner.get(path, content=False)  # (a coroutine for an async manager, as save is)
        return self._inner.save(model, path)


def _take(store: Store, notebook: Path, disk: bytes, wanted: bytes, text: bytes, engine: str = "cells") -> bytes:
    """Store ``wanted`` (a text file's notebook) as a save, merged with ``disk`` if it was made from an
    older version; return what the notebook then is."""
    from .merge import merge
    from .merge.options import engine_name

    before = store.latest_with(notebook, sha256(disk)) or store.add(notebook, disk, "observed", on_disk=False)
    # Stored already (a watcher taking the same edit in): that version is this save, not a base it was made from.
    saved = store.latest_with(notebook, sha256(wanted)) or store.add(notebook, wanted, WRITER, on_disk=False)
    save = notebook_io.parse_notebook(wanted)
    base = infer_base(store, notebook, save, before, saved)
    if base is None:  # made from the notebook as it is: the new notebook
        result = wanted
    else:
        out = merge(notebook_io.parse_notebook(store.content(base)), notebook_io.parse_notebook(disk), save,
                    engine=engine)
        notebook_io.validate(out.notebook, f"merged '{notebook}'")
        result = notebook_io.dumps(out.notebook).encode("utf-8")
        store.add(notebook, result, "merged", on_disk=False, base=base.version, local=before.version,
                  remote=saved.version, conflicts=len(out.unresolved), engine=engine_name(engine))
    store.declare(notebook, sha256(result), before.sha256 or "", WRITER)
    _taken(store, notebook, text, before.sha256)
    return result


def _taken(store: Store, notebook: Path, text: bytes, into: str | None) -> None:
    """Note that text file content ``text`` was brought into the notebook (a declaration under the
    notebook's key), so that a watcher reading it late does not take it in again."""
    if into:
        store.declare(notebook, sha256(text), into, WRITER)


# --- the watcher ---------------------------------------------------------------

class Pairs:
    """The watcher's view of Jupytext pairs: which text files belong to which notebooks (as the
    notebooks it synced say), and the sync of a text file's write."""

    def __init__(self) -> None:
        self.extensions = text_extensions()
        self._notebook_of: dict[Path, Path] = {}  # text file -> notebook, from the notebooks seen
        self._texts_of: dict[Path, tuple[Path, ...]] = {}

    def candidate(self, text: Path) -> Path | None:
        """The notebook a text file may be paired with, cheaply (the event thread asks for every
        file written): one a synced notebook named, or one beside it with its stem. The worker checks."""
        if text.suffix not in self.extensions:
            return None
        known = self._notebook_of.get(text)
        if known is not None:
            return known
        for stem in {text.stem, text.name.split(".")[0]}:
            sibling = text.with_name(stem + ".ipynb")
            if sibling.is_file():
                return sibling
        return None

    def note(self, notebook: Path, pair: Pair | None) -> None:
        for text in self._texts_of.pop(notebook, ()):
            if self._notebook_of.get(text) == notebook:
                del self._notebook_of[text]
        if pair is not None:
            self._texts_of[notebook] = tuple(t for t, _ in pair.texts)
            for text in self._texts_of[notebook]:
                self._notebook_of[text] = notebook

    def find(self, text: Path) -> Pair | None:
        """The pair ``text`` belongs to: as its notebook's metadata (or configuration) says, else as
        the text file's own header says."""
        candidate = self.candidate(text)
        if candidate is not None:
            pair = pair_of(candidate)
            if pair is not None and pair.fmt(text) is not None:
                return pair
        pair = pair_of_text(text)
        if pair is not None:
            self.note(pair.notebook, pair)
        return pair

    def sync_text(self, store: Store, text: Path, *, data: bytes | None = None, session: Session,
                  writer_for: WriterFor | None = None, engine_for: EngineFor | None = None) -> Outcome | None:
        """Handle a write of text file ``text`` (``data``: its bytes as written, when read already) as a
        save of its notebook: merged with the ``.ipynb`` like any outside write and written there, then
        the pair's text files written from the result. ``None`` when ``text`` is no paired text file.

        ``writer_for(notebook)`` gives the ``writer_of`` of the sync of the ``.ipynb`` as it is first
        (a write git made there is git's, never merged)."""
        pair = self.find(text)
        if pair is None:
            return None
        notebook = pair.notebook
        key = store.key(notebook)
        if data is None:
            data = _read_whole(text)
            if data is None:
                return None  # gone, or being written: its close event brings it here again
        if sha256(data) in session.own_writes or not data.strip():
            return Outcome("unchanged", key)  # ours, or emptied (a writer between truncating and writing)
        writer_of = writer_for(notebook) if writer_for is not None else None
        engine = engine_for(notebook) if engine_for is not None else "cells"
        for _ in range(self.ATTEMPTS):
            first = sync_file(store, notebook, session=session, writer_of=writer_of, engine=engine)  # as it is now
            if first.action in ("partial", "error", "skipped"):
                return first
            with store.save_lock(notebook):  # a Jupyter save writes both files under it: read a consistent pair
                ipynb = _read(notebook)
                now = _read(text)
            on_disk = store.on_disk(notebook)
            if ipynb is not None and on_disk is not None and on_disk.sha256 == sha256(ipynb):
                break
            # saved again since: look again now, with the edit still in hand (a retry would read the file anew)
        if ipynb is None or on_disk is None or on_disk.sha256 != sha256(ipynb):
            return Outcome("partial", key, message=f"'{key}' kept changing; will look again")
        if accounted(store, pair, text, data):
            # An edit taken in already (by a Jupyter save), or the text file Jupytext wrote with an earlier
            # save, seen late: no edit. Taken for one, it would undo the saves since.
            if now == data:
                self._write_texts(store, pair, session, None, None)  # still there: the text file follows
            return Outcome("unchanged", key, on_disk.version)
        try:
            wanted = combined(pair, text, data, ipynb)
        except BadInput as e:
            if now != data:
                return Outcome("unchanged", key, on_disk.version)  # half written then, rewritten since
            return Outcome("partial", key, message=str(e))
        if wanted is None:
            self._write_texts(store, pair, session, text, data)  # the others may lag
            return Outcome("unchanged", key, on_disk.version)
        known = store.latest_with(notebook, sha256(wanted))
        if known is not None and now != data:
            return Outcome("unchanged", key, on_disk.version)  # seen late, and taken in already
        if known is not None:
            # The text file says an earlier version of the notebook again: a revert (an undo, a checkout).
            # Written as it is and recorded, never merged (merged with its own old self, it would be dropped).
            return self._revert(store, pair, session, text, data, wanted, ipynb, first, engine)
        if store.latest_with(notebook, sha256(wanted)) is None:  # kept as read from the text file (kind 'jupytext')
            store.add(notebook, wanted, WRITER, on_disk=False)
        session.displaced.setdefault(key, []).append(wanted)  # a save the .ipynb does not hold: merged in and written
        outcome = sync_file(store, notebook, session=session, engine=engine)
        _taken(store, notebook, data, on_disk.sha256)
        self._write_texts(store, pair, session, text, data)
        steps = tuple(s for s in (first, *outcome.earlier) if s.action != "unchanged")
        return replace(outcome, earlier=steps)

    def _revert(self, store: Store, pair: Pair, session: Session, text: Path, data: bytes, wanted: bytes,
                ipynb: bytes, first: Outcome, engine: str = "cells") -> Outcome:
        key = store.key(pair.notebook)
        with store.save_lock(pair.notebook):
            try:
                replaced = notebook_io.write_atomic(pair.notebook, wanted, expected=ipynb)
            except notebook_io.Changed:
                return Outcome("partial", key, message=f"'{key}' changed; will look again")
        if replaced is not None:
            if replaced.unexpected is not None:  # a save landed in the swap: merged in next
                session.displaced.setdefault(key, []).append(replaced.unexpected)
            replaced.close()
        outcome = sync_file(store, pair.notebook, session=session, engine=engine)  # recorded as a revert
        _taken(store, pair.notebook, data, sha256(ipynb))
        self._write_texts(store, pair, session, text, data)
        return replace(outcome, earlier=tuple(s for s in (first, *outcome.earlier) if s.action != "unchanged"))

    #: How often a text file's write is looked at again while its notebook keeps being saved meanwhile.
    ATTEMPTS = 20

    def check(self, store: Store, notebook: Path, *, session: Session, writer_for: WriterFor | None = None,
              engine_for: EngineFor | None = None, follow: bool = True) -> list[tuple[Path, Outcome]]:
        """After a sync of ``notebook``: note its pair, take in a text file newer than it that says
        something else (written while no watcher ran, or an event lost), and (``follow``) write the text
        files older than it from it: a writer that changed the ``.ipynb`` alone (a script, an agent, our
        own merge) leaves them behind, and Jupytext refuses to open a pair whose ``.ipynb`` is newer and
        says something else. (Not after a single writer's save, git's: its files are its own.)"""
        pair = pair_of(notebook)
        self.note(notebook, pair)
        if pair is None:
            return []
        done = []
        ipynb = _read(notebook)
        for text, _ in pair.texts:
            data = _read_whole(text)
            if data is None or ipynb is None:
                continue
            try:
                if combined(pair, text, data, ipynb) is None or accounted(store, pair, text, data):
                    continue  # the pair agrees, or a pair write left behind (the text file follows below)
            except BadInput:
                continue
            outcome = self.sync_text(store, text, data=data, session=session, writer_for=writer_for,
                                     engine_for=engine_for)
            if outcome is not None:
                done.append((text, outcome))
        if follow and not done:
            self._write_texts(store, pair, session, None, None)
        return done

    def _write_texts(self, store: Store, pair: Pair, session: Session, edited: Path | None,
                     data: bytes | None) -> None:
        """Write each text file of the pair from the ``.ipynb``, unless it changed since we read it:
        ``edited`` must still hold ``data``, and another text file newer than the ``.ipynb`` is an
        edit of its own, taken in when its event is handled (its snapshot is queued)."""
        with store.save_lock(pair.notebook):
            ipynb = _read(pair.notebook)
            if ipynb is None:
                return
            for text, _ in pair.texts:
                have = _read(text)
                try:
                    want = text_of(pair, text, ipynb)
                except Exception:
                    continue
                if have == want:
                    continue
                if text == edited:
                    if have != data:
                        continue  # edited again meanwhile: that write comes next, then the pair is written
                elif have is not None and not accounted(store, pair, text, have):
                    continue  # an edit of its own, not taken in yet: its event (or the next look) brings it in
                session.own_writes.add(sha256(want))
                try:
                    replaced = notebook_io.write_atomic(text, want, expected=have if have is not None else b"")
                except (notebook_io.Changed, OSError):
                    continue
                if replaced is not None:
                    if replaced.unexpected is not None:  # a write landed in the swap: put it back, to be taken in
                        try:
                            notebook_io.write_atomic(text, replaced.unexpected, expected=want)
                        except (notebook_io.Changed, OSError):
                            pass
                    replaced.close()


__all__ = ["Pair", "Pairs", "available", "bring_in", "combined", "pair_of", "pair_of_text", "text_of"]
