"""The few ways nbmergesave refuses, each with a one-line message."""

from __future__ import annotations


class NbMergeSaveError(Exception):
    """Base class: an expected refusal, shown to the user as one line."""


class BadInput(NbMergeSaveError):
    """A file could not be read as a Jupyter notebook."""


class NotANotebook(BadInput):
    """File is JSON but not a Jupyter notebook."""


class UnsupportedFormat(BadInput):
    """Notebook is in an nbformat version this tool does not merge."""


class StoreError(NbMergeSaveError):
    """The version store is missing, locked or does not hold what was asked."""


class DaemonError(NbMergeSaveError):
    """The background watcher could not be started, reached or stopped."""


class StoreUnavailable(StoreError):
    """The store's database cannot be reached now (a save still reaches the disk)."""


class StoreDenied(StoreError):
    """The store belongs to another user who has not shared it with this one (the message says how)."""
