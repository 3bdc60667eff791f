"""What the server tells the front end: the keys of the save and load models, and, for a merged save, what
the other side changed and which cells hold conflicts, in words for a person."""

from __future__ import annotations

from typing import Any

#: The key of the save model under which the front end sends its base's sha256.
BASE_KEY = "nbmergesave_base"
#: The key of the reply models under which the server says what it did.
REPLY_KEY = "nbmergesave"


def changes(base: dict[str, Any], theirs: dict[str, Any]) -> dict[str, int]:
    """What the other side did since the base: cells added, changed and removed (matched by id, else position)."""
    def keyed(nb: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {str(c.get("id") or f"#{i}"): c for i, c in enumerate(nb.get("cells", []))}

    b, t = keyed(base), keyed(theirs)
    changed = sum(1 for k in b.keys() & t.keys()
                  if {f: b[k].get(f) for f in ("source", "outputs", "cell_type")} != {f: t[k].get(f) for f in ("source", "outputs", "cell_type")})
    return {"added": len(t.keys() - b.keys()), "changed": changed, "removed": len(b.keys() - t.keys())}


_WORDS = {
    "source": "both changed the same lines",
    "outputs": "both changed the outputs",
    "metadata": "both changed the cell's metadata",
    "delete-edit": "one side deleted the cell, the other edited it",
    "insert": "both added cells here",
    "notebook-metadata": "both changed the notebook's metadata",
}


def conflict_cells(nb: dict[str, Any], unresolved: list[Any]) -> list[dict[str, Any]]:
    """The cells of the merged notebook that hold conflicts, found from the notebook itself
    (its markers), each with words for a person (from the merge's report where it names the cell)."""
    from ..merge import MARK_KEY
    from ..report import joined, markers

    kinds = {getattr(c, "cell", None): getattr(c, "kind", None) for c in unresolved}
    found = []
    for m in markers(nb):
        index = m["cell"]
        cell = nb["cells"][index] if index is not None else {}
        source = joined(cell.get("source", ""))
        ours = (cell.get("metadata", {}).get(MARK_KEY) or {}).get("conflict")
        if ours == "insert":  # three marker cells around both sides' cells: named by the opening one
            if not source.startswith("<<<<<<<"):
                continue
            kind = "insert"
        elif ours == "delete-edit":  # a note cell before the kept cell: named by the kept cell
            index, kind = index + 1, "delete-edit"
        elif index is None:
            kind = "notebook-metadata"
        elif "CELL DELETED >>>>>>>" in source:  # nbdime's forms, in files merged by nbdime or an older nbmergesave
            kind = "delete-edit"
        elif cell.get("cell_type") == "markdown" and "<<<<<<< local</b>" in source:
            kind = "insert"
        elif ">>>>>>> remote</b>" in source or "=======</b>" in source:
            continue  # the closing and middle marker cells of nbdime's 'insert' conflict
        else:
            kind = kinds.get(index)
            if kind is None or kind == "cell":
                kind = "outputs" if m["where"] == ["outputs"] else "source" if "source" in m["where"] else m["where"][0]
        found.append({"cell": index, "id": nb["cells"][index].get("id") if index is not None else None,
                      "kind": kind, "words": _WORDS.get(kind, "both changed it")})
    return found
