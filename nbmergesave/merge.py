"""Three-way notebook merge: a cell-level diff3 whose report is the truth about the file.

Cells are aligned to the base first (by cell id where every cell has a
unique one, by cell type and source otherwise, then by similarity for cells
whose source changed). What neither side changed is kept, what only one side
changed is taken, and a cell both sides changed is merged field by field:

- **source**: line by line (diff3). Lines both sides changed differently are
  left between ``<<<<<<< local`` / ``=======`` / ``>>>>>>> remote`` lines for a
  person, unless ``strategy`` picks a side. A final newline is merged on its
  own, so removing it never clashes with a line edit.
- **outputs follow their source**: when exactly one side changed the source,
  its outputs and execution count are taken; when both re-ran an unchanged
  cell, the remote side's outputs (the later save) are taken and reported as
  settled. Outputs are compared as whole values, never parsed. Marker
  outputs only with ``outputs="inline"``. Execution counts alone never clash.
- **metadata** (cell and notebook) merges key by key; a key both changed
  differently takes the remote value (or the ``strategy`` side), settled.
- **delete versus edit** keeps the edited cell, preceded by a markdown note
  cell saying what the other side did: left for a person.
- **inserts**: cells both sides inserted at one place are kept once when equal;
  different ones are left between marker cells.

Every conflict is recorded where it is written, with its merged cell index,
so the report (:attr:`MergeResult.conflicts`) says exactly what the file
shows: ``resolution == "inline"`` for what is left for a person, otherwise how
the merge settled it.

>>> from nbformat.v4 import new_notebook, new_code_cell
>>> base = new_notebook(cells=[new_code_cell("a = 1", id="a"), new_code_cell("b = 1", id="b")])
>>> local = new_notebook(cells=[new_code_cell("a = 2", id="a"), new_code_cell("b = 1", id="b")])
>>> remote = new_notebook(cells=[new_code_cell("a = 1", id="a"), new_code_cell("b = 3", id="b")])
>>> [c["source"] for c in merge(base, local, remote).notebook["cells"]]
['a = 2', 'b = 3']
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from types import SimpleNamespace
from typing import Any, Literal

Strategy = Literal["inline", "local", "remote", "base"]
OutputStrategy = Literal["inline", "local", "remote", "base", "clear"]

STRATEGIES: tuple[str, ...] = ("inline", "local", "remote", "base")
OUTPUT_STRATEGIES: tuple[str, ...] = (*STRATEGIES, "clear")
#: CLI spellings git users know, mapped to ours.
ALIASES = {"ours": "local", "theirs": "remote"}

_NBDIME_STRATEGY = {"inline": "inline", "local": "use-local", "remote": "use-remote", "base": "use-base", "clear": "clear-all"}
_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
_DELETED_MARK = "CELL DELETED >>>>>>>"
#: Cell metadata key of the cells the merge adds to show a conflict (notes and marker cells).
MARK_KEY = "nbmergesave"


@dataclass(frozen=True)
class MergeOptions:
    """How conflicts are settled.

    ``strategy`` applies to source lines both sides changed differently, to
    delete-versus-edit and to cells both inserted at one place (``inline``:
    left marked for a person); it also picks the side for metadata keys and
    outputs both changed (``inline``: the remote side). ``outputs`` overrides
    it for outputs both sides changed (``None``: outputs follow their source,
    else the remote side; ``"inline"``: both kept between marker outputs, as
    nbdime does; ``"clear"``: emptied). ``ignore_transients=False`` lets
    execution counts that differ count as changed outputs.
    """

    strategy: Strategy = "inline"
    outputs: OutputStrategy | None = None
    ignore_transients: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.outputs is not None and self.outputs not in OUTPUT_STRATEGIES:
            raise ValueError(f"unknown outputs strategy {self.outputs!r}; choose from {', '.join(OUTPUT_STRATEGIES)}")

    @property
    def output_strategy(self) -> str:
        return self.outputs or self.strategy

    @property
    def side(self) -> str:
        """The side taken where a rule must pick one and the strategy does not: the remote side (the later save)."""
        return self.strategy if self.strategy != "inline" else "remote"


@dataclass(frozen=True)
class Conflict:
    """One place both sides changed differently, as the merged notebook shows it.

    ``kind`` is one of ``source``, ``outputs``, ``metadata``, ``attachments``,
    ``cell`` (the cell type), ``insert`` (both sides inserted different cells
    at the same place), ``delete-edit`` (one side deleted a cell the other
    edited), ``notebook-metadata``. ``cell`` is the 0-based index in the
    merged notebook of the cell it sits in (for ``insert``, the first marker
    cell; for ``delete-edit``, the kept cell, whose note is the cell before),
    ``base_cell`` the index in the base (``None`` for cells no base holds);
    both are ``None`` for notebook metadata. ``resolution`` is ``inline`` when
    the conflict is left in the notebook for a person (markers in a source,
    marker outputs or cells, a note), otherwise how the merge settled it
    (``local``, ``remote``, ``base``, ``clear``). ``how`` says it in words.
    """

    kind: str
    cell: int | None
    cell_id: str | None
    base_cell: int | None
    resolution: str
    #: Not part of equality: a conflict is where and what, whatever the words.
    how: str = field(default="", compare=False)

    @property
    def left(self) -> bool:
        """True when the conflict is left in the notebook for a person."""
        return self.resolution == "inline"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MergeResult:
    """The merged notebook (a plain dict in nbformat's JSON layout) and its conflicts."""

    notebook: dict[str, Any]
    conflicts: tuple[Conflict, ...] = field(default=())

    @property
    def unresolved(self) -> tuple[Conflict, ...]:
        """Conflicts left in the notebook for a person to settle."""
        return tuple(c for c in self.conflicts if c.resolution == "inline")

    @property
    def settled(self) -> tuple[Conflict, ...]:
        """Places both sides changed that the merge settled itself (``how`` says how)."""
        return tuple(c for c in self.conflicts if c.resolution != "inline")


def merge(
    base: Mapping[str, Any],
    local: Mapping[str, Any],
    remote: Mapping[str, Any],
    options: MergeOptions | None = None,
    *,
    engine: Literal["fast", "nbdime"] = "fast",
) -> MergeResult:
    """Merge the changes ``local`` and ``remote`` made to ``base``.

    Inputs are notebooks (nbformat ``NotebookNode`` or plain dicts with
    text already joined, as :func:`nbmergesave.notebook_io.parse_notebook`
    returns them); they are not modified. ``engine="nbdime"`` runs nbdime's
    own merge on the whole notebook with nbdime's own conflict list (slow on
    long notebooks, reports what nbdime decides; kept for comparison). The
    result always has valid, unique cell ids (or none, before nbformat 4.5).
    """
    options = options or MergeOptions()
    if engine == "nbdime":
        cells, decisions_at = _nbdime_region(base["cells"], local["cells"], remote["cells"], base, options)
        conflicts = [_conflict(d, 0, decisions_at, options) for d in decisions_at.conflicts]
        merged = {**_merged_top(base, local, remote, options, conflicts), "cells": cells}
    else:
        merged, conflicts = _fast_merge(base, local, remote, options)
    _fix_cell_ids(merged)
    ids = [c.get("id") for c in merged["cells"]]
    located = tuple(
        Conflict(c.kind, c.cell, ids[c.cell] if c.cell is not None and c.cell < len(ids) and c.kind != "insert" else None,
                 c.base_cell, c.resolution, c.how)
        for c in conflicts
    )
    return MergeResult(merged, tuple(sorted(set(located), key=_conflict_order)))


def _conflict_order(c: Conflict) -> tuple[int, int, str, str]:
    return (-1 if c.cell is None else c.cell, -1 if c.base_cell is None else c.base_cell, c.kind, c.how)


# --- the fast path -----------------------------------------------------------

_MISSING: Any = object()
_OTHER = {"local": "remote", "remote": "local"}


def _fast_merge(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any], options: MergeOptions
) -> tuple[dict[str, Any], list[Conflict]]:
    merger = _Merger(base["cells"], local["cells"], remote["cells"], options)
    cells = merger.run()
    top = _merge_top(base, local, remote, options, merger.conflicts)
    return {**top, "cells": cells}, merger.conflicts


class _Merger:
    """One merge of three cell lists: emits merged cells in order and records each conflict where it writes it."""

    def __init__(self, b: Sequence[Any], l: Sequence[Any], r: Sequence[Any], options: MergeOptions) -> None:
        self.b, self.l, self.r = b, l, r
        self.options = options
        self.out: list[Any] = []
        self.conflicts: list[Conflict] = []
        self.by_id = _ids_usable(b, l, r)
        self.pairs: dict[str, dict[int, int]] = {}
        #: Base cells a side moved: base index -> that side's cell, and the cell (by object) -> base index.
        self.moved: dict[str, dict[int, Any]] = {"local": {}, "remote": {}}
        self.moved_cell: dict[str, dict[int, int]] = {"local": {}, "remote": {}}

    # -- alignment ----------------------------------------------------------

    def run(self) -> list[Any]:
        b, l, r = self.b, self.l, self.r
        if l == b:  # one side untouched: the other side is the answer
            return list(r)
        if r == b or l == r:
            return list(l)
        keys = _alignment_keys(b, l, r)
        to_l, to_r = _matches(keys[0], keys[1]), _matches(keys[0], keys[2])
        # Without ids, cells of one type whose sources are alike pair up too (an edit, not a delete and an insert).
        self.pairs = {"local": to_l if self.by_id else _pair(b, l, to_l), "remote": to_r if self.by_id else _pair(b, r, to_r)}
        self._find_moves(keys)
        moved = self.moved["local"].keys() | self.moved["remote"].keys()
        moved_cells = self.moved_cell["local"].keys() | self.moved_cell["remote"].keys()
        for (b0, b1), (l0, l1), (r0, r1) in _diff3_chunks(keys, to_l, to_r):
            cb, cl, cr = b[b0:b1], l[l0:l1], r[r0:r1]
            touched = bool(moved) and (any(i in moved for i in range(b0, b1)) or any(id(c) in moved_cells for c in (*cl, *cr)))
            if not touched:
                if cl == cb:
                    self.out.extend(cr)
                    continue
                if cr == cb or cl == cr:
                    self.out.extend(cl)
                    continue
            if b1 - b0 == l1 - l0 == r1 - r0 == 1 and keys[0][b0] == keys[1][l0] == keys[2][r0] and not touched:
                self._cell(b0, cb[0], cl[0], cr[0])
            else:
                # The region's pairs are the whole notebook's, so a moved cell is never paired in place.
                pl = {i - b0: j - l0 for i, j in self.pairs["local"].items() if b0 <= i < b1 and l0 <= j < l1}
                pr = {i - b0: k - r0 for i, k in self.pairs["remote"].items() if b0 <= i < b1 and r0 <= k < r1}
                self._region(b0, cb, cl, cr, pl, pr)
        return self.out

    def _find_moves(self, keys: list[list[Any]]) -> None:
        """Base cells a side kept (same id; without ids, same type and source, once only) where no pair follows them."""
        for n, side, cells in ((1, "local", self.l), (2, "remote", self.r)):
            pairs = self.pairs[side]
            paired = set(pairs.values())
            loose_base: dict[Any, list[int]] = {}
            for i, key in enumerate(keys[0]):
                if i not in pairs:
                    loose_base.setdefault(key, []).append(i)
            loose_side: dict[Any, list[int]] = {}
            for j, key in enumerate(keys[n]):
                if j not in paired:
                    loose_side.setdefault(key, []).append(j)
            for key, at in loose_base.items():
                there = loose_side.get(key, [])
                if len(at) == 1 and len(there) == 1:
                    self.moved[side][at[0]] = cells[there[0]]
                    self.moved_cell[side][id(cells[there[0]])] = at[0]

    def _version(self, side: str, base_index: int) -> Any:
        """``side``'s cell for a base cell (paired, or moved), or None when that side deleted it."""
        j = self.pairs[side].get(base_index)
        if j is not None:
            return (self.l if side == "local" else self.r)[j]
        return self.moved[side].get(base_index)

    def _region(self, b0: int, cb: Sequence[Any], cl: Sequence[Any], cr: Sequence[Any],
                pl: dict[int, int], pr: dict[int, int]) -> None:
        """Cells inserted, deleted or moved on both sides between two cells both kept."""
        ins_l, ins_r = _anchored(cl, pl), _anchored(cr, pr)
        for i in range(len(cb) + 1):
            self._inserts(ins_l.get(i, []), ins_r.get(i, []), b0 + i)
            if i == len(cb):
                break
            bc = cb[i]
            if b0 + i in self.moved["local"] or b0 + i in self.moved["remote"]:
                continue  # written where a side moved it to
            lc = cl[pl[i]] if i in pl else None
            rc = cr[pr[i]] if i in pr else None
            if lc is not None and rc is not None:
                self._cell(b0 + i, bc, lc, rc)
            elif lc is not None or rc is not None:
                kept_side = "local" if lc is not None else "remote"
                self._deleted_by(_OTHER[kept_side], b0 + i, bc, lc if lc is not None else rc)

    def _inserts(self, a: list[Any], b: list[Any], base_pos: int) -> None:
        """Cells local (``a``) and remote (``b``) put at one place: equal ones once, one side's as they are."""
        # a cell both sides moved goes where local put it
        b = [c for c in b if self.moved_cell["remote"].get(id(c), -1) not in self.moved["local"]]
        if not a or not b:
            for c in a:
                self._inserted(c, "local")
            for c in b:
                self._inserted(c, "remote")
            return
        ka, kb = [self._insert_key(c, "local") for c in a], [self._insert_key(c, "remote") for c in b]
        for tag, a0, a1, b0, b1 in SequenceMatcher(None, ka, kb, autojunk=False).get_opcodes():
            if tag == "equal":
                for x, y in zip(a[a0:a1], b[b0:b1]):  # the same new cell on both sides (moved cells have their own keys)
                    self._cell(None, _blank(x), x, y)
            elif tag == "delete":
                for c in a[a0:a1]:
                    self._inserted(c, "local")
            elif tag == "insert":
                for c in b[b0:b1]:
                    self._inserted(c, "remote")
            else:
                self._insert_conflict(a[a0:a1], b[b0:b1], base_pos)

    def _insert_key(self, cell: Mapping[str, Any], side: str) -> Any:
        i = self.moved_cell[side].get(id(cell))
        if i is not None:
            return ("moved", i)
        return (cell.get("cell_type"), cell.get("source"))

    def _inserted(self, cell: Any, side: str) -> None:
        """A cell only ``side`` put here: new, or a base cell ``side`` moved (merged with the other side's version)."""
        i = self.moved_cell[side].get(id(cell))
        if i is None:
            self.out.append(cell)
            return
        other = self._version(_OTHER[side], i)
        if other is None:
            self._deleted_by(_OTHER[side], i, self.b[i], cell)
        elif side == "local":
            self._cell(i, self.b[i], cell, other)
        else:
            self._cell(i, self.b[i], other, cell)

    def _insert_conflict(self, a: list[Any], b: list[Any], base_pos: int) -> None:
        pick = self.options.strategy
        if pick != "inline":
            self._record("insert", len(self.out), base_pos, pick, f"both sides inserted different cells here; took {pick}'s")
            self.out.extend({"local": a, "remote": b, "base": []}[pick])
            return
        self._record("insert", len(self.out), base_pos, "inline",
                     "both sides inserted different cells here: local's and remote's are between marker cells")
        self.out.extend([_marker_cell("<<<<<<< local", "insert"), *a, _marker_cell("=======", "insert"), *b,
                         _marker_cell(">>>>>>> remote", "insert")])

    def _deleted_by(self, side: str, base_index: int, bc: Mapping[str, Any], kept: Any) -> None:
        """``side`` deleted base cell ``bc``; the other side has it as ``kept``."""
        editor = _OTHER[side]
        if not _edited(bc, kept):
            return  # deleted on one side, untouched (or only re-run) on the other: deleted
        pick = self.options.strategy
        if pick == "base":
            self.out.append(dict(bc))
            self._record("delete-edit", len(self.out) - 1, base_index, "base", f"{side} deleted the cell, {editor} edited it; kept the base version")
        elif pick == side:
            self._record("delete-edit", None, base_index, pick, f"{side} deleted a cell {editor} edited; took {side}'s: deleted")
        elif pick == editor:
            self.out.append(kept)
            self._record("delete-edit", len(self.out) - 1, base_index, pick, f"{side} deleted the cell, {editor} edited it; took {editor}'s: kept")
        else:
            note = (f"<<<<<<< nbmergesave: {side} deleted the next cell, {editor} edited it >>>>>>>\n\n"
                    f"**Merge conflict:** {side.upper()} deleted the cell below; {editor.upper()} edited it. "
                    "Keep it (and delete this note), or delete both.")
            self.out.append(_marker_cell(note, "delete-edit"))
            self.out.append(kept)
            self._record("delete-edit", len(self.out) - 1, base_index, "inline",
                         f"{side} deleted the cell, {editor} edited it: kept, with a note cell before it")

    def _record(self, kind: str, cell: int | None, base_cell: int | None, resolution: str, how: str) -> None:
        self.conflicts.append(Conflict(kind, cell, None, base_cell, resolution, how))

    # -- one cell both sides have ------------------------------------------

    def _cell(self, base_index: int | None, bc: Mapping[str, Any], lc: Any, rc: Any) -> None:
        if lc == rc or rc == bc:
            self.out.append(lc)
            return
        if lc == bc:
            self.out.append(rc)
            return
        at = len(self.out)
        pick, side = self.options.strategy, self.options.side
        cell = dict(lc)
        for key in set(rc) - set(lc):  # a field only remote added (attachments, id)
            if key not in bc:
                cell[key] = rc[key]
        for key in (set(bc) & set(lc)) - set(rc):  # a field remote removed
            if lc[key] == bc[key]:
                cell.pop(key)
        kind, clash = _merge3(bc.get("cell_type"), lc.get("cell_type"), rc.get("cell_type"))
        if clash:
            kind = {"local": lc, "remote": rc, "base": bc}[side]["cell_type"]
            self._record("cell", at, base_index, side, f"both sides changed the cell type; took {side}'s")
        cell["cell_type"] = kind
        source, left, settled = _merge_text(bc.get("source", ""), lc.get("source", ""), rc.get("source", ""), pick)
        cell["source"] = source
        if left:
            self._record("source", at, base_index, "inline",
                         f"both sides changed the same lines: {left} place{'s' * (left != 1)} marked <<<<<<< local / >>>>>>> remote")
        elif settled:
            self._record("source", at, base_index, pick, f"both sides changed the same lines; took {pick}'s")
        metadata, keys = _merge_dict(bc.get("metadata", {}), lc.get("metadata", {}), rc.get("metadata", {}), side)
        cell["metadata"] = metadata
        if keys:
            self._record("metadata", at, base_index, side, f"both sides changed {_keys(keys)}; took {side}'s")
        if "attachments" in lc or "attachments" in rc:
            attachments, keys = _merge_dict(bc.get("attachments", {}), lc.get("attachments", {}), rc.get("attachments", {}),
                                            side, deep=False)
            if attachments or ("attachments" in lc and "attachments" in rc):
                cell["attachments"] = attachments
            else:
                cell.pop("attachments", None)
            if keys:
                self._record("attachments", at, base_index, side, f"both sides changed {_keys(keys)}; took {side}'s")
        if kind == "code":
            src_l, src_r = lc.get("source") != bc.get("source"), rc.get("source") != bc.get("source")
            cell["outputs"], cell["execution_count"] = self._outputs(at, base_index, bc, lc, rc, src_l, src_r)
            cell.pop("attachments", None)  # code cells have none in nbformat's schema
        else:
            for key in ("outputs", "execution_count"):
                cell.pop(key, None)
        self.out.append(cell)

    def _outputs(self, at: int, base_index: int | None, bc: Mapping[str, Any], lc: Mapping[str, Any],
                 rc: Mapping[str, Any], src_l: bool, src_r: bool) -> tuple[list[Any], Any]:
        """Outputs and execution count together: they belong to the source that made them."""
        sides = {"base": bc, "local": lc, "remote": rc}
        out = {k: c.get("outputs", []) for k, c in sides.items()}
        count = {k: c.get("execution_count") for k, c in sides.items()}

        def take(name: str) -> tuple[list[Any], Any]:
            return list(out[name]), count[name]

        # Outputs are compared as whole values: equal strings compare by length and
        # bytes (no parsing, no regular expression over base64 images).
        if out["local"] == out["remote"]:
            value, clash = _merge3(count["base"], count["local"], count["remote"])
            if clash:
                follow = "local" if src_l and not src_r else "remote" if src_r and not src_l else self.options.side
                value = count[follow]
                if not self.options.ignore_transients:
                    self._record("outputs", at, base_index, follow, f"both re-ran with equal outputs; took {follow}'s execution count")
            return list(out["local"]), value
        both = out["local"] != out["base"] and out["remote"] != out["base"]
        explicit = self.options.outputs
        if both and explicit is not None:
            if explicit == "inline":
                self._record("outputs", at, base_index, "inline", "both sides changed the outputs: both kept between marker outputs")
                return [_output_marker("<<<<<<< local\n"), *out["local"], _output_marker("=======\n"), *out["remote"],
                        _output_marker(">>>>>>> remote\n")], None
            if explicit == "clear":
                self._record("outputs", at, base_index, "clear", "both sides changed the outputs; cleared them")
                return [], None
            self._record("outputs", at, base_index, explicit, f"both sides changed the outputs; took {explicit}'s")
            return take(explicit)
        if src_l != src_r:
            follow = "local" if src_l else "remote"
            if both:
                self._record("outputs", at, base_index, follow, f"only {follow} changed the source; took its outputs")
            return take(follow)
        if out["local"] == out["base"]:
            return take("remote")
        if out["remote"] == out["base"]:
            return take("local")
        side = self.options.side
        how = "both re-ran" if not src_l else "both changed the source and re-ran"
        self._record("outputs", at, base_index, side, f"{how}; took {side}'s outputs")
        return take(side)


def _ids_usable(*sides: Sequence[Mapping[str, Any]]) -> bool:
    for cells in sides:
        ids = [c.get("id") for c in cells]
        if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            return False
    return True


def _alignment_keys(*sides: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Cell ids when every cell of every side has a unique one, else (type, source)."""
    if _ids_usable(*sides):
        return [[c.get("id") for c in cells] for cells in sides]
    return [[(c.get("cell_type"), c.get("source")) for c in cells] for cells in sides]


Chunk = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _diff3_chunks(keys: list[list[Any]], to_l: dict[int, int] | None = None, to_r: dict[int, int] | None = None) -> list[Chunk]:
    """Split three sequences into aligned half-open ranges, diff3 style.

    A base item matched (by key) in both sides is a stable point and makes a
    one-item chunk of its own; the items between stable points form the
    unstable chunks. The caller compares contents to decide who changed what.
    """
    kb, kl, kr = keys
    to_l = _matches(kb, kl) if to_l is None else to_l
    to_r = _matches(kb, kr) if to_r is None else to_r
    chunks: list[Chunk] = []
    pb = pl = pr = 0
    for i in range(len(kb)):
        j, k = to_l.get(i), to_r.get(i)
        if j is None or k is None:
            continue
        if (pb, pl, pr) != (i, j, k):
            chunks.append(((pb, i), (pl, j), (pr, k)))
        chunks.append(((i, i + 1), (j, j + 1), (k, k + 1)))
        pb, pl, pr = i + 1, j + 1, k + 1
    if (pb, pl, pr) != (len(kb), len(kl), len(kr)):
        chunks.append(((pb, len(kb)), (pl, len(kl)), (pr, len(kr))))
    return chunks


def _matches(a: list[Any], b: list[Any]) -> dict[int, int]:
    """Index pairs of a longest matching of ``a`` into ``b`` (monotone)."""
    # Common prefix and suffix first: the usual save touches a few cells.
    n = min(len(a), len(b))
    head = 0
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    pairs = {i: i for i in range(head)}
    mid_a, mid_b = a[head:len(a) - tail], b[head:len(b) - tail]
    if mid_a and mid_b:
        matcher = SequenceMatcher(None, mid_a, mid_b, autojunk=False)
        for block in matcher.get_matching_blocks():
            for x in range(block.size):
                pairs[head + block.a + x] = head + block.b + x
    for x in range(tail):
        pairs[len(a) - 1 - x] = len(b) - 1 - x
    return pairs


def _pair(cb: Sequence[Mapping[str, Any]], cs: Sequence[Mapping[str, Any]], pairs: dict[int, int]) -> dict[int, int]:
    """Base cells of a region -> one side's cells: the exact ``pairs``, then cells alike enough to be an edit."""
    pairs = dict(pairs)
    # Between exact matches, pair cells of one type whose sources are alike (an edit, not a delete and an insert).
    anchors = [(-1, -1), *sorted(pairs.items()), (len(cb), len(cs))]
    for (i0, j0), (i1, j1) in zip(anchors, anchors[1:]):
        gb, gs = list(range(i0 + 1, i1)), list(range(j0 + 1, j1))
        if gb and gs:
            pairs.update(_similar_pairs(cb, cs, gb, gs))
    return pairs


def _similar_pairs(cb: Sequence[Mapping[str, Any]], cs: Sequence[Mapping[str, Any]], gb: list[int], gs: list[int]) -> dict[int, int]:
    """A monotone pairing of the most alike cells (dynamic programming over a small gap)."""
    if len(gb) * len(gs) > 2500:
        return {}
    score = {(i, j): _similarity(cb[i], cs[j]) for i in gb for j in gs}
    n, m = len(gb), len(gs)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for x in range(n - 1, -1, -1):
        for y in range(m - 1, -1, -1):
            s = score[gb[x], gs[y]]
            best[x][y] = max(best[x + 1][y], best[x][y + 1], best[x + 1][y + 1] + s if s else 0.0)
    pairs, x, y = {}, 0, 0
    while x < n and y < m:
        s = score[gb[x], gs[y]]
        if s and best[x][y] == best[x + 1][y + 1] + s:
            pairs[gb[x]] = gs[y]
            x, y = x + 1, y + 1
        elif best[x][y] == best[x + 1][y]:
            x += 1
        else:
            y += 1
    return pairs


def _similarity(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How alike two cells' sources are (0: not a pair)."""
    if a.get("cell_type") != b.get("cell_type"):
        return 0.0
    sa, sb = a.get("source", ""), b.get("source", "")
    la, lb = sa.splitlines(), sb.splitlines()
    if max(len(la), len(lb)) > 1:
        ratio = SequenceMatcher(None, la, lb, autojunk=False).ratio()
        if ratio >= 0.5:
            return ratio
    if len(sa) + len(sb) > 20000:
        return 0.0
    matcher = SequenceMatcher(None, sa, sb, autojunk=False)
    if matcher.real_quick_ratio() < 0.6 or matcher.quick_ratio() < 0.6:
        return 0.0
    ratio = matcher.ratio()
    return ratio if ratio >= 0.6 else 0.0


def _anchored(cs: Sequence[Any], pairs: dict[int, int]) -> dict[int, list[Any]]:
    """A side's cells no base cell pairs with, by the base index they come before."""
    back = {j: i for i, j in pairs.items()}
    out: dict[int, list[Any]] = {}
    last = -1
    for j, c in enumerate(cs):
        if j in back:
            last = back[j]
        else:
            out.setdefault(last + 1, []).append(c)
    return out


def _edited(base: Mapping[str, Any], cell: Mapping[str, Any]) -> bool:
    """Work a person did on a cell (source, type, attachments), as against re-running it."""
    return any(base.get(k) != cell.get(k) for k in ("source", "cell_type", "attachments"))


def _blank(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The empty base of a cell both sides inserted."""
    blank = {**cell, "metadata": {}}
    blank.pop("attachments", None)
    if cell.get("cell_type") == "code":
        blank.update(outputs=[], execution_count=None)
    return blank


def _marker_cell(text: str, kind: str) -> dict[str, Any]:
    """A markdown cell that shows a conflict (a marker line, or a note)."""
    return {"cell_type": "markdown", "metadata": {MARK_KEY: {"conflict": kind}}, "source": text}


def _output_marker(text: str) -> dict[str, Any]:
    return {"name": "stderr", "output_type": "stream", "text": text}


def _merge3(b: Any, l: Any, r: Any) -> tuple[Any, bool]:
    """A value three-way: (merged, clash). On a clash the local value is returned."""
    if l == r or r == b:
        return l, False
    if l == b:
        return r, False
    return l, True


def _merge_dict(b: Any, l: Any, r: Any, side: str, *, deep: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Key by key three-way merge; keys both changed differently take ``side``'s value. Returns (merged, clashing keys)."""
    b = b if isinstance(b, Mapping) else {}
    l, r = (x if isinstance(x, Mapping) else {} for x in (l, r))  # invalid inputs: the schema check names them after
    merged: dict[str, Any] = {}
    clashes: list[str] = []
    for key in [*l, *(k for k in r if k not in l), *(k for k in b if k not in l and k not in r)]:
        bv, lv, rv = b.get(key, _MISSING), l.get(key, _MISSING), r.get(key, _MISSING)
        value, clash = _merge3(bv, lv, rv)
        if clash:
            if deep and isinstance(lv, Mapping) and isinstance(rv, Mapping):
                value, inner = _merge_dict(bv if isinstance(bv, Mapping) else {}, lv, rv, side)
                clashes.extend(f"{key}.{k}" for k in inner)
            elif key == "tags" and isinstance(lv, list) and isinstance(rv, list):
                value = _merge_tags(bv if isinstance(bv, list) else [], lv, rv)
            else:
                value = {"local": lv, "remote": rv, "base": bv}[side]
                clashes.append(key)
        if value is not _MISSING:
            merged[key] = value
    return merged, clashes


def _merge_tags(b: list[Any], l: list[Any], r: list[Any]) -> list[Any]:
    """Tags as sets: what either side added, less what either side removed, in the order first seen."""
    removed = {t for t in b if t not in l or t not in r}
    out: list[Any] = []
    for t in (*l, *r):
        if t not in removed and t not in out:
            out.append(t)
    return out


def _keys(keys: Sequence[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:3])
    return f"key{'s' * (len(keys) != 1)} {shown}{' and more' if len(keys) > 3 else ''}"


def _split_lines(text: str) -> tuple[list[str], bool]:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
        return lines, True
    return lines, False


def _merge_text(b: str, l: str, r: str, pick: str) -> tuple[str, int, int]:
    """Line-based diff3 of a cell's text: (merged text, places left marked, places settled by ``pick``).

    Changes to different lines merge; lines both sides changed differently are
    left between marker lines (or take ``pick``'s lines). Lines common to both
    sides at the edges of such a place are kept outside the markers, as git
    does. Whether the text ends with a newline is merged as a value of its own.
    """
    if l == r or r == b:
        return l, 0, 0
    if l == b:
        return r, 0, 0
    (bl, bn), (ll, ln), (rl, rn) = _split_lines(b), _split_lines(l), _split_lines(r)
    newline, _ = _merge3(bn, ln, rn)
    out: list[str] = []
    left = settled = 0
    for (b0, b1), (l0, l1), (r0, r1) in _diff3_chunks([bl, ll, rl]):
        cb, cl, cr = bl[b0:b1], ll[l0:l1], rl[r0:r1]
        if cl == cb:
            out.extend(cr)
        elif cr == cb or cl == cr:
            out.extend(cl)
        elif pick != "inline":
            out.extend({"local": cl, "remote": cr, "base": cb}[pick])
            settled += 1
        else:
            head = 0
            while head < min(len(cl), len(cr)) and cl[head] == cr[head]:
                head += 1
            tail = 0
            while tail < min(len(cl), len(cr)) - head and cl[-1 - tail] == cr[-1 - tail]:
                tail += 1
            out.extend(cl[:head])
            out.extend(["<<<<<<< local", *cl[head:len(cl) - tail], "=======", *cr[head:len(cr) - tail], ">>>>>>> remote"])
            out.extend(cl[len(cl) - tail:])
            left += 1
    text = "\n".join(out)
    if newline and out:
        text += "\n"
    return text, left, settled


def _merge_top(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any],
    options: MergeOptions, conflicts: list[Conflict],
) -> dict[str, Any]:
    """Notebook metadata key by key (clashing keys take the remote side, or the strategy's); the larger minor version."""
    side = options.side
    metadata, keys = _merge_dict(base.get("metadata", {}), local.get("metadata", {}), remote.get("metadata", {}), side)
    if keys:
        conflicts.append(Conflict("notebook-metadata", None, None, None, side, f"both sides changed {_keys(keys)}; took {side}'s"))
    return {"metadata": _plain(metadata), "nbformat": 4, "nbformat_minor": _minor(base, local, remote)}


def _minor(base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any]) -> int:
    """The changed side's nbformat minor version; the larger one when both changed it."""
    b, l, r = (nb.get("nbformat_minor", 0) for nb in (base, local, remote))
    return r if l == b else l if r == b else max(l, r)


# --- nbdime's own merge (engine="nbdime", for comparison) ---------------------

class _Decisions(list):  # type: ignore[type-arg]
    """nbdime's merge decisions for one region, with the conflicted ones at hand."""

    @property
    def conflicts(self) -> list[Any]:
        """Conflicted decisions, including those a side strategy settled.

        nbdime clears ``conflict`` when a strategy such as use-local settled
        it; both diffs are still there, and we still report it.
        """
        return [d for d in self if not _only_ids(d) and (d.conflict or _settled(d))]


def _settled(decision: Mapping[str, Any]) -> bool:
    l, r = decision.get("local_diff"), decision.get("remote_diff")
    return bool(l) and bool(r) and l != r and decision.get("action") in _SETTLING_ACTIONS


_SETTLING_ACTIONS = frozenset({"local", "remote", "base", "clear", "clear_all", "remove", "custom"})


def _only_ids(decision: Mapping[str, Any]) -> bool:
    # Both sides gave a cell a different id: we re-id cells after the merge,
    # so this is not a conflict a person has to settle.
    ops = (decision.get("local_diff") or []) + (decision.get("remote_diff") or [])
    return bool(ops) and all(op.get("key") == "id" for op in ops)


def _nbdime_region(
    b: Sequence[Any], l: Sequence[Any], r: Sequence[Any], base: Mapping[str, Any], options: MergeOptions
) -> tuple[list[dict[str, Any]], _Decisions]:
    """Merge three cell lists with nbdime, inside notebooks that share base's header."""
    import nbformat
    from nbdime.merging.notebooks import merge_notebooks

    _quiet_nbdime()

    def wrap(cells: Sequence[Any], ids: bool = True) -> Any:
        plain = list(cells) if ids else [{k: v for k, v in c.items() if k != "id"} for c in cells]
        return nbformat.from_dict(copy.deepcopy({
            "cells": plain, "metadata": dict(base.get("metadata", {})),
            "nbformat": 4, "nbformat_minor": base.get("nbformat_minor", 0),
        }))

    try:
        merged, decisions = merge_notebooks(wrap(b), wrap(l), wrap(r), _nbdime_args(options))
    except Exception:
        # nbdime fails (KeyError 'id') when one of two inserted cells has an id
        # and the other not: merge without ids (they are given back after);
        # failing that, keep both sides whole, marked.
        try:
            merged, decisions = merge_notebooks(wrap(b, False), wrap(l, False), wrap(r, False), _nbdime_args(options))
        except Exception:
            return _both_sides(b, l, r, options)
    # nbdime gives the marker cells it makes random ids; drop them so that
    # _fix_cell_ids gives deterministic ones and a merge is reproducible.
    known = {c.get("id") for cells in (b, l, r) for c in cells}
    cells = [_plain(c) for c in merged["cells"]]
    for c in cells:
        if not isinstance(c.get("id"), str) or c["id"] not in known:  # nbdime can merge ids into lists
            c.pop("id", None)
    return cells, _Decisions(decisions)


def _both_sides(
    b: Sequence[Any], l: Sequence[Any], r: Sequence[Any], options: MergeOptions
) -> tuple[list[dict[str, Any]], _Decisions]:
    """The region as one conflict: local's cells and remote's, between marker cells (as nbdime marks
    conflicting inserts), or one side's cells when a strategy picks a side. Nothing is dropped."""
    side = {"local": l, "remote": r, "base": b}.get(options.strategy)
    if side is not None:
        cells = [_plain(c) for c in side]
    else:
        def marker(text: str) -> dict[str, Any]:
            return {"cell_type": "markdown", "metadata": {}, "source": f'<span style="color:red"><b>{text}</b></span>'}

        cells = [marker("<<<<<<< local"), *map(_plain, l), marker("======="), *map(_plain, r), marker(">>>>>>> remote")]
    decision = {
        "common_path": ("cells",), "conflict": side is None, "action": "custom" if side is None else options.strategy,
        "local_diff": [{"op": "addrange", "key": 0, "valuelist": list(l)}, {"op": "removerange", "key": 0, "length": len(b)}],
        "remote_diff": [{"op": "addrange", "key": 0, "valuelist": list(r)}, {"op": "removerange", "key": 0, "length": len(b)}],
        "custom_diff": [{"op": "addrange", "key": 0, "valuelist": cells}, {"op": "removerange", "key": 0, "length": len(b)}],
    }
    return cells, _Decisions([_AttrDict(decision)])


class _AttrDict(dict):  # type: ignore[type-arg]
    """nbdime's decisions allow attribute access; our stand-in does too."""

    __getattr__ = dict.__getitem__


def _quiet_nbdime() -> None:
    """Settings for nbdime in this process, set before every use (cheap)."""
    from nbdime.merging import strategies

    logging.getLogger("nbdime").setLevel(logging.ERROR)  # it warns about the id strategy on every call
    if strategies.merge_render is not _safe_merge_render:
        _safe_merge_render.nbdime = strategies.merge_render  # type: ignore[attr-defined]
        strategies.merge_render = _safe_merge_render


def _safe_merge_render(base: Any, local: Any, remote: Any, strategy: Any = None, *args: Any, **kwargs: Any) -> Any:
    """nbdime's inline text merge, without losing text.

    nbdime renders conflicting text with `git merge-file` when git is
    installed (hunk by hunk, the best output). git takes text with a NUL byte
    for binary and returns nothing, and both sides' text vanished from the
    cell; for such text nbdime's own renderer is used, which keeps both sides
    whole.
    """
    from nbdime import prettyprint

    if any("\0" in str(text) for text in (base, local, remote)):
        return prettyprint.builtin_merge_render(base, local, remote, strategy)
    return _safe_merge_render.nbdime(base, local, remote, strategy, *args, **kwargs)  # type: ignore[attr-defined]


def _nbdime_args(options: MergeOptions) -> SimpleNamespace:
    # nbdime reads its options from an argparse namespace; this is the one
    # place we build one, from our typed options.
    return SimpleNamespace(
        merge_strategy=_NBDIME_STRATEGY[options.strategy],
        input_strategy=None,
        output_strategy=_NBDIME_STRATEGY[options.output_strategy],
        ignore_transients=options.ignore_transients,
        log_level="ERROR",
    )


def _plain(value: Any) -> Any:
    """NotebookNode (and nbdime's tuples) -> plain JSON types."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merged_top(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any],
    options: MergeOptions, conflicts: list[Conflict],
) -> dict[str, Any]:
    """Notebook metadata and format, merged like nbdime does (its 'take-max' for the minor version)."""
    bm, lm, rm = (nb.get("metadata", {}) for nb in (base, local, remote))
    if lm == bm:
        metadata = rm
    elif rm == bm or lm == rm:
        metadata = lm
    else:
        import nbformat
        from nbdime.merging.notebooks import merge_notebooks

        _quiet_nbdime()
        wrap = lambda m: nbformat.from_dict(  # noqa: E731
            {"cells": [], "metadata": copy.deepcopy(dict(m)), "nbformat": 4, "nbformat_minor": base.get("nbformat_minor", 0)}
        )
        merged, decisions = merge_notebooks(wrap(bm), wrap(lm), wrap(rm), _nbdime_args(options))
        metadata = merged["metadata"]
        conflicts.extend(_conflict(d, 0, _Decisions(decisions), options) for d in _Decisions(decisions).conflicts)
    return {"metadata": _plain(metadata), "nbformat": 4, "nbformat_minor": _minor(base, local, remote)}


# --- conflicts -------------------------------------------------------------

def _conflict(
    decision: Mapping[str, Any], offset: int, decisions: _Decisions, options: MergeOptions, base_offset: int = 0
) -> Conflict:
    """Turn one conflicted nbdime decision into a :class:`Conflict` (region-relative -> notebook)."""
    path = tuple(decision.get("common_path") or ())
    ops = (decision.get("local_diff") or []) + (decision.get("remote_diff") or [])
    index: int | None = None
    before = False
    if path[:1] == ("metadata",):
        kind = "notebook-metadata"
    elif path[:1] != ("cells",):
        kind = "cell"
    elif len(path) == 1:  # the cell list itself: inserts and deletes
        index = min(op["key"] for op in ops)
        both_insert = all(any(op["op"] == "addrange" for op in decision.get(side) or []) for side in ("local_diff", "remote_diff"))
        kind = "insert" if both_insert and {op["op"] for op in ops} <= {"addrange", "removerange"} else "delete-edit"
        before = kind == "insert"
    else:
        index = path[1]
        if any(_DELETED_MARK in str(op.get("valuelist", "")) for op in ops):
            kind = "delete-edit"  # nbdime writes it as a marker line in the edited cell's source
        else:
            field_ = path[2] if len(path) > 2 else _field_of(ops)
            kind = field_ if field_ in ("source", "outputs", "metadata", "attachments") else "cell"
    if decision.get("conflict") and decision.get("action") in _BOTH:
        resolution = "both"  # nbdime kept both sides (e.g. lines both inserted at one place), no markers
    else:
        resolution = options.output_strategy if kind == "outputs" else options.strategy
    if index is None:
        return Conflict(kind, None, None, None, resolution)
    return Conflict(kind, offset + _output_index(decisions, index, before=before), None, base_offset + index, resolution)


_BOTH = frozenset({"local_then_remote", "remote_then_local"})


def _field_of(ops: Sequence[Mapping[str, Any]]) -> str:
    keys = [op.get("key") for op in ops if op.get("key") != "id"]
    for name in ("source", "outputs", "attachments", "metadata"):
        if name in keys:
            return name
    return "cell"


def _output_index(decisions: _Decisions, base_index: int, *, before: bool = False) -> int:
    """Where base cell ``base_index`` lands in the merged region (cells inserted and removed before it)."""
    shift = 0
    for d in decisions:
        if tuple(d.get("common_path") or ()) != ("cells",):
            continue
        for op in _applied_ops(d):
            key = op["key"]
            if op["op"] == "addrange" and (key < base_index or (key == base_index and not before)):
                shift += len(op["valuelist"])
            elif op["op"] == "removerange" and key < base_index:
                shift -= min(op["length"], base_index - key)
    return max(base_index + shift, 0)


def _applied_ops(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    action = d.get("action")
    if action == "custom":
        return list(d.get("custom_diff") or [])
    if action == "local":
        return list(d.get("local_diff") or [])
    if action == "remote":
        return list(d.get("remote_diff") or [])
    if action in ("either", "local_then_remote", "remote_then_local"):
        return list(d.get("local_diff") or []) + (list(d.get("remote_diff") or []) if action != "either" else [])
    return []


# --- valid output ----------------------------------------------------------

def _fix_cell_ids(nb: dict[str, Any]) -> None:
    """Unique, valid, deterministic ids from nbformat 4.5 on; none before it.

    Both sides may insert cells with the same id, and nbdime gives its marker
    cells ids even in older notebooks. A replacement id is derived from the
    cell's content and position, so the same merge always writes the same bytes.
    """
    if nb["nbformat_minor"] < 5:
        if any("id" in c for c in nb["cells"]):
            nb["cells"] = [{k: v for k, v in c.items() if k != "id"} for c in nb["cells"]]
        return
    seen: set[str] = set()
    bad = [i for i, c in enumerate(nb["cells"]) if not _usable_id(c.get("id"), seen)]
    if not bad:
        return
    cells = list(nb["cells"])
    taken = {c.get("id") for c in cells}
    for i in bad:
        digest = hashlib.sha256(f"{i}\0{json.dumps(cells[i], sort_keys=True, default=str)}".encode()).hexdigest()
        new = next(digest[n:n + 8] for n in range(0, 57) if digest[n:n + 8] not in taken)
        taken.add(new)
        cells[i] = {**cells[i], "id": new}
    nb["cells"] = cells


def _usable_id(cell_id: Any, seen: set[str]) -> bool:
    if not isinstance(cell_id, str) or not _CELL_ID.match(cell_id) or cell_id in seen:
        return False
    seen.add(cell_id)
    return True


# --- files -------------------------------------------------------------------

@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: parsing a long notebook makes millions of acyclic
    objects, and CPython's generational collector would walk them over and
    over (a third of the time of a 10,000-cell merge)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def merge_files(
    base: str | os.PathLike[str],
    local: str | os.PathLike[str],
    remote: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    options: MergeOptions | None = None,
    *,
    labels: tuple[str, str, str] = ("BASE", "LOCAL", "REMOTE"),
    empty_base: bool = False,
) -> tuple[MergeResult, str]:
    """Read three notebook files, merge, validate, and write ``out`` atomically (if given).

    Returns the result and the merged file's text. Raises
    :class:`~nbmergesave.errors.BadInput` (one line, naming the file by its
    label) before anything is written.

    >>> result, text = merge_files("fixtures/example--base.ipynb", "fixtures/example--local.ipynb",
    ...                            "fixtures/example--remote.ipynb")
    >>> result.conflicts, text.endswith("}\\n")
    ((), True)
    """
    from . import notebook_io
    from .errors import NbMergeSaveError

    paths = (base, local, remote)
    with _no_gc():
        nbs = [
            notebook_io.read_notebook(path, label, empty_ok=empty_base and i == 0)
            for i, (path, label) in enumerate(zip(paths, labels))
        ]
        result = merge(*nbs, options)
        try:
            notebook_io.validate(result.notebook, "the merged notebook")
        except NbMergeSaveError:
            # Inputs get a structural check only; an invalid merge comes from an
            # invalid input: name that one.
            for nb, label, path in zip(nbs, labels, paths):
                notebook_io.validate(nb, f"{label} '{path}'")
            raise
        text = notebook_io.dumps(result.notebook)
    if out is not None:
        notebook_io.write_atomic(out, text)
    return result, text
