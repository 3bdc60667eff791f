"""The deduplicated store: exact bytes back for every kind of version, one cell costs one cell.

Runs against every backend (the ``store`` fixture in conftest.py).
"""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbmergesave import notebook_io
from nbmergesave.errors import StoreError
from nbmergesave.store import Store, pieces, sha256

from .conftest import CORPUS, cell, notebook


def _plots_notebook(seed: int = 1, cells: int = 12) -> dict:  # type: ignore[type-arg]
    rng = random.Random(seed)
    out = []
    for i in range(cells):
        c = cell(f"x{i} = {i}\nprint(x{i})", f"c{i}", execution_count=i + 1)
        if i % 3 == 0:
            c["outputs"] = [{"data": {"image/png": base64.b64encode(rng.randbytes(20_000)).decode() + "\n",
                                      "text/plain": ["<Figure>"]}, "metadata": {}, "output_type": "display_data"}]
        else:
            c["outputs"] = [{"name": "stdout", "output_type": "stream", "text": [f"{i}\n"]}]
        out.append(c)
    return notebook(*out, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


def _pieces_bytes(store: Store) -> tuple[int, int]:
    sizes = store.backend.piece_sizes()
    return len(sizes), sum(sizes.values())


def test_two_versions_differing_in_one_cell_cost_one_cell(store: Store) -> None:
    path = store.root / "nb.ipynb"
    nb = _plots_notebook()
    first = notebook_io.dumps(nb).encode()
    store.add(path, first, "observed")
    count, stored = _pieces_bytes(store)
    assert stored < len(first) * 1.05  # the images are kept as they are, the text deflated
    nb["cells"][4]["source"] += "\n# one more line"
    second = notebook_io.dumps(nb).encode()
    v2 = store.add(path, second, "observed")
    count2, stored2 = _pieces_bytes(store)
    assert count2 == count + 1  # the changed cell (small: one piece), nothing else
    assert stored2 - stored < 400
    assert store.content(v2) == second
    nb["cells"][3]["source"] += "\n# a plot's code edited"
    store.add(path, notebook_io.dumps(nb).encode(), "observed")
    count2, stored3 = _pieces_bytes(store)
    assert count2 == count + 2 and stored3 - stored2 < 200  # the source of the plot's cell: the plot is not stored again
    stored2 = stored3
    # a plot re-run: one new output and the cell's head (its execution count)
    nb["cells"][3]["outputs"] = _plots_notebook(seed=2)["cells"][3]["outputs"]
    nb["cells"][3]["execution_count"] = 99
    third = notebook_io.dumps(nb).encode()
    store.add(path, third, "observed")
    count3, stored3 = _pieces_bytes(store)
    assert count3 == count2 + 2
    assert stored3 - stored2 < 28_000  # the new image (26.7 kB of base64) and a few bytes


def test_content_already_held_writes_nothing_new(store: Store) -> None:
    path = store.root / "nb.ipynb"
    data = notebook_io.dumps(_plots_notebook()).encode()
    store.add(path, data, "observed")
    before = (_pieces_bytes(store), store.stats().contents)
    again = store.add(path, data, "restored")
    other = store.add(store.root / "copy.ipynb", data, "observed")  # same bytes, another notebook
    assert (_pieces_bytes(store), store.stats().contents) == before
    assert store.content(again) == store.content(other) == data


def _torn() -> bytes:
    later = notebook_io.dumps(notebook(cell("a = 1", "a"), cell("b = 0", "b"))).encode()
    longer = notebook_io.dumps(notebook(cell("a = 0", "a"), cell("b = 0\n" + "# edit\n" * 20, "b"))).encode()
    return later + longer[len(later):]


KINDS = {
    "canonical": notebook_io.dumps(_plots_notebook()).encode(),
    "indent 2, unsorted": json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                                      "cells": [cell("a", "a"), cell("b", "b")]}, indent=2).encode(),
    "minified": json.dumps(notebook(cell("a", "a"), cell("b", "b"))).encode(),
    "crlf": notebook_io.dumps(notebook(cell("a", "a"))).replace("\n", "\r\n").encode(),
    "ascii-escaped": json.dumps(notebook(cell("é ✓ 日本", "u")), indent=1, sort_keys=True).encode() + b"\n",
    "unicode": notebook_io.dumps(notebook(cell("é ✓ 日本", "u"))).encode(),
    "torn": _torn(),
    "half written": notebook_io.dumps(notebook(cell("a", "a"), cell("b", "b"))).encode()[:77],
    "not json": b"\x00\xff binary \n  {\n    {\n",
    "empty": b"",
    "no cells": notebook_io.dumps(notebook()).encode(),
    "no trailing newline": notebook_io.dumps(notebook(cell("a", "a"))).encode().rstrip(b"\n"),
}


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_of_file_reads_back_byte_for_byte(store: Store, name: str) -> None:
    data = KINDS[name]
    path = store.root / "nb.ipynb"
    for kind in ("observed", "torn", "merged", "declared", "conflict-copy"):
        v = store.add(path, data, kind, on_disk=False)
        assert store.content(v) == data
        assert v.sha256 == sha256(data)
    assert store.fsck(repair=False)["ok"]


def test_corpus_notebooks_read_back_byte_for_byte(store: Store) -> None:
    files = [f for f in sorted(CORPUS.glob("*.ipynb"))[:60] + sorted((CORPUS.parent / "realmerges").rglob("*.ipynb"))[:240]
             if f.is_file()]
    if not files:
        pytest.skip("no corpus here")
    versions = [(store.add(store.root / f"n{i}.ipynb", f.read_bytes(), "observed"), f.read_bytes())
                for i, f in enumerate(files)]
    for v, data in versions:
        assert store.content(v) == data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400) | st.text(alphabet=" \n{}[],\"abc:", max_size=400).map(str.encode))
def test_any_bytes_split_and_join_back(data: bytes) -> None:
    assert b"".join(pieces.split(data)) == data
    for part in pieces.split(data):
        assert pieces.decode(*pieces.encode(part)) == part


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["code", "markdown"]), st.text(max_size=60),
                          st.lists(st.text(max_size=30), max_size=3)), max_size=8),
       st.integers(min_value=1, max_value=4))
def test_notebooks_of_any_shape_and_indent_read_back(store: Store, cells: list, indent: int) -> None:  # type: ignore[type-arg]
    nb = notebook(*[cell(src, f"c{i}", kind) if kind == "markdown" else
                    cell(src, f"c{i}", outputs=[{"name": "stdout", "output_type": "stream", "text": t} for t in outs])
                    for i, (kind, src, outs) in enumerate(cells)])
    data = json.dumps(nb, indent=indent, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    v = store.add(store.root / "nb.ipynb", data, "observed")
    assert store.content(v) == data


def test_pieces_cut_at_cells_outputs_and_sources() -> None:
    data = notebook_io.dumps(_plots_notebook(cells=3)).encode()
    parts = pieces.split(data)
    assert parts[0] == b'{\n "cells": ['
    assert parts[1].startswith(b'\n  {\n   "cell_type": "code"') and parts[1].endswith(b'"outputs": [')
    assert parts[2].startswith(b'\n    {\n     "data": {\n      "image/png"')
    assert parts[3].startswith(b'\n   ],\n   "source": [')
    assert parts[-1].startswith(b'\n ],\n "metadata": {')


def test_a_missing_piece_is_a_clear_error(store: Store) -> None:
    v = store.add(store.root / "nb.ipynb", KINDS["canonical"], "observed")
    store.backend.drop_pieces(list(store.backend.piece_sizes())[:1])
    with pytest.raises(StoreError, match="damaged .*fsck"):
        store.content(v)


def test_history_declarations_and_lineage_index_work_on_pieces(store: Store) -> None:
    path = store.root / "nb.ipynb"
    a = notebook_io.dumps(notebook(cell("a", "a"), cell("b", "b"))).encode()
    b = notebook_io.dumps(notebook(cell("a2", "a"), cell("b", "b"))).encode()
    va, vb = store.add(path, a, "observed"), store.add(path, b, "observed")
    store.declare(path, sha256(b), sha256(a), "test")
    assert store.declared_base(path, sha256(b)) == va
    assert store.descends(path, sha256(b), sha256(a))
    store.record_cells(va.sha256 or "", {"a": "s-a", "b": "s-b"})
    store.record_cells(vb.sha256 or "", {"a": "s-a2", "b": "s-b"})
    assert store.sharing_cells(path, {"a": "s-a", "b": "s-b"}, 5) == [va, vb]
    assert store.latest_with(path, sha256(a)) == va
    store.rename(path, store.root / "moved.ipynb")
    assert [v.version for v in store.history(store.root / "moved.ipynb")] == [1, 2]
    assert store.declared_base(store.root / "moved.ipynb", sha256(b)) is not None


def test_store_files_are_created_in_one_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder and the database go through store/files.py, so their modes are decided there."""
    from nbmergesave.store import files

    made = []
    real = files.make_private_dir
    monkeypatch.setattr(files, "make_private_dir", lambda p: made.append(p) or real(p))
    with Store.open(tmp_path) as store:
        store.add(tmp_path / "nb.ipynb", b"x", "observed")
        with store.save_lock():
            pass
    assert made == [tmp_path / ".nbmergesave"]


def _reader(store: Store) -> Store:
    """A second process's view of the same store (another backend object, with a cache of its own)."""
    return Store.open(store.root, store.backend.url if store.backend.name == "postgresql" else store.location)


def test_a_reader_holding_pieces_reads_right_after_others_collect_and_save(store: Store) -> None:
    """Readers keep the pieces they read, by id: ids must never be handed out again."""
    from datetime import datetime, timedelta, timezone

    from nbmergesave.store import Retention

    path = store.root / "nb.ipynb"
    one, two, three = (notebook_io.dumps(_plots_notebook(seed)).encode() for seed in (1, 2, 3))
    with _reader(store) as reader:
        first = store.add(path, one, "observed")
        assert reader.content(first) == one
        store.add(path, two, "observed")  # the newest pieces, needed by no version once...
        store.add(path, one, "observed")  # ...this one is the file's
        before = set(store.backend.piece_sizes())
        store.gc(Retention(keep_all=0, hourly=0, daily=0), now=datetime.now(timezone.utc) + timedelta(days=2))
        assert max(before) not in store.backend.piece_sizes()
        third = store.add(path, three, "observed")
        assert reader.content(third) == three and reader.content(first) == one
