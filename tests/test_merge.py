from __future__ import annotations

import copy
from typing import Any

import pytest

from nbmergesave import Conflict, MergeOptions, merge, notebook_io

from .conftest import CORPUS, FIXTURES, cell, edited, notebook, numbered, triplets


def read_triplet(folder, case):  # type: ignore[no-untyped-def]
    return [notebook_io.read_notebook(folder / f"{case}--{side}.ipynb") for side in ("base", "local", "remote")]


@pytest.mark.parametrize("case", triplets(FIXTURES))
def test_fixture_merges_to_expected_bytes(case: str) -> None:
    result = merge(*read_triplet(FIXTURES, case))
    notebook_io.validate(result.notebook)
    assert notebook_io.dumps(result.notebook) == (FIXTURES / f"{case}--merged.ipynb").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", triplets(CORPUS) if CORPUS.exists() else [])
def test_clean_wherever_nbdime_is_clean_on_corpus(case: str) -> None:
    """Differential test against nbdime's full merge on its own triplets.

    Where nbdime leaves no conflict, neither do we, and the cell sources are the
    same. (Named differences, by design: outputs follow their source instead
    of being marked, delete-versus-edit is a note cell, and we settle what
    nbdime calls a conflict but writes cleanly, such as a removed final
    newline beside an edited line.)
    """
    nbs = read_triplet(CORPUS, case)
    ours, theirs = merge(*nbs), merge(*nbs, engine="nbdime")
    notebook_io.validate(ours.notebook)
    if not theirs.conflicts:
        assert ours.unresolved == ()
        assert [c["source"] for c in ours.notebook["cells"]] == [c["source"] for c in theirs.notebook["cells"]]


def test_nbdimes_own_expected_merge() -> None:
    if not (CORPUS / "multilevel--merged.ipynb").exists():
        pytest.skip("shared corpus not present")
    merged = merge(*read_triplet(CORPUS, "multilevel")).notebook
    expected = notebook_io.read_notebook(CORPUS / "multilevel--merged.ipynb")
    assert [c["source"] for c in merged["cells"]] == [c["source"] for c in expected["cells"]]


def test_edits_to_different_cells_merge_cleanly() -> None:
    base = notebook(*numbered(10))
    local, remote = edited(base, 2, "local edit"), edited(base, 7, "remote edit")
    result = merge(base, local, remote)
    assert result.conflicts == ()
    assert [c["source"] for c in result.notebook["cells"]][2::5] == ["local edit", "remote edit"]


def test_same_line_conflict_is_recorded_with_cell_number_and_id() -> None:
    base = notebook(*numbered(5))
    local, remote = edited(base, 3, "x3 = 'local'"), edited(base, 3, "x3 = 'remote'")
    result = merge(base, local, remote)
    assert result.conflicts == (Conflict("source", 3, "c3", 3, "inline"),)
    assert result.unresolved == result.conflicts
    assert result.notebook["cells"][3]["source"] == "<<<<<<< local\nx3 = 'local'\n=======\nx3 = 'remote'\n>>>>>>> remote"


@pytest.mark.parametrize(("strategy", "expected"), [("local", "x3 = 'local'"), ("remote", "x3 = 'remote'"), ("base", "x3 = 3")])
def test_side_strategies_settle_conflicts(strategy: str, expected: str) -> None:
    base = notebook(*numbered(5))
    local, remote = edited(base, 3, "x3 = 'local'"), edited(base, 3, "x3 = 'remote'")
    result = merge(base, local, remote, MergeOptions(strategy=strategy))  # type: ignore[arg-type]
    assert result.notebook["cells"][3]["source"] == expected
    assert result.unresolved == ()
    assert [c.resolution for c in result.conflicts] == [strategy]


def test_clear_outputs_strategy() -> None:
    def out(text: str) -> list[dict[str, Any]]:
        return [{"name": "stdout", "output_type": "stream", "text": text}]

    base = notebook(cell("print(1)", "p", outputs=out("1\n")))
    local = notebook(cell("print(1)", "p", outputs=out("one\n")))
    remote = notebook(cell("print(1)", "p", outputs=out("uno\n")))
    result = merge(base, local, remote, MergeOptions(outputs="clear"))
    assert result.notebook["cells"][0]["outputs"] == []
    assert [(c.kind, c.resolution) for c in result.conflicts] == [("outputs", "clear")]


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'mine'"):
        MergeOptions(strategy="mine")  # type: ignore[arg-type]


def test_both_sides_inserting_the_same_id_gives_unique_ids() -> None:
    base = notebook(*numbered(3))
    local = notebook(*numbered(3), cell("a", "new"))
    remote = notebook(cell("b", "new"), *numbered(3))
    merged = merge(base, local, remote).notebook
    ids = [c["id"] for c in merged["cells"]]
    assert len(set(ids)) == len(ids) == 5
    assert [c["source"] for c in merged["cells"]] == ["b", "x0 = 0", "x1 = 1", "x2 = 2", "a"]
    assert merge(base, local, remote).notebook == merged, "re-ids are deterministic"


def test_old_notebooks_get_no_ids_even_for_marker_cells() -> None:
    base = notebook(cell("a"), minor=4)
    local = notebook(cell("a"), cell("l"), minor=4)
    remote = notebook(cell("a"), cell("r"), minor=4)
    result = merge(base, local, remote)
    assert [c.kind for c in result.conflicts] == ["insert"]
    assert all("id" not in c for c in result.notebook["cells"])
    notebook_io.validate(result.notebook)


def test_inputs_are_not_modified() -> None:
    base = notebook(*numbered(4))
    local, remote = edited(base, 1, "l"), edited(base, 1, "r")
    snapshot = copy.deepcopy((base, local, remote))
    merge(base, local, remote)
    assert (base, local, remote) == snapshot


def test_notebook_metadata_conflict() -> None:
    base = notebook(cell("a", "a"), metadata={"title": "base"})
    local = notebook(cell("a", "a"), metadata={"title": "local"})
    remote = notebook(cell("a", "a"), metadata={"title": "remote"})
    result = merge(base, local, remote)
    assert [(c.kind, c.cell) for c in result.conflicts] == [("notebook-metadata", None)]
    notebook_io.validate(result.notebook)


def test_conflicting_text_with_a_nul_byte_keeps_both_sides() -> None:
    """nbdime's `git merge-file` renderer returned nothing for it (git calls it binary)."""
    base = notebook(cell("rows = a\nlen(rows)", "x"))
    local = notebook(cell("rows = b\0\nlen(rows)", "x"))
    remote = notebook(cell("rows = c\nlen(rows)", "x"))
    source = merge(base, local, remote).notebook["cells"][0]["source"]
    assert "rows = b\0" in source and "rows = c" in source and source.startswith("<<<<<<< local")


def test_the_fast_merge_never_calls_nbdime(monkeypatch: pytest.MonkeyPatch) -> None:
    """nbdime's comparisons run regular expressions over base64 images; the merge does not use them."""
    from nbdime.merging import notebooks

    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("nbdime called")

    monkeypatch.setattr(notebooks, "merge_notebooks", broken)
    base = notebook(cell("a", "a"), cell("b", "b"))
    result = merge(base, notebook(cell("a1", "a"), cell("l", "l"), cell("b", "b")),
                   notebook(cell("a2", "a"), cell("r", "r"), cell("b", "b")))
    assert [c.kind for c in result.unresolved] == ["source", "insert"]
    notebook_io.validate(result.notebook)
