"""The merge's rules, one by one: outputs follow their source, delete versus edit, text, metadata, inserts, moves."""

from __future__ import annotations

import copy
from typing import Any

from nbmergesave import Conflict, MergeOptions, merge, notebook_io
from nbmergesave.merge import MARK_KEY
from nbmergesave.report import human, markers

from .conftest import cell, notebook, numbered


def out(text: str) -> list[dict[str, Any]]:
    return [{"name": "stdout", "output_type": "stream", "text": text}]


def image(tag: str) -> list[dict[str, Any]]:
    return [{"data": {"image/png": f"iVBOR{tag}" * 500, "text/plain": "<Figure>"}, "metadata": {}, "output_type": "display_data"}]


def ran(source: str, id: str, outputs: list[dict[str, Any]], count: int) -> dict[str, Any]:
    return cell(source, id, outputs=outputs, execution_count=count)


def test_outputs_follow_the_side_that_changed_the_source() -> None:
    base = notebook(ran("plot(a)", "p", image("base"), 1))
    local = notebook(ran("plot(a, color='red')", "p", image("local"), 7))
    remote = notebook(ran("plot(a)", "p", image("remote"), 9))
    result = merge(base, local, remote)
    merged = result.notebook["cells"][0]
    assert (merged["source"], merged["outputs"], merged["execution_count"]) == ("plot(a, color='red')", image("local"), 7)
    assert result.unresolved == ()
    assert [(c.kind, c.resolution, c.how) for c in result.conflicts] == [
        ("outputs", "local", "only local changed the source; took its outputs")]
    # the same with the sides swapped
    merged = merge(base, remote, local).notebook["cells"][0]
    assert (merged["outputs"], merged["execution_count"]) == (image("local"), 7)


def test_both_re_ran_takes_the_remote_outputs_reported_as_settled() -> None:
    base = notebook(*(ran(f"plot({i})", f"p{i}", image(f"b{i}"), i) for i in range(6)))
    local = notebook(*(ran(f"plot({i})", f"p{i}", image(f"l{i}"), 10 + i) for i in range(6)))
    remote = notebook(*(ran(f"plot({i})", f"p{i}", image(f"r{i}"), 20 + i) for i in range(6)))
    result = merge(base, local, remote)
    assert [c["outputs"] for c in result.notebook["cells"]] == [image(f"r{i}") for i in range(6)]
    assert [c["execution_count"] for c in result.notebook["cells"]] == [20 + i for i in range(6)]
    assert result.unresolved == () and markers(result.notebook) == []
    assert {(c.kind, c.resolution) for c in result.conflicts} == {("outputs", "remote")}
    assert len(result.conflicts) == 6, "one entry per cell"
    # the text report groups alike entries
    assert human(result.conflicts, "nb") == (
        "nb: 6 conflicts settled by the merge\n  6 cells (1, 2, 3, 4, 5, 6): both re-ran; took remote's outputs\n")


def test_outputs_inline_keeps_both_between_marker_outputs_and_reports_it_left() -> None:
    base = notebook(ran("print(1)", "p", out("1\n"), 1))
    local = notebook(ran("print(1)", "p", out("one\n"), 2))
    remote = notebook(ran("print(1)", "p", out("uno\n"), 3))
    result = merge(base, local, remote, MergeOptions(outputs="inline"))
    texts = [o["text"] for o in result.notebook["cells"][0]["outputs"]]
    assert texts == ["<<<<<<< local\n", "one\n", "=======\n", "uno\n", ">>>>>>> remote\n"]
    assert result.unresolved == (Conflict("outputs", 0, "p", 0, "inline"),)
    assert markers(result.notebook) == [{"cell": 0, "id": "p", "where": ["outputs"]}]
    notebook_io.validate(result.notebook)


def test_execution_counts_alone_never_conflict() -> None:
    base = notebook(ran("print(1)", "p", out("1\n"), 1))
    result = merge(base, notebook(ran("print(1)", "p", out("1\n"), 5)), notebook(ran("print(1)", "p", out("1\n"), 8)))
    assert result.conflicts == ()
    assert result.notebook["cells"][0]["execution_count"] == 8


def test_delete_versus_edit_is_left_with_a_note_cell_and_the_edited_cell_runnable() -> None:
    base = notebook(*numbered(4))
    local = notebook(*numbered(4))
    del local["cells"][2]
    remote = notebook(*numbered(4))
    remote["cells"][2]["source"] = "x2 = 'edited'"
    for a, b, deleter in ((local, remote, "local"), (remote, local, "remote")):
        result = merge(base, a, b)
        cells = result.notebook["cells"]
        assert [c["source"] for c in cells][3] == "x2 = 'edited'"
        note = cells[2]
        assert note["cell_type"] == "markdown" and note["metadata"][MARK_KEY] == {"conflict": "delete-edit"}
        assert note["source"].startswith(f"<<<<<<< nbmergesave: {deleter} deleted the next cell")
        assert result.unresolved == (Conflict("delete-edit", 3, "c2", 2, "inline"),)
        assert all("<<<<<<<" not in c["source"] for c in cells if c["cell_type"] == "code")
        notebook_io.validate(result.notebook)


def test_delete_versus_re_run_only_deletes() -> None:
    base = notebook(*numbered(3))
    local = notebook(*numbered(3))
    del local["cells"][1]
    remote = copy.deepcopy(base)
    remote["cells"][1].update(outputs=out("1\n"), execution_count=4)
    result = merge(base, local, remote)
    assert [c["source"] for c in result.notebook["cells"]] == ["x0 = 0", "x2 = 2"]
    assert result.conflicts == ()


def test_delete_versus_edit_with_a_strategy_is_settled() -> None:
    base = notebook(*numbered(3))
    local = notebook(cell("x0 = 0", "c0"), cell("x2 = 2", "c2"))
    remote = notebook(*numbered(3))
    remote["cells"][1]["source"] = "edited"
    kept = merge(base, local, remote, MergeOptions(strategy="remote"))
    assert [c["source"] for c in kept.notebook["cells"]] == ["x0 = 0", "edited", "x2 = 2"]
    deleted = merge(base, local, remote, MergeOptions(strategy="local"))
    assert [c["source"] for c in deleted.notebook["cells"]] == ["x0 = 0", "x2 = 2"]
    assert [c.resolution for c in kept.conflicts + deleted.conflicts] == ["remote", "local"]


def test_a_removed_final_newline_merges_with_a_line_edit() -> None:
    base = notebook(cell("a = 1\nb = 2\nc = 3\n", "x"))
    result = merge(base, notebook(cell("a = 1\nb = 2\nc = 3", "x")), notebook(cell("a = 0\nb = 2\nc = 3\n", "x")))
    assert result.notebook["cells"][0]["source"] == "a = 0\nb = 2\nc = 3"
    assert result.conflicts == ()


def test_lines_changed_apart_merge_and_lines_changed_alike_are_marked_tightly() -> None:
    base = notebook(cell("a = 1\nb = 2\nc = 3\nd = 4", "x"))
    apart = merge(base, notebook(cell("a = 0\nb = 2\nc = 3\nd = 4", "x")), notebook(cell("a = 1\nb = 2\nc = 3\nd = 5", "x")))
    assert apart.notebook["cells"][0]["source"] == "a = 0\nb = 2\nc = 3\nd = 5"
    same = merge(base, notebook(cell("a = 1\nb = 2\nc = 'l'\nd = 4", "x")), notebook(cell("a = 1\nb = 2\nc = 'r'\nd = 4", "x")))
    assert same.notebook["cells"][0]["source"] == "a = 1\nb = 2\n<<<<<<< local\nc = 'l'\n=======\nc = 'r'\n>>>>>>> remote\nd = 4"
    assert [c.kind for c in same.unresolved] == ["source"]


def test_metadata_keys_merge_and_a_key_both_changed_takes_remote() -> None:
    base = notebook(cell("a", "a", metadata={"tags": ["t"], "note": "b"}), metadata={"title": "base"})
    local = notebook(cell("a", "a", metadata={"tags": ["t", "slow"], "note": "l", "collapsed": True}), metadata={"title": "l", "k": 1})
    remote = notebook(cell("a", "a", metadata={"tags": ["t", "ok"], "note": "r"}), metadata={"title": "r", "j": 2})
    result = merge(base, local, remote)
    assert result.notebook["cells"][0]["metadata"] == {"tags": ["t", "slow", "ok"], "note": "r", "collapsed": True}
    assert result.notebook["metadata"] == {"title": "r", "k": 1, "j": 2}
    assert result.unresolved == ()
    assert {(c.kind, c.resolution) for c in result.conflicts} == {("metadata", "remote"), ("notebook-metadata", "remote")}


def test_the_same_cell_inserted_by_both_is_kept_once() -> None:
    base = notebook(*numbered(2))
    local = notebook(*numbered(2), cell("import os", "n1"))
    remote = notebook(*numbered(2), cell("import os", "n2"))
    result = merge(base, local, remote)
    assert [c["source"] for c in result.notebook["cells"]] == ["x0 = 0", "x1 = 1", "import os"]
    assert result.conflicts == ()


def test_a_cell_one_side_moved_keeps_the_other_sides_edit() -> None:
    base = notebook(*numbered(4))
    local = notebook(*numbered(4))
    local["cells"].append(local["cells"].pop(0))
    remote = notebook(*numbered(4))
    remote["cells"][0]["source"] = "x0 = 'edited'"
    result = merge(base, local, remote)
    assert [c["source"] for c in result.notebook["cells"]] == ["x1 = 1", "x2 = 2", "x3 = 3", "x0 = 'edited'"]
    assert result.conflicts == ()


def test_cells_without_ids_pair_by_similarity() -> None:
    base = notebook(cell("import pandas as pd\n\ndf = pd.read_csv('a.csv')"), cell("df.head()"), minor=4)
    local = notebook(cell("import pandas as pd\n\ndf = pd.read_csv('b.csv')"), cell("df.head()"), minor=4)
    remote = notebook(cell("import pandas as pd\nimport numpy as np\n\ndf = pd.read_csv('a.csv')"), cell("df.head()"), minor=4)
    result = merge(base, local, remote)
    assert [c["source"] for c in result.notebook["cells"]] == [
        "import pandas as pd\nimport numpy as np\n\ndf = pd.read_csv('b.csv')", "df.head()"]
    assert result.conflicts == ()


def test_cli_outputs_inline_exits_1_and_default_settles_with_a_grouped_report(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from click.testing import CliRunner

    from nbmergesave.cli import cli

    from .conftest import FIXTURES

    files = [str(FIXTURES / f"both-reran--{side}.ipynb") for side in ("base", "local", "remote")]
    out = tmp_path / "m.ipynb"
    runner = CliRunner()
    settled = runner.invoke(cli, ["merge", *files, "-o", str(out)], catch_exceptions=False)
    assert settled.exit_code == 0
    assert settled.stderr == (
        f"{files[1]}: 4 conflicts settled by the merge\n"
        "  cell 3 (id 'load'): both re-ran; took remote's outputs\n"
        "  cell 4 (id 'stations'): only local changed the source; took its outputs\n"
        "  cell 6 (id 'totals'): both re-ran; took remote's outputs\n"
        "  cell 7 (id 'wettest'): both re-ran; took remote's outputs\n"
        f"{out}: merged cleanly\n")
    assert markers(notebook_io.read_notebook(out)) == []
    inline = runner.invoke(cli, ["merge", *files, "-o", str(out), "--outputs", "inline", "--json"], catch_exceptions=False)
    assert inline.exit_code == 1
    report = json.loads(inline.stderr)
    assert report["clean"] is False
    assert [(c["kind"], c["cell"], c["left"]) for c in report["conflicts"]] == [
        ("outputs", 2, True), ("outputs", 3, True), ("outputs", 5, True), ("outputs", 6, True)]
    assert [m["cell"] for m in markers(notebook_io.read_notebook(out))] == [2, 3, 5, 6]


def test_without_ids_a_moved_cell_keeps_the_other_sides_edit() -> None:
    cells = [cell("import numpy as np"), cell("x = np.arange(10)\ny = x ** 2"), cell("plot(x, y)"), cell("print('done')")]
    base = notebook(*cells, minor=4)
    local = notebook(cells[0], cells[2], cells[3], cells[1], minor=4)
    remote = notebook(*cells, minor=4)
    remote["cells"][1]["source"] = "x = np.arange(10)\ny = x ** 3"
    result = merge(base, local, remote)
    assert [c["source"] for c in result.notebook["cells"]] == [
        "import numpy as np", "plot(x, y)", "print('done')", "x = np.arange(10)\ny = x ** 3"]
    assert result.conflicts == ()
