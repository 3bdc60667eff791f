from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io

from . import git

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


def edited(nb: dict[str, Any], index: int, text: str) -> dict[str, Any]:
    """A copy of ``nb`` with cell ``index``'s source replaced: one writer's edit, the original left for the other."""
    out = copy.deepcopy(nb)
    out["cells"][index]["source"] = text
    return out


def sources(path: Path) -> list[str]:
    """The cell sources of the notebook on disk at ``path``."""
    return [c["source"] for c in notebook_io.read_notebook(path)["cells"]]


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


def _postgres() -> Iterator[Any]:
    """A real PostgreSQL server in a temporary folder (tests/pg.py), closed after use; a skip where there is none."""
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the whole session, stopped after it (each test its own schema: postgres_url)."""
    yield from _postgres()


@pytest.fixture
def database() -> Iterator[Any]:
    """A PostgreSQL server of this test's own, for the tests that stop, kill and restart it."""
    yield from _postgres()


@pytest.fixture
def postgres_url(postgres_server, request: pytest.FixtureRequest) -> str:  # type: ignore[no-untyped-def]
    """A URL to an empty schema of the session's server, for one test."""
    import re
    import uuid

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return postgres_server.url(name)


@pytest.fixture
def fresh_config() -> Iterator[None]:
    """This process's store settings (``configure``: URL, project root, roots) empty before the test and after it,
    so what one test configured cannot reach the next."""
    from nbmergesave.store.where import configure

    configure(url="", project_root="", roots=[])
    yield
    configure(url="", project_root="", roots=[])


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


@pytest.fixture
def two_paths(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """The project folder and a second path to it, as two hosts mount one volume: a bind mount where we may
    mount (root), else a symlink; the third item says which."""
    real, alias = tmp_path / "volume", tmp_path / "elsewhere"
    real.mkdir()
    how = "symlink"
    if os.geteuid() == 0:
        alias.mkdir()
        if subprocess.run(["mount", "--bind", str(real), str(alias)], capture_output=True).returncode == 0:
            how = "bind mount"
        else:
            alias.rmdir()
    if how == "symlink":
        alias.symlink_to(real, target_is_directory=True)
    try:
        yield real, alias, how
    finally:
        if how == "bind mount":
            subprocess.run(["umount", str(alias)], capture_output=True, timeout=30)


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository (branch main) at ``tmp_path / "repo"``, for tests that run git and nbmergesave's
    git commands as a user does: HOME is a folder of the test's own, so the user's git config stays out and
    ``--global`` writes inside the test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    repo.mkdir()
    git.run_git(repo, "init", "-q", "-b", "main")
    git.run_git(repo, "config", "user.email", "t@example.com")
    git.run_git(repo, "config", "user.name", "Test")
    return repo


# --- processes ------------------------------------------------------------------------


def nbm(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m nbmergesave ARGS`` in a process of its own, as a user runs it; its output captured."""
    return subprocess.run([sys.executable, "-m", "nbmergesave", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def daemon_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a test's own daemon (its state under tmp_path); the daemon is stopped after the test."""
    env = {**os.environ, "NBMERGESAVE_HOME": str(tmp_path / "state")}
    yield env
    nbm("daemon", "stop", env=env)


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


def stepped_back_by_a_plain_server(folder: Path, before: bytes, save: bytes) -> Path:
    """What jupyter_server's read does to a notebook it finds half written beside its ``.~`` copy: the
    file goes aside as ``NAME.invalid`` and the copy comes back; the writer then finishes into the file it
    had open (``NAME.invalid``)."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    path = folder / "nb.ipynb"
    (folder / ".~nb.ipynb").write_bytes(before)  # the plain server's copy, made before it writes in place
    with open(path, "wb") as f:
        f.write(save[:100])
        f.flush()
        FileContentsManager(root_dir=str(folder)).get("nb.ipynb")  # a plain server's GET, meanwhile
        f.write(save[100:])
    return path
