"""The single writer's fast path: record a save at a cost that scales with the cells it changed.

Most saves follow the version on disk (nobody else saved since the writer
loaded it). Such a save needs no merge and no base search; what it costs is
turning the notebook into bytes (nbformat's layout: ``json.dumps`` with an
indent, which Python does in pure Python, 25 ms for 1.8 MB) and cutting and
hashing those bytes into the store's pieces. Both are done here cell by cell,
against the previous save of the same notebook kept in memory: a cell equal to
one already serialised reuses its text, its pieces and their digests; only the
changed cells are serialised, cut and hashed again. The result is exactly the
bytes :func:`nbmergesave.notebook_io.dumps` gives, cut exactly as
:func:`nbmergesave.store.pieces.split` cuts them (``tests/test_fast_path.py``).

``FAST`` turns the fast paths off (the tests compare both ways, and a person
chasing a bug can too: ``NBMERGESAVE_FAST_PATH=0``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .notebook_io import TRANSIENT_NB_METADATA, split_cell
from .store import pieces

#: Whether the fast paths are taken (the Jupyter extension's save, the watcher's record).
FAST = os.environ.get("NBMERGESAVE_FAST_PATH", "1") not in ("0", "false", "no")

_DUMP = {"indent": 1, "sort_keys": True, "ensure_ascii": False, "separators": (",", ": ")}
_CELLS_OPEN = '{\n "cells": ['


@dataclass(frozen=True)
class Written:
    """A notebook as nbformat writes it: its text, its bytes, and their cut into the store's pieces."""

    text: str
    data: bytes
    parts: list[bytes]
    digests: list[bytes]  # sha256 of each part, as the store names pieces
    notebook: dict[str, Any]  # what was serialised: the notebook without its transient metadata (see plain())


@dataclass
class _Cell:
    cell: dict[str, Any]  # the cell as serialised (transient metadata removed)
    data: bytes  # b'\n  {...\n  }': the cell at its depth in the file, without the comma after it
    cuts: dict[bool, tuple[list[bytes], list[bytes]]]  # followed by a comma or not -> (parts, digests)


class Serialiser:
    """Serialise notebooks cell by cell, reusing the cells of the last notebook serialised under each key."""

    #: How many notebooks' cells are kept (one per open notebook is enough; each costs its size in memory).
    KEPT = 8

    def __init__(self) -> None:
        self._last: OrderedDict[str, list[_Cell]] = OrderedDict()

    def written(self, key: str, nb: dict[str, Any]) -> Written | None:
        """``nb`` as Jupyter writes it (transient metadata dropped), or ``None`` when its layout is not the
        one this serialiser reproduces (the caller then serialises the whole notebook)."""
        if not isinstance(nb.get("cells"), list) or min(nb, default="") != "cells" \
                or not all(isinstance(c, dict) for c in nb["cells"]):
            return None
        top = _top(nb)
        if top is None:
            return None
        head, tail = top
        previous = self._last.get(key, [])
        by_id = {c.cell.get("id"): c for c in previous if c.cell.get("id") is not None}
        cells: list[_Cell] = []
        for i, raw in enumerate(nb["cells"]):
            cell = _plain_cell(raw)
            old = previous[i] if i < len(previous) else None
            if old is None or not same(old.cell, cell):
                old = by_id.get(cell.get("id"))
            if old is None or not same(old.cell, cell):
                old = _new_cell(cell)
            cells.append(old)
        self._last[key] = cells
        self._last.move_to_end(key)
        while len(self._last) > self.KEPT:
            self._last.popitem(last=False)
        return _join(head, tail, cells, plain(nb, [c.cell for c in cells]))

    def forget(self, key: str) -> None:
        self._last.pop(key, None)


_NUMBERS = (bool, int, float)


def same(a: Any, b: Any) -> bool:
    """``a == b``, and every number in one has the type of the other's: what decides whether old bytes can be
    reused. Python's ``==`` has ``1 == 1.0 == True``, but ``json.dumps`` writes ``1``, ``1.0`` and ``true``.

    >>> same({"a": [1]}, {"a": [1]}), same({"a": [1]}, {"a": [1.0]}), same({"a": 1}, {"a": True})
    (True, False, False)
    """
    return a is b or (a == b and _typed(a, b))


def _typed(a: Any, b: Any) -> bool:
    """For ``a == b``: whether their numbers have the same types. Among JSON values only numbers are equal
    across types (a value equal to a string is that string), so strings, the bulk of a notebook, are
    skipped without a call."""
    ta, tb = type(a), type(b)
    if ta in _NUMBERS or tb in _NUMBERS:
        return ta is tb
    if isinstance(a, dict):  # loops, not all() over a generator: this runs for every cell of every save
        for k, v in a.items():
            if type(v) is not str and not _typed(v, b[k]):
                return False
    elif isinstance(a, list):
        for x, y in zip(a, b):
            if type(x) is not str and not _typed(x, y):
                return False
    return True


def plain(nb: dict[str, Any], cells: list[Any] | None = None) -> dict[str, Any]:
    """``nb`` as nbformat writes it: without the keys it keeps in memory only (cell ``trusted`` marks,
    ``orig_nbformat``, ``signature``), which the server adds and drops on its own."""
    metadata = nb.get("metadata")
    if isinstance(metadata, dict):
        metadata = {k: v for k, v in metadata.items() if k not in TRANSIENT_NB_METADATA}
    return {**nb, "metadata": metadata, "cells": cells if cells is not None else [_plain_cell(c) for c in nb.get("cells", [])]}


def _plain_cell(cell: Any) -> Any:
    """The cell as nbformat writes it: without the in-memory ``trusted`` mark."""
    if isinstance(cell, dict) and isinstance(cell.get("metadata"), dict) and "trusted" in cell["metadata"]:
        return {**cell, "metadata": {k: v for k, v in cell["metadata"].items() if k != "trusted"}}
    return cell


def _top(nb: dict[str, Any]) -> tuple[str, str] | None:
    """The text before the first cell and after the last one."""
    rest = {**nb, "cells": [0],
            "metadata": {k: v for k, v in (nb.get("metadata") or {}).items() if k not in TRANSIENT_NB_METADATA}}
    if not isinstance(nb.get("metadata", {}), dict):
        return None
    text = json.dumps(rest, **_DUMP) + "\n"
    marker = _CELLS_OPEN + "\n  0"
    if not text.startswith(marker) or not text.startswith('\n ],\n "metadata"', len(marker)):
        return None
    return _CELLS_OPEN, text[len(marker):]


def _new_cell(cell: dict[str, Any]) -> _Cell:
    text = "\n  " + json.dumps(split_cell(cell), **_DUMP).replace("\n", "\n  ")
    return _Cell(cell, text.encode("utf-8"), {})


def _cut(cell: _Cell, comma: bool) -> tuple[list[bytes], list[bytes]]:
    """The pieces of a cell's stretch of the file (as :func:`pieces.split` cuts it), hashed once per cell."""
    found = cell.cuts.get(comma)
    if found is None:
        region = cell.data + b"," if comma else cell.data
        parts = pieces.split_cell(region)
        found = cell.cuts[comma] = (parts, [hashlib.sha256(p).digest() for p in parts])
    return found


def _join(head: str, tail: str, cells: list[_Cell], notebook: dict[str, Any]) -> Written:
    head_b = head.encode("utf-8")
    parts: list[bytes] = []
    digests: list[bytes] = []
    if not cells:  # '{\n "cells": [],\n ...': cut where split() cuts it
        data = (head + "]" + tail[len("\n ]"):]).encode("utf-8")
        cut = pieces.split(data)
        return Written(data.decode("utf-8"), data, cut, [hashlib.sha256(p).digest() for p in cut], notebook)
    parts.append(head_b)
    for n, cell in enumerate(cells):
        p, d = _cut(cell, n < len(cells) - 1)
        parts += p
        digests += d
    tail_b = tail.encode("utf-8")
    parts.append(tail_b)
    digests = [hashlib.sha256(head_b).digest(), *digests, hashlib.sha256(tail_b).digest()]
    data = b"".join(parts)
    return Written(data.decode("utf-8"), data, parts, digests, notebook)


__all__ = ["FAST", "Serialiser", "Written", "same"]
