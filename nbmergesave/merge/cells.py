"""The cell list: where each cell goes, walking the alignment.

What neither side changed is kept, what only one side changed is taken, and a
cell both sides have is merged field by field (:mod:`.fields`). Between cells
both sides kept, this walk settles inserts, deletes and moves:

- **delete versus edit** keeps the edited cell, preceded by a markdown note
  cell saying what the other side did: left for a person.
- **inserts**: cells both sides inserted at one place are kept once when
  equal; different ones are left between marker cells.
- **moves**: a base cell a side moved is written where that side put it,
  merged with the other side's version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any

from .alignment import _alignment_keys, _anchored, _diff3_chunks, _find_moves, _ids_usable, _matches, _pair
from .conflicts import Conflict, _marker_cell
from .fields import _merge_cell
from .options import MergeOptions

_OTHER = {"local": "remote", "remote": "local"}


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
        self.moved, self.moved_cell = _find_moves(keys, self.pairs, self.l, self.r)
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
        self.out.append(_merge_cell(base_index, bc, lc, rc, len(self.out), self.options, self._record))


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
