"""The report: :class:`Conflict` and :class:`MergeResult`, and how a conflict is shown in the notebook.

Every part of the merge records a conflict where it writes it (through a
:data:`Record`), with its merged cell index, so the report says exactly what
the file shows. The marker cells the merge adds carry :data:`MARK_KEY` in
their metadata, which is how :mod:`nbmergesave.report` and the Jupyter
extension find them again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

#: Cell metadata key of the cells the merge adds to show a conflict (notes and marker cells).
MARK_KEY = "nbmergesave"


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


#: How a part of the merge records a conflict: (kind, merged cell, base cell, resolution, how).
Record = Callable[[str, int | None, int | None, str, str], None]


def _conflict_order(c: Conflict) -> tuple[int, int, str, str]:
    return (-1 if c.cell is None else c.cell, -1 if c.base_cell is None else c.base_cell, c.kind, c.how)


def _marker_cell(text: str, kind: str) -> dict[str, Any]:
    """A markdown cell that shows a conflict (a marker line, or a note)."""
    return {"cell_type": "markdown", "metadata": {MARK_KEY: {"conflict": kind}}, "source": text}
