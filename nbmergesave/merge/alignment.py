"""Cell alignment: which cell of each side is which base cell.

Cells are aligned to the base by cell id where every cell of every side has a
unique one, by cell type and source otherwise; without ids, cells of one type
whose sources are alike pair up too (an edit, not a delete and an insert).
Base cells a side kept but put elsewhere are moves. The diff3 chunks here
serve the source lines too (:mod:`.text`): the same algorithm over lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any


def _ids_usable(*sides: Sequence[Mapping[str, Any]]) -> bool:
    for cells in sides:
        ids = [c.get("id") for c in cells]
        if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            return False
    return True


def _alignment_keys(*sides: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Cell ids when every cell of every side has a unique one, else (type, source)."""
    if _ids_usable(*sides):
        return [[c.get("id") for c in cells] for cells in sides]
    return [[(c.get("cell_type"), c.get("source")) for c in cells] for cells in sides]


Chunk = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _diff3_chunks(keys: list[list[Any]], to_l: dict[int, int] | None = None, to_r: dict[int, int] | None = None) -> list[Chunk]:
    """Split three sequences into aligned half-open ranges, diff3 style.

    A base item matched (by key) in both sides is a stable point and makes a
    one-item chunk of its own; the items between stable points form the
    unstable chunks. The caller compares contents to decide who changed what.
    """
    kb, kl, kr = keys
    to_l = _matches(kb, kl) if to_l is None else to_l
    to_r = _matches(kb, kr) if to_r is None else to_r
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


def _pair(cb: Sequence[Mapping[str, Any]], cs: Sequence[Mapping[str, Any]], pairs: dict[int, int]) -> dict[int, int]:
    """Base cells of a region -> one side's cells: the exact ``pairs``, then cells alike enough to be an edit."""
    pairs = dict(pairs)
    # Between exact matches, pair cells of one type whose sources are alike (an edit, not a delete and an insert).
    anchors = [(-1, -1), *sorted(pairs.items()), (len(cb), len(cs))]
    for (i0, j0), (i1, j1) in zip(anchors, anchors[1:]):
        gb, gs = list(range(i0 + 1, i1)), list(range(j0 + 1, j1))
        if gb and gs:
            pairs.update(_similar_pairs(cb, cs, gb, gs))
    return pairs


def _similar_pairs(cb: Sequence[Mapping[str, Any]], cs: Sequence[Mapping[str, Any]], gb: list[int], gs: list[int]) -> dict[int, int]:
    """A monotone pairing of the most alike cells (dynamic programming over a small gap)."""
    if len(gb) * len(gs) > 2500:
        return {}
    score = {(i, j): _similarity(cb[i], cs[j]) for i in gb for j in gs}
    n, m = len(gb), len(gs)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for x in range(n - 1, -1, -1):
        for y in range(m - 1, -1, -1):
            s = score[gb[x], gs[y]]
            best[x][y] = max(best[x + 1][y], best[x][y + 1], best[x + 1][y + 1] + s if s else 0.0)
    pairs, x, y = {}, 0, 0
    while x < n and y < m:
        s = score[gb[x], gs[y]]
        if s and best[x][y] == best[x + 1][y + 1] + s:
            pairs[gb[x]] = gs[y]
            x, y = x + 1, y + 1
        elif best[x][y] == best[x + 1][y]:
            x += 1
        else:
            y += 1
    return pairs


def _similarity(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How alike two cells' sources are (0: not a pair)."""
    if a.get("cell_type") != b.get("cell_type"):
        return 0.0
    sa, sb = a.get("source", ""), b.get("source", "")
    la, lb = sa.splitlines(), sb.splitlines()
    if max(len(la), len(lb)) > 1:
        ratio = SequenceMatcher(None, la, lb, autojunk=False).ratio()
        if ratio >= 0.5:
            return ratio
    if len(sa) + len(sb) > 20000:
        return 0.0
    matcher = SequenceMatcher(None, sa, sb, autojunk=False)
    if matcher.real_quick_ratio() < 0.6 or matcher.quick_ratio() < 0.6:
        return 0.0
    ratio = matcher.ratio()
    return ratio if ratio >= 0.6 else 0.0


def _anchored(cs: Sequence[Any], pairs: dict[int, int]) -> dict[int, list[Any]]:
    """A side's cells no base cell pairs with, by the base index they come before."""
    back = {j: i for i, j in pairs.items()}
    out: dict[int, list[Any]] = {}
    last = -1
    for j, c in enumerate(cs):
        if j in back:
            last = back[j]
        else:
            out.setdefault(last + 1, []).append(c)
    return out


def _find_moves(
    keys: list[list[Any]], pairs: dict[str, dict[int, int]], l: Sequence[Any], r: Sequence[Any]
) -> tuple[dict[str, dict[int, Any]], dict[str, dict[int, int]]]:
    """Base cells a side kept (same id; without ids, same type and source, once only) where no pair follows them.

    Returns, per side, base index -> that side's cell, and the cell (by object id) -> base index.
    """
    moved: dict[str, dict[int, Any]] = {"local": {}, "remote": {}}
    moved_cell: dict[str, dict[int, int]] = {"local": {}, "remote": {}}
    for n, side, cells in ((1, "local", l), (2, "remote", r)):
        side_pairs = pairs[side]
        paired = set(side_pairs.values())
        loose_base: dict[Any, list[int]] = {}
        for i, key in enumerate(keys[0]):
            if i not in side_pairs:
                loose_base.setdefault(key, []).append(i)
        loose_side: dict[Any, list[int]] = {}
        for j, key in enumerate(keys[n]):
            if j not in paired:
                loose_side.setdefault(key, []).append(j)
        for key, at in loose_base.items():
            there = loose_side.get(key, [])
            if len(at) == 1 and len(there) == 1:
                moved[side][at[0]] = cells[there[0]]
                moved_cell[side][id(cells[there[0]])] = at[0]
    return moved, moved_cell
