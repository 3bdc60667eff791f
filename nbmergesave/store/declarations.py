"""What the base search asks a store: the bases writers declared, and which stored contents hold which cells.

:class:`DeclarationsMixin` is one of the parts :class:`~nbmergesave.store.Store`
is made of; :mod:`nbmergesave.lineage` and :mod:`nbmergesave.sync` call these
methods on the store itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

from .backend import Backend, Version
from .retention import time_text


class DeclarationsMixin:
    """Declarations and the lineage index: part of :class:`~nbmergesave.store.Store` (it uses the store's
    ``backend``, ``key()`` and clock)."""

    backend: Backend
    key: Callable[[str | os.PathLike[str]], str]
    _clock: Callable[[], datetime]

    # --- declarations: writers saying which version a save was made from ----

    def declare(self, path: str | os.PathLike[str], sha: str, base_sha: str, writer: str | None = None) -> None:
        with self.backend.transaction():
            self.backend.declare(self.key(path), sha, base_sha, writer, time_text(self._clock()))

    def declared_base(self, path: str | os.PathLike[str], sha: str) -> Version | None:
        """The stored version a declaration names as the base of content ``sha``, if both are known."""
        return self.backend.declared_base(self.key(path), sha)

    def declared_writer(self, path: str | os.PathLike[str], sha: str) -> str | None:
        """Who declared content ``sha`` of ``path`` (``"jupyter"``, ``"git"``, a tool's name), if anyone did."""
        return self.backend.declared_writer(self.key(path), sha)

    def descends(self, path: str | os.PathLike[str], sha: str, ancestor: str, *, steps: int = 64) -> bool:
        """Whether content ``sha`` was made, through declarations and recorded merges, from ``ancestor``."""
        key, seen, frontier = self.key(path), set(), [sha]
        while frontier and len(seen) < steps:
            current = frontier.pop()
            if current == ancestor:
                return True
            if current in seen:
                continue
            seen.add(current)
            frontier += self.backend.parents(key, current)
        return False

    # --- the base search's index: which contents hold which cells ------------

    def record_cells(self, sha: str, cells: dict[str, str]) -> None:
        """Note that content ``sha`` holds, for each cell key, a source with that digest (once per content)."""
        self.backend.record_cells(sha, cells)

    def sharing_cells(self, path: str | os.PathLike[str], cells: dict[str, str], limit: int) -> list[Version]:
        """The versions of ``path`` with the most cells identical to ``cells`` (newest first at a tie)."""
        if not cells:
            return []
        return self.backend.sharing_cells(self.key(path), cells, limit)

    def latest_with(self, path: str | os.PathLike[str], sha: str) -> Version | None:
        return self.backend.latest_with(self.key(path), sha)
