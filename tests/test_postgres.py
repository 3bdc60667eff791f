"""A team's store in PostgreSQL: real server (tests/pg.py), real jupyter_server processes, real CLI.

The store's own contract runs against both backends in test_store_backends.py;
here is what only a shared store has: refusals of bad URLs and credentials,
portable notebook names, locks across servers reaching the folder by two
paths, the database going away mid-run, and copying histories between backends.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io, sync_file
from nbmergesave.cli import cli
from nbmergesave.store import Store, sha256
from nbmergesave.store.where import PROJECT_MARKER, configure

from . import pg
from .conftest import cell, notebook, wait_for, write
from .servers import free_port

pytestmark = pytest.mark.usefixtures("fresh_config")


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def one_line(result: Any) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


# --- refusals: one line, exit 2, no password ------------------------------------------------

def test_wrong_password_is_one_line_exit_2_without_the_password(postgres_server: pg.Server, tmp_path: Path) -> None:
    (tmp_path / PROJECT_MARKER).touch()
    nb = write(tmp_path / "nb.ipynb", notebook(cell("a = 1", "a")))
    result = run("history", str(nb), "--store", postgres_server.url(password="not-the-password"))
    assert result.exit_code == 2
    line = one_line(result)
    assert "refused the credentials" in line and "password authentication failed" in line, line
    assert "not-the-password" not in result.output and "postgres:***@" in line


def test_a_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(cell("a = 1", "a")))
    result = run("history", str(nb), "--store", "mysql://ann:hunter2@db/notes")
    assert result.exit_code == 2
    assert one_line(result) == ("Error: 'mysql://ann:***@db/notes' is not a PostgreSQL URL "
                                "(hint: postgresql://user@host:5432/dbname, or a folder for the embedded store)")
    result = run("watch", str(tmp_path), "--store", "sqlite://x")
    assert result.exit_code == 2 and "is not a PostgreSQL URL" in one_line(result)


def test_a_server_that_does_not_answer_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / PROJECT_MARKER).touch()
    nb = write(tmp_path / "nb.ipynb", notebook(cell("a = 1", "a")))
    port = free_port()  # nothing listens there
    result = run("history", str(nb), env={"NBMERGESAVE_STORE_URL": f"postgresql://ann:pw1@127.0.0.1:{port}/db"})
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith(f"Error: cannot reach the PostgreSQL store at 'postgresql://ann:***@127.0.0.1:{port}/db'")
    assert "pw1" not in line


def test_without_a_project_root_the_store_refuses_and_says_how_to_name_one(postgres_url: str, tmp_path: Path) -> None:
    nb = write(tmp_path / "nb.ipynb", notebook(cell("a = 1", "a")))
    result = run("history", str(nb), "--store", postgres_url)
    assert result.exit_code == 2
    assert "cannot tell which project" in one_line(result) and PROJECT_MARKER in result.output
    result = run("history", str(nb), "--store", postgres_url, "--project-root", str(tmp_path / "elsewhere"))
    assert result.exit_code == 2 and "is not inside the project root" in one_line(result)
    result = run("history", str(nb), "--store", postgres_url, "--project-root", str(tmp_path))
    assert result.exit_code == 0 and result.output == ""  # a project with no history yet


# --- portable names: one history whatever path a host mounts the folder at -------------------------

def test_a_notebook_has_one_history_through_two_mount_paths(postgres_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "volume"
    (real / "analysis").mkdir(parents=True)
    (real / PROJECT_MARKER).touch()
    alias = tmp_path / "mnt-elsewhere"
    alias.symlink_to(real, target_is_directory=True)
    nb = write(real / "analysis" / "nb.ipynb", notebook(cell("a = 1", "a")))
    env = {"NBMERGESAVE_STORE_URL": postgres_url}
    with Store.open(real / "analysis", postgres_url) as store:
        assert store.root == real.resolve()
        sync_file(store, nb)
    write(alias / "analysis" / "nb.ipynb", notebook(cell("a = 2", "a")))
    result = run("history", str(Path(os.path.abspath(alias)) / "analysis" / "nb.ipynb"), "--json", env=env)
    assert result.exit_code == 0, result.output
    assert [v["path"] for v in json.loads(result.output)] == ["analysis/nb.ipynb"]
    monkeypatch.setenv("NBMERGESAVE_STORE_URL", postgres_url)  # the Python API honours it too
    from nbmergesave import open_store

    with open_store(alias / "analysis" / "nb.ipynb") as store:
        assert store.backend.name == "postgresql" and len(store.history(alias / "analysis" / "nb.ipynb")) == 1
    assert not (real / ".nbmergesave").exists() and not (real / "analysis" / ".nbmergesave").exists()


# --- two servers, two paths, concurrent writers --------------------------------------------------

def _get(server: Any, name: str) -> dict[str, Any]:
    """GET a notebook; a 400 means another server was rewriting it in place at that moment: ask again."""
    import urllib.error

    for _ in range(100):
        try:
            return server.get(name)  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            if e.code != 400:
                raise
            time.sleep(0.01)
    return server.get(name)  # type: ignore[no-any-return]


def _servers(roots: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, *,
             via: str = "environment") -> list[Any]:
    """jupyter_servers with the extension, told the URL by ``$NBMERGESAVE_STORE_URL`` or by ``c.NbMergeSave.store_url``."""
    from .test_jupyter import Server

    settings: dict[str, Any] = {"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}}
    if via == "environment":
        monkeypatch.setenv("NBMERGESAVE_STORE_URL", url)
    else:
        monkeypatch.delenv("NBMERGESAVE_STORE_URL", raising=False)
        settings["NbMergeSave"] = {"store_url": url}
    config = tmp_path / "jupyter"
    config.mkdir(exist_ok=True)
    (config / "jupyter_server_config.json").write_text(json.dumps(settings))
    return [Server(root, config) for root in roots]


def test_two_servers_through_two_paths_keep_every_edit_in_one_history(
        two_paths: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str) -> None:
    pytest.importorskip("jupyter_server")
    real, alias, how = two_paths
    writers, saves = 4, 12
    cells = [cell(f"# writer {k}", f"w{k}") for k in range(writers)]
    write(real / "shared.ipynb", notebook(*cells))
    servers = _servers([real, alias], tmp_path, monkeypatch, postgres_url, via="config")
    lines: dict[int, list[str]] = {k: [] for k in range(writers)}
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        server, rng = servers[k % 2], random.Random(k)
        try:
            nb = _get(server, "shared.ipynb")
            for n in range(saves):
                time.sleep(rng.uniform(0.0, 0.1))
                if rng.random() < 0.2:
                    nb = _get(server, "shared.ipynb")  # "file changed on disk": reload
                line = f"w{k} edit {n}"
                next(c for c in nb["cells"] if c["id"] == f"w{k}")["source"] += "\n" + line
                server.put("shared.ipynb", nb)
                lines[k].append(line)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    try:
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        final = (real / "shared.ipynb").read_text()
        notebook_io.validate(json.loads(final))
        missing = [line for k in lines for line in lines[k] if line not in final]
        print(f"two paths by {how}")
        assert missing == [], f"{how}: edits lost: {missing}"
        assert sum(map(len, lines.values())) == writers * saves
        configure(roots=[str(real), str(alias)])
        with Store.open(real, postgres_url) as a, Store.open(alias, postgres_url) as b:
            history = a.history(real / "shared.ipynb")
            assert history == b.history(alias / "shared.ipynb")  # one history, whichever path
            assert {v.path for v in a.backend.all_versions()} == {"shared.ipynb"}  # both servers: one name
            assert any(v.kind == "merged" for v in history), "no save overlapped another: nothing was tested"
            assert a.latest_with(real / "shared.ipynb", sha256((real / "shared.ipynb").read_bytes())) is not None
        for server in servers:
            assert "history in the PostgreSQL store at postgresql://postgres:***@" in server.output()
            assert pg.PASSWORD not in server.output()
        # nothing of ours in the project folder: the notebook, and what Jupyter itself writes (its
        # checkpoints; NAME.invalid when a GET caught another server's in-place write)
        ours = [p.name for p in real.iterdir() if p.name not in (".ipynb_checkpoints", "shared.ipynb.invalid")]
        assert ours == ["shared.ipynb"]
    finally:
        for server in servers:
            server.stop()


# --- the database goes away mid-run --------------------------------------------------------------

def test_saves_reach_the_disk_while_the_database_is_down_and_the_store_catches_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: pg.Server) -> None:
    pytest.importorskip("jupyter_server")
    root = tmp_path / "project"
    root.mkdir()
    write(root / "nb.ipynb", notebook(cell("# a", "a"), cell("# b", "b")))
    url = database.url("restarts")
    servers = _servers([root, root], tmp_path, monkeypatch, url)
    saved: list[str] = []
    took: dict[str, list[float]] = {}  # seconds per save, printed (not asserted: no timed assertions)

    def save(n: int, phase: str) -> None:
        server = servers[n % 2]  # each save made from what is on disk now, through either server
        nb = _get(server, "nb.ipynb")
        line = f"save {n} ({phase})"
        nb["cells"][n % 2]["source"] += "\n" + line
        started = time.monotonic()
        server.put("nb.ipynb", nb)
        took.setdefault(phase, []).append(time.monotonic() - started)
        assert line in (root / "nb.ipynb").read_text(), f"{line} did not reach the disk"
        saved.append(line)

    try:
        for n in range(6):
            save(n, "database up")
        database.stop()
        for n in range(6, 12):
            save(n, "database down")
        database.start()
        configure(roots=[str(root)])
        wait_for(lambda: _answers(url), "the server to answer again", timeout=60)

        def stored() -> str:
            with Store.open(root, url) as store:
                return "".join(store.content(v).decode() for v in store.history(root / "nb.ipynb") if v.sha256)

        def caught_up() -> bool:  # keep saving, as people do, until a save is recorded again
            save(len(saved), "database back")
            time.sleep(0.2)
            return saved[-1] in stored()

        wait_for(caught_up, "the store to catch up", timeout=120)
        final = (root / "nb.ipynb").read_text()
        assert [line for line in saved if line not in final] == []
        # the store caught up from the file: the last save made while it was down is in it
        assert "save 11 (database down)" in stored()
        logs = "".join(server.output() for server in servers)
        print({phase: f"{len(t)} saves, longest {max(t):.2f} s" for phase, t in took.items()})
        assert "cannot reach the PostgreSQL store at 'postgresql://postgres:***@" in logs
        assert pg.PASSWORD not in logs
    finally:
        for server in servers:
            server.stop()


def _answers(url: str) -> bool:
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=2).close()
        return True
    except Exception:
        return False


# --- SQLite -> PostgreSQL -> SQLite, version by version -------------------------------------------

def _build_sqlite_history(root: Path) -> None:
    """A store with every kind of row: merges, declarations, pins, a deletion, a rename, torn bytes."""
    nb = write(root / "nb.ipynb", notebook(cell("a = 0", "a"), cell("b = 0", "b")))
    with Store.open(root) as store:
        sync_file(store, nb)
        loaded = notebook_io.read_notebook(nb)
        write(nb, notebook(cell("a = 1", "a"), cell("b = 0", "b")))
        sync_file(store, nb)
        loaded["cells"][1]["source"] = "b = 2"  # made from the first version: merged
        write(nb, loaded)
        assert sync_file(store, nb).action == "merged"
        store.declare(nb, sha256(b"later"), store.history(nb)[0].sha256 or "", "jupyter")
        store.pin(nb, 1)
        store.add(nb, b'{"torn": 1}\n{"tail": 2}', "torn", on_disk=False)
        other = write(root / "sub" / "old.ipynb", notebook(cell("c = 1", "c"))) if (root / "sub").mkdir() is None else None
        sync_file(store, other)  # type: ignore[arg-type]
        store.rename(other, root / "sub" / "new.ipynb")  # type: ignore[arg-type]
        store.add(root / "gone.ipynb", b"{}", "observed")
        store.add(root / "gone.ipynb", None, "deleted")


def _same_history(a: Store, b: Store) -> int:
    versions = a.backend.all_versions()
    assert versions == b.backend.all_versions()
    for v in versions:
        assert b.get(b.root / v.path, v.version) == v
        if v.sha256 is not None:
            assert b.content(v) == a.content(v)
    assert a.tracked() == b.tracked()
    assert a.pinned() == b.pinned()
    for table in ("on_disk", "declarations", "pins", "settings"):
        rows = [sorted(r for r in store.backend.rows(table) if r[0] not in ("schema", "pg_schema"))  # type: ignore[attr-defined]
                for store in (a, b)]
        assert rows[0] == rows[1], table
    # the lineage index was rebuilt: a version is found by the cells it shares
    nb = next(v for v in versions if v.path == "nb.ipynb" and v.kind == "merged")
    cells = {c.get("id"): sha256(str(c["source"]).encode()) for c in notebook_io.parse_notebook(a.content(nb))["cells"]}
    assert nb in b.sharing_cells(b.root / "nb.ipynb", cells, 50)
    return len(versions)


def test_store_copy_sqlite_to_postgresql_and_back_loses_nothing(postgres_url: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    _build_sqlite_history(root)
    result = run("store", "copy", str(root), postgres_url)
    assert result.exit_code == 0, result.output
    assert "every version verified" in result.output and pg.PASSWORD not in result.output
    configure(project_root=str(root))
    with Store.open(root, root / ".nbmergesave") as sqlite, Store.open(root, postgres_url) as postgres:
        assert _same_history(sqlite, postgres) == 8
        assert postgres.retention() == sqlite.retention()
    # the store commands on the copy, by URL
    status = run("status", str(root), "--store", postgres_url, "--json")
    assert status.exit_code == 0, status.output
    assert (json.loads(status.output)["versions"], json.loads(status.output)["pinned"]) == (8, 1)
    assert pg.PASSWORD not in status.output and "postgres:***@" in json.loads(status.output)["location"]
    dry = run("gc", str(root), "--store", postgres_url, "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.output)["versions_removed"] == 0
    listed = run("pin", str(root / "nb.ipynb"), "--store", postgres_url, "--project-root", str(root), "--list")
    assert listed.output == "v1\n"
    checked = run("fsck", str(root), "--store", postgres_url, "--check-only")
    assert checked.exit_code == 0, checked.output
    again = run("store", "copy", str(root), postgres_url)
    assert again.exit_code == 2 and "already holds 8 versions" in one_line(again)
    back = tmp_path / "restored"
    back.mkdir()
    result = run("store", "copy", postgres_url, str(back), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["versions"] == 8
    with Store.open(root, postgres_url) as postgres, Store.open(back, back / ".nbmergesave") as sqlite:
        _same_history(postgres, sqlite)
        assert sqlite.fsck()["ok"]
    missing = run("store", "copy", str(tmp_path / "restored" / "sub-nothing"), postgres_url)
    assert missing.exit_code == 2 and "neither a PostgreSQL URL nor a folder" in one_line(missing)


def test_soak_through_two_servers_and_a_watcher_on_one_postgresql_store(postgres_url: str) -> None:
    """benchmarks/soak.py --jupyter --store URL, short: every save stored, every edit in the file."""
    import sys

    pytest.importorskip("jupyter_server")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import soak

    result = soak.run(writers=2, saves=12, waits=(0.05, 0.3), seed=7, jupyter=True, timeout=180, store=postgres_url)
    print(result.report())
    assert result.valid and result.saves == 24
    assert (result.lost, result.unseen, result.missing) == ([], [], 0)


def test_a_watcher_of_one_subfolder_leaves_the_rest_of_the_project_alone(postgres_url: str, tmp_path: Path) -> None:
    """Keys are relative to the project root (the marker above the watched folder): a rescan
    records what is in its folder, and never takes another folder's notebooks for deleted."""
    from nbmergesave.watcher import Watcher

    project = tmp_path / "team"
    (project / "mine").mkdir(parents=True)
    (project / "theirs").mkdir()
    (project / PROJECT_MARKER).touch()
    theirs = write(project / "theirs" / "nb.ipynb", notebook(cell("t = 1", "t")))
    mine = write(project / "mine" / "nb.ipynb", notebook(cell("m = 1", "m")))
    with Store.open(project / "theirs", postgres_url) as store:  # another host records its notebook
        sync_file(store, theirs)
    watcher = Watcher([project / "mine"], store_location=postgres_url)
    try:
        watcher.initial_scan()
        assert watcher.tracked() == {str((project / "mine").resolve()): 1}
        watcher._rescan()
        with Store.open(project, postgres_url) as store:
            assert store.tracked() == ["mine/nb.ipynb", "theirs/nb.ipynb"]
            assert [v.kind for v in store.history(theirs)] == ["observed"]
            assert store.on_disk(mine).sha256 == sha256(mine.read_bytes())  # type: ignore[union-attr]
    finally:
        for store in watcher.stores.values():
            store.close()


def test_a_watcher_outlives_the_database_and_catches_up_when_it_returns(tmp_path: Path, database: pg.Server) -> None:
    from nbmergesave.watcher import Watcher

    url = database.url("watcher")
    root = tmp_path / "project"
    root.mkdir()
    first = write(root / "a.ipynb", notebook(cell("a = 1", "a")))
    lines: list[str] = []
    configure(roots=[str(root)])  # as `nbmergesave watch ROOT` does: ROOT is the project root
    watcher = Watcher([root], store_location=url, rescan=0.5, log=lines.append)

    def recorded(path: Path) -> bool:
        try:
            with Store.open(root, url) as store:
                current = store.on_disk(path)
                return current is not None and current.sha256 == sha256(path.read_bytes())
        except Exception:
            return False

    try:
        watcher.start()
        wait_for(lambda: recorded(first), "the first save recorded", timeout=60)
        database.stop()
        write(first, notebook(cell("a = 2", "a")))  # saved while the database is down
        second = write(root / "b.ipynb", notebook(cell("b = 1", "b")))
        wait_for(lambda: any("cannot reach the PostgreSQL store" in line for line in lines), "the watcher to say so",
                 timeout=60)
        database.start()
        wait_for(lambda: recorded(first) and recorded(second), "both saves recorded", timeout=120)  # the rescans caught up
        assert watcher._thread.is_alive()  # the worker went on through the outage
        assert not any(pg.PASSWORD in line for line in lines)
    finally:
        watcher.stop()
        for store in watcher.stores.values():
            store.close()


def test_pause_with_a_postgresql_store_marks_this_host_only_and_writes_nothing_in_the_project(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database store has no folder: the pause marker is a file in the user's state folder, per watched root."""
    from nbmergesave.watcher import Watcher

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("NBMERGESAVE_STORE_URL", postgres_url)
    project = tmp_path / "team"
    project.mkdir()
    (project / PROJECT_MARKER).touch()
    write(project / "nb.ipynb", notebook(cell("x = 1", "x")))
    watcher = Watcher([project], store_location=postgres_url)
    try:
        nb = (project / "nb.ipynb").resolve()
        assert not watcher.paused(nb)
        result = run("pause", str(project))
        assert result.exit_code == 0, result.output
        marker = Path(result.output.rsplit("(", 1)[1].rstrip(")\n"))
        assert marker.is_relative_to(tmp_path / "state") and marker.exists()
        assert watcher.paused(nb)
        assert run("resume", str(project)).exit_code == 0 and not marker.exists()
        assert sorted(p.name for p in project.iterdir()) == [PROJECT_MARKER, "nb.ipynb"]
    finally:
        for store in watcher.stores.values():
            store.close()
