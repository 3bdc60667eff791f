"""nbmergesave: keep every writer's work when Jupyter notebooks are saved over each other.

The public API: :func:`merge` and :func:`merge_files` with :class:`MergeOptions`,
:class:`MergeResult` and :class:`Conflict`; the version store (:class:`Store`,
:func:`open_store`); base declarations (:func:`declare`) and merge-on-save for
writers that know their base (:func:`save_file`) or not (:func:`sync_file`);
reading, checking and atomically writing notebooks in
:mod:`nbmergesave.notebook_io`. Importing it is cheap: nbdime is imported
only when a merge needs it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .merge import Conflict, MergeOptions, MergeResult, merge, merge_files  # noqa: E402
from .store import Store, Version  # noqa: E402
from .sync import declare, open_store, save_file, sync_file  # noqa: E402

__all__ = [
    "Conflict", "MergeOptions", "MergeResult", "Store", "Version", "declare", "merge", "merge_files",
    "open_store", "save_file", "sync_file", "__version__",
]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Lets `jupyter server extension enable nbmergesave` find the integration."""
    return [{"module": "nbmergesave.jupyter"}]
