""":func:`merge`: the whole notebook, by either engine, with valid ids and the conflicts located.

The cells are merged by the chosen engine (the fast path: :mod:`.cells`;
nbdime's: :mod:`.nbdime_engine`), the notebook's metadata key by key; then
cell ids are made valid and unique (:mod:`.valid`), and each conflict is
given the id of the merged cell it sits in and put in notebook order, so the
report reads like the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .cells import _Merger
from .conflicts import Conflict, MergeResult, _conflict_order
from .metadata import _merge_top
from .nbdime_engine import _conflict, _merged_top, _nbdime_region, as_written
from .options import MergeOptions, engine_name
from .valid import _fix_cell_ids


def merge(
    base: Mapping[str, Any],
    local: Mapping[str, Any],
    remote: Mapping[str, Any],
    options: MergeOptions | None = None,
    *,
    engine: str = "cells",
) -> MergeResult:
    """Merge the changes ``local`` and ``remote`` made to ``base``.

    Inputs are notebooks (nbformat ``NotebookNode`` or plain dicts with
    text already joined, as :func:`nbmergesave.notebook_io.parse_notebook`
    returns them); they are not modified. ``engine`` is ``"cells"`` (this
    package's cell-level diff3, the default) or ``"nbdime"``: nbdime's own
    merge of the whole notebook, with nbdime's decisions and markers (slower
    on long notebooks); its report is made to say what nbdime's file shows
    (:func:`.nbdime_engine.as_written`). The result always has valid, unique
    cell ids (or none, before nbformat 4.5). An unknown engine raises
    :class:`~nbmergesave.errors.NbMergeSaveError`.
    """
    options = options or MergeOptions()
    if engine_name(engine) == "nbdime":
        cells, decisions_at = _nbdime_region(base["cells"], local["cells"], remote["cells"], base, options)
        found = [(_conflict(d, 0, decisions_at, options), d) for d in decisions_at.conflicts]
        merged = {**_merged_top(base, local, remote, options, found), "cells": cells}
        conflicts = as_written(merged, (base, local, remote), found)
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
