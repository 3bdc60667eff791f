"""The daemon end to end: a real background watcher, started and stopped by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from nbmergesave import notebook_io

from .conftest import cell, nbm, notebook, wait_for


def test_start_status_add_remove_stop(tmp_path: Path, daemon_env: dict[str, str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
    started = nbm("daemon", "start", str(a), "--json", env=daemon_env)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert info["roots"] == [str(a.resolve())]
    assert info["stores"] == [str(a.resolve() / ".nbmergesave")]
    assert Path(info["log"]).exists()
    pid = info["pid"]

    again = nbm("daemon", "start", str(a), "--json", env=daemon_env)
    assert json.loads(again.stdout)["pid"] == pid, "a second start reports the running daemon"

    status = json.loads(nbm("daemon", "status", "--json", env=daemon_env).stdout)
    assert status["notebooks"] == {str(a.resolve()): 1}
    assert {"version", "uptime", "merges", "conflicts", "last_error"} <= set(status)
    assert status["pending"] == 0  # nothing saved yet, nothing waiting

    added = nbm("daemon", "add", str(b), env=daemon_env)
    assert added.returncode == 0, added.stderr
    status = wait_for(lambda: (s := json.loads(nbm("daemon", "status", "--json", env=daemon_env).stdout)).get("notebooks", {}).get(str(b.resolve())) and s,
                      "the daemon to track the added root")
    assert status["roots"] == [str(a.resolve()), str(b.resolve())]

    table = nbm("daemon", "status", env=daemon_env).stdout
    assert "notebooks" in table and str(b.resolve()) in table

    assert nbm("daemon", "remove", str(a), env=daemon_env).returncode == 0
    assert json.loads(nbm("daemon", "status", "--json", env=daemon_env).stdout)["roots"] == [str(b.resolve())]

    assert nbm("daemon", "stop", env=daemon_env).stdout.startswith("stopped pid")
    gone = nbm("daemon", "status", "--json", env=daemon_env)
    assert (gone.returncode, json.loads(gone.stdout)) == (1, {"running": False})


def test_stale_record_is_replaced(tmp_path: Path, daemon_env: dict[str, str]) -> None:
    state = Path(daemon_env["NBMERGESAVE_HOME"])
    state.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / "daemon.json").write_text(json.dumps({"pid": dead.pid, "roots": [], "log": "", "status_file": ""}))
    assert nbm("daemon", "status", "--json", env=daemon_env).returncode == 1
    started = nbm("daemon", "start", str(tmp_path), "--json", env=daemon_env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["pid"] != dead.pid
