from __future__ import annotations

import os
import stat
from pathlib import Path

import nbformat
import pytest

from nbmergesave import notebook_io
from nbmergesave.errors import BadInput, NotANotebook, UnsupportedFormat

from .conftest import FIXTURES, cell, notebook

GOOD = notebook_io.dumps(notebook(cell("a = 1", "a"))).encode()

BAD_INPUTS = {
    "empty": (b"", BadInput, "X is empty"),
    "whitespace": (b"  \n", BadInput, "X is empty"),
    "invalid-json": (b'{"cells": [\n  1,\n  }', BadInput, "X is not valid JSON: line 3 column 3 (Expecting value)"),
    "truncated": (GOOD[: len(GOOD) // 2], BadInput, "X is not valid JSON: line"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", BadInput, "X is a binary file, not a notebook"),
    "not-utf8": (b'{"cells": "\xff"}', BadInput, "X is not UTF-8 text (bad byte at offset 11)"),
    "json-list": (b"[1, 2]", NotANotebook, "X is not a Jupyter notebook (no 'nbformat' field)"),
    "json-object": (b'{"name": "x"}', NotANotebook, "X is not a Jupyter notebook (no 'nbformat' field)"),
    "nbformat-3": (b'{"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}', UnsupportedFormat,
                   "X is nbformat 3; only nbformat 4 is merged (hint: convert it with 'jupyter nbconvert --to notebook --nbformat 4')"),
    "no-cells": (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}', NotANotebook,
                 "X is not a valid notebook: 'cells' is missing or not a list"),
    "bad-cell": (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"source": "x"}]}', NotANotebook,
                 "X is not a valid notebook: cell 0 has no valid 'cell_type'"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_clear_line(case: str) -> None:
    data, error, message = BAD_INPUTS[case]
    with pytest.raises(error) as info:
        notebook_io.parse_notebook(data, "X")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_empty_base_allowed_when_asked() -> None:
    assert notebook_io.parse_notebook(b"", "X", empty_ok=True) == notebook_io.empty_notebook()


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"^LOCAL '.*nope.ipynb' does not exist$"):
        notebook_io.read_notebook(tmp_path / "nope.ipynb", "LOCAL")
    with pytest.raises(BadInput, match=r"^LOCAL '.*' is a directory, not a notebook$"):
        notebook_io.read_notebook(tmp_path, "LOCAL")


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.ipynb")), ids=lambda p: p.name)
def test_dumps_is_nbformats_canonical_layout(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    parsed = notebook_io.parse_notebook(text.encode())
    assert notebook_io.dumps(parsed) == nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"
    assert notebook_io.dumps(parsed) == text


def test_validate_names_the_schema_error() -> None:
    nb = notebook(cell("a", "a"))
    nb["cells"][0]["outputs"] = [{"output_type": "bogus"}]
    with pytest.raises(NotANotebook, match=r"^merged is not a valid notebook: cells\[0\] cannot be validated by any definition$"):
        notebook_io.validate(nb, "merged")


def test_write_atomic_keeps_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "nb.ipynb"
    target.write_text("old")
    os.chmod(target, 0o640)
    notebook_io.write_atomic(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]


def test_write_atomic_failure_leaves_target_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "nb.ipynb"
    target.write_text("old")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        notebook_io.write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["nb.ipynb"]


def test_compare_and_swap_holds_the_replaced_inode(tmp_path: Path, swap_mode: str) -> None:
    target = tmp_path / "nb.ipynb"
    target.write_bytes(b"old")
    old = notebook_io.write_atomic(target, b"new", expected=b"old")
    assert old is not None and old.unexpected is None
    with open(old.path, "rb") as f:
        assert f.read() == b"new"
    assert not old.changed() and old.read() == b"old"
    old.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb"]


def test_compare_and_swap_writes_nothing_over_a_file_it_did_not_expect(tmp_path: Path, swap_mode: str) -> None:
    target = tmp_path / "nb.ipynb"
    target.write_bytes(b"someone else's save")
    with pytest.raises(notebook_io.Changed):
        notebook_io.write_atomic(target, b"merged", expected=b"what we merged against")
    assert target.read_bytes() == b"someone else's save"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb"]


def test_a_save_landing_between_compare_and_swap_is_handed_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                swap_mode: str) -> None:
    if swap_mode != "exchange":
        pytest.skip("without an atomic swap, such a save is replaced (a window of microseconds)")
    target = tmp_path / "nb.ipynb"
    target.write_bytes(b"old")
    compare = notebook_io._open_expected

    def then_a_save_lands(path: Path, expected: bytes):  # type: ignore[no-untyped-def]
        held = compare(path, expected)
        (tmp_path / "editor.tmp").write_bytes(b"an editor's save")
        os.replace(tmp_path / "editor.tmp", target)
        return held

    monkeypatch.setattr(notebook_io, "_open_expected", then_a_save_lands)
    old = notebook_io.write_atomic(target, b"merged", expected=b"old")
    assert target.read_bytes() == b"merged"
    assert old is not None and old.unexpected == b"an editor's save"
    old.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb"]


def test_compare_and_swap_leaves_a_folder_in_the_notebooks_place(tmp_path: Path, swap_mode: str) -> None:
    target = tmp_path / "nb.ipynb"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises((notebook_io.Changed, OSError)):
        notebook_io.write_atomic(target, b"merged", expected=b"old")
    assert (target / "inside").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb"]
