"""Writing a content (a file's whole bytes) into a backend as a manifest over pieces, and the store's digests.

Below :class:`~nbmergesave.store.Store` and beside the backends: the store's
versions (:meth:`Store.add`, :meth:`Store.put_blob`), fsck's repair
(:mod:`.check`), the upgrade of an 0.1 store and ``nbmergesave store copy``
(:mod:`.copy`) all write contents the same way, so the way lives here once.

The work is split in two so that writers wait on each other only for rows:
:func:`prepare` cuts and compresses outside any transaction, :func:`put_content`
writes inside one (and checks again what was prepared before it).

>>> cut(b'{"cells": []}').parts
[b'{"cells": []}']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import pieces
from .backend import Backend


def sha256(data: bytes) -> str:
    """A content's name in the store: the sha256 hex digest of its bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Prepared:
    """A content cut into pieces (``parts``, their raw sha256 ``digests``), and the encoded pieces
    (``digest -> (codec, stored bytes)``) the store did not hold when it was prepared."""

    parts: list[bytes]
    digests: list[bytes]
    encoded: dict[bytes, tuple[int, bytes]]


def cut(data: bytes) -> Prepared:
    """``data`` cut into pieces (nothing encoded yet)."""
    parts = pieces.split(data)
    return Prepared(parts, [hashlib.sha256(p).digest() for p in parts], {})


def prepare(backend: Backend, data: bytes, given: Prepared | None = None) -> Prepared:
    """Cut ``data`` (unless ``given`` is that cut, done already) and encode the pieces the store does not hold yet
    (outside any transaction)."""
    given = given or cut(data)
    known = backend.piece_ids(set(given.digests))
    given.encoded.update((d, pieces.encode(p)) for d, p in zip(given.digests, given.parts) if d not in known)
    return given


def put_content(backend: Backend, sha: str, data: bytes, prepared: Prepared | None = None) -> None:
    """Store content ``data`` (digest ``sha``) as a manifest over pieces; inside a transaction.

    What was prepared before the transaction is checked again inside it: a piece
    collected meanwhile is stored again, so no manifest ever points at nothing.
    """
    prepared = prepared or cut(data)
    ids = backend.piece_ids(set(prepared.digests))
    for digest, part in zip(prepared.digests, prepared.parts):
        if digest not in ids:
            codec, stored = prepared.encoded.get(digest) or pieces.encode(part)
            ids[digest] = backend.put_piece(digest, codec, len(part), stored)
    backend.put_content(sha, len(data), pieces.pack_ids([ids[d] for d in prepared.digests]))
