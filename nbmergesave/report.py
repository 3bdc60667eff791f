"""Conflict records -> words: the one place that phrases conflicts for people and programs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .merge import Conflict

_WHAT = {
    "source": "both sides edited the source",
    "outputs": "both sides changed the outputs",
    "metadata": "both sides changed the cell metadata",
    "attachments": "both sides changed the attachments",
    "cell": "both sides changed the cell",
    "insert": "both sides inserted cells here",
    "delete-edit": "one side deleted cells the other edited",
    "notebook-metadata": "both sides changed the notebook metadata",
}


def describe(conflict: Conflict) -> str:
    """One line for a person, e.g. ``cell 3 (id 'a1b2'): both sides edited the source``.

    Cell numbers count from 1, as JupyterLab shows them.
    """
    if conflict.cell is None:
        where = "notebook"
    else:
        where = f"cell {conflict.cell + 1}"
        if conflict.cell_id:
            where += f" (id {conflict.cell_id!r})"
    settled = "" if conflict.resolution == "inline" else f" [took {conflict.resolution}]"
    return f"{where}: {_WHAT.get(conflict.kind, conflict.kind)}{settled}"


def human(conflicts: Sequence[Conflict], name: str = "notebook") -> str:
    """The stderr summary of ``nbmergesave merge``; empty when there is nothing to say."""
    if not conflicts:
        return ""
    unresolved = sum(c.resolution == "inline" for c in conflicts)
    head = (
        f"{name}: {unresolved} conflict{'s' * (unresolved != 1)} left in the notebook (marked inline)"
        if unresolved
        else f"{name}: {len(conflicts)} conflict{'s' * (len(conflicts) != 1)} settled by strategy"
    )
    return "\n".join([head, *(f"  {describe(c)}" for c in conflicts)]) + "\n"


def as_json(conflicts: Sequence[Conflict], **extra: Any) -> str:
    """The ``--json`` report: ``{"conflicts": [...], "clean": bool, **extra}``."""
    payload = {
        **extra,
        "clean": not any(c.resolution == "inline" for c in conflicts),
        "conflicts": [{**c.to_dict(), "description": describe(c)} for c in conflicts],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


_MARKS = ("<<<<<<< local", ">>>>>>> remote", "LOCAL CELL DELETED >>>>>>>", "REMOTE CELL DELETED >>>>>>>")


def markers(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """Cells of a notebook that still hold nbdime's conflict markers (0-based ``cell``, ``id``, ``where``)."""
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        where = []
        if any(m in cell.get("source", "") for m in _MARKS):
            where.append("source")
        if any(any(m in str(o.get("text", "")) for m in _MARKS) for o in cell.get("outputs", [])):
            where.append("outputs")
        if "nbdime-conflicts" in cell.get("metadata", {}):
            where.append("metadata")
        if where:
            found.append({"cell": index, "id": cell.get("id"), "where": where})
    if "nbdime-conflicts" in nb.get("metadata", {}):
        found.append({"cell": None, "id": None, "where": ["notebook-metadata"]})
    return found
