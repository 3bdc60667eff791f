"""The single writer's fast path gives exactly what the full path gives: the same bytes, pieces, histories, files.

Each sequence of saves is run twice, with :data:`nbmergesave.fastpath.FAST` off and on, in two folders,
and the stores' rows (versions, declarations, the version on disk, the lineage index) and the files are
compared; the cell-by-cell serialiser is checked against ``notebook_io.dumps`` and ``pieces.split`` on
every notebook of the fixtures and the corpus.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import fastpath, notebook_io
from nbmergesave.errors import BadInput
from nbmergesave.store import Store, pieces
from nbmergesave.sync import Session, sync_file

from .conftest import CORPUS, FIXTURES

CORPORA = sorted(FIXTURES.glob("*.ipynb")) + sorted(CORPUS.glob("*.ipynb")) + \
    sorted((CORPUS.parent / "realmerges").glob("*/*.ipynb"))[:40]


def _notebook(path: Path) -> dict[str, Any] | None:
    try:
        return notebook_io.parse_notebook(path.read_bytes())
    except BadInput:
        return None


def _edits(nb: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A writer's successive notebooks: a cell edited, one added, one removed, two swapped, metadata changed."""
    nb = copy.deepcopy(nb)
    cells = nb["cells"]
    yield copy.deepcopy(nb)
    if cells:
        cells[len(cells) // 2]["source"] += "\n# edited"
        yield copy.deepcopy(nb)
    cells.insert(min(1, len(cells)), {"cell_type": "markdown", "id": "added-by-test", "metadata": {"trusted": True},
                                      "source": "a new cell"})
    yield copy.deepcopy(nb)
    if len(cells) > 2:
        cells[0], cells[-1] = cells[-1], cells[0]
        yield copy.deepcopy(nb)
        del cells[-2]
        yield copy.deepcopy(nb)
    nb["metadata"]["signature"] = "sha256:transient"
    nb["metadata"]["edited_by_test"] = True
    yield copy.deepcopy(nb)


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    def set_fast(on: bool) -> None:
        monkeypatch.setattr(fastpath, "FAST", on)

    return set_fast


@pytest.mark.parametrize("path", CORPORA, ids=lambda p: p.name)
def test_serialiser_gives_the_bytes_and_pieces_of_the_full_path(path: Path) -> None:
    nb = _notebook(path)
    if nb is None:
        pytest.skip("not a notebook this tool reads")
    serialiser = fastpath.Serialiser()
    for version in _edits(nb):
        written = serialiser.written("nb", json.loads(json.dumps(version)))  # fresh objects, as a request gives
        plain = {**version, "metadata": {k: v for k, v in version["metadata"].items()
                                         if k not in notebook_io.TRANSIENT_NB_METADATA},
                 "cells": [{**c, "metadata": {k: v for k, v in c.get("metadata", {}).items() if k != "trusted"}}
                           for c in version["cells"]]}
        expected = notebook_io.dumps(plain).encode()
        assert written is not None
        assert written.data == expected
        assert written.text == expected.decode()
        assert written.parts == pieces.split(expected)
        assert written.digests == [hashlib.sha256(p).digest() for p in written.parts]



@pytest.mark.parametrize("where", ["cell metadata", "output data", "output metadata", "notebook metadata"])
@pytest.mark.parametrize("before, after", [(1, 1.0), (1, True), (1.0, 1), (1.0, True), (0, False), (False, 0.0)],
                         ids=repr)
def test_a_number_that_changed_only_its_type_is_written_again(where: str, before: Any, after: Any) -> None:
    """``1 == 1.0 == True`` in Python, but nbformat writes ``1``, ``1.0`` and ``true``: a cell whose value
    changed only between int, float and bool must not reuse its old bytes."""
    import nbformat

    def notebook(value: Any) -> dict[str, Any]:
        cell = {"cell_type": "code", "execution_count": 1, "id": "c", "metadata": {}, "source": "f()",
                "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                             "data": {"text/plain": "1", "application/json": {"v": 0}}}]}
        nb = {"cells": [{"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# title"}, cell],
              "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
        target = {"cell metadata": cell["metadata"], "output data": cell["outputs"][0]["data"]["application/json"],
                  "output metadata": cell["outputs"][0]["metadata"], "notebook metadata": nb["metadata"]}[where]
        target["v"] = value
        return nb

    serialiser = fastpath.Serialiser()
    for value in (before, after, before, after):
        nb = notebook(value)
        written = serialiser.written("nb", json.loads(json.dumps(nb)))  # fresh objects, as a request gives
        expected = nbformat.writes(nbformat.from_dict(nb)) + "\n"  # what nbformat.write puts in the file
        assert written is not None
        assert written.text == expected, (value, written.text)
        assert written.parts == pieces.split(expected.encode())
        assert written.digests == [hashlib.sha256(p).digest() for p in written.parts]


def test_same_compares_numbers_by_type() -> None:
    assert fastpath.same({"a": [1, {"b": 2.5}], "s": "x"}, {"a": [1, {"b": 2.5}], "s": "x"})
    assert not fastpath.same({"a": [1]}, {"a": [1.0]})
    assert not fastpath.same({"a": [{"b": 1}]}, {"a": [{"b": True}]})
    assert not fastpath.same({"a": 0.0}, {"a": False})
    assert not fastpath.same({"a": 1}, {"a": 2})
    assert fastpath.same({"a": None, "b": [None]}, {"a": None, "b": [None]})

def _rows(store: Store) -> dict[str, Any]:
    """What a store holds, without times (two runs differ only in those)."""
    db = store._db
    return {
        "versions": db.execute("SELECT path, version, sha256, kind, base, local, remote, conflicts FROM versions "
                               "ORDER BY path, version").fetchall(),
        "on_disk": db.execute("SELECT path, version FROM on_disk ORDER BY path").fetchall(),
        "declarations": db.execute("SELECT path, sha256, base_sha256, writer FROM declarations "
                                   "ORDER BY path, sha256").fetchall(),
        "cells": db.execute("SELECT c.sha256, i.pair FROM cell_index i JOIN contents c ON c.id = i.content "
                            "ORDER BY 1, 2").fetchall(),
        "contents": {sha: store.blob(sha) for sha, in db.execute("SELECT sha256 FROM contents")},
    }


def _same(fast: dict[str, Any], full: dict[str, Any]) -> None:
    """The same rows and contents; the lineage index may hold more on the fast path (it records a save's
    cells when the save is stored, the full path when the save is first searched), never less."""
    assert {k: v for k, v in fast.items() if k != "cells"} == {k: v for k, v in full.items() if k != "cells"}
    assert set(full["cells"]) <= set(fast["cells"])


def _watch_sequence(root: Path, saves: list[bytes]) -> tuple[dict[str, Any], bytes, list[str]]:
    """Write each save over nb.ipynb and let sync_file handle it, as the watcher does."""
    path = root / "nb.ipynb"
    outcomes = []
    with Store.open(root) as store:
        session = Session()
        for data in saves:
            path.write_bytes(data)
            outcomes.append(sync_file(store, path, data=data, session=session).action)
        return _rows(store), path.read_bytes(), outcomes


def _triplet_saves(case: str) -> list[bytes]:
    """base, local (the single writer's save), remote (made from base: overlapping, merged), then the writer
    goes on from the merge (one cell edited) and reverts to an earlier save."""
    base, local, remote = ((FIXTURES if (FIXTURES / f"{case}--base.ipynb").exists() else CORPUS) /
                           f"{case}--{side}.ipynb" for side in ("base", "local", "remote"))
    saves = [base.read_bytes(), local.read_bytes(), remote.read_bytes()]
    return saves


@pytest.mark.parametrize("case", sorted({p.name.split("--")[0] for p in FIXTURES.glob("*--base.ipynb")} |
                                        {p.name.split("--")[0] for p in CORPUS.glob("*--base.ipynb")}))
def test_watcher_records_and_merges_alike_with_and_without_the_fast_path(
        case: str, tmp_path: Path, fast: Callable[[bool], None]) -> None:
    saves = _triplet_saves(case)
    results = {}
    for on in (False, True):
        fast(on)
        root = tmp_path / f"fast-{on}"
        root.mkdir()
        rows, file, outcomes = _watch_sequence(root, saves)
        # the writer goes on from what is on disk now: one cell edited, then an undo back to the first save
        nb = _notebook(root / "nb.ipynb")
        more = []
        if nb is not None and nb["cells"]:
            nb["cells"][-1]["source"] += "\n# after the merge"
            more.append(notebook_io.dumps(nb).encode())
        more.append(saves[0])
        rows2, file2, outcomes2 = _watch_sequence(root, more)
        results[on] = (rows2, file2, outcomes + outcomes2)
    assert results[True][2] == results[False][2]
    assert results[True][1] == results[False][1]
    _same(results[True][0], results[False][0])


def test_watcher_single_writer_history_is_the_same(tmp_path: Path, fast: Callable[[bool], None]) -> None:
    """Forty single-writer saves of a notebook with plots: recorded, never merged, the same rows either way."""
    import random

    from benchmarks.bench_store import notebook

    nb = notebook(random.Random(3))
    saves = []
    for k in range(40):
        if k == 20:
            saves.append(saves[5])  # an undo far back, and the writer goes on from there
            nb = notebook_io.parse_notebook(saves[5])
        nb["cells"][(k * 7) % len(nb["cells"])]["source"] += f"\n# edit {k}"
        saves.append(notebook_io.dumps(nb).encode())
    results = {}
    for on in (False, True):
        fast(on)
        root = tmp_path / f"fast-{on}"
        root.mkdir()
        results[on] = _watch_sequence(root, saves)
    assert set(results[True][2]) == {"recorded"}
    assert results[True][1:] == results[False][1:]
    _same(results[True][0], results[False][0])


class _Contents:
    """The part of a contents manager SaveMerger uses."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _get_os_path(self, path: str) -> str:
        return str(self.root / path)


def _jupyter_sequence(root: Path, start: dict[str, Any], edits: int) -> tuple[dict[str, Any], bytes, list[Any]]:
    """A tab loads, then saves ``edits`` times with the hash each reply gave; halfway another program
    changes the file (the next save is merged). The server's write is nbformat's."""
    import nbformat

    from nbmergesave.jupyter import SaveMerger

    path = root / "nb.ipynb"
    path.write_text(notebook_io.dumps(start))
    merger = SaveMerger(_Contents(root), logging.getLogger("test"))
    model = {"type": "notebook", "content": notebook_io.read_notebook(path)}
    merger.loaded("nb.ipynb", model)
    base, content = model["nbmergesave"]["sha256"], model["content"]
    replies = []
    for k in range(edits):
        if k == edits // 2:  # someone else changes the first cell on disk
            other = notebook_io.read_notebook(path)
            other["cells"][0]["source"] += "\n# changed on disk"
            path.write_text(notebook_io.dumps(other))
        content["cells"][(k * 5) % len(content["cells"])]["source"] += f"\n# tab edit {k}"
        save = {"type": "notebook", "content": json.loads(json.dumps(content)), "nbmergesave_base": base}
        with merger.stores.lock("nb.ipynb"):
            done = merger.before_save(save, "nb.ipynb")
            path.write_text(nbformat.writes(nbformat.from_dict(save["content"]), version=nbformat.NO_CONVERT) + "\n")
            reply: dict[str, Any] = {}
            merger.after_save("nb.ipynb", done, reply)
        info = reply["nbmergesave"]
        replies.append({k: v for k, v in info.items() if k not in ("version",)})
        base = info["sha256"]
        if info.get("merged"):
            content = info["content"]
    for store in list(merger.stores.held.values()):
        store.close()
    with Store.open(root) as store:
        return _rows(store), path.read_bytes(), replies


@pytest.mark.parametrize("name", ["plots", "text"])
def test_jupyter_saves_alike_with_and_without_the_fast_path(name: str, tmp_path: Path,
                                                            fast: Callable[[bool], None]) -> None:
    import random

    from benchmarks.bench_jupyter_save import text_notebook
    from benchmarks.bench_store import notebook

    start = notebook(random.Random(5)) if name == "plots" else text_notebook(120)
    results = {}
    for on in (False, True):
        fast(on)
        root = tmp_path / f"fast-{on}"
        root.mkdir()
        results[on] = _jupyter_sequence(root, start, 12)
    rows, file, replies = results[True]
    assert [r["merged"] for r in replies].count(True) == 1
    assert results[True][1:] == results[False][1:]
    _same(results[True][0], results[False][0])


def test_the_server_writes_the_fast_paths_text(tmp_path: Path, fast: Callable[[bool], None]) -> None:
    """With a real FileContentsManager: the server writes the bytes the fast path made and declared (no
    second serialisation), they are what nbformat would have written, and a pre-save hook still wins."""
    pytest.importorskip("jupyter_server")
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    fast(True)
    (tmp_path / "nb.ipynb").write_text(notebook_io.dumps({"cells": [
        {"cell_type": "code", "execution_count": 1, "id": "a", "metadata": {}, "outputs": [], "source": "x = 1"}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    cm = FileContentsManager(root_dir=str(tmp_path))
    merger = install(cm)
    written: list[str] = []
    original = merger.writes.prepared
    merger.writes.prepared = lambda os_path, nb: written.append(t) or t if (t := original(os_path, nb)) else t  # type: ignore[method-assign]
    model = cm.get("nb.ipynb")
    model["content"]["cells"][0]["source"] = "x = 2"
    reply = cm.save({"type": "notebook", "content": model["content"], "nbmergesave_base": model["nbmergesave"]["sha256"]},
                    "nb.ipynb")
    data = (tmp_path / "nb.ipynb").read_bytes()
    assert written and written[0].encode() == data
    assert reply["nbmergesave"]["sha256"] == hashlib.sha256(data).hexdigest()
    import nbformat

    assert data.decode() == nbformat.writes(nbformat.read(tmp_path / "nb.ipynb", as_version=4)) + "\n"
    with Store.open(tmp_path) as store:
        assert store.latest_with(tmp_path / "nb.ipynb", hashlib.sha256(data).hexdigest()) is not None

    def hook(model: dict[str, Any], **_: Any) -> None:
        model["content"]["cells"][0]["source"] = "changed by a hook"

    cm.register_pre_save_hook(hook)
    model = cm.get("nb.ipynb")
    model["content"]["cells"][0]["source"] = "x = 3"
    cm.save({"type": "notebook", "content": model["content"], "nbmergesave_base": model["nbmergesave"]["sha256"]},
            "nb.ipynb")
    assert notebook_io.read_notebook(tmp_path / "nb.ipynb")["cells"][0]["source"] == "changed by a hook"
    for store in list(merger.stores.held.values()):
        store.close()
