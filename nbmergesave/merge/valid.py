"""Valid output: plain JSON types and unique, valid, deterministic cell ids.

Every notebook the merge returns validates against the nbformat schema. Both
sides may insert cells with the same id, and nbdime gives its marker cells
random ids even in older notebooks; the ids are fixed after the merge, from
each cell's content and position, so the same merge always writes the same
bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


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


def _plain(value: Any) -> Any:
    """NotebookNode (and nbdime's tuples) -> plain JSON types."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
