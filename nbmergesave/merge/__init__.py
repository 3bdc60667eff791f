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

The package, one module per part:

- :mod:`.options`: :class:`MergeOptions` and the strategies;
- :mod:`.core`: :func:`merge`, the whole notebook by either engine;
- :mod:`.alignment`: which cell is which (keys, diff3 chunks, pairs, moves);
- :mod:`.cells`: where each cell goes (inserts, deletes, moves);
- :mod:`.fields`: one cell both sides have, field by field;
- :mod:`.text`: sources by lines; :mod:`.outputs`: outputs follow their source;
- :mod:`.metadata`: values three-way, metadata key by key;
- :mod:`.conflicts`: :class:`Conflict`, :class:`MergeResult`, marker cells;
- :mod:`.valid`: valid, unique cell ids;
- :mod:`.nbdime_engine`: nbdime's own merge (``engine="nbdime"``), its report made from its file;
- :mod:`.files`: :func:`merge_files`.

>>> from nbformat.v4 import new_notebook, new_code_cell
>>> base = new_notebook(cells=[new_code_cell("a = 1", id="a"), new_code_cell("b = 1", id="b")])
>>> local = new_notebook(cells=[new_code_cell("a = 2", id="a"), new_code_cell("b = 1", id="b")])
>>> remote = new_notebook(cells=[new_code_cell("a = 1", id="a"), new_code_cell("b = 3", id="b")])
>>> [c["source"] for c in merge(base, local, remote).notebook["cells"]]
['a = 2', 'b = 3']
"""

from __future__ import annotations

from .alignment import Chunk
from .conflicts import MARK_KEY, Conflict, MergeResult
from .core import merge
from .files import merge_files
from .options import (ALIASES, DEFAULT_ENGINE, ENGINES, OUTPUT_STRATEGIES, STRATEGIES, Engine, MergeOptions,
                      OutputStrategy, Strategy, engine_name)

__all__ = [
    "ALIASES", "Chunk", "Conflict", "DEFAULT_ENGINE", "ENGINES", "Engine", "MARK_KEY", "MergeOptions", "MergeResult",
    "OUTPUT_STRATEGIES", "OutputStrategy", "STRATEGIES", "Strategy", "engine_name", "merge", "merge_files",
]
