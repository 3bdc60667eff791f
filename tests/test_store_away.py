"""When the history store is away: saves through two Jupyter servers still merge, none fails, nothing is lost,
people are told, and the history is complete (and in order) once the store is back.

A real PostgreSQL (tests/pg.py, one per test: the tests stop, kill and restart it), two jupyter_server
processes reaching one folder by two paths (a bind mount as root, else a symlink), each with its own state
folder (as two hosts have: two spools, no shared lock), and four writers, two per server, each loading the
notebook once and saving its own cell again and again.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io
from nbmergesave.errors import StoreUnavailable
from nbmergesave.store import Store
from nbmergesave.store.where import configure

from . import pg
from .conftest import cell, notebook, wait_for, write
from .servers import JupyterProcess, free_port

pytestmark = [pytest.mark.skipif(pg.bindir() is None, reason="no PostgreSQL server binaries"),
              pytest.mark.usefixtures("fresh_config")]
WRITERS = 4
AWAY = "the history store is away"


class Host(JupyterProcess):
    """A jupyter_server with the extension, as one host of a team: its own state folder (and spool)."""

    def __init__(self, root: Path, folder: Path, url: str, *, env: dict[str, str] | None = None) -> None:
        config = folder / "jupyter"
        config.mkdir(parents=True, exist_ok=True)
        (config / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}, "NbMergeSave": {"store_url": url}}))
        self.state = folder / "state"
        super().__init__("jupyter_server", root, folder, {
            "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(config / "runtime"),
            "JUPYTER_DATA_DIR": str(config / "data"), "NBMERGESAVE_HOME": str(self.state),
            "NBMERGESAVE_STORE_URL": "", **(env or {})})

    def get(self, name: str) -> dict[str, Any]:
        for _ in range(100):  # a 400 would be a file caught half written: with atomic writes it never is
            try:
                return self.request("GET", f"/api/contents/{name}")["content"]  # type: ignore[no-any-return]
            except urllib.error.HTTPError as e:
                if e.code != 400:
                    raise
                time.sleep(0.01)
        return self.request("GET", f"/api/contents/{name}")["content"]  # type: ignore[no-any-return]

    def put(self, name: str, nb: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"/api/contents/{name}",  # type: ignore[no-any-return]
                            {"type": "notebook", "format": "json", "content": nb})

    def state_of(self, name: str) -> dict[str, Any]:
        return self.request("GET", "/nbmergesave/api/state?" + urllib.parse.urlencode({"path": name}))  # type: ignore[no-any-return]

    def spooled(self) -> bool:
        return any(self.state.glob("spool/*/index.sqlite"))


class Team:
    """Four writers through two hosts, each saving its own cell; what each saved, and what failed."""

    def __init__(self, hosts: list[Host], name: str = "shared.ipynb") -> None:
        self.hosts, self.name = hosts, name
        self.lines: dict[int, list[str]] = {k: [] for k in range(WRITERS)}
        self.failed: list[str] = []
        self.nbs: dict[int, dict[str, Any]] = {}
        self.done = 0
        self._lock = threading.Lock()

    def run(self, saves: int, *, seed: int, meanwhile: Callable[[], None] | None = None) -> None:
        """Each writer saves ``saves`` times; ``meanwhile`` runs in this thread while they do."""
        def writer(k: int) -> None:
            host, rng = self.hosts[k % 2], random.Random(seed * 100 + k)
            for _ in range(saves):
                try:
                    if k not in self.nbs or rng.random() < 0.2:
                        self.nbs[k] = host.get(self.name)  # load (again: "the file changed on disk")
                    time.sleep(rng.uniform(0.0, 0.05))
                    n = len(self.lines[k])
                    line = f"w{k} edit {n}"
                    nb = self.nbs[k]
                    next(c for c in nb["cells"] if c["id"] == f"w{k}")["source"] += "\n" + line
                    host.put(self.name, nb)
                    self.lines[k].append(line)
                except Exception as e:  # noqa: BLE001 - every failed save is reported
                    body = e.read().decode(errors="replace")[:300] if isinstance(e, urllib.error.HTTPError) else ""
                    self.failed.append(f"w{k}: {e!r} {body}")
                    self.nbs.pop(k, None)
                with self._lock:
                    self.done += 1

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(WRITERS)]
        for t in threads:
            t.start()
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            for t in threads:
                t.join(timeout=600)

    def all_lines(self) -> list[str]:
        return [line for k in sorted(self.lines) for line in self.lines[k]]


def _start(real: Path, alias: Path, tmp_path: Path, url: str, env: dict[str, str] | None = None,
           tag: str = "") -> list[Host]:
    return [Host(root, tmp_path / f"host-{i}{tag}", url, env=env) for i, root in enumerate((real, alias))]


def _caught_up(hosts: list[Host], name: str) -> bool:
    """Ask each server's state route (as open tabs do every second): that is also what tells it the store
    is back; true once none is degraded and no spool is left."""
    return all(h.state_of(name)["degraded"] is None and not h.spooled() for h in hosts)


def _nothing_lost(team: Team, real: Path, url: str, hosts: list[Host]) -> tuple[str, list[Any], list[str]]:
    """No save failed, no edit is missing from the file, no conflict (each writer edits its own cell: a conflict's
    message shows what the ``hosts`` said of their merges); the file's text, and the store's history of it with
    each version's text."""
    assert team.failed == [], team.failed
    final = (real / team.name).read_text()
    assert [line for line in team.all_lines() if line not in final] == [], "edits lost"
    assert "<<<<<<<" not in final, "each writer edits its own cell: no conflict is right\n" + _merges(hosts)
    configure(project_root=str(real))
    with Store.open(real, url) as store:
        history = store.history(real / team.name)
        texts = [store.content(v).decode() if v.sha256 else "" for v in history]
    return final, history, texts


def _check(team: Team, real: Path, url: str, hosts: list[Host], *, outages: int) -> list[Any]:
    """0 failed saves, 0 lost edits, every save in the store's history and in order, told once per outage."""
    final, history, texts = _nothing_lost(team, real, url, hosts)
    notebook_io.validate(json.loads(final))
    for k, lines in team.lines.items():
        # when the writer-k cell first ended with save n's line: every save is in the history, at the time it
        # was made (a spool replayed later keeps its versions' times), so in the order the writer made them.
        # (Version numbers interleave by host: each host replays its own spool when it finds the store back.)
        firsts = []
        for line in lines:
            ends = [v.time for v, t in zip(history, texts) if _cell_ends(t, k, line)]
            assert ends, f"save '{line}' is not in the history"
            firsts.append(min(ends))
        assert firsts == sorted(firsts), f"writer {k}'s saves out of order in the history: {firsts}"
    for host in hosts:
        said = host.output().count(AWAY)
        assert 1 <= said <= outages, f"told {said} times for {outages} outage(s):\n{host.output()[-3000:]}"
        assert pg.PASSWORD not in host.output()
        assert "Traceback" not in host.output(), host.output()[-5000:]
    return history


def _merges(hosts: list[Host]) -> str:
    """What each host said about its merges and the store's comings and goings, for a failure's message."""
    said = ("nbmergesave", "away", "back")
    return "\n".join(f"host {i}: {line}" for i, h in enumerate(hosts)
                     for line in h.output().splitlines() if any(w in line for w in said))[-20000:]


def _cell_ends(text: str, k: int, line: str) -> bool:
    try:
        nb = json.loads(text)
    except ValueError:
        return False
    cell_k = next((c for c in nb.get("cells", []) if c.get("id") == f"w{k}"), None)
    if cell_k is None:
        return False
    source = "".join(cell_k["source"]) if isinstance(cell_k["source"], list) else cell_k["source"]
    return source.rstrip("\n").endswith(line)


def _project(real: Path) -> None:
    write(real / "shared.ipynb", notebook(*[cell(f"# writer {k}", f"w{k}") for k in range(WRITERS)]))


# --- the database goes away mid-run, and comes back ------------------------------------------------------

@pytest.mark.parametrize("how", ["fast", "immediate", "sigkill"])
def test_the_database_goes_away_mid_run_and_nothing_is_lost(
        how: str, database: pg.Server, two_paths: tuple[Path, Path, str], tmp_path: Path) -> None:
    pytest.importorskip("jupyter_server")
    real, alias, mounted = two_paths
    _project(real)
    url = database.url("away")
    hosts = _start(real, alias, tmp_path, url)
    team = Team(hosts)
    try:
        team.run(3, seed=1)  # the database up

        def outage() -> None:
            wait_for(lambda: team.done >= 4, "a few saves", timeout=120)
            if how == "sigkill":
                database.kill()
            else:
                database.stop(how)
            # long enough for both hosts to find it away: a host whose save waits on the pool (3 s) while the
            # database is back already never sees an outage, and has nothing to tell
            wait_for(lambda: team.done >= 24 and all(AWAY in h.output() for h in hosts),
                     "saves while the database is away, through both hosts", timeout=300)
            database.start_when_possible()

        team.done = 0
        team.run(12, seed=2, meanwhile=outage)
        wait_for(lambda: _caught_up(hosts, team.name), "both servers to catch up", timeout=180, step=0.5)
        history = _check(team, real, url, hosts, outages=2)
        print(f"{how} via {mounted}: {len(team.all_lines())} saves, {len(history)} versions, "
              f"{sum(v.kind == 'merged' for v in history)} merges, "
              f"{sum(h.output().count('merging again') for h in hosts)} writes found the file changed and merged again")
        assert any(v.kind == "merged" for v in history)
        assert all("is back" in h.output() for h in hosts)
    finally:
        for h in hosts:
            h.stop()


# --- the store is away from the start ----------------------------------------------------------------------

def test_the_port_is_closed_at_start(database: pg.Server, two_paths: tuple[Path, Path, str], tmp_path: Path) -> None:
    pytest.importorskip("jupyter_server")
    real, alias, _ = two_paths
    _project(real)
    url = database.url("closed")
    database.stop()
    hosts = _start(real, alias, tmp_path, url)
    team = Team(hosts)
    try:
        for h in hosts:  # one clear line at start, and the server runs
            assert AWAY in h.output() and "cannot reach the PostgreSQL store" in h.output()
        state = hosts[0].state_of(team.name)["degraded"]
        assert state is not None and "cannot reach" in state["reason"] and state["since"].endswith("Z")
        team.run(8, seed=3)
        assert all(h.spooled() for h in hosts)
        database.start()
        wait_for(lambda: _caught_up(hosts, team.name), "both servers to catch up", timeout=180, step=0.5)
        _check(team, real, url, hosts, outages=1)
    finally:
        for h in hosts:
            h.stop()


@pytest.mark.parametrize("cause", ["wrong password", "driver missing"])
def test_a_store_refused_at_start_keeps_merging_and_catches_up_once_fixed(
        cause: str, database: pg.Server, two_paths: tuple[Path, Path, str], tmp_path: Path) -> None:
    pytest.importorskip("jupyter_server")
    real, alias, _ = two_paths
    _project(real)
    url = database.url("refused")
    env = None
    if cause == "wrong password":
        hosts = _start(real, alias, tmp_path, database.url("refused", password="not-the-password"))
        said = "refused the credentials"
    else:
        shadow = tmp_path / "no-psycopg"
        (shadow / "psycopg").mkdir(parents=True)
        (shadow / "psycopg" / "__init__.py").write_text("raise ImportError('No module named psycopg (test)')\n")
        env = {"PYTHONPATH": str(shadow)}
        hosts = _start(real, alias, tmp_path, url, env=env)
        said = "needs psycopg"
    team = Team(hosts)
    try:
        for h in hosts:
            assert AWAY in h.output() and said in h.output(), h.output()
        team.run(8, seed=4)
        assert all(h.spooled() for h in hosts)
        for h in hosts:
            h.stop()
        # fixed (the password, the driver installed): the same hosts, the same state folders, restarted
        hosts = [Host(h.root, h.state.parent, url) for h in hosts]
        wait_for(lambda: _caught_up(hosts, team.name), "both servers to catch up", timeout=180, step=0.5)
        assert not any(h.spooled() for h in hosts)
        _check_refused(team, real, url, hosts)
    finally:
        for h in hosts:
            h.stop()


def _check_refused(team: Team, real: Path, url: str, hosts: list[Host]) -> None:
    _, history, texts = _nothing_lost(team, real, url, hosts)
    for k, lines in team.lines.items():
        firsts = [min((v.time for v, t in zip(history, texts) if _cell_ends(t, k, line)), default=None)
                  for line in lines]
        assert None not in firsts, f"writer {k}: saves missing from the history: {firsts}"
        assert firsts == sorted(firsts), f"writer {k}'s saves out of order: {firsts}"
    assert any(v.kind == "merged" for v in history)


def test_a_free_port_is_refused_fast_and_a_save_still_succeeds(tmp_path: Path) -> None:
    """No database at all (nothing ever listens): the extension merges from the spool, one server."""
    pytest.importorskip("jupyter_server")
    root = tmp_path / "project"
    root.mkdir()
    _project(root)
    url = f"postgresql://ann:pw1@127.0.0.1:{free_port()}/db"
    host = Host(root, tmp_path / "host", url)
    try:
        a, b = host.get("shared.ipynb"), host.get("shared.ipynb")
        next(c for c in a["cells"] if c["id"] == "w0")["source"] += "\nA"
        next(c for c in b["cells"] if c["id"] == "w1")["source"] += "\nB"
        host.put("shared.ipynb", a)
        host.put("shared.ipynb", b)  # made from the same load: merged, from the spool
        sources = {c["id"]: c["source"] for c in notebook_io.read_notebook(root / "shared.ipynb")["cells"]}
        assert sources["w0"].endswith("\nA") and sources["w1"].endswith("\nB"), sources
        assert host.output().count(AWAY) == 1 and "pw1" not in host.output()
        assert host.spooled()
    finally:
        host.stop()


# --- the watcher (nbmergesave watch, the daemon, the Jupyter server's) ----------------------------------------

class _Told:
    """What a wait waited for, and what the watcher had said by the time it gave up (read then, not before)."""

    def __init__(self, what: str, said: list[str]) -> None:
        self.what, self.said = what, said

    def __str__(self) -> str:
        return f"{self.what} (the watcher said: {self.said})"

    def __format__(self, spec: str) -> str:  # wait_for formats it into its message when it gives up
        return str(self)


def test_the_watcher_merges_from_the_spool_while_its_store_is_away_and_catches_up(
        database: pg.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`nbmergesave watch` with a PostgreSQL store that stops mid-run: an agent's write made from an older
    version than the file's is still merged with what the file held (from the spool, seeded with what the
    watcher saw), never obeyed; once the database is back, the next look replays the spool, and the history
    holds the outage's versions."""
    from nbmergesave.watcher import Watcher

    monkeypatch.setenv("NBMERGESAVE_HOME", str(tmp_path / "state"))
    root = tmp_path / "project"
    root.mkdir()
    url = database.url("watch")
    configure(url=url, roots=[str(root)])
    nb = write(root / "nb.ipynb", notebook(cell("a = 0", "a"), cell("b = 0", "b"), cell("c = 0", "c")))
    said: list[str] = []
    watcher = Watcher([root], log=said.append, store_location=url, debounce=0.01)
    watcher.start()
    try:
        def history() -> list[Any]:
            try:
                with Store.open(root, url) as store:
                    return store.history(nb)
            except StoreUnavailable:  # (this process has just seen it away: it is asked again after a while)
                return []

        wait_for(lambda: len(history()) == 1, _Told("the first sighting", said), timeout=120)
        # (the person adds lines, as people type: a line rewritten with a new value each time could not be told, by
        # content, from a save made before the previous one, and the watcher's base search may take it for one)
        write(nb, notebook(cell("a = 0\na = 1", "a"), cell("b = 0", "b"), cell("c = 0", "c")))  # a person's save
        wait_for(lambda: len(history()) == 2, _Told("the person's save recorded", said), timeout=120)
        read_by_agent = nb.read_bytes()  # an agent reads the notebook now, and works on it for a while
        write(nb, notebook(cell("a = 0\na = 1\na = 2", "a"), cell("b = 0", "b"), cell("c = 0", "c")))  # and again
        wait_for(lambda: len(history()) == 3, _Told("the person's second save recorded", said), timeout=120)
        database.stop("fast")
        agent = notebook_io.parse_notebook(read_by_agent)
        agent["cells"][1]["source"] = "b = 1"  # made from what it read before the person's second save
        (root / "agent.tmp").write_text(notebook_io.dumps(agent))
        (root / "agent.tmp").replace(nb)
        wait_for(lambda: [c["source"] for c in notebook_io.read_notebook(nb)["cells"]] == ["a = 0\na = 1\na = 2", "b = 1", "c = 0"],
                 _Told("the agent's write merged with the person's save, from the spool", said), timeout=60)
        assert any(AWAY in line for line in said), said
        database.start_when_possible()
        write(nb, notebook(cell("a = 0\na = 1\na = 2", "a"), cell("b = 1", "b"), cell("c = 2", "c")))  # next save: catch-up
        wait_for(lambda: len(history()) >= 6, _Told("the spool replayed into the store, then the save", said), timeout=120)
        kinds = [v.kind for v in history()]
        assert "merged" in kinds, kinds
        wait_for(lambda: not any((tmp_path / "state").glob("spool/*/index.sqlite")), _Told("the spool emptied after its replay", said), timeout=120)
        assert any("is back" in line for line in said), said
        assert watcher.stats.errors == 0, watcher.stats.last_error
    finally:
        watcher.stop()
