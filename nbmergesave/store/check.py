"""Checking a store and mending it: :meth:`~nbmergesave.store.Store.fsck` (``nbmergesave fsck``).

:class:`FsckMixin` is one of the parts :class:`~nbmergesave.store.Store` is made
of; the checks are the store's own (pieces against their digests, manifests
against their contents' digests), so they are the same for every backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import pieces
from .backend import Backend
from .contents import put_content, sha256


class FsckMixin:
    """The store's check and repair: part of :class:`~nbmergesave.store.Store` (it uses the store's
    ``backend``, ``root`` and ``blob()``)."""

    backend: Backend
    root: Path
    blob: Callable[[str], bytes]

    def fsck(self, *, repair: bool = True) -> dict[str, Any]:
        """Check the store; with ``repair``, mend what can be mended.

        Runs the database's integrity check, verifies every piece against its
        sha256 and every manifest (its pieces present, the bytes they join to
        matching the content's sha256), and finds versions whose content is
        missing or damaged. A damaged piece is dropped; a content that cannot
        be read is taken back from the notebook on disk when the file still
        holds those bytes, otherwise its versions are marked ``lost`` (and are
        no longer the current one). Returns what was found and done.
        """
        report: dict[str, Any] = {"integrity": self.backend.integrity(), "contents": 0, "pieces": 0,
                                  "damaged": [], "missing": [], "restored": [], "lost": []}
        bad_pieces = []
        for i, digest, codec, stored in self.backend.iter_pieces():
            report["pieces"] += 1
            try:
                ok = hashlib.sha256(pieces.decode(codec, stored)).digest() == digest
            except Exception:  # zlib.error, unknown codec
                ok = False
            if not ok:
                bad_pieces.append(i)
                report["damaged"].append(f"piece {digest.hex()[:12]}")
        unreadable = set()
        for sha, _, _ in list(self.backend.contents()):
            report["contents"] += 1
            try:
                ok = sha256(self.blob(sha)) == sha
            except StoreError:
                ok = False
            if not ok:
                unreadable.add(sha)
                report["damaged"].append(f"content {sha[:12]}")
        with self.backend.transaction():
            if repair:
                self.backend.drop_pieces(bad_pieces)
                self.backend.drop_contents(unreadable)
            present = {sha for sha, _, _ in self.backend.contents()} - unreadable
            for v in self.backend.all_versions():
                if v.sha256 is None or v.kind == "lost" or v.sha256 in present:
                    continue
                report["missing"].append(f"{v.path} v{v.version}")
                if not repair:
                    continue
                try:
                    data = (self.root / v.path).read_bytes()
                except OSError:
                    data = b""
                if sha256(data) == v.sha256:
                    put_content(self.backend, v.sha256, data)
                    present.add(v.sha256)
                    report["restored"].append(f"{v.path} v{v.version}")
                else:
                    self.backend.mark_lost(v.path, v.version)
                    report["lost"].append(f"{v.path} v{v.version}")
        report["ok"] = report["integrity"] == "ok" and not report["damaged"] and not report["missing"]
        return report
