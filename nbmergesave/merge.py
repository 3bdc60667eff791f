"""Three-way notebook merge: a fast cell-level diff3 in front of nbdime.

nbdime aligns cells with an all-pairs comparison, which grows faster than
the notebook. Most of a long notebook is untouched by either side, so we
align each side to the base first (by cell id where every cell has a unique
one, by cell type and source otherwise), keep what neither side changed,
take whatever only one side changed, and hand nbdime only the regions both
sides changed, as small notebooks. Their results are spliced back in order.

>>> from nbformat.v4 import new_notebook, new_code_cell
>>> base = new_notebook(cells=[new_code_cell("a = 1", id="a"), new_code_cell("b = 1", id="b")])
>>> local = new_notebook(cells=[new_code_cell("a = 2", id="a"), new_code_cell("b = 1", id="b")])
>>> remote = new_notebook(cells=[new_code_cell("a = 1", id="a"), new_code_cell("b = 3", id="b")])
>>> [c["source"] for c in merge(base, local, remote).notebook["cells"]]
['a = 2', 'b = 3']
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from types import SimpleNamespace
from typing import Any, Literal

Strategy = Literal["inline", "local", "remote", "base"]
OutputStrategy = Literal["inline", "local", "remote", "base", "clear"]

STRATEGIES: tuple[str, ...] = ("inline", "local", "remote", "base")
OUTPUT_STRATEGIES: tuple[str, ...] = (*STRATEGIES, "clear")
#: CLI spellings git users know, mapped to ours.
ALIASES = {"ours": "local", "theirs": "remote"}

_NBDIME_STRATEGY = {"inline": "inline", "local": "use-local", "remote": "use-remote", "base": "use-base", "clear": "clear-all"}
_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
_DELETED_MARK = "CELL DELETED >>>>>>>"


@dataclass(frozen=True)
class MergeOptions:
    """How conflicts are settled.

    ``strategy`` applies to sources, attachments and metadata; ``outputs``
    to cell outputs (``None``: as ``strategy``; ``"clear"`` empties the
    outputs of a cell whose outputs conflict). ``ignore_transients`` lets
    execution counts and scroll state never conflict (they are cleared).
    """

    strategy: Strategy = "inline"
    outputs: OutputStrategy | None = None
    ignore_transients: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.outputs is not None and self.outputs not in OUTPUT_STRATEGIES:
            raise ValueError(f"unknown outputs strategy {self.outputs!r}; choose from {', '.join(OUTPUT_STRATEGIES)}")

    @property
    def output_strategy(self) -> str:
        return self.outputs or self.strategy


@dataclass(frozen=True)
class Conflict:
    """One place both sides changed differently.

    ``kind`` is one of ``source``, ``outputs``, ``metadata``, ``attachments``,
    ``cell`` (other cell fields), ``insert`` (both sides inserted cells at
    the same place), ``delete-edit`` (one side deleted cells the other
    edited), ``notebook-metadata``. ``cell`` is the 0-based index in the
    merged notebook (for ``insert``, of the first cell of the conflict), and
    ``base_cell`` the index in the base; both are ``None`` for notebook
    metadata. ``resolution`` is ``inline`` when the conflict is left in the
    notebook for a person (nbdime's markers), otherwise the side or action
    that settled it (``local``, ``remote``, ``base``, ``clear``).
    """

    kind: str
    cell: int | None
    cell_id: str | None
    base_cell: int | None
    resolution: str

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
    full merge on the whole notebook (slow on long notebooks; kept for
    comparison). The result always has valid, unique cell ids (or none,
    before nbformat 4.5).
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
        Conflict(c.kind, c.cell, ids[c.cell] if c.cell is not None and c.cell < len(ids) and c.kind != "insert" else None, c.base_cell, c.resolution)
        for c in conflicts
    )
    return MergeResult(merged, tuple(sorted(set(located), key=_conflict_order)))


def _conflict_order(c: Conflict) -> tuple[int, int, str]:
    return (-1 if c.cell is None else c.cell, -1 if c.base_cell is None else c.base_cell, c.kind)


# --- the fast path -----------------------------------------------------------

def _fast_merge(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any], options: MergeOptions
) -> tuple[dict[str, Any], list[Conflict]]:
    b, l, r = base["cells"], local["cells"], remote["cells"]
    conflicts: list[Conflict] = []
    if l == b:  # one side untouched: the other side is the answer
        cells = list(r)
    elif r == b or l == r:
        cells = list(l)
    else:
        cells = []
        keys = _alignment_keys(b, l, r)
        for chunk_b, chunk_l, chunk_r in _diff3_chunks(keys):
            cb, cl, cr = b[slice(*chunk_b)], l[slice(*chunk_l)], r[slice(*chunk_r)]
            if cl == cb:
                cells.extend(cr)
            elif cr == cb or cl == cr:
                cells.extend(cl)
            else:
                region, decisions = _nbdime_region(cb, cl, cr, base, options)
                conflicts.extend(_conflict(d, len(cells), decisions, options, chunk_b[0]) for d in decisions.conflicts)
                cells.extend(region)
    top = _merged_top(base, local, remote, options, conflicts)
    return {**top, "cells": cells}, conflicts


def _alignment_keys(*sides: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Cell ids when every cell of every side has a unique one, else (type, source)."""
    ids = [[c.get("id") for c in cells] for cells in sides]
    if all(all(isinstance(i, str) for i in s) and len(set(s)) == len(s) for s in ids):
        return ids
    return [[(c.get("cell_type"), c.get("source")) for c in cells] for cells in sides]


Chunk = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _diff3_chunks(keys: list[list[Any]]) -> list[Chunk]:
    """Split the three cell lists into aligned half-open ranges, diff3 style.

    A base cell matched (by key) in both sides is a stable point and makes a
    one-cell chunk of its own; the cells between stable points form the
    unstable chunks. The caller compares contents to decide who changed what.
    """
    kb, kl, kr = keys
    to_l = _matches(kb, kl)
    to_r = _matches(kb, kr)
    chunks: list[Chunk] = []
    pb = pl = pr = 0
    for i in range(len(kb)):
        j, k = to_l.get(i), to_r.get(i)
        if j is None or k is None:
            continue
        if (pb, pl, pr) != (i, j, k):
            chunks.append(((pb, i), (pl, j), (pr, k)))
        chunks.append(((i, i + 1), (j, j + 1), (k, k + 1)))
        pb, pl, pr = i + 1, j + 1, k + 1
    if (pb, pl, pr) != (len(kb), len(kl), len(kr)):
        chunks.append(((pb, len(kb)), (pl, len(kl)), (pr, len(kr))))
    return chunks


def _matches(a: list[Any], b: list[Any]) -> dict[int, int]:
    """Index pairs of a longest matching of ``a`` into ``b`` (monotone)."""
    # Common prefix and suffix first: the usual save touches a few cells.
    n = min(len(a), len(b))
    head = 0
    while head < n and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < n - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    pairs = {i: i for i in range(head)}
    mid_a, mid_b = a[head:len(a) - tail], b[head:len(b) - tail]
    if mid_a and mid_b:
        matcher = SequenceMatcher(None, mid_a, mid_b, autojunk=False)
        for block in matcher.get_matching_blocks():
            for x in range(block.size):
                pairs[head + block.a + x] = head + block.b + x
    for x in range(tail):
        pairs[len(a) - 1 - x] = len(b) - 1 - x
    return pairs


# --- nbdime for the regions both sides changed -------------------------------

class _Decisions(list):  # type: ignore[type-arg]
    """nbdime's merge decisions for one region, with the conflicted ones at hand."""

    @property
    def conflicts(self) -> list[Any]:
        """Conflicted decisions, including those a side strategy settled.

        nbdime clears ``conflict`` when a strategy such as use-local settled
        it; both diffs are still there, and we still report it.
        """
        return [d for d in self if not _only_ids(d) and (d.conflict or _settled(d))]


def _settled(decision: Mapping[str, Any]) -> bool:
    l, r = decision.get("local_diff"), decision.get("remote_diff")
    return bool(l) and bool(r) and l != r and decision.get("action") in _SETTLING_ACTIONS


_SETTLING_ACTIONS = frozenset({"local", "remote", "base", "clear", "clear_all", "remove", "custom"})


def _only_ids(decision: Mapping[str, Any]) -> bool:
    # Both sides gave a cell a different id: we re-id cells after the merge,
    # so this is not a conflict a person has to settle.
    ops = (decision.get("local_diff") or []) + (decision.get("remote_diff") or [])
    return bool(ops) and all(op.get("key") == "id" for op in ops)


def _nbdime_region(
    b: Sequence[Any], l: Sequence[Any], r: Sequence[Any], base: Mapping[str, Any], options: MergeOptions
) -> tuple[list[dict[str, Any]], _Decisions]:
    """Merge three cell lists with nbdime, inside notebooks that share base's header."""
    import nbformat
    from nbdime.merging.notebooks import merge_notebooks

    _quiet_nbdime()

    def wrap(cells: Sequence[Any], ids: bool = True) -> Any:
        plain = list(cells) if ids else [{k: v for k, v in c.items() if k != "id"} for c in cells]
        return nbformat.from_dict(copy.deepcopy({
            "cells": plain, "metadata": dict(base.get("metadata", {})),
            "nbformat": 4, "nbformat_minor": base.get("nbformat_minor", 0),
        }))

    try:
        merged, decisions = merge_notebooks(wrap(b), wrap(l), wrap(r), _nbdime_args(options))
    except Exception:
        # nbdime fails (KeyError 'id') when one of two inserted cells has an id
        # and the other not: merge without ids (they are given back after);
        # failing that, keep both sides whole, marked.
        try:
            merged, decisions = merge_notebooks(wrap(b, False), wrap(l, False), wrap(r, False), _nbdime_args(options))
        except Exception:
            return _both_sides(b, l, r, options)
    # nbdime gives the marker cells it makes random ids; drop them so that
    # _fix_cell_ids gives deterministic ones and a merge is reproducible.
    known = {c.get("id") for cells in (b, l, r) for c in cells}
    cells = [_plain(c) for c in merged["cells"]]
    for c in cells:
        if not isinstance(c.get("id"), str) or c["id"] not in known:  # nbdime can merge ids into lists
            c.pop("id", None)
    return cells, _Decisions(decisions)


def _both_sides(
    b: Sequence[Any], l: Sequence[Any], r: Sequence[Any], options: MergeOptions
) -> tuple[list[dict[str, Any]], _Decisions]:
    """The region as one conflict: local's cells and remote's, between marker cells (as nbdime marks
    conflicting inserts), or one side's cells when a strategy picks a side. Nothing is dropped."""
    side = {"local": l, "remote": r, "base": b}.get(options.strategy)
    if side is not None:
        cells = [_plain(c) for c in side]
    else:
        def marker(text: str) -> dict[str, Any]:
            return {"cell_type": "markdown", "metadata": {}, "source": f'<span style="color:red"><b>{text}</b></span>'}

        cells = [marker("<<<<<<< local"), *map(_plain, l), marker("======="), *map(_plain, r), marker(">>>>>>> remote")]
    decision = {
        "common_path": ("cells",), "conflict": side is None, "action": "custom" if side is None else options.strategy,
        "local_diff": [{"op": "addrange", "key": 0, "valuelist": list(l)}, {"op": "removerange", "key": 0, "length": len(b)}],
        "remote_diff": [{"op": "addrange", "key": 0, "valuelist": list(r)}, {"op": "removerange", "key": 0, "length": len(b)}],
        "custom_diff": [{"op": "addrange", "key": 0, "valuelist": cells}, {"op": "removerange", "key": 0, "length": len(b)}],
    }
    return cells, _Decisions([_AttrDict(decision)])


class _AttrDict(dict):  # type: ignore[type-arg]
    """nbdime's decisions allow attribute access; our stand-in does too."""

    __getattr__ = dict.__getitem__


def _quiet_nbdime() -> None:
    """Settings for nbdime in this process, set before every use (cheap)."""
    from nbdime.merging import strategies

    logging.getLogger("nbdime").setLevel(logging.ERROR)  # it warns about the id strategy on every call
    if strategies.merge_render is not _safe_merge_render:
        _safe_merge_render.nbdime = strategies.merge_render  # type: ignore[attr-defined]
        strategies.merge_render = _safe_merge_render


def _safe_merge_render(base: Any, local: Any, remote: Any, strategy: Any = None, *args: Any, **kwargs: Any) -> Any:
    """nbdime's inline text merge, without losing text.

    nbdime renders conflicting text with `git merge-file` when git is
    installed (hunk by hunk, the best output). git takes text with a NUL byte
    for binary and returns nothing, and both sides' text vanished from the
    cell; for such text nbdime's own renderer is used, which keeps both sides
    whole.
    """
    from nbdime import prettyprint

    if any("\0" in str(text) for text in (base, local, remote)):
        return prettyprint.builtin_merge_render(base, local, remote, strategy)
    return _safe_merge_render.nbdime(base, local, remote, strategy, *args, **kwargs)  # type: ignore[attr-defined]


def _nbdime_args(options: MergeOptions) -> SimpleNamespace:
    # nbdime reads its options from an argparse namespace; this is the one
    # place we build one, from our typed options.
    return SimpleNamespace(
        merge_strategy=_NBDIME_STRATEGY[options.strategy],
        input_strategy=None,
        output_strategy=_NBDIME_STRATEGY[options.output_strategy],
        ignore_transients=options.ignore_transients,
        log_level="ERROR",
    )


def _plain(value: Any) -> Any:
    """NotebookNode (and nbdime's tuples) -> plain JSON types."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merged_top(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any],
    options: MergeOptions, conflicts: list[Conflict],
) -> dict[str, Any]:
    """Notebook metadata and format, merged like nbdime does (its 'take-max' for the minor version)."""
    bm, lm, rm = (nb.get("metadata", {}) for nb in (base, local, remote))
    if lm == bm:
        metadata = rm
    elif rm == bm or lm == rm:
        metadata = lm
    else:
        import nbformat
        from nbdime.merging.notebooks import merge_notebooks

        _quiet_nbdime()
        wrap = lambda m: nbformat.from_dict(  # noqa: E731
            {"cells": [], "metadata": copy.deepcopy(dict(m)), "nbformat": 4, "nbformat_minor": base.get("nbformat_minor", 0)}
        )
        merged, decisions = merge_notebooks(wrap(bm), wrap(lm), wrap(rm), _nbdime_args(options))
        metadata = merged["metadata"]
        conflicts.extend(_conflict(d, 0, _Decisions(decisions), options) for d in _Decisions(decisions).conflicts)
    minors = [nb.get("nbformat_minor", 0) for nb in (base, local, remote)]
    if minors[1] == minors[0]:
        minor = minors[2]
    elif minors[2] == minors[0]:
        minor = minors[1]
    else:
        minor = max(minors[1], minors[2])
    return {"metadata": _plain(metadata), "nbformat": 4, "nbformat_minor": minor}


# --- conflicts -------------------------------------------------------------

def _conflict(
    decision: Mapping[str, Any], offset: int, decisions: _Decisions, options: MergeOptions, base_offset: int = 0
) -> Conflict:
    """Turn one conflicted nbdime decision into a :class:`Conflict` (region-relative -> notebook)."""
    path = tuple(decision.get("common_path") or ())
    ops = (decision.get("local_diff") or []) + (decision.get("remote_diff") or [])
    index: int | None = None
    before = False
    if path[:1] == ("metadata",):
        kind = "notebook-metadata"
    elif path[:1] != ("cells",):
        kind = "cell"
    elif len(path) == 1:  # the cell list itself: inserts and deletes
        index = min(op["key"] for op in ops)
        both_insert = all(any(op["op"] == "addrange" for op in decision.get(side) or []) for side in ("local_diff", "remote_diff"))
        kind = "insert" if both_insert and {op["op"] for op in ops} <= {"addrange", "removerange"} else "delete-edit"
        before = kind == "insert"
    else:
        index = path[1]
        if any(_DELETED_MARK in str(op.get("valuelist", "")) for op in ops):
            kind = "delete-edit"  # nbdime writes it as a marker line in the edited cell's source
        else:
            field_ = path[2] if len(path) > 2 else _field_of(ops)
            kind = field_ if field_ in ("source", "outputs", "metadata", "attachments") else "cell"
    if decision.get("conflict") and decision.get("action") in _BOTH:
        resolution = "both"  # nbdime kept both sides (e.g. lines both inserted at one place), no markers
    else:
        resolution = options.output_strategy if kind == "outputs" else options.strategy
    if index is None:
        return Conflict(kind, None, None, None, resolution)
    return Conflict(kind, offset + _output_index(decisions, index, before=before), None, base_offset + index, resolution)


_BOTH = frozenset({"local_then_remote", "remote_then_local"})


def _field_of(ops: Sequence[Mapping[str, Any]]) -> str:
    keys = [op.get("key") for op in ops if op.get("key") != "id"]
    for name in ("source", "outputs", "attachments", "metadata"):
        if name in keys:
            return name
    return "cell"


def _output_index(decisions: _Decisions, base_index: int, *, before: bool = False) -> int:
    """Where base cell ``base_index`` lands in the merged region (cells inserted and removed before it)."""
    shift = 0
    for d in decisions:
        if tuple(d.get("common_path") or ()) != ("cells",):
            continue
        for op in _applied_ops(d):
            key = op["key"]
            if op["op"] == "addrange" and (key < base_index or (key == base_index and not before)):
                shift += len(op["valuelist"])
            elif op["op"] == "removerange" and key < base_index:
                shift -= min(op["length"], base_index - key)
    return max(base_index + shift, 0)


def _applied_ops(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    action = d.get("action")
    if action == "custom":
        return list(d.get("custom_diff") or [])
    if action == "local":
        return list(d.get("local_diff") or [])
    if action == "remote":
        return list(d.get("remote_diff") or [])
    if action in ("either", "local_then_remote", "remote_then_local"):
        return list(d.get("local_diff") or []) + (list(d.get("remote_diff") or []) if action != "either" else [])
    return []


# --- valid output ----------------------------------------------------------

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


# --- files -------------------------------------------------------------------

@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: parsing a long notebook makes millions of acyclic
    objects, and CPython's generational collector would walk them over and
    over (a third of the time of a 10,000-cell merge)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def merge_files(
    base: str | os.PathLike[str],
    local: str | os.PathLike[str],
    remote: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    options: MergeOptions | None = None,
    *,
    labels: tuple[str, str, str] = ("BASE", "LOCAL", "REMOTE"),
    empty_base: bool = False,
) -> tuple[MergeResult, str]:
    """Read three notebook files, merge, validate, and write ``out`` atomically (if given).

    Returns the result and the merged file's text. Raises
    :class:`~nbmergesave.errors.BadInput` (one line, naming the file by its
    label) before anything is written.

    >>> result, text = merge_files("fixtures/example--base.ipynb", "fixtures/example--local.ipynb",
    ...                            "fixtures/example--remote.ipynb")
    >>> result.conflicts, text.endswith("}\\n")
    ((), True)
    """
    from . import notebook_io
    from .errors import NbMergeSaveError

    paths = (base, local, remote)
    with _no_gc():
        nbs = [
            notebook_io.read_notebook(path, label, empty_ok=empty_base and i == 0)
            for i, (path, label) in enumerate(zip(paths, labels))
        ]
        result = merge(*nbs, options)
        try:
            notebook_io.validate(result.notebook, "the merged notebook")
        except NbMergeSaveError:
            # Inputs get a structural check only; an invalid merge comes from an
            # invalid input: name that one.
            for nb, label, path in zip(nbs, labels, paths):
                notebook_io.validate(nb, f"{label} '{path}'")
            raise
        text = notebook_io.dumps(result.notebook)
    if out is not None:
        notebook_io.write_atomic(out, text)
    return result, text
