"""Which store a process uses, and (for a shared PostgreSQL store) which project a notebook belongs to.

The store is a PostgreSQL database when a URL is given: ``--store URL`` (or
:func:`configure`, which the CLI's option and Jupyter's
``NbMergeSave.store_url`` call), else ``$NBMERGESAVE_STORE_URL`` (or a URL in
``$NBMERGESAVE_STORE``). Otherwise it is the embedded SQLite store in
``ROOT/.nbmergesave``.

In a PostgreSQL store a notebook is keyed by its path relative to its
*project root*, so hosts that mount one folder at different paths share one
history. The project root of a path is, first found:

1. the explicit one: ``--project-root``, ``$NBMERGESAVE_PROJECT_ROOT``, or
   Jupyter's ``NbMergeSave.project_root`` (the path must be inside it);
2. the nearest folder at or above the path holding a file named
   ``.nbmergesave-project`` (a person creates it once, in the shared folder);
3. the root a door was started on and registered: the folder ``watch`` or
   the daemon watches, the Jupyter server's root directory.

Otherwise the store refuses, saying how to name one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import StoreError
from .pg_connect import is_url

ENV_STORE_URL = "NBMERGESAVE_STORE_URL"
ENV_PROJECT_ROOT = "NBMERGESAVE_PROJECT_ROOT"
PROJECT_MARKER = ".nbmergesave-project"

_config: dict[str, object] = {"url": None, "project_root": None, "roots": []}


def configure(*, url: str | None = None, project_root: str | os.PathLike[str] | None = None,
              roots: list[str | os.PathLike[str]] | None = None) -> None:
    """Process-wide choices (what ``--store``/``--project-root`` and Jupyter's traits set).

    ``roots``: folders this process was started on (watched roots, Jupyter's root
    directory), used as project roots when nothing closer names one.

    >>> # configure(url="postgresql://ann@db.team:5432/notebooks", roots=["/home/jovyan/team"])
    """
    if url is not None:
        _config["url"] = url or None
    if project_root is not None:
        _config["project_root"] = str(project_root) or None
    if roots is not None:
        _config["roots"] = [os.path.abspath(r) for r in roots]


def store_url(location: object = None) -> str | None:
    """The database URL in effect, or ``None`` for the embedded store.

    An explicit ``location`` decides (a URL, or a folder: no URL); else the configured URL, else the environment.
    """
    if location is not None:
        location = getattr(location, "url", location)  # a store's Location: the URL with its password
        return str(location) if is_url(str(location)) else None
    for value in (_config["url"], os.environ.get(ENV_STORE_URL), os.environ.get("NBMERGESAVE_STORE")):
        if value:
            return str(value) if is_url(value) else None
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def project_root(path: str | os.PathLike[str]) -> Path:
    """The project root of ``path`` (see the module's docstring), or a :class:`StoreError` saying how to name one."""
    full = os.path.abspath(path)
    explicit = _config["project_root"] or os.environ.get(ENV_PROJECT_ROOT)
    if explicit:
        root = os.path.abspath(str(explicit))
        if not (_inside(full, root) or _inside(os.path.realpath(full), os.path.realpath(root))):
            raise StoreError(f"'{path}' is not inside the project root '{root}' (set by --project-root or "
                             f"{ENV_PROJECT_ROOT})")
        return Path(root)
    folder = Path(full)
    for candidate in (folder, *folder.parents):
        if (candidate / PROJECT_MARKER).is_file():
            return candidate
    inside = [r for r in _config["roots"] if _inside(full, r)]  # type: ignore[attr-defined]
    if inside:
        return Path(max(inside, key=len))
    raise StoreError(f"cannot tell which project '{path}' belongs to, so it has no name shared across hosts in "
                     f"the PostgreSQL store (hint: create an empty file {PROJECT_MARKER} in the project's top "
                     f"folder, or pass --project-root, or set {ENV_PROJECT_ROOT})")
