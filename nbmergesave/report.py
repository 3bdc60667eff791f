"""Conflict records -> words: the one place that phrases conflicts for people and programs."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .merge import MARK_KEY, Conflict

_WHAT = {
    "source": "both sides edited the source",
    "outputs": "both sides changed the outputs",
    "metadata": "both sides changed the cell metadata",
    "attachments": "both sides changed the attachments",
    "cell": "both sides changed the cell",
    "insert": "both sides inserted cells here",
    "delete-edit": "one side deleted a cell the other edited",
    "notebook-metadata": "both sides changed the notebook metadata",
}
#: More alike entries than this are printed as one line.
GROUP = 3


def describe(conflict: Conflict) -> str:
    """One line for a person, e.g. ``cell 3 (id 'a1b2'): both sides edited the source``.

    Cell numbers count from 1, as JupyterLab shows them. A settled conflict
    says how it was settled (``both re-ran; took remote's outputs``).
    """
    return f"{_where(conflict)}: {_what(conflict)}"


def _where(conflict: Conflict) -> str:
    if conflict.cell is None:
        return "notebook" if conflict.kind == "notebook-metadata" or conflict.base_cell is None else f"base cell {conflict.base_cell + 1}"
    where = f"cell {conflict.cell + 1}"
    if conflict.cell_id:
        where += f" (id {conflict.cell_id!r})"
    return where


def _what(conflict: Conflict) -> str:
    if conflict.resolution == "inline":
        if conflict.how.startswith("nbdime"):  # the nbdime engine's own form of the marker, which ours does not use
            note = f" ({conflict.how})"
        else:
            note = " (a note cell before it says so)" if conflict.kind == "delete-edit" else ""
        return f"{_WHAT.get(conflict.kind, conflict.kind)}{note}"
    if conflict.how and "took" in conflict.how or conflict.resolution == "clear":
        return conflict.how or _WHAT.get(conflict.kind, conflict.kind)
    return f"{conflict.how or _WHAT.get(conflict.kind, conflict.kind)} [took {conflict.resolution}]"


def _cells(conflicts: Sequence[Conflict]) -> str:
    numbers = [str(c.cell + 1) for c in conflicts if c.cell is not None]
    shown = ", ".join(numbers[:6]) + (", …" if len(numbers) > 6 else "")
    return f"{len(conflicts)} cells ({shown})" if numbers else f"{len(conflicts)} places"


def _lines(conflicts: Sequence[Conflict]) -> list[str]:
    """One line per conflict, or one per group of more than GROUP alike ones (same kind and how)."""
    groups: dict[tuple[str, str, str], list[Conflict]] = {}
    for c in conflicts:
        groups.setdefault((c.kind, c.resolution, c.how), []).append(c)
    lines = []
    done: set[tuple[str, str, str]] = set()
    for c in conflicts:
        key = (c.kind, c.resolution, c.how)
        group = groups[key]
        if len(group) <= GROUP:
            lines.append(f"  {describe(c)}")
        elif key not in done:
            done.add(key)
            lines.append(f"  {_cells(group)}: {_what(c)}")
    return lines


def human(conflicts: Sequence[Conflict], name: str = "notebook") -> str:
    """The stderr summary of ``nbmergesave merge``; empty when there is nothing to say.

    What is left for a person comes first, one line per cell; then what the
    merge settled, with many alike entries grouped on one line
    (``118 cells (2, 3, …): both re-ran; took remote's outputs``).
    """
    if not conflicts:
        return ""
    left = [c for c in conflicts if c.resolution == "inline"]
    settled = [c for c in conflicts if c.resolution != "inline"]
    out = []
    if left:
        out.append(f"{name}: {len(left)} conflict{'s' * (len(left) != 1)} left in the notebook (marked inline)")
        out.extend(_lines(left))
    if settled:
        out.append(f"{name}: {len(settled)} conflict{'s' * (len(settled) != 1)} settled by the merge")
        out.extend(_lines(settled))
    return "\n".join(out) + "\n"


def as_json(conflicts: Sequence[Conflict], **extra: Any) -> str:
    """The ``--json`` report: ``{"clean": bool, "conflicts": [...], **extra}``.

    Each conflict has ``kind``, ``cell`` (0-based merged index), ``cell_id``,
    ``base_cell``, ``resolution`` (``inline``: left for a person), ``how``,
    ``left`` and a ``description``.
    """
    payload = {
        **extra,
        "clean": not any(c.resolution == "inline" for c in conflicts),
        "conflicts": [{**c.to_dict(), "left": c.left, "description": describe(c)} for c in conflicts],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


#: A conflict marker line as git, nbdime and nbmergesave write them (nbdime's marker cells wrap it in a span).
_MARK_LINE = re.compile(r"^(?:<span[^>\n]*><b>)?(?:<{7}|>{7})(?: |$|<)", re.MULTILINE)
_MARKS = ("LOCAL CELL DELETED >>>>>>>", "REMOTE CELL DELETED >>>>>>>")


def joined(value: Any) -> str:
    """A multiline field (source, stream text) as one string, whether stored as a string or a list of lines."""
    return value if isinstance(value, str) else "".join(value) if isinstance(value, list) else str(value)


def _marked(text: str) -> bool:
    return ("<<<<<<<" in text or ">>>>>>>" in text) and (bool(_MARK_LINE.search(text)) or any(m in text for m in _MARKS))


def markers(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """Cells of a notebook that show a conflict to a person (0-based ``cell``, ``id``, ``where``).

    ``where`` lists ``source`` (a ``<<<<<<<``/``>>>>>>>`` line), ``outputs`` (a
    marker output), ``metadata`` (nbdime's ``nbdime-conflicts``, or a note or
    marker cell nbmergesave added); a last entry with ``cell`` None stands for
    conflict metadata on the notebook.
    """
    found = []
    for index, cell in enumerate(nb.get("cells", [])):
        where = []
        if _marked(joined(cell.get("source", ""))):
            where.append("source")
        if any(_marked(joined(o.get("text", ""))) for o in cell.get("outputs", []) or []):
            where.append("outputs")
        metadata = cell.get("metadata", {})
        if "nbdime-conflicts" in metadata or MARK_KEY in metadata and "conflict" in (metadata[MARK_KEY] or {}):
            where.append("metadata")
        if where:
            found.append({"cell": index, "id": cell.get("id"), "where": where})
    if "nbdime-conflicts" in nb.get("metadata", {}):
        found.append({"cell": None, "id": None, "where": ["notebook-metadata"]})
    return found
