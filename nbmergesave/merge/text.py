"""A cell's source, merged line by line (diff3).

Changes to different lines merge; lines both sides changed differently are
left between ``<<<<<<< local`` / ``=======`` / ``>>>>>>> remote`` lines for a
person, unless the strategy picks a side. The final newline is merged on its
own, so removing it never clashes with a line edit.
"""

from __future__ import annotations

from .alignment import _diff3_chunks
from .metadata import _merge3


def _split_lines(text: str) -> tuple[list[str], bool]:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
        return lines, True
    return lines, False


def _merge_text(b: str, l: str, r: str, pick: str) -> tuple[str, int, int]:
    """Line-based diff3 of a cell's text: (merged text, places left marked, places settled by ``pick``).

    Changes to different lines merge; lines both sides changed differently are
    left between marker lines (or take ``pick``'s lines). Lines common to both
    sides at the edges of such a place are kept outside the markers, as git
    does. Whether the text ends with a newline is merged as a value of its own.
    """
    if l == r or r == b:
        return l, 0, 0
    if l == b:
        return r, 0, 0
    (bl, bn), (ll, ln), (rl, rn) = _split_lines(b), _split_lines(l), _split_lines(r)
    newline, _ = _merge3(bn, ln, rn)
    out: list[str] = []
    left = settled = 0
    for (b0, b1), (l0, l1), (r0, r1) in _diff3_chunks([bl, ll, rl]):
        cb, cl, cr = bl[b0:b1], ll[l0:l1], rl[r0:r1]
        if cl == cb:
            out.extend(cr)
        elif cr == cb or cl == cr:
            out.extend(cl)
        elif pick != "inline":
            out.extend({"local": cl, "remote": cr, "base": cb}[pick])
            settled += 1
        else:
            head = 0
            while head < min(len(cl), len(cr)) and cl[head] == cr[head]:
                head += 1
            tail = 0
            while tail < min(len(cl), len(cr)) - head and cl[-1 - tail] == cr[-1 - tail]:
                tail += 1
            out.extend(cl[:head])
            out.extend(["<<<<<<< local", *cl[head:len(cl) - tail], "=======", *cr[head:len(cr) - tail], ">>>>>>> remote"])
            out.extend(cl[len(cl) - tail:])
            left += 1
    text = "\n".join(out)
    if newline and out:
        text += "\n"
    return text, left, settled
