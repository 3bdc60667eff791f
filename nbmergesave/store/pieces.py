"""Cutting a notebook's bytes into shared pieces, and putting them back.

A version is stored as a manifest over pieces: exact byte ranges of the
file, cut where nbformat's layout (``json.dumps(indent=N, sort_keys=True)``,
any N) starts a cell, starts an output, ends a cell's outputs, and ends the
cell list. The notebook's head and metadata, each cell's fields, each output
(a plot) and each cell's source become separate pieces, so two versions that
differ in one cell share every other piece. Reading a version back is
joining its pieces: the bytes are exact by construction, whatever the file
held. Where the layout is not recognised (a torn file, minified JSON, another
indentation of nested parts) the cut is coarser, never wrong: such stretches
are stored whole.

>>> data = b'{\\n "cells": [\\n  {\\n   "source": "a"\\n  },\\n  {\\n   "source": "b"\\n  }\\n ],\\n "metadata": {}\\n}\\n'
>>> parts = split(data)
>>> b"".join(parts) == data, len(parts)
(True, 4)
>>> unpack_ids(pack_ids([5, 6, 7, 3, 900]))
[5, 6, 7, 3, 900]
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

RAW, ZLIB = 0, 1
_SMALL = 512  # pieces shorter than this are kept as they are
_SAMPLE = 16384  # bytes tried before compressing a whole piece
_WORTH = 0.6  # compress only when it saves at least 40 %: base64 images save ~25 % and would cost 15x the read time


@lru_cache(maxsize=16)
def _cuts(unit: int) -> re.Pattern[bytes]:
    one, two, three, four = (b" " * (unit * k) for k in (1, 2, 3, 4))
    return re.compile(
        b"\\n(?:" + two + b"\\{|" + four + b"\\{|" + three + b'\\],\\n' + three + b'"source"|'
        + one + b'\\],\\n' + one + b'"metadata")')


_HEAD = re.compile(rb'\{\r?\n( {1,8})"')


def split(data: bytes) -> list[bytes]:
    """``data`` cut into pieces that join back to exactly ``data``."""
    head = _HEAD.match(data)
    if head is None:
        return [data]
    cuts = [m.start() for m in _cuts(len(head.group(1))).finditer(data)]
    pieces, start = [], 0
    for cut in cuts:
        if cut > start:
            pieces.append(data[start:cut])
            start = cut
    pieces.append(data[start:])
    return pieces


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
    """A manifest's piece ids: differences from the previous id as zigzag varints, deflated."""
    out, previous = bytearray(), 0
    for i in ids:
        delta, previous = i - previous, i
        n = (delta << 1) ^ (delta >> 63)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
    return zlib.compress(bytes(out), 9)


def unpack_ids(packed: bytes) -> list[int]:
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
