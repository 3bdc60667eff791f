"""The report is the truth about the file: proved over every fixture, both shared corpora and generated triplets,
for both engines.

A conflict is reported as left for a person exactly when the written notebook
shows it (a marker line in a source, marker outputs, a marker or note cell),
at the cell the report names; nothing the merge settled shows a marker; and a
clean merge keeps every source line either side added (our engine; nbdime may
drop lines on a clean merge, see docs/engines.md). nbdime's forms count as
markers too: its ``CELL DELETED`` line in the kept cell, its span marker cells
around conflicting inserts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from nbmergesave import MergeOptions, merge, notebook_io
from nbmergesave.merge import MARK_KEY, MergeResult
from nbmergesave.report import as_json, human, markers

from .conftest import CORPUS, FIXTURES, triplets
from .test_properties import triplets as generated

REALMERGES = CORPUS.parent / "realmerges"
OPTIONS = [MergeOptions(), MergeOptions(outputs="inline"), MergeOptions(strategy="local"), MergeOptions(outputs="clear")]


def _plain(cell: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in cell.items() if k != "id"}, sort_keys=True)


ENGINES = ["cells", "nbdime"]


def _closes(cell: dict[str, Any]) -> bool:
    """The last marker cell of an insert conflict: ours, or nbdime's span."""
    if cell["source"] == ">>>>>>> remote" and MARK_KEY in cell["metadata"]:
        return True
    return cell["cell_type"] == "markdown" and cell["source"] == '<span style="color:red"><b>>>>>>>> remote</b></span>'


def assert_truthful(inputs: list[dict[str, Any]], result: MergeResult) -> None:
    nb = result.notebook
    known = {_plain(c) for side in inputs for c in side["cells"]}
    visible = {m["cell"] for m in markers(nb) if m["cell"] is not None and _plain(nb["cells"][m["cell"]]) not in known}
    assert not any(m["cell"] is None for m in markers(nb)) or any(m["cell"] is None for m in markers(inputs[0])) \
        or any(c.kind == "notebook-metadata" for c in result.unresolved), "notebook metadata marked, not reported"
    explained: set[int] = set()
    for c in result.unresolved:
        if c.kind == "notebook-metadata":  # nbdime leaves these marked (``nbdime-conflicts``); ours settles them
            assert any(m["cell"] is None for m in markers(nb)), f"{c}: reported left, nothing visible (phantom)"
            continue
        assert c.cell is not None, c
        if c.kind == "delete-edit" and "CELL DELETED >>>>>>>" in nb["cells"][c.cell]["source"]:
            assert c.cell in visible, f"{c}: nbdime's mark is in an input already"  # nbdime's form: in the cell
            explained.add(c.cell)
        elif c.kind == "delete-edit":
            assert c.cell - 1 in visible, f"{c}: no note before the kept cell"
            assert nb["cells"][c.cell - 1]["metadata"][MARK_KEY]["conflict"] == "delete-edit"
            explained.add(c.cell - 1)
        elif c.kind == "insert":
            assert c.cell in visible, f"{c}: no marker cell"
            j = c.cell
            while True:
                assert j < len(nb["cells"]), f"{c}: no closing marker cell"
                explained.add(j)
                if _closes(nb["cells"][j]):
                    break
                j += 1
        else:
            assert c.cell in visible, f"{c}: reported left, nothing visible (phantom)"
            explained.add(c.cell)
    assert visible <= explained, f"markers nobody was told about (silent) in cells {sorted(visible - explained)}"
    at = [(c.cell, c.kind) for c in result.conflicts if c.cell is not None]
    assert len(at) == len(set(at)), "more than one report entry for a cell and kind"
    assert json.loads(as_json(result.conflicts))["clean"] is (not result.unresolved)
    if result.unresolved:
        assert "left in the notebook" in human(result.conflicts)
    notebook_io.validate(nb)


def assert_nothing_dropped(inputs: list[dict[str, Any]], result: MergeResult) -> None:
    """A clean merge keeps every source line either side added."""
    if result.unresolved:
        return

    def lines(nb: dict[str, Any]) -> set[str]:
        return {line for c in nb["cells"] for line in c["source"].split("\n")}

    added = (lines(inputs[1]) | lines(inputs[2])) - lines(inputs[0])
    assert added <= lines(result.notebook), f"dropped: {sorted(added - lines(result.notebook))[:3]}"


def cases() -> list[tuple[Path, str]]:
    found = [(FIXTURES, c) for c in triplets(FIXTURES)]
    if CORPUS.exists():
        found += [(CORPUS, c) for c in triplets(CORPUS)]
    if REALMERGES.exists():
        found += [(REALMERGES, p.name) for p in sorted(REALMERGES.iterdir()) if (p / "base.ipynb").exists()]
    return found


def read(folder: Path, case: str) -> list[dict[str, Any]]:
    if (folder / case).is_dir():
        return [notebook_io.read_notebook(folder / case / f"{s}.ipynb") for s in ("base", "local", "remote")]
    return [notebook_io.read_notebook(folder / f"{case}--{s}.ipynb") for s in ("base", "local", "remote")]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("folder", "case"), cases(), ids=[f"{f.name}/{c[:60]}" for f, c in cases()])
def test_report_equals_what_is_written_on_every_case(folder: Path, case: str, engine: str) -> None:
    inputs = read(folder, case)
    # nbdime takes seconds on some real merges: its strategies are the same code paths on every case,
    # so on the real merges it runs with the default options only.
    options_ = OPTIONS if engine == "cells" or folder != REALMERGES else [MergeOptions()]
    for options in options_:
        result = merge(*inputs, options, engine=engine)
        assert_truthful(inputs, result)
        if options == MergeOptions() and engine == "cells":
            assert_nothing_dropped(inputs, result)


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated())
def test_report_equals_what_is_written_on_generated_triplets(
        engine: str, t: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]) -> None:
    for options in OPTIONS:
        result = merge(*t, options, engine=engine)
        assert_truthful(list(t), result)
        if options == MergeOptions() and engine == "cells":
            assert_nothing_dropped(list(t), result)
