"""Bytes on disk <-> validated notebooks, and atomic writes.

Every notebook this tool reads goes through :func:`parse_notebook`, so bad
input fails in one place with one clear line; every file it writes goes
through :func:`write_atomic`, so a reader never sees half a file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadInput, NotANotebook, UnsupportedFormat


def read_bytes(path: str | os.PathLike[str], label: str | None = None) -> bytes:
    """Read a file's bytes, turning OS errors into one-line :class:`BadInput`.

    ``label`` names the file in the message (default: the quoted path).
    """
    label = label or f"'{path}'"
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BadInput(f"{label} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{label} is a directory, not a notebook") from None
    except PermissionError:
        raise BadInput(f"{label} cannot be read: permission denied") from None
    except OSError as e:
        raise BadInput(f"{label} cannot be read: {e.strerror}") from None


def parse_notebook(
    data: bytes, label: str = "notebook", *, empty_ok: bool = False
) -> dict[str, Any]:
    """Parse and check notebook bytes; raise :class:`BadInput` with one line.

    ``label`` names the input in the message, e.g. ``"LOCAL 'a.ipynb'"``.
    ``empty_ok`` turns an empty file into an empty notebook (git passes an
    empty base when both branches added the same path).

    >>> parse_notebook(b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')["nbformat"]
    4
    """
    if not data or data.isspace():  # not data.strip(): that copies the whole file
        if empty_ok:
            return empty_notebook()
        raise BadInput(f"{label} is empty")
    if b"\x00" in data[:8192]:
        raise BadInput(f"{label} is a binary file, not a notebook")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInput(f"{label} is not UTF-8 text (bad byte at offset {e.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInput(f"{label} is not valid JSON: line {e.lineno} column {e.colno} ({e.msg})") from None
    except RecursionError:
        raise BadInput(f"{label} is nested too deeply to read") from None
    return notebook_from_dict(raw, label)


def torn_prefix(data: bytes) -> bytes | None:
    r"""The whole notebook at the start of a file two in-place writers tore, or ``None``.

    Two editors that rewrite a file in place at once (truncate, then write)
    leave the later one's notebook followed by the tail of a longer one: a
    file that does not parse. Its leading JSON document, when it is a
    notebook, is exactly what the later writer saved.

    >>> torn_prefix(b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n": [], "nbformat": 4}\n')
    b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'
    """
    try:
        text = data.decode("utf-8")
        raw, end = json.JSONDecoder().raw_decode(text)
        notebook_from_dict(raw)
    except (ValueError, RecursionError, BadInput):
        return None
    if not text[end:].strip():
        return None  # not torn: the whole file is one document
    return text[:end].encode("utf-8") + (b"\n" if text[end:end + 1] == "\n" else b"")


def notebook_from_dict(raw: Any, label: str = "notebook") -> dict[str, Any]:
    """Check a parsed JSON value is an nbformat 4 notebook; rejoin split lines in place.

    Inputs get a structural check (what the merge relies on), with one clear
    line for each way it can fail; the full schema is checked on what we
    write (:func:`validate`), since that is the promise this tool makes.
    """
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise NotANotebook(f"{label} is not a Jupyter notebook (no 'nbformat' field)")
    major = raw["nbformat"]
    if major != 4:
        raise UnsupportedFormat(
            f"{label} is nbformat {major}; only nbformat 4 is merged "
            "(hint: convert it with 'jupyter nbconvert --to notebook --nbformat 4')"
        )
    cells = raw.get("cells")
    if not isinstance(cells, list):
        raise NotANotebook(f"{label} is not a valid notebook: 'cells' is missing or not a list")
    if not isinstance(raw.get("metadata", {}), dict) or not isinstance(raw.get("nbformat_minor", 0), int):
        raise NotANotebook(f"{label} is not a valid notebook: bad 'metadata' or 'nbformat_minor'")
    raw.setdefault("metadata", {})
    raw.setdefault("nbformat_minor", 0)
    for key in TRANSIENT_NB_METADATA:
        raw["metadata"].pop(key, None)
    for n, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") not in _CELL_TYPES:
            raise NotANotebook(f"{label} is not a valid notebook: cell {n} has no valid 'cell_type'")
        if not isinstance(cell.get("metadata", {}), dict):
            raise NotANotebook(f"{label} is not a valid notebook: cell {n} has bad 'metadata'")
        _rejoin_cell(cell, label, n)
    return raw


_CELL_TYPES = frozenset({"code", "markdown", "raw"})
TRANSIENT_NB_METADATA = ("orig_nbformat", "orig_nbformat_minor", "signature")
_MIME_JSON = re.compile(r"^application/(.*\+)?json$")


def _joined(value: Any, label: str, n: int) -> Any:
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise NotANotebook(f"{label} is not a valid notebook: cell {n} has non-text lines")
        return "".join(value)
    return value


def _rejoin_bundle(bundle: Any, label: str, n: int) -> None:
    if isinstance(bundle, dict):
        for mime, value in bundle.items():
            if not _MIME_JSON.match(mime):
                bundle[mime] = _joined(value, label, n)


def _rejoin_cell(cell: dict[str, Any], label: str, n: int) -> None:
    """Undo nbformat's on-disk line splitting, as ``nbformat.read`` does."""
    if "source" in cell:
        cell["source"] = _joined(cell["source"], label, n)
    if not isinstance(cell.get("source", ""), str):
        raise NotANotebook(f"{label} is not a valid notebook: cell {n} has no text 'source'")
    cell.get("metadata", {}).pop("trusted", None)
    for attachment in (cell.get("attachments") or {}).values():
        _rejoin_bundle(attachment, label, n)
    outputs = cell.get("outputs", [])
    if not isinstance(outputs, list):
        raise NotANotebook(f"{label} is not a valid notebook: cell {n} has bad 'outputs'")
    for out in outputs:
        if not isinstance(out, dict):
            raise NotANotebook(f"{label} is not a valid notebook: cell {n} has a bad output")
        if out.get("output_type") in ("execute_result", "display_data"):
            _rejoin_bundle(out.get("data"), label, n)
        elif "text" in out:
            out["text"] = _joined(out["text"], label, n)


def _split(value: str) -> list[str]:
    return value.splitlines(True)


def _split_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    # nbformat splits text/* and these two only; images stay one string.
    return {
        mime: _split(v) if isinstance(v, str) and (mime.startswith("text/") or mime in _SPLIT_MIMES) else v
        for mime, v in bundle.items()
    }


_SPLIT_MIMES = frozenset({"application/javascript", "image/svg+xml"})


def split_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``cell`` with text split into lines, as ``nbformat.write`` stores it."""
    out = dict(cell)
    if isinstance(out.get("source"), str):
        out["source"] = _split(out["source"])
    if out.get("attachments"):
        out["attachments"] = {k: _split_bundle(v) for k, v in out["attachments"].items()}
    if out.get("cell_type") == "code" and out.get("outputs"):
        outputs = []
        for o in out["outputs"]:
            kind = o.get("output_type")
            if kind in ("execute_result", "display_data") and isinstance(o.get("data"), dict):
                o = {**o, "data": _split_bundle(o["data"])}
            elif kind == "stream" and isinstance(o.get("text"), str):
                o = {**o, "text": _split(o["text"])}
            outputs.append(o)
        out["outputs"] = outputs
    return out


_validators: dict[int, Any] = {}

# Branches of every oneOf in the nbformat 4 schemas exclude each other (by
# JSON type, or by a required cell_type/output_type), so anyOf accepts exactly
# the same documents. anyOf stops at the first branch that fits; oneOf tries
# them all, raising an exception per miss, which made validation of long
# notebooks the slowest step of a merge. The likeliest branch goes first.
_FIRST = {"#/definitions/code_cell": 0, "#/definitions/stream": 0, "#/definitions/display_data": 1}


def _any_of(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _any_of(v) for k, v in node.items()}
        if "oneOf" in node:
            branches = sorted(node.pop("oneOf"), key=lambda b: _FIRST.get(b.get("$ref"), 9))
            node["anyOf"] = branches
        return node
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    return node


def _validator(minor: int, label: str) -> Any:
    validator = _validators.get(minor)
    if validator is None:
        import fastjsonschema
        from importlib.util import find_spec

        spec = find_spec("nbformat")  # finds the package without importing it
        folder = Path(next(iter(spec.submodule_search_locations or []))) if spec else Path(".")
        schema_file = folder / "v4" / f"nbformat.v4.{minor}.schema.json"
        if not schema_file.is_file():
            raise UnsupportedFormat(f"{label} has nbformat 4.{minor}, newer than this nbformat knows")
        schema = _any_of(json.loads(schema_file.read_text(encoding="utf-8")))
        validator = _validators[minor] = fastjsonschema.compile(schema)
    return validator


def validate(nb: dict[str, Any], label: str = "notebook") -> None:
    """Check ``nb`` against nbformat's schema; raise :class:`NotANotebook` naming the first error.

    Uses nbformat's own schema files with fastjsonschema (compiled once per
    process), without importing nbformat's validator, whose jsonschema
    import costs seconds in some environments.
    """
    import fastjsonschema

    minor = nb.get("nbformat_minor", 0)
    if not isinstance(minor, int) or minor < 0:
        raise NotANotebook(f"{label} is not a valid notebook: bad 'nbformat_minor'")
    try:
        _validator(minor, label)(nb)
    except fastjsonschema.JsonSchemaValueException as error:
        # The message names the place: "data.cells[0] must be ..."
        message = str(error.message).splitlines()[0].removeprefix("data.")
        raise NotANotebook(f"{label} is not a valid notebook: {message}") from None


def empty_notebook(minor: int = 5) -> dict[str, Any]:
    """A notebook with no cells and no metadata."""
    return {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": minor}


def read_notebook(
    path: str | os.PathLike[str], label: str = "notebook", *, empty_ok: bool = False
) -> dict[str, Any]:
    """Read the notebook at ``path`` (see :func:`parse_notebook`)."""
    full = f"{label} '{path}'" if label else f"'{path}'"
    return parse_notebook(read_bytes(path, full), full, empty_ok=empty_ok)


def dumps(nb: Mapping[str, Any]) -> str:
    """Serialise in nbformat's canonical layout (indent 1, sorted keys, lines split, final newline).

    Byte-for-byte what ``nbformat.write`` produces, so cells a merge did not
    touch stay identical to the inputs and git diffs stay small. The input
    is not modified.
    """
    disk = {**nb, "cells": [split_cell(c) for c in nb["cells"]]}
    return json.dumps(disk, indent=1, sort_keys=True, ensure_ascii=False, separators=(",", ": ")) + "\n"


class Changed(Exception):
    """The file no longer holds the bytes a write expected to replace."""


@dataclass
class Replaced:
    """The inode a write replaced, still open for reading.

    A program that opened the old file before the rename (an editor in the
    middle of its own save) goes on writing into this inode, which no name
    points to any more. Whoever holds this can see that (``changed()``) and
    read what it wrote (``read()``) instead of letting it vanish.

    ``unexpected``: when the write swapped files atomically and found
    something other than the expected bytes (a save that landed between the
    caller's read and the swap), those bytes. They are no longer on disk:
    the caller must merge them in.
    """

    path: Path
    fd: int
    baseline: tuple[int, int]
    since: float
    unexpected: bytes | None = None

    @classmethod
    def hold(cls, path: Path, fd: int) -> Replaced:
        """Watch the open file ``fd`` (that was at ``path``) from its present size and time on."""
        st = os.fstat(fd)
        return cls(path, fd, (st.st_size, st.st_mtime_ns), time.monotonic())

    def marked(self) -> bool:
        """Whether the bytes handed back (``unexpected``) were written with a merging writer's mark (:func:`marked`)."""
        import hashlib

        return self.unexpected is not None and marked(self.fd, hashlib.sha256(self.unexpected).hexdigest())

    def changed(self) -> bool:
        st = os.fstat(self.fd)
        return (st.st_size, st.st_mtime_ns) != self.baseline

    def read(self) -> bytes:
        size = os.fstat(self.fd).st_size
        return os.pread(self.fd, size, 0)

    def close(self) -> None:
        os.close(self.fd)


#: The extended attribute a merging writer leaves on the file it wrote: the sha256 of the bytes it wrote. See
#: :func:`write_atomic` (``mark``) and :func:`marked`.
MARK_ATTR = "user.nbmergesave.merged"


def marked(path: str | os.PathLike[str] | int, digest: str) -> bool:
    """Whether ``path`` (or the open file ``path``, a descriptor) was written, holding the bytes whose sha256 is ``digest``, by a writer that merged them
    with what it replaced (``write_atomic(..., mark=True)``: the Jupyter extension's compare-then-swap).

    The mark travels with the file, not with a store: a watcher on another host whose store cannot see that
    writer's declarations (each has its own spool while the database is away) still knows such a write needs
    no merge of its own. An in-place write keeps the inode's mark but changes the bytes, so it no longer
    matches; a new file (an editor's rename) has none. ``False`` where extended attributes are not kept.
    """
    try:
        return os.getxattr(path, MARK_ATTR) == digest.encode()
    except OSError:
        return False


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, expected: bytes | None = None,
                 mark: bool = False) -> Replaced | None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a mix.

    The temporary file lives in the same folder (so the rename cannot cross
    file systems), takes the old file's mode and group (where we may), and is fsynced before and the
    folder after the rename. On any error the target is left as it was.

    With ``expected`` (compare-and-swap) the file must hold exactly those
    bytes just before the rename, else :class:`Changed` is raised and
    nothing is written (so no other writer ever sees the file go back to an
    older state). The old inode is returned still open, as :class:`Replaced`,
    so that a writer caught mid-save is not lost; the caller closes it.
    Where the kernel can swap two names atomically (Linux
    ``renameat2(RENAME_EXCHANGE)``), the rename is that swap, and a save
    that landed between the compare and the swap comes back as
    :attr:`Replaced.unexpected` instead of vanishing.

    ``mark``: the writer merged ``data`` with what it replaces; the file says so (:func:`marked`).
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    folder = target.parent if str(target.parent) else Path(".")
    group = None
    try:
        st = os.stat(target)
        mode, group = stat.S_IMODE(st.st_mode), st.st_gid
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".~{target.name}.", suffix=".tmp", dir=folder)
    old = None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            if mark:
                _mark(f.fileno(), payload)
            os.fsync(f.fileno())
        if group is not None and group != os.stat(tmp).st_gid:
            try:  # a team's notebook stays the team's when another member replaces it
                os.chown(tmp, -1, group)
            except OSError:
                pass  # not a member of that group: the mode is kept all the same
        os.chmod(tmp, mode)  # after chown, which may clear setgid bits
        if expected is None:
            os.replace(tmp, target)
        else:
            old = _open_expected(target, expected)  # the compare: nothing is written unless the file holds it
            if _exchange(tmp, target):  # the swap: a save landing since the compare is handed back, not lost
                if old is not None:
                    old.close()
                old = _displaced(target, tmp, expected)
            else:
                os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if old is not None:
            old.close()
        raise
    _fsync_dir(folder)
    return old


def _mark(fd: int, payload: bytes) -> None:
    import hashlib

    try:
        os.setxattr(fd, MARK_ATTR, hashlib.sha256(payload).hexdigest().encode())
    except OSError:
        pass  # a file system without user extended attributes: the mark is a help, never a need


def _exchange(a: str, b: Path) -> bool:
    """Atomically swap the files named ``a`` and ``b``; False where that cannot be done."""
    if _renameat2 is None:
        return False
    if _renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.ENOENT, errno.EPERM):
        return False  # no such call, a file system without it, or no file to swap with
    raise OSError(err, os.strerror(err), str(b))


def _load_renameat2():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _displaced(target: Path, tmp: str, expected: bytes) -> Replaced:
    """After a swap: hold the file that was at ``target`` (now at ``tmp``) open, and drop its name."""
    if stat.S_ISDIR(os.lstat(tmp).st_mode):  # a folder took the notebook's place: put it back
        _exchange(tmp, target)
        raise Changed(str(target))
    replaced = Replaced.hold(target, os.open(tmp, os.O_RDONLY))
    os.unlink(tmp)
    content = replaced.read()
    if content != expected:
        replaced.unexpected = content
    return replaced


def _open_expected(target: Path, expected: bytes) -> Replaced | None:
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        if expected:
            raise Changed(str(target)) from None
        return None
    replaced = Replaced.hold(target, fd)
    if replaced.read() != expected:
        replaced.close()
        raise Changed(str(target))
    return replaced


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is done
        pass
    finally:
        os.close(fd)
