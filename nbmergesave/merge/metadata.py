"""Values three-way, and metadata (cell and notebook) key by key.

A key both sides changed differently takes the ``side`` value (the remote
side, the later save, unless the strategy picks one) and is reported as
settled; nested dicts merge key by key, tags as sets. The notebook's own
metadata and format are merged here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .conflicts import Conflict
from .options import MergeOptions
from .valid import _plain

_MISSING: Any = object()


def _merge3(b: Any, l: Any, r: Any) -> tuple[Any, bool]:
    """A value three-way: (merged, clash). On a clash the local value is returned."""
    if l == r or r == b:
        return l, False
    if l == b:
        return r, False
    return l, True


def _merge_dict(b: Any, l: Any, r: Any, side: str, *, deep: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Key by key three-way merge; keys both changed differently take ``side``'s value. Returns (merged, clashing keys)."""
    b = b if isinstance(b, Mapping) else {}
    l, r = (x if isinstance(x, Mapping) else {} for x in (l, r))  # invalid inputs: the schema check names them after
    merged: dict[str, Any] = {}
    clashes: list[str] = []
    for key in [*l, *(k for k in r if k not in l), *(k for k in b if k not in l and k not in r)]:
        bv, lv, rv = b.get(key, _MISSING), l.get(key, _MISSING), r.get(key, _MISSING)
        value, clash = _merge3(bv, lv, rv)
        if clash:
            if deep and isinstance(lv, Mapping) and isinstance(rv, Mapping):
                value, inner = _merge_dict(bv if isinstance(bv, Mapping) else {}, lv, rv, side)
                clashes.extend(f"{key}.{k}" for k in inner)
            elif key == "tags" and isinstance(lv, list) and isinstance(rv, list):
                value = _merge_tags(bv if isinstance(bv, list) else [], lv, rv)
            else:
                value = {"local": lv, "remote": rv, "base": bv}[side]
                clashes.append(key)
        if value is not _MISSING:
            merged[key] = value
    return merged, clashes


def _merge_tags(b: list[Any], l: list[Any], r: list[Any]) -> list[Any]:
    """Tags as sets: what either side added, less what either side removed, in the order first seen."""
    removed = {t for t in b if t not in l or t not in r}
    out: list[Any] = []
    for t in (*l, *r):
        if t not in removed and t not in out:
            out.append(t)
    return out


def _keys(keys: Sequence[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:3])
    return f"key{'s' * (len(keys) != 1)} {shown}{' and more' if len(keys) > 3 else ''}"


def _merge_top(
    base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any],
    options: MergeOptions, conflicts: list[Conflict],
) -> dict[str, Any]:
    """Notebook metadata key by key (clashing keys take the remote side, or the strategy's); the larger minor version."""
    side = options.side
    metadata, keys = _merge_dict(base.get("metadata", {}), local.get("metadata", {}), remote.get("metadata", {}), side)
    if keys:
        conflicts.append(Conflict("notebook-metadata", None, None, None, side, f"both sides changed {_keys(keys)}; took {side}'s"))
    return {"metadata": _plain(metadata), "nbformat": 4, "nbformat_minor": _minor(base, local, remote)}


def _minor(base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any]) -> int:
    """The changed side's nbformat minor version; the larger one when both changed it."""
    b, l, r = (nb.get("nbformat_minor", 0) for nb in (base, local, remote))
    return r if l == b else l if r == b else max(l, r)
