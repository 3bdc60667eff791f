"""nbmergesave: keep every writer's work when Jupyter notebooks are saved over each other.

The public API: :func:`merge` with :class:`MergeOptions`, :class:`MergeResult`
and :class:`Conflict`; reading, checking and atomically writing notebooks in
:mod:`nbmergesave.notebook_io`. Importing it is cheap: nbdime is imported
only when a merge needs it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .merge import Conflict, MergeOptions, MergeResult, merge  # noqa: E402

__all__ = ["Conflict", "MergeOptions", "MergeResult", "merge", "__version__"]
