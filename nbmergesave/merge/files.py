""":func:`merge_files`: ``nbmergesave merge`` as a function (read three files, merge, validate, write).

Reading and writing belong to :mod:`nbmergesave.notebook_io`, imported when
a file is merged; this module only holds them together, with the cyclic
garbage collector paused while long notebooks are parsed.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .conflicts import MergeResult
from .core import merge
from .options import MergeOptions


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: parsing a long notebook makes millions of acyclic
    objects, and CPython's generational collector would walk them over and
    over (a third of the time of a 10,000-cell merge)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def merge_files(
    base: str | os.PathLike[str],
    local: str | os.PathLike[str],
    remote: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    options: MergeOptions | None = None,
    *,
    labels: tuple[str, str, str] = ("BASE", "LOCAL", "REMOTE"),
    empty_base: bool = False,
    engine: str = "cells",
) -> tuple[MergeResult, str]:
    """Read three notebook files, merge, validate, and write ``out`` atomically (if given).

    ``engine``: ``cells`` (the default) or ``nbdime`` (see :func:`~.core.merge`).
    Returns the result and the merged file's text. Raises
    :class:`~nbmergesave.errors.BadInput` (one line, naming the file by its
    label) before anything is written.

    >>> result, text = merge_files("fixtures/example--base.ipynb", "fixtures/example--local.ipynb",
    ...                            "fixtures/example--remote.ipynb")
    >>> result.conflicts, text.endswith("}\\n")
    ((), True)
    """
    from .. import notebook_io
    from ..errors import NbMergeSaveError

    from .options import engine_name

    engine = engine_name(engine)  # refused before anything is read
    paths = (base, local, remote)
    with _no_gc():
        nbs = [
            notebook_io.read_notebook(path, label, empty_ok=empty_base and i == 0)
            for i, (path, label) in enumerate(zip(paths, labels))
        ]
        result = merge(*nbs, options, engine=engine)
        try:
            notebook_io.validate(result.notebook, "the merged notebook")
        except NbMergeSaveError:
            # Inputs get a structural check only; an invalid merge comes from an
            # invalid input: name that one.
            for nb, label, path in zip(nbs, labels, paths):
                notebook_io.validate(nb, f"{label} '{path}'")
            raise
        text = notebook_io.dumps(result.notebook)
    if out is not None:
        notebook_io.write_atomic(out, text)
    return result, text
