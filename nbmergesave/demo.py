"""`nbmergesave demo`: the main job, played out on a small project, as a user would see it."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from . import notebook_io
from .report import markers
from .store import Store, sha256
from .watcher import Watcher

NAME = "rainfall.ipynb"


def run_demo(folder: str | None, echo: Callable[[str], None]) -> Path:
    """Create a project in ``folder`` (a new temporary folder by default), watch it, and play
    two overlapping saves and then a conflicting pair. Returns the folder, left for inspection."""
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="nbmergesave-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    path = root / NAME
    path.write_bytes(files("nbmergesave").joinpath("example", NAME).read_bytes())
    said: list[str] = []
    watcher = Watcher([root], log=said.append)
    watcher.start()

    def save(nb: dict[str, Any], merges: bool = True) -> None:
        _save(watcher, path, nb)
        deadline = time.monotonic() + (5 if merges else 0)
        while not said and time.monotonic() < deadline:  # what the watcher says about this save
            time.sleep(0.01)
        while said:
            echo(f"   watcher: {said.pop(0)}")

    try:
        echo(f"A project in {root}, watched by nbmergesave. Ana and Ben both open {NAME}.")
        ana = notebook_io.read_notebook(path)
        ben = copy.deepcopy(ana)

        echo("\n1. Ana adds `import math` to cell 2 and saves.")
        _edit(ana, 1, "import csv\nimport statistics\nimport math")
        save(ana, merges=False)
        echo("2. Ben, who never saw Ana's save, rewrites cell 7 and saves over it.")
        _edit(ben, 6, "wettest = max(totals, key=totals.get)\nwettest")
        save(ben)
        merged = notebook_io.read_notebook(path)
        echo(f"   The file now has both edits: cell 2 = {merged['cells'][1]['source']!r}")
        echo(f"                                 cell 7 = {merged['cells'][6]['source']!r}")

        echo("\n3. Both change the same line of cell 3 and save, Ana first.")
        _edit(ana, 2, "rows = list(csv.DictReader(open('rain-2025.csv')))\nlen(rows)")
        save(ana)
        _edit(ben, 2, "rows = list(csv.DictReader(open('rain-all.csv')))\nlen(rows)")
        save(ben)
        nb = notebook_io.read_notebook(path)
        echo("   Nothing is overwritten; the conflict is marked in the notebook:")
        for line in nb["cells"][2]["source"].splitlines():
            echo(f"     {line}")
        for item in markers(nb):
            where = "notebook metadata" if item["cell"] is None else f"cell {item['cell'] + 1} ({item['id']})"
            echo(f"   nbmergesave conflicts: {NAME}: {where}")

        echo(f"\n4. Every version is kept (nbmergesave history {NAME}):")
        with Store.open(root) as store:
            for v in store.history(path):
                extra = f" = merge of base v{v.base}, on disk v{v.local}, save v{v.remote}" if v.kind == "merged" else ""
                extra += f", {v.conflicts} conflict(s)" if v.conflicts else ""
                echo(f"   v{v.version}  {v.kind:<9}{extra}")
        echo(f"\n`nbmergesave undo {path}` would bring back Ben's save as it was; "
             f"`nbmergesave show {path} --version N` prints any version.")
    finally:
        watcher.stop()
    echo(f"\nThe project is left in {root}")
    return root


def _edit(nb: dict[str, Any], index: int, source: str) -> None:
    nb["cells"][index]["source"] = source


def _save(watcher: Watcher, path: Path, nb: dict[str, Any], timeout: float = 30.0) -> None:
    """Save like an editor (write in place), then wait until the watcher has handled it."""
    data = notebook_io.dumps(nb).encode()
    with open(path, "wb") as f:
        f.write(data)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store = watcher.stores[watcher.roots[0]]
        with watcher._work:
            seen = any(v.sha256 == sha256(data) for v in store.history(path))
            current = store.on_disk(path)
        if seen and current is not None and current.sha256 == sha256(path.read_bytes()):
            return
        time.sleep(0.02)
    raise TimeoutError("the watcher did not take in the save")
