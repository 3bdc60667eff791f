""":func:`merge`: the whole notebook, by either engine, with valid ids and the conflicts located.

The cells are merged by the chosen engine (the fast path: :mod:`.cells`;
nbdime's: :mod:`.nbdime_engine`), the notebook's metadata key by key; then
cell ids are made valid and unique (:mod:`.valid`), and each conflict is
given the id of the merged cell it sits in and put in notebook order, so the
report reads like the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .cells import _Merger
from .conflicts import Conflict, MergeResult, _conflict_order
from .metadata import _merge_top
from .nbdime_engine import _conflict, _merged_top, _nbdime_region
from .options import MergeOptions
from .valid import _fix_cell_ids


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


def _fast_merge(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any], options: MergeOptions
) -> tuple[dict[str, Any], list[Conflict]]:
    merger = _Merger(base["cells"], local["cells"], remote["cells"], options)
    cells = merger.run()
    top = _merge_top(base, local, remote, options, merger.conflicts)
    return {**top, "cells": cells}, merger.conflicts
