"""nbdime's own merge (``engine="nbdime"``), kept for comparison, and its decisions turned into conflicts.

nbdime's ``merge_notebooks`` runs on the whole notebook with nbdime's own
conflict list: slow on long notebooks, and it reports what nbdime decides.
nbdime is imported only here, inside the functions that run it, so
importing nbmergesave stays cheap. The decision-to-:class:`~.conflicts.Conflict` helpers read only
nbdime's decisions, so they live here too.
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
