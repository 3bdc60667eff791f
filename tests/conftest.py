from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# The shared corpora sit beside the checkout (or beside the folder of worktrees holding it).
CORPUS = next((p / "shared" / "corpus" / "nbdime" for p in ROOT.parents if (p / "shared" / "corpus").is_dir()),
              ROOT.parent / "shared" / "corpus" / "nbdime")


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


# --- the version store, once per backend ---------------------------------------------

STORE_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server for the whole session (tests/pg.py), stopped after it."""
    from . import pg

    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    if pg.bindir() is None:
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install -y postgresql)")
    server = pg.Server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    """A URL to an empty schema of the session's server, for one test."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return postgres_server.url(name)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """An empty store over the project folder ``tmp_path / "project"``, for each backend."""
    from nbmergesave.store import Store

    root = tmp_path / "project"
    root.mkdir()
    if request.param == "sqlite":
        s = Store.open(root)
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("NBMERGESAVE_PROJECT_ROOT", str(root))
        s = Store.open(root, url)
    else:  # pragma: no cover - a backend added without its fixture
        pytest.fail(f"no fixture for the {request.param} backend")
    try:
        yield s
    finally:
        s.close()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0, step: float = 0.01) -> Any:
    """Poll ``condition`` until it returns something true (returned), or fail saying ``what`` never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:  # type: ignore[type-arg]
    """Terminate ``proc`` if it still runs, and wait for it; kill it if it does not stop in ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
