"""Which stored version a new save was made from: the one decision rule of the watcher.

A save S arrives; P is the version on disk just before it. S is an ordinary
save unless it was made from an older version V that never saw P's changes
(another writer saved in between). We read each notebook as a multiset of
tokens, one per source line and one per cell's outputs, each keyed by the
cell's id (so a line counts only in its own cell), and say:

1. S equal to any stored version is an intentional revert (undo,
   ``git checkout``): never merged.
2. V (older than P) is a candidate base when S holds none of the lines P added
   since V (if P only removed lines: when S still holds some of them). A
   writer who started from P keeps at least part of what P added.
3. Of the candidates, the one closest to S (fewest differing tokens) is the
   base, provided it is no farther from S than P is (S saw none of P's
   additions, so at equal distance V explains S better); ties between
   candidates go to the newest. Otherwise S is an ordinary save.

The rule cannot tell a second writer from a single writer who removed all
that their previous save added while changing something else; it then
merges, and ``nbmergesave undo`` reverts that merge in one command.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

class Tokens(Counter):  # type: ignore[type-arg]
    """A notebook as a multiset of tokens, with its size kept (it bounds distances cheaply)."""

    size: int = 0


def tokens(nb: dict[str, Any]) -> Tokens:
    """The notebook as a multiset of (cell key, line) and (cell key, outputs) tokens."""
    out = Tokens()
    for cell in nb.get("cells", []):
        key = cell.get("id") or f"#{cell.get('cell_type')}"
        for line in str(cell.get("source", "")).splitlines():
            out[(key, line)] += 1
        if cell.get("outputs"):
            out[(key, "\0outputs", _fingerprint(cell["outputs"]))] += 1
    out.size = sum(out.values())
    return out


def _fingerprint(outputs: Any) -> bytes:
    """Outputs as a short token: a digest of their JSON (C-encoded: ``repr`` of a 120 kB plot
    scans it character by character, ten times slower, and the token kept the whole text)."""
    import hashlib
    import json

    text = json.dumps(outputs, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def distance(a: Counter, b: Counter) -> int:  # type: ignore[type-arg]
    """How many tokens one notebook has that the other has not, both ways (the base search's measure)."""
    return sum(((a - b) + (b - a)).values())


def find_base(
    save: dict[str, Any],
    on_disk: Any,
    candidates: Sequence[Any],
    tokens_of: Callable[[Any], Tokens | None],
    save_tokens: Tokens | None = None,
) -> Any | None:
    """Return the candidate ``save`` was made from, or ``None`` for an ordinary save on top of ``on_disk``.

    ``candidates`` are older stored versions (with a ``version`` number);
    ``tokens_of`` gives a version's :func:`tokens` (or ``None`` when it
    cannot be read); ``save_tokens``, the save's, when the caller has them.
    """
    s = save_tokens if save_tokens is not None else tokens(save)
    p = tokens_of(on_disk)
    if p is None:
        return None
    best, best_distance = None, distance(p, s)
    known = [(v, t) for v in candidates if (t := tokens_of(v)) is not None]
    # Closest sizes first: a size difference is a lower bound of the distance,
    # so the search stops as soon as no candidate left can be close enough.
    known.sort(key=lambda vt: abs(vt[1].size - s.size))
    for version, v in known:
        if abs(v.size - s.size) > best_distance:
            break
        added, removed = p - v, v - p
        if not added and not removed:
            continue
        if added:
            saw = any(s[t] > v[t] for t in added)
        else:
            saw = all(s[t] < v[t] for t in removed)
        if saw:
            continue
        d = distance(v, s)
        # S saw none of P's additions, so at equal distance V explains S
        # better than P does; between candidates the newest wins a tie.
        if (d <= best_distance) if best is None else (d < best_distance or (d == best_distance and version.version > best.version)):
            best, best_distance = version, d
    return best
