"""Both merge engines at every door: the Python API, the CLI, the store, real git, the watcher and the daemon,
and a real Jupyter server; each with a clean merge and a conflict.

The conflict is a delete-versus-edit, because the two engines show it differently, so the file itself says
which engine ran: ours keeps the edited cell after a markdown note cell, nbdime writes
``<<<<<<< LOCAL CELL DELETED >>>>>>>`` as the first line of the edited cell. The clean merge (two writers,
two cells) reads the same from both; there the store's record of the engine tells them apart.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nbmergesave import merge, notebook_io, save_file
from nbmergesave.cli import cli
from nbmergesave.cli._common import ENGINE_CHOICES
from nbmergesave.errors import NbMergeSaveError
from nbmergesave.merge import ENGINES, MARK_KEY
from nbmergesave.report import markers
from nbmergesave.store import Store

from .conftest import cell, nbm, notebook, stop_process, wait_for, write
from .git import commit_branches
from .git import run_git as git

ENGINE_IDS = ["cells", "nbdime"]
CASES = ["clean", "conflict"]
NBDIME_DELETED = "<<<<<<< LOCAL CELL DELETED >>>>>>>"


def triplet(case: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(base, local, remote): local edits cell 1, remote cell 4; for ``conflict``, local also deletes cell 4.

    (Local's edit of cell 1 also tells the watcher, which infers the base from content, that the remote save
    was made from the base, not from local: without it, the save is as near to one as to the other.)
    """
    base = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(6)])
    local, remote = copy.deepcopy(base), copy.deepcopy(base)
    local["cells"][1]["source"] = "x1 = 'local'"
    if case == "conflict":
        del local["cells"][4]
    remote["cells"][4]["source"] = "x4 = 'remote'"
    return base, local, remote


def check_merged(nb: dict[str, Any], engine: str, case: str) -> None:
    """The file holds what ``engine`` writes for ``case`` (and is a valid notebook)."""
    notebook_io.validate(nb)
    sources = [c["source"] for c in nb["cells"]]
    if case == "clean":
        assert sources == ["x0 = 0", "x1 = 'local'", "x2 = 2", "x3 = 3", "x4 = 'remote'", "x5 = 5"]
        assert markers(nb) == []
    elif engine == "nbdime":
        assert sources == ["x0 = 0", "x1 = 'local'", "x2 = 2", "x3 = 3", f"{NBDIME_DELETED}\nx4 = 'remote'", "x5 = 5"]
        assert [m["cell"] for m in markers(nb)] == [4]
    else:
        assert sources[4].startswith("<<<<<<< nbmergesave: local deleted the next cell")
        assert nb["cells"][4]["metadata"][MARK_KEY] == {"conflict": "delete-edit"}
        assert sources[1] == "x1 = 'local'" and sources[5] == "x4 = 'remote'" and len(sources) == 7


def conflict_cell(engine: str) -> int:
    """Where the report puts the delete-versus-edit: the kept cell (after ours's note; nbdime's, marked itself)."""
    return 4 if engine == "nbdime" else 5


# --- the Python API ----------------------------------------------------------------------------------------------


def test_engine_names_the_old_name_and_a_typo() -> None:
    assert ENGINES == ENGINE_CHOICES == ("cells", "nbdime")  # the CLI's spelling of the list is the library's
    base, local, remote = triplet("conflict")
    assert merge(base, local, remote, engine="fast") == merge(base, local, remote)  # "fast": the name before 0.2
    with pytest.raises(NbMergeSaveError, match=r"unknown merge engine 'nbdim' \(hint: choose cells or nbdime\)"):
        merge(base, local, remote, engine="nbdim")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_merge_api_with_each_engine(engine: str, case: str) -> None:
    result = merge(*triplet(case), engine=engine)
    check_merged(result.notebook, engine, case)
    if case == "clean":
        assert result.unresolved == ()
    else:
        assert [(c.kind, c.cell) for c in result.unresolved] == [("delete-edit", conflict_cell(engine))]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_save_file_records_the_engine_with_the_merge(tmp_path: Path, engine: str, case: str) -> None:
    base, local, remote = triplet(case)
    path = write(tmp_path / "nb.ipynb", local)
    result = save_file(path, notebook_io.dumps(remote).encode(), notebook_io.dumps(base).encode(), engine=engine)
    assert result.merged
    check_merged(notebook_io.read_notebook(path), engine, case)
    with Store.open(tmp_path) as store:
        merged = store.get(path, result.version)
    assert (merged.kind, merged.engine, merged.conflicts) == ("merged", engine, int(case == "conflict"))


# --- the store, every backend ------------------------------------------------------------------------------------


def test_the_engine_of_a_merge_is_stored_and_read_back(store: Store) -> None:
    nb = store.root / "nb.ipynb"
    made = [store.add(nb, b"{}", "observed"), store.add(nb, b"[]", "merged", base=1, local=1, remote=1, engine="nbdime"),
            store.add(nb, b"[1]", "merged", base=1, local=2, remote=1, conflicts=2, engine="cells")]
    assert [v.engine for v in store.history(nb)] == [None, "nbdime", "cells"]
    assert store.history(nb) == made and store.get(nb, 2).engine == "nbdime"
    assert store.on_disk(nb).engine == "cells"  # type: ignore[union-attr]
    assert [v.to_dict()["engine"] for v in store.backend.all_versions()] == [None, "nbdime", "cells"]


def test_a_postgresql_store_of_schema_1_gains_the_engine_column(postgres_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from nbmergesave.store import pg_connect, postgres

    monkeypatch.setenv("NBMERGESAVE_PROJECT_ROOT", str(tmp_path))
    nb = tmp_path / "nb.ipynb"
    with Store.open(tmp_path, postgres_url) as store:
        store.add(nb, b"{}", "observed")
        store.add(nb, b"[]", "merged", base=1, local=1, remote=1)
        before = [{**v.to_dict(), "engine": None} for v in store.history(nb)]
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as nbmergesave wrote it before schema 2
        conn.execute("ALTER TABLE versions DROP COLUMN engine")
        conn.execute("UPDATE settings SET value = '1' WHERE name = 'pg_schema'")
    pg_connect._close_pools()  # a new process, as far as the store can tell: it migrates on first use
    postgres._schemas.clear()
    with Store.open(tmp_path, postgres_url) as store:
        assert [v.to_dict() for v in store.history(nb)] == before
        assert store.add(nb, b"[2]", "merged", base=1, local=2, remote=1, engine="nbdime").engine == "nbdime"
        assert store.history(nb)[-1].engine == "nbdime"
        assert store.backend.setting("pg_schema") == str(pg_connect.SCHEMA_VERSION) == "2"


# --- the CLI -----------------------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_cli_merge_with_engine(tmp_path: Path, engine: str, case: str) -> None:
    paths = [write(tmp_path / f"{side}.ipynb", nb) for side, nb in zip(("base", "local", "remote"), triplet(case))]
    out = tmp_path / "merged.ipynb"
    result = invoke("merge", *map(str, paths), "-o", str(out), "--engine", engine, "--report", str(tmp_path / "r.json"))
    assert result.exit_code == (0 if case == "clean" else 1), result.output
    check_merged(notebook_io.read_notebook(out), engine, case)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["clean"] is (case == "clean")
    assert [(c["kind"], c["cell"], c["left"]) for c in report["conflicts"] if c["left"]] == \
        ([] if case == "clean" else [("delete-edit", conflict_cell(engine), True)])
    if case == "conflict":
        assert "1 conflict left in the notebook" in result.stderr
        how = "nbdime's CELL DELETED line at its top says so" if engine == "nbdime" else "a note cell before it says so"
        assert f"cell {conflict_cell(engine) + 1} (id 'c4'): one side deleted a cell the other edited ({how})\n" \
            in result.stderr


def test_cli_merge_refuses_an_unknown_engine(tmp_path: Path) -> None:
    paths = [str(write(tmp_path / f"{side}.ipynb", nb)) for side, nb in zip("blr", triplet("clean"))]
    result = CliRunner().invoke(cli, ["merge", *paths, "--engine", "git"])
    assert result.exit_code == 2
    assert "Invalid value for '--engine': 'git' is not one of 'cells', 'nbdime'." in result.stderr


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_cli_save_then_history_and_review_show_the_engine(tmp_path: Path, engine: str, case: str) -> None:
    base, local, remote = triplet(case)
    path = write(tmp_path / "nb.ipynb", local)
    b, r = write(tmp_path / "loaded.ipynb", base), write(tmp_path / "edited.ipynb", remote)
    result = invoke("save", str(path), "--base", str(b), "--from", str(r), "--engine", engine)
    assert result.exit_code == (0 if case == "clean" else 1), result.output
    check_merged(notebook_io.read_notebook(path), engine, case)

    listed = json.loads(invoke("history", str(path), "--json").stdout)
    assert [(v["kind"], v["engine"]) for v in listed] == [("declared", None), ("observed", None), ("observed", None),
                                                          ("merged", engine)]
    last = invoke("history", str(path)).stdout.splitlines()[-1]
    assert last.startswith("v4 ") and " merged " in last
    assert last.endswith(f"base v1 + v3 + v2, 1 conflicts, engine {engine}" if case == "conflict"
                         else f"base v1 + v3 + v2, engine {engine}")
    review = invoke("review", str(path), "--text")
    assert review.exit_code == 0 and review.stdout.startswith(f"merge v4 (engine {engine})\n### the save (v2)")


# --- the git merge driver, through a real git ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_git_merge_with_the_driver_installed_with_an_engine(git_repo: Path, engine: str, case: str) -> None:
    installed = nbm("git-driver", "install", "--engine", engine, cwd=git_repo)
    assert installed.returncode == 0, installed.stderr
    command = git(git_repo, "config", "merge.nbmergesave.driver").stdout.strip()
    assert command.endswith(f"git-driver run {'--engine nbdime ' if engine == 'nbdime' else ''}%O %A %B %P")
    path = git_repo / "analysis.ipynb"
    commit_branches(git_repo, path, *triplet(case))
    result = git(git_repo, "merge", "--no-edit", "theirs", check=False)
    said = result.stdout + result.stderr
    if case == "clean":
        assert result.returncode == 0, said
        assert git(git_repo, "status", "--porcelain").stdout == ""
    else:
        assert result.returncode != 0 and "CONFLICT" in said
        assert "analysis.ipynb: 1 conflict left in the notebook" in said
        assert "analysis.ipynb" in git(git_repo, "diff", "--name-only", "--diff-filter=U").stdout
    check_merged(notebook_io.read_notebook(path), engine, case)


def test_installing_again_with_another_engine_changes_only_the_command_line(git_repo: Path) -> None:
    assert nbm("git-driver", "install", cwd=git_repo).returncode == 0
    again = nbm("git-driver", "install", "--engine", "nbdime", cwd=git_repo)
    assert again.stdout.strip() == "git config --local merge.nbmergesave.driver (engine nbdime)"
    assert "--engine nbdime" in git(git_repo, "config", "merge.nbmergesave.driver").stdout
    third = nbm("git-driver", "install", "--engine", "nbdime", cwd=git_repo)
    assert third.stdout.strip() == "git driver already installed"
    assert (git_repo / ".gitattributes").read_text() == "*.ipynb merge=nbmergesave\n"
    nbm("git-driver", "uninstall", cwd=git_repo)
    assert git(git_repo, "config", "--get-regexp", "merge", check=False).stdout == ""


# --- the watcher and the daemon ------------------------------------------------------------------------------------


class Watched:
    """A real ``nbmergesave watch`` process over ``roots``; its stderr in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log = tmp_path / "watch.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", *args, "--rescan", "600"],
                                         stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: "watching" in self.output() or self.proc.poll() is not None, "the watcher to start")
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


def two_writers(root: Path, name: str, case: str) -> Path:
    """Both writers loaded the base; the first saves (recorded), the second saves over it, made from the base."""
    base, local, remote = triplet(case)
    path = root / name
    with Store.open(root) as store:
        for nb, count in ((local, 2), (remote, 4)):  # observed base, observed local; then observed remote + merged
            path.write_text(notebook_io.dumps(nb), encoding="utf-8")
            wait_for(lambda: len(store.history(path)) >= count and store.on_disk(path) is not None
                     and store.on_disk(path).sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest(),
                     f"the watcher to take in the save of {name}")
    return path


def merged_with(root: Path, path: Path) -> str | None:
    with Store.open(root) as store:
        merges = [v for v in store.history(path) if v.kind == "merged"]
    assert len(merges) == 1, merges
    return merges[0].engine


@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_watch_with_an_engine_merges_overlapping_saves_with_it(tmp_path: Path, engine: str) -> None:
    root = tmp_path / "project"
    root.mkdir()
    for case in CASES:
        write(root / f"{case}.ipynb", triplet(case)[0])
    watcher = Watched(tmp_path, str(root), "--engine", engine)
    try:
        for case in CASES:
            path = two_writers(root, f"{case}.ipynb", case)
            check_merged(notebook_io.read_notebook(path), engine, case)
            assert merged_with(root, path) == engine
        by = f", by {engine}" if engine != "cells" else ""
        wait_for(lambda: "1 conflict(s) marked inline" + by in watcher.output(), "the conflict in the log")
        assert f"(clean{by})" in watcher.output()
    finally:
        watcher.stop()


def test_watch_engine_for_one_root(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        write(root / "nb.ipynb", triplet("conflict")[0])
    refused = nbm("watch", str(a), "--engine-for", f"{b}=nbdime")
    assert refused.returncode == 2 and "an engine is given for a folder not watched" in refused.stderr
    watcher = Watched(tmp_path, str(a), str(b), "--engine-for", f"{b}=nbdime")
    try:
        for root, engine in ((a, "cells"), (b, "nbdime")):
            path = two_writers(root, "nb.ipynb", "conflict")
            check_merged(notebook_io.read_notebook(path), engine, "conflict")
            assert merged_with(root, path) == engine
    finally:
        watcher.stop()


def test_the_daemon_records_each_roots_engine(tmp_path: Path, daemon_env: dict[str, str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        root.mkdir()
        for case in CASES:
            write(root / f"{case}.ipynb", triplet(case)[0])
    started = nbm("daemon", "start", str(a), "--engine", "nbdime", "--json", env=daemon_env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["engines"] == {str(a.resolve()): "nbdime"}
    added = nbm("daemon", "add", str(b), env=daemon_env)  # the default engine for b; a keeps nbdime
    assert added.returncode == 0, added.stderr
    status = json.loads(nbm("daemon", "status", "--json", env=daemon_env).stdout)
    assert status["engines"] == {str(a.resolve()): "nbdime", str(b.resolve()): "cells"}
    rows = {line.split()[0]: line.split()[1:] for line in nbm("daemon", "status", env=daemon_env).stdout.splitlines()}
    assert rows[str(a.resolve())] == ["2", "nbdime"] and rows[str(b.resolve())] == ["2", "cells"]
    for root, engine in ((a, "nbdime"), (b, "cells")):
        for case in CASES:
            path = two_writers(root, f"{case}.ipynb", case)
            check_merged(notebook_io.read_notebook(path), engine, case)
            assert merged_with(root, path) == engine
    wait_for(lambda: json.loads(nbm("daemon", "status", "--json", env=daemon_env).stdout)["merges"] == 4,
             "the daemon to count four merges")


# --- a real Jupyter server -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINE_IDS)
def test_jupyter_server_merges_a_save_with_the_configured_engine(tmp_path: Path, engine: str) -> None:
    pytest.importorskip("jupyter_server")
    from .servers import JupyterProcess

    root = tmp_path / "project"
    root.mkdir()
    config = tmp_path / "jupyter"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}}))
    for case in CASES:
        write(root / f"{case}.ipynb", triplet(case)[0])
    env = {"JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(config / "runtime"),
           "JUPYTER_DATA_DIR": str(config / "data")}
    args = [f"--NbMergeSave.engine={engine}"] if engine != "cells" else []  # cells: the trait's default
    server = JupyterProcess("jupyter_server", root, tmp_path, env, args)
    try:
        for case in CASES:
            name = f"{case}.ipynb"
            loaded = server.request("GET", f"/api/contents/{name}")
            _, local, remote = triplet(case)
            write(root / name, local)  # another writer saved meanwhile
            body = {"type": "notebook", "format": "json", "content": remote,
                    "nbmergesave_base": loaded["nbmergesave"]["sha256"]}
            reply = server.request("PUT", f"/api/contents/{name}", body)["nbmergesave"]
            assert reply["merged"] is True and reply["engine"] == engine
            assert [c["kind"] for c in reply["conflicts"]] == ([] if case == "clean" else ["delete-edit"])
            check_merged(notebook_io.read_notebook(root / name), engine, case)
            assert merged_with(root, root / name) == engine
        if engine == "nbdime":
            assert "merging overlapping saves with the nbdime engine" in server.output()
    finally:
        server.stop()
