from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = ROOT.parent / "shared" / "corpus" / "nbdime"


def cell(source: str, id: str | None = None, kind: str = "code", **extra: Any) -> dict[str, Any]:
    """A small cell with a deterministic id (nbdime's tests do the same)."""
    c: dict[str, Any] = {"cell_type": kind, "metadata": {}, "source": source}
    if kind == "code":
        c.update(execution_count=None, outputs=[])
    if id is not None:
        c["id"] = id
    c.update(extra)
    return c


def notebook(*cells: dict[str, Any], minor: int = 5, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"cells": copy.deepcopy(list(cells)), "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": minor}


def numbered(n: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [cell(f"x{i} = {i}", f"{prefix}{i}") for i in range(n)]


def write(path: Path, nb: dict[str, Any]) -> Path:
    path.write_text(notebook_io.dumps(nb), encoding="utf-8")
    return path


def triplets(folder: Path) -> list[str]:
    return sorted(p.name[: -len("--base.ipynb")] for p in folder.glob("*--base.ipynb"))


@pytest.fixture
def nb_files(tmp_path: Path):
    """Write base/local/remote notebooks into tmp_path and return their paths."""

    def make(base: dict[str, Any], local: dict[str, Any], remote: dict[str, Any]) -> tuple[Path, Path, Path]:
        return tuple(write(tmp_path / f"{n}.ipynb", nb) for n, nb in (("base", base), ("local", local), ("remote", remote)))  # type: ignore[return-value]

    return make


@pytest.fixture(params=["exchange", "compare-then-rename"])
def swap_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the kernel's atomic swap, where this machine has it, and with the fallback."""
    if request.param == "exchange":
        if notebook_io._renameat2 is None:
            pytest.skip("no renameat2 here")
    else:
        monkeypatch.setattr(notebook_io, "_renameat2", None)
    return request.param


# --- the version store, once per backend (the PostgreSQL backend adds its param here) ---

STORE_BACKENDS = ["sqlite"]


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty store over the project folder ``tmp_path / "project"``, for each backend."""
    from nbmergesave.store import Store

    root = tmp_path / "project"
    root.mkdir()
    if request.param == "sqlite":
        s = Store.open(root)
    else:  # pragma: no cover - a backend added without its fixture
        pytest.fail(f"no fixture for the {request.param} backend")
    try:
        yield s
    finally:
        s.close()
