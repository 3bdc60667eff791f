"""One cell both sides have, merged field by field.

The cell type and the source (by lines, :mod:`.text`), metadata and
attachments key by key (:mod:`.metadata`), outputs with their source
(:mod:`.outputs`). Fields only one side added or removed are taken from it.
Each clash is recorded at the cell's merged index.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .conflicts import Record
from .metadata import _keys, _merge3, _merge_dict
from .options import MergeOptions
from .outputs import _merge_outputs
from .text import _merge_text


def _merge_cell(base_index: int | None, bc: Mapping[str, Any], lc: Any, rc: Any, at: int, options: MergeOptions,
                record: Record) -> Any:
    """One cell both sides have, field by field; ``at`` is where it goes in the merged notebook."""
    if lc == rc or rc == bc:
        return lc
    if lc == bc:
        return rc
    pick, side = options.strategy, options.side
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
        record("cell", at, base_index, side, f"both sides changed the cell type; took {side}'s")
    cell["cell_type"] = kind
    source, left, settled = _merge_text(bc.get("source", ""), lc.get("source", ""), rc.get("source", ""), pick)
    cell["source"] = source
    if left:
        record("source", at, base_index, "inline",
               f"both sides changed the same lines: {left} place{'s' * (left != 1)} marked <<<<<<< local / >>>>>>> remote")
    elif settled:
        record("source", at, base_index, pick, f"both sides changed the same lines; took {pick}'s")
    metadata, keys = _merge_dict(bc.get("metadata", {}), lc.get("metadata", {}), rc.get("metadata", {}), side)
    cell["metadata"] = metadata
    if keys:
        record("metadata", at, base_index, side, f"both sides changed {_keys(keys)}; took {side}'s")
    if "attachments" in lc or "attachments" in rc:
        attachments, keys = _merge_dict(bc.get("attachments", {}), lc.get("attachments", {}), rc.get("attachments", {}),
                                        side, deep=False)
        if attachments or ("attachments" in lc and "attachments" in rc):
            cell["attachments"] = attachments
        else:
            cell.pop("attachments", None)
        if keys:
            record("attachments", at, base_index, side, f"both sides changed {_keys(keys)}; took {side}'s")
    if kind == "code":
        src_l, src_r = lc.get("source") != bc.get("source"), rc.get("source") != bc.get("source")
        cell["outputs"], cell["execution_count"] = _merge_outputs(at, base_index, bc, lc, rc, src_l, src_r, options, record)
        cell.pop("attachments", None)  # code cells have none in nbformat's schema
    else:
        for key in ("outputs", "execution_count"):
            cell.pop(key, None)
    return cell
