"""Install, remove and run nbmergesave as a git merge driver.

``install`` adds one line to ``.gitattributes`` (only if absent) and two git
config keys; ``uninstall`` removes exactly those. Git runs the driver as
``nbmergesave git-driver run %O %A %B %P`` and passes the file names as
separate arguments, so no name ever goes through a shell of ours. The merge
engine is part of that command line (``run --engine nbdime ...``; the
default engine, ``cells``, needs no option), so ``git config
merge.nbmergesave.driver`` shows which one a repository uses.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from .errors import NbMergeSaveError

DRIVER = "nbmergesave"
ATTRIBUTE_LINE = f"*.ipynb merge={DRIVER}"
DRIVER_NAME = "nbmergesave cell-aware notebook merge"


def driver_command(engine: str = "cells") -> str:
    """The command git runs: this interpreter, so it works inside a virtualenv git does not know.

    >>> driver_command("nbdime").endswith("-m nbmergesave git-driver run --engine nbdime %O %A %B %P")
    True
    """
    from .merge.options import DEFAULT_ENGINE, engine_name

    engine = engine_name(engine)
    option = "" if engine == DEFAULT_ENGINE else f"--engine {engine} "
    return f"{shlex.quote(sys.executable)} -m nbmergesave git-driver run {option}%O %A %B %P"


def _git(args: list[str], cwd: str | os.PathLike[str] | None, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise NbMergeSaveError("git is not installed (hint: install git, then run this again)") from None
    if check and result.returncode != 0:
        raise NbMergeSaveError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _attributes_file(global_: bool, cwd: str | os.PathLike[str] | None) -> Path:
    if global_:
        configured = _git(["config", "--global", "--get", "core.attributesFile"], cwd, check=False).stdout.strip()
        if configured:
            return Path(os.path.expanduser(configured))
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return Path(xdg) / "git" / "attributes"
    top = _git(["rev-parse", "--show-toplevel"], cwd, check=False)
    if top.returncode != 0:
        raise NbMergeSaveError("not inside a git repository (hint: run it in one, or use --global)")
    return Path(top.stdout.strip()) / ".gitattributes"


def install(*, global_: bool = False, cwd: str | os.PathLike[str] | None = None, engine: str = "cells") -> list[str]:
    """Register the driver with merge engine ``engine``; return what was changed (empty when already installed
    so; installing again with another engine changes the driver's command line only)."""
    scope = "--global" if global_ else "--local"
    attributes = _attributes_file(global_, cwd)
    changed = []
    for key, value in (("name", DRIVER_NAME), ("driver", driver_command(engine))):
        name = f"merge.{DRIVER}.{key}"
        if _git(["config", scope, "--get", name], cwd, check=False).stdout.strip() != value:
            _git(["config", scope, name, value], cwd)
            changed.append(f"git config {scope} {name}" + (f" (engine {engine})" if key == "driver" else ""))
    lines = attributes.read_text(encoding="utf-8").splitlines() if attributes.exists() else []
    if ATTRIBUTE_LINE not in (line.strip() for line in lines):
        attributes.parent.mkdir(parents=True, exist_ok=True)
        text = attributes.read_text(encoding="utf-8") if attributes.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        attributes.write_text(text + ATTRIBUTE_LINE + "\n", encoding="utf-8")
        changed.append(f"{attributes}: added '{ATTRIBUTE_LINE}'")
    return changed


def uninstall(*, global_: bool = False, cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove exactly what :func:`install` added; removing what is absent is not an error."""
    scope = "--global" if global_ else "--local"
    attributes = _attributes_file(global_, cwd)
    changed = []
    if _git(["config", scope, "--get-regexp", rf"^merge\.{DRIVER}\."], cwd, check=False).stdout.strip():
        _git(["config", scope, "--remove-section", f"merge.{DRIVER}"], cwd)
        changed.append(f"git config {scope}: removed [merge \"{DRIVER}\"]")
    if attributes.exists():
        lines = attributes.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if line.strip() != ATTRIBUTE_LINE]
        if len(kept) != len(lines):
            if kept:
                attributes.write_text("".join(kept), encoding="utf-8")
            else:
                attributes.unlink()  # it held only our line, so install created it
            changed.append(f"{attributes}: removed '{ATTRIBUTE_LINE}'")
    return changed
