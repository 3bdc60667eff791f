"""The lineage index's keys: which cells a content holds, so the base search can find versions sharing them.

The base search (:mod:`nbmergesave.sync`) and a store copy (:mod:`.copy`)
both record a content's cells with :meth:`~nbmergesave.store.Store.record_cells`,
and both must name them the same way: :func:`cell_digests` is that one way.
Each backend then keeps every (cell, digest) pair as the same 64-bit number
(:func:`cell_pairs`), so an index copied between backends means the same.

>>> cell_digests({"cells": [{"id": "a", "source": "x = 1"}, {"source": ""}]})  # doctest: +ELLIPSIS
{'a': '...', '#1': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'}
"""

from __future__ import annotations

import hashlib
from typing import Any


def cell_digests(nb: dict[str, Any], limit: int = 500) -> dict[str, str]:
    """Each cell's key and a digest of its source, for the first ``limit`` cells (enough to tell versions apart)."""
    # the digest is store.sha256 of the source; spelled out here so this module needs nothing from the package
    return {cell.get("id") or f"#{i}": hashlib.sha256(str(cell.get("source", "")).encode()).hexdigest()
            for i, cell in enumerate(nb.get("cells", [])[:limit])}


def cell_pairs(cells: dict[str, str]) -> list[int]:
    """Each (cell key, source digest) as a signed 64-bit number: the lineage index's rows stay small."""
    return [int.from_bytes(hashlib.sha256(f"{cell}\0{source}".encode()).digest()[:8], "big", signed=True)
            for cell, source in cells.items()]
