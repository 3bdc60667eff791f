"""nbdime's own merge (``engine="nbdime"``), and its decisions turned into a report that is the truth.

nbdime's ``merge_notebooks`` runs on the whole notebook with nbdime's own
decisions and markers: slower on long notebooks. Its decisions do not say
what its file shows (a conflict it records may leave no marker, a
delete-versus-edit it settles "both" leaves one), so :func:`as_written`
turns them into the report from the file itself: left for a person exactly
where nbdime's file shows a marker, settled (with nbdime's action) elsewhere.
nbdime is imported only here, inside the functions that run it, so
importing nbmergesave stays cheap.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from .conflicts import Conflict
from .metadata import _minor
from .options import MergeOptions
from .valid import _plain

_NBDIME_STRATEGY = {"inline": "inline", "local": "use-local", "remote": "use-remote", "base": "use-base", "clear": "clear-all"}
_DELETED_MARK = "CELL DELETED >>>>>>>"


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
        _fit_type(c)
    return cells, _Decisions(decisions)


def _fit_type(cell: dict[str, Any]) -> None:
    """Make a cell's fields fit its type: when one side changed a code cell to markdown, nbdime
    keeps the code cell's ``outputs`` and the file would not validate (the inputs are all stored)."""
    if cell.get("cell_type") == "code":
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


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


def _merged_top(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any],
    options: MergeOptions, conflicts: list[tuple[Conflict, Any]],
) -> dict[str, Any]:
    """Notebook metadata and format, merged like nbdime does (its 'take-max' for the minor version);
    conflicts are appended to ``conflicts`` with the decision each comes from."""
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
        conflicts.extend((_conflict(d, 0, _Decisions(decisions), options), d) for d in _Decisions(decisions).conflicts)
    return {"metadata": _plain(metadata), "nbformat": 4, "nbformat_minor": _minor(base, local, remote)}


# --- nbdime's decisions as conflicts -----------------------------------------


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


# --- the report as nbdime's file shows it ----------------------------------------

#: nbdime's actions on a conflict it settled without a marker, in the report's words.
_ACTIONS = {
    "local": ("local", "nbdime took local's side"),
    "remote": ("remote", "nbdime took remote's side"),
    "base": ("base", "nbdime kept the base"),
    "clear": ("clear", "nbdime cleared it"),
    "clear_all": ("clear", "nbdime cleared it"),
    "remove": ("base", "nbdime removed it"),
}
_OPENING, _CLOSING = "<<<<<<< local</b>", ">>>>>>> remote</b>"


def _marker_cell_of(cell: Mapping[str, Any], mark: str) -> bool:
    """One of the markdown cells nbdime writes around conflicting inserts (``mark``: which one)."""
    source = cell.get("source", "")
    return cell.get("cell_type") == "markdown" and mark in (source if isinstance(source, str) else "".join(source))


def _shown(nb: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]]) -> dict[int | None, list[str]]:
    """Cells that show a conflict a person must settle, and where (``None``: the notebook's metadata).

    A cell any input holds as it is shows nothing new: markers a person left
    there before this merge are not this merge's conflicts.
    """
    import json

    from ..report import markers

    def plain(cell: Mapping[str, Any]) -> str:
        return json.dumps({k: v for k, v in cell.items() if k != "id"}, sort_keys=True)

    known = {plain(c) for side in inputs for c in side.get("cells", [])}
    shown: dict[int | None, list[str]] = {}
    for m in markers(dict(nb)):
        if m["cell"] is None:
            if not any("nbdime-conflicts" in side.get("metadata", {}) for side in inputs):
                shown[None] = m["where"]
        elif plain(nb["cells"][m["cell"]]) not in known:
            shown[m["cell"]] = m["where"]
    return shown


def _shown_how(kind: str, cell: Mapping[str, Any]) -> str:
    """How nbdime shows a conflict it leaves, where our words for the kind would mislead (our engine puts a note
    cell before a delete-versus-edit; nbdime a marker line in the kept cell)."""
    source = cell.get("source", "")
    if kind == "delete-edit" and _DELETED_MARK in (source if isinstance(source, str) else "".join(source)):
        return "nbdime's CELL DELETED line at its top says so"
    return ""


def as_written(nb: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]],
               found: Sequence[tuple[Conflict, Mapping[str, Any] | None]]) -> list[Conflict]:
    """nbdime's conflicts (each with the decision it comes from) as its file ``nb`` shows them.

    A conflict is left for a person (``inline``) exactly when its cell shows a
    marker (for ``insert``, nbdime's opening marker cell); any other is
    reported settled, with nbdime's action (``how``). A marker no decision
    names becomes a conflict of its own, so nothing shown goes unreported;
    a generic ``cell`` entry gives way to a named one at the same cell.
    """
    cells = nb.get("cells", [])
    shown = _shown(nb, inputs)
    explained: set[int | None] = set()
    report: list[Conflict] = []

    def region(start: int) -> None:  # an insert's marker cells and both sides' cells between them
        end = start
        while end < len(cells) - 1 and not _marker_cell_of(cells[end], _CLOSING):
            end += 1
        explained.update(range(start, end + 1))

    for c, decision in found:
        at = c.cell
        if c.cell is None:
            visible = None in shown and c.kind == "notebook-metadata"
        elif c.kind == "insert":
            visible = at in shown and _marker_cell_of(cells[at], _OPENING)  # type: ignore[index]
        else:
            visible = at in shown and not any(_marker_cell_of(cells[at], m) for m in (_OPENING, _CLOSING))  # type: ignore[index]
        if visible:
            report.append(Conflict(c.kind, c.cell, c.cell_id, c.base_cell, "inline", _shown_how(c.kind, cells[at])
                                   if at is not None else ""))
            if c.kind == "insert":
                region(at)  # type: ignore[arg-type]
            else:
                explained.add(at)
        elif c.resolution != "inline":
            report.append(c)  # a side the strategy picked
        else:
            action = (decision or {}).get("action")
            resolution, how = _ACTIONS.get(action, ("both", "nbdime kept both sides' changes, without a marker"))
            report.append(Conflict(c.kind, c.cell, c.cell_id, c.base_cell, resolution, how))
    for at in sorted((i for i in shown if i not in explained and i is not None), key=int):
        if at in explained:
            continue  # inside an insert region found on the way
        if _marker_cell_of(cells[at], _OPENING):
            report.append(Conflict("insert", at, None, None, "inline"))
            region(at)
            continue
        if _marker_cell_of(cells[at], _CLOSING) or _marker_cell_of(cells[at], "=======</b>"):
            continue  # a stray closing or middle marker is part of a region reported at its opening
        where, source = shown[at], cells[at].get("source", "")
        kind = ("delete-edit" if _DELETED_MARK in (source if isinstance(source, str) else "".join(source))
                else "source" if "source" in where else where[0])
        report.append(Conflict(kind, at, None, None, "inline", _shown_how(kind, cells[at])))
        explained.add(at)
    if None in shown and None not in explained and not any(c.cell is None and c.left for c in report):
        report.append(Conflict("notebook-metadata", None, None, None, "inline"))
    named = {(c.cell, c.resolution) for c in report if c.kind != "cell"}
    report = [c for c in report if c.kind != "cell" or (c.cell, c.resolution) not in named]
    # One entry per cell and kind (two base cells can land on one merged cell): left before settled.
    once: dict[tuple[int | None, str], Conflict] = {}
    for c in sorted(report, key=lambda c: not c.left):
        if c.cell is None or (c.cell, c.kind) not in once:
            once.setdefault((c.cell, c.kind) if c.cell is not None else (None, f"{len(once)}"), c)
    return list(once.values())
