"""Applying a notebook to a collaboration room's shared document (jupyter_ydoc's notebook) as cell-level
changes: cells the change does not touch are not rewritten, and text is changed by the smallest edits, so
other people's cursors and typing there survive (:mod:`nbmergesave.jupyter.rooms` uses it)."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from .. import notebook_io

#: The origin of the shared document's transactions made here (clients see it on the update).
ORIGIN = "nbmergesave"


#: Metadata jupyter_ydoc adds to every notebook a room loads that lacks it: empty, so no one's edit.
_ROOM_DEFAULTS = {"language_info": {"name": ""}, "kernelspec": {"name": "", "display_name": ""}}


def normal(nb: Any) -> dict[str, Any]:
    """A notebook as merges compare it: joined text, no ``trusted`` marks, no transient metadata, and
    without the empty ``kernelspec`` and ``language_info`` a room adds on loading (else a room would
    differ from a file without them, and save them over a ``git checkout``).

    (A copy: the room's and nbformat's objects are left alone.)"""
    plain = notebook_io.notebook_from_dict(copy.deepcopy(dict(nb)))
    metadata = plain["metadata"]
    for key, empty in _ROOM_DEFAULTS.items():
        if metadata.get(key) == empty:
            del metadata[key]
    return plain


def _for_y(value: Any) -> Any:
    """Yjs numbers are floats: jupyter_ydoc casts ints to floats going in, and back coming out."""
    from jupyter_ydoc.utils import cast_all

    box = {"v": copy.deepcopy(value)}
    cast_all(box, int, float)
    return box["v"]


def set_text(ytext: Any, new: str) -> None:
    """Change a shared text to ``new`` with the smallest edits, so cursors and text around them keep their place.

    A line diff, each changed block trimmed of its common prefix and suffix, applied
    from the end (earlier offsets stay valid). jupyter_ydoc's own ``_set_text`` rewrites
    the whole text below a similarity of 0.6, which moves every cursor in the cell.
    pycrdt counts offsets in UTF-8 bytes.

    >>> # set_text(ycell["source"], "c = 3  # written outside")   # inserts the comment only
    """
    old = str(ytext)
    if old == new:
        return
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    starts = [0]
    for line in a:
        starts.append(starts[-1] + len(line.encode()))
    for tag, i1, i2, j1, j2 in reversed(difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()):
        if tag == "equal":
            continue
        o, n = "".join(a[i1:i2]), "".join(b[j1:j2])
        p = 0
        while p < min(len(o), len(n)) and o[p] == n[p]:
            p += 1
        q = 0
        while q < min(len(o), len(n)) - p and o[len(o) - 1 - q] == n[len(n) - 1 - q]:
            q += 1
        at = starts[i1] + len(o[:p].encode())
        removed, added = o[p:len(o) - q], n[p:len(n) - q]
        if removed:
            del ytext[at:at + len(removed.encode())]
        if added:
            ytext.insert(at, added)
    if str(ytext) != new:  # a pycrdt counting offsets another way: be right rather than minimal
        del ytext[0:len(str(ytext).encode())]
        ytext.insert(0, new)


def _key(cell: dict[str, Any]) -> tuple[str, ...]:
    # cells are the same cell by id; without ids (nbformat 4.4), an unchanged cell is known by its source
    if cell.get("id"):
        return ("id", str(cell["id"]), cell["cell_type"])
    return ("source", cell["cell_type"], cell.get("source", ""))


def kept_cells(current: list[dict[str, Any]], target: list[dict[str, Any]]) -> dict[int, int]:
    """Which of the room's cells stay (updated in place) for which target cells: ``{target index: room index}``.

    Cells are matched by id, in order (a moved cell is removed and inserted, as jupyter_ydoc does); cells
    without ids that changed are matched by position within a changed stretch when their type is the same.
    """
    matcher = difflib.SequenceMatcher(a=[_key(c) for c in current], b=[_key(c) for c in target], autojunk=False)
    kept: dict[int, int] = {}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            kept.update((j1 + k, i1 + k) for k in range(i2 - i1))
        elif tag == "replace":
            for k in range(min(i2 - i1, j2 - j1)):
                a, b = current[i1 + k], target[j1 + k]
                if not a.get("id") and not b.get("id") and a["cell_type"] == b["cell_type"]:
                    kept[j1 + k] = i1 + k
    return kept


def _room_cells(ynb: Any) -> dict[str, Any]:
    """The shared document as a notebook with one cell per shared cell (jupyter_ydoc's ``get`` drops cells
    whose id repeats an identical cell's; here indexes must be the shared list's)."""
    try:
        return normal(ynb.get(deduplicate=False))
    except TypeError:  # jupyter_ydoc before 4.2 has no deduplication
        return normal(ynb.get())


def _set_map(ymap: Any, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Change a shared map key by key: keys the change leaves alone are not rewritten."""
    for k in old.keys() - new.keys():
        del ymap[k]
    for k, v in new.items():
        if k not in old or old[k] != v:
            ymap[k] = _for_y(v)


def apply_notebook(ynb: Any, target: dict[str, Any]) -> dict[str, int]:
    """Make the shared notebook ``ynb`` (a jupyter_ydoc ``YNotebook``) hold ``target``, touching only what differs.

    One transaction: clients get one update. A cell the change leaves alone is not
    rewritten (cursors and typing in it stay); a changed source gets minimal text edits
    (:func:`set_text`); metadata changes key by key; outputs are replaced only when they
    differ. Returns counts of cells ``inserted``, ``deleted`` and ``updated``.
    Call it with no ``await`` between reading the room and this call, so no client
    update slips in between.
    """
    from pycrdt import Map

    target = normal(target)
    current = _room_cells(ynb)
    stats = {"inserted": 0, "deleted": 0, "updated": 0}
    with ynb.ydoc.transaction(origin=ORIGIN):
        ymeta = ynb._ymeta
        for key in ("nbformat", "nbformat_minor"):
            if current.get(key) != target.get(key):
                ymeta[key] = float(target[key])
        if current["metadata"] != target["metadata"]:
            ymd = ymeta.get("metadata")
            if isinstance(ymd, Map):
                _set_map(ymd, current["metadata"], target["metadata"])
            else:
                ymeta["metadata"] = Map(_for_y(target["metadata"]))
        kept = kept_cells(current["cells"], target["cells"])
        staying = set(kept.values())
        ycells = ynb.ycells
        for i in reversed(range(len(current["cells"]))):
            if i not in staying:
                del ycells[i]
                stats["deleted"] += 1
        # ycells now holds the kept cells in order; walking the target inserts the rest where they go
        for j, new in enumerate(target["cells"]):
            if j not in kept:
                ycells.insert(j, ynb.create_ycell(_for_y(new)))
                stats["inserted"] += 1
                continue
            old = current["cells"][kept[j]]
            if old == new:
                continue
            stats["updated"] += 1
            ycell = ycells[j]
            if old.get("source") != new.get("source"):
                set_text(ycell["source"], new.get("source", ""))
            if old.get("metadata") != new.get("metadata"):
                if isinstance(ycell.get("metadata"), Map):
                    _set_map(ycell["metadata"], old.get("metadata", {}), new.get("metadata", {}))
                else:
                    ycell["metadata"] = Map(_for_y(new.get("metadata", {})))
            if old.get("outputs") != new.get("outputs") and new["cell_type"] == "code":
                ynb._set_ycell_outputs(ycell, _for_y(new.get("outputs", [])))
            for k in (old.keys() | new.keys()) - {"source", "metadata", "outputs", "cell_type"}:
                if k not in new:
                    del ycell[k]
                elif old.get(k) != new[k]:
                    ycell[k] = _for_y(new[k])
    return stats


__all__ = ["ORIGIN", "apply_notebook", "kept_cells", "normal", "set_text"]
