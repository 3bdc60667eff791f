"""Cutting a notebook's bytes into shared pieces, and putting them back.

A version is stored as a manifest over pieces: exact byte ranges of the
file, cut where nbformat's layout (``json.dumps(indent=N, sort_keys=True)``,
any N) starts a cell, starts an output, ends a cell's outputs, and ends the
cell list. The notebook's head and metadata, each cell, and within cells of
2 kB or more each output (a plot) and the source become separate pieces, so
two versions that differ in one cell share every other piece, and a plot
survives an edit of its cell's source. Reading a version back is
joining its pieces: the bytes are exact by construction, whatever the file
held. Where the layout is not recognised (a torn file, minified JSON, another
indentation of nested parts) the cut is coarser, never wrong: such stretches
are stored whole.

>>> data = b'{\\n "cells": [\\n  {\\n   "source": "a"\\n  },\\n  {\\n   "source": "b"\\n  }\\n ],\\n "metadata": {}\\n}\\n'
>>> parts = split(data)
>>> b"".join(parts) == data, len(parts)
(True, 4)
>>> pack_ids([5, 6, 7, 3, 900])
b'[5,6,7,3,900]'
>>> unpack_ids(pack_ids([5, 6, 7, 3, 900])), unpack_ids(bytes.fromhex("78dae36262626fe20300017b00a6"))
([5, 6, 7, 3, 900], [5, 6, 7, 3, 900])
"""

from __future__ import annotations

import json
import re
import zlib
from functools import lru_cache

RAW, ZLIB = 0, 1
_SMALL = 4096  # pieces shorter than this are kept as they are: inflating costs ~5 µs a call, more than copying them
_SAMPLE = 16384  # bytes tried before compressing a whole piece
_WORTH = 0.6  # compress only when it saves at least 40 %: base64 images save ~25 % and would cost 15x the read time


@lru_cache(maxsize=16)
def _marks(unit: int) -> tuple[bytes, bytes, tuple[bytes, bytes]]:
    """For indentation ``unit``: where a cell starts, where the cell list ends, and the cuts inside a cell."""
    one, two, three, four = (b" " * (unit * k) for k in (1, 2, 3, 4))
    return b"\n" + two + b"{", b"\n" + one + b'],\n' + one + b'"metadata"', (
        b"\n" + four + b"{", b"\n" + three + b'],\n' + three + b'"source"')


_HEAD = re.compile(rb'\{\r?\n( {1,8})"')
SMALL_CELL = 2048  # a cell shorter than this is one piece: cutting it would cost more rows than it saves


def _find_all(data: bytes, mark: bytes, start: int, end: int) -> list[int]:
    found, at = [], data.find(mark, start, end)
    while at >= 0:
        found.append(at)
        at = data.find(mark, at + 1, end)
    return found


def split(data: bytes) -> list[bytes]:
    """``data`` cut into pieces that join back to exactly ``data``."""
    head = _HEAD.match(data)
    if head is None:
        return [data]
    cell, end, inner = _marks(len(head.group(1)))
    starts = _find_all(data, cell, 0, len(data))  # bytes.find: much faster than a regex on long lines
    last = data.rfind(end)
    if last < 0 or (starts and last < starts[-1]):
        last = len(data)
    cuts: list[int] = []
    for a, b in zip(starts, starts[1:] + [last]):
        cuts.append(a)
        if b - a >= SMALL_CELL:  # a large cell: its outputs and its source are pieces of their own
            cuts += sorted(_find_all(data, inner[0], a + 1, b) + _find_all(data, inner[1], a + 1, b))
    cuts.append(last)
    pieces, start = [], 0
    for cut in cuts:
        if start < cut < len(data):
            pieces.append(data[start:cut])
            start = cut
    pieces.append(data[start:])
    return pieces


def split_cell(region: bytes, unit: int = 1) -> list[bytes]:
    """The pieces :func:`split` cuts one cell's stretch of a file into (from the line that opens the cell
    to the next cell's, or to the end of the cell list): a writer that serialises cell by cell cuts and
    hashes only the cells that changed (:mod:`nbmergesave.fastpath`)."""
    if len(region) < SMALL_CELL:
        return [region]
    _, _, inner = _marks(unit)
    cuts = sorted(_find_all(region, inner[0], 1, len(region)) + _find_all(region, inner[1], 1, len(region)))
    parts, start = [], 0
    for cut in cuts:
        parts.append(region[start:cut])
        start = cut
    parts.append(region[start:])
    return parts


def encode(piece: bytes) -> tuple[int, bytes]:
    """``(codec, stored bytes)``: zlib where it earns its place, the bytes as they are otherwise."""
    if len(piece) < _SMALL:
        return RAW, piece  # a cell's fields or a short output: deflating saves little and costs a call per read
    if len(piece) > _SAMPLE and len(zlib.compress(piece[:_SAMPLE], 1)) > _WORTH * _SAMPLE:
        return RAW, piece  # images and other encoded binaries: reading them back costs nothing
    packed = zlib.compress(piece, 6)
    return (ZLIB, packed) if len(packed) <= _WORTH * len(piece) else (RAW, piece)


def decode(codec: int, stored: bytes) -> bytes:
    if codec == RAW:
        return stored
    if codec == ZLIB:
        return zlib.decompress(stored)
    raise ValueError(f"unknown codec {codec}")


def pack_ids(ids: list[int]) -> bytes:
    """A manifest's piece ids, as a JSON array: SQLite reads it in the query that fetches the pieces
    (``json_each``), so reading a version is one statement and no decoding in Python."""
    return json.dumps(ids, separators=(",", ":")).encode()


def unpack_ids(packed: bytes) -> list[int]:
    """The ids of a manifest: a JSON array, or (stores written before 0.3) zigzag varints of the
    differences, deflated."""
    if packed[:1] == b"[":
        return json.loads(packed)  # type: ignore[no-any-return]
    raw, ids, previous, n, shift = zlib.decompress(packed), [], 0, 0, 0
    for byte in raw:
        n |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        previous += (n >> 1) ^ -(n & 1)
        ids.append(previous)
        n = shift = 0
    return ids
