"""Replay merges people committed: nbmergesave's two engines, nbdime's merge_notebooks and `git merge-file`.

    python benchmarks/bench_realmerges.py                      # the shared corpus of real merges
    python benchmarks/bench_realmerges.py CORPUS --cases       # and one line per case that is not perfect
    python benchmarks/bench_realmerges.py CORPUS --only nbmergesave

The rows:

  nbmergesave      the default engine (``cells``) through our doors (merge_files: what the CLI, the git
                   driver, the watcher and the Jupyter hook run)
  nbdime engine    ``--engine nbdime`` through the same doors: nbdime's merge, our report of its file
  nbdime           nbdime's own ``merge_notebooks``, called directly, clean as its decisions say
  git merge-file   line-based, on the JSON text

A case is a folder with base.ipynb, local.ipynb, remote.ipynb and merged.ipynb
(what the people committed). Each tool merges base/local/remote; the table
counts, per tool:

  errors   the tool raised (or git failed)
  invalid  the written notebook does not pass nbformat's validation (for git: a
           result reported clean that is not a valid notebook)
  clean    no conflict reported
  =people  clean, and the cell sources equal the committed merge's
  silent   clean reported, but the written notebook shows conflict markers
  phantom  a conflict reported, but none visible in the written notebook
  dropped  clean, yet a source line one side added is missing
  lost     clean, yet a source line one side added and the people kept is missing
  time     total seconds (reading, merging, writing the text)

"Visible" means a marker a person can find: a `<<<<<<<`/`>>>>>>>` line in a
source or an output, a marker cell, nbdime's `nbdime-conflicts` metadata, or
nbmergesave's delete-versus-edit note (see nbmergesave.report.markers), in a
cell no input holds as it is. For git, the conflict is the file it writes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nbmergesave import notebook_io  # noqa: E402
from nbmergesave.merge import merge_files  # noqa: E402
from nbmergesave.report import markers  # noqa: E402

# the shared corpus sits beside the checkout (or beside the folder of worktrees holding it)
DEFAULT = next((p / "shared" / "corpus" / "realmerges" for p in ROOT.parents if (p / "shared" / "corpus").is_dir()),
               ROOT.parent / "shared" / "corpus" / "realmerges")
SIDES = ("base", "local", "remote")


@dataclass
class Outcome:
    error: str | None = None
    notebook: dict[str, Any] | None = None  # what was written, parsed (None: not a notebook)
    clean: bool = False  # as the tool reports it
    seconds: float = 0.0


@dataclass
class Row:
    errors: int = 0
    invalid: int = 0
    clean: int = 0
    people: int = 0
    silent: int = 0
    phantom: int = 0
    dropped: int = 0
    lost: int = 0
    seconds: float = 0.0
    cases: dict[str, list[str]] = field(default_factory=dict)


def run_nbmergesave(folder: Path, engine: str = "cells") -> Outcome:
    t = time.perf_counter()
    try:
        result, text = merge_files(*(folder / f"{s}.ipynb" for s in SIDES), engine=engine)
    except Exception as e:  # noqa: BLE001 - every failure is a counted error
        return Outcome(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t)
    seconds = time.perf_counter() - t
    return Outcome(notebook=json.loads(text), clean=not result.unresolved, seconds=seconds)


def run_nbdime(folder: Path) -> Outcome:
    import logging

    import nbformat
    from nbdime.merging.notebooks import merge_notebooks

    logging.getLogger("nbdime").setLevel(logging.ERROR)  # it logs every conflict it records
    t = time.perf_counter()
    try:
        nbs = [nbformat.read(str(folder / f"{s}.ipynb"), as_version=4) for s in SIDES]
        merged, decisions = merge_notebooks(*nbs)
        text = nbformat.writes(merged)
    except Exception as e:  # noqa: BLE001
        return Outcome(error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t)
    seconds = time.perf_counter() - t
    return Outcome(notebook=json.loads(text), clean=not any(d.conflict for d in decisions), seconds=seconds)


def run_git(folder: Path) -> Outcome:
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for s in SIDES:
            p = Path(tmp) / s
            p.write_bytes((folder / f"{s}.ipynb").read_bytes())
            paths.append(str(p))
        proc = subprocess.run(["git", "merge-file", "-p", paths[1], paths[0], paths[2]], capture_output=True, timeout=120)
    seconds = time.perf_counter() - t
    if proc.returncode < 0 or proc.returncode > 127:
        return Outcome(error=proc.stderr.decode(errors="replace").strip(), seconds=seconds)
    try:
        nb: dict[str, Any] | None = json.loads(proc.stdout)
    except ValueError:
        nb = None
    return Outcome(notebook=nb, clean=proc.returncode == 0, seconds=seconds)


def run_nbdime_engine(folder: Path) -> Outcome:
    return run_nbmergesave(folder, "nbdime")


TOOLS: dict[str, Callable[[Path], Outcome]] = {
    "nbmergesave": run_nbmergesave, "nbdime engine": run_nbdime_engine, "nbdime": run_nbdime, "git merge-file": run_git,
}


def _sources(nb: dict[str, Any]) -> list[str]:
    return [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in nb.get("cells", [])]


def _lines(sources: list[str]) -> set[str]:
    return {line.rstrip() for s in sources for line in s.splitlines() if line.strip()}


def _valid(nb: dict[str, Any] | None) -> bool:
    if nb is None:
        return False
    try:
        notebook_io.validate(notebook_io.notebook_from_dict(nb))
    except Exception:  # noqa: BLE001
        return False
    return True


def _visible(nb: dict[str, Any], inputs: list[dict[str, Any]]) -> bool:
    try:
        parsed = notebook_io.notebook_from_dict(json.loads(json.dumps(nb)))
    except Exception:  # noqa: BLE001 - not a notebook: markers are all over the raw file (git)
        return True
    known = {json.dumps(c, sort_keys=True) for nb_ in inputs for c in nb_["cells"]}
    found = markers(parsed)
    return any(f["cell"] is None or json.dumps(parsed["cells"][f["cell"]], sort_keys=True) not in known for f in found)


def judge(name: str, folder: Path, out: Outcome, inputs: list[dict[str, Any]], people: dict[str, Any], row: Row) -> None:
    row.seconds += out.seconds
    flags = []
    if out.error is not None:
        row.errors += 1
        row.cases.setdefault(folder.name, []).append(f"error {out.error[:100]}")
        return
    valid = _valid(out.notebook)
    if not valid and (name != "git merge-file" or out.clean):
        row.invalid += 1
        flags.append("invalid")
    visible = (not valid and out.notebook is None) or (out.notebook is not None and _visible(out.notebook, inputs))
    if out.clean:
        row.clean += 1
        assert out.notebook is not None or not valid
        result_sources = _sources(out.notebook) if out.notebook is not None else []
        if out.notebook is not None and result_sources == _sources(people):
            row.people += 1
        else:
            flags.append("differs from people")
        if visible:
            row.silent += 1
            flags.append("silent")
        base_lines = _lines(_sources(inputs[0]))
        added = (_lines(_sources(inputs[1])) | _lines(_sources(inputs[2]))) - base_lines
        missing = added - _lines(result_sources)
        if missing:
            row.dropped += 1
            flags.append(f"dropped {len(missing)}")
            kept = missing & _lines(_sources(people))
            if kept:
                row.lost += 1
                flags.append(f"lost {sorted(kept)[:2]}")
    else:
        flags.append("conflict")
        if not visible:
            row.phantom += 1
            flags.append("phantom")
    row.cases.setdefault(folder.name, []).extend(flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", default=str(DEFAULT), help="folder of cases (default %(default)s)")
    parser.add_argument("--only", choices=list(TOOLS), action="append", help="run only this tool (repeatable)")
    parser.add_argument("--cases", action="store_true", help="also list, per tool, the cases it did not merge as the people did")
    args = parser.parse_args()
    folders = sorted(p for p in Path(args.corpus).iterdir() if (p / "merged.ipynb").exists())
    if not folders:
        sys.exit(f"no cases (folders with merged.ipynb) in {args.corpus}")
    tools = {k: v for k, v in TOOLS.items() if not args.only or k in args.only}
    rows = {name: Row() for name in tools}
    for folder in folders:
        inputs = [json.loads(json.dumps(notebook_io.read_notebook(folder / f"{s}.ipynb"))) for s in SIDES]
        people = notebook_io.read_notebook(folder / "merged.ipynb")
        for name, run in tools.items():
            judge(name, folder, run(folder), inputs, people, rows[name])
    n = len(folders)
    print(f"{n} cases from {args.corpus}")
    head = f"{'tool':<15} {'errors':>6} {'invalid':>7} {'clean':>5} {'=people':>7} {'silent':>6} {'phantom':>7} {'dropped':>7} {'lost':>4} {'time s':>7}"
    print(head)
    for name, r in rows.items():
        print(f"{name:<15} {r.errors:>6} {r.invalid:>7} {r.clean:>5} {r.people:>7} {r.silent:>6} {r.phantom:>7} "
              f"{r.dropped:>7} {r.lost:>4} {r.seconds:>7.2f}")
    if "nbmergesave" in rows and len(rows) > 1:
        ours = {c for c, f in rows["nbmergesave"].cases.items() if not f}
        for other in (k for k in rows if k != "nbmergesave"):
            theirs = {c for c, f in rows[other].cases.items() if not f}
            print(f"clean and equal to the people with {other} but not with nbmergesave: {len(theirs - ours)}"
                  + "".join(f"\n  {c}" for c in sorted(theirs - ours)))
    if args.cases:
        for name, r in rows.items():
            print(f"\n{name}: cases not merged as the people did")
            for case, flags in sorted(r.cases.items()):
                if flags:
                    print(f"  {case}: {', '.join(flags)}")


if __name__ == "__main__":
    main()
