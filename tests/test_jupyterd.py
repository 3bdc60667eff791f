"""`nbmergesave jupyter start|status|stop` against real processes."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmergesave import notebook_io

from .conftest import cell, notebook

pytest.importorskip("jupyter_server")


def nbm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbmergesave", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    e = {**os.environ, "NBMERGESAVE_HOME": str(tmp_path / "state")}
    yield e
    nbm("jupyter", "stop", str(tmp_path / "project"), env=e)


def test_start_status_stop(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
    started = nbm("jupyter", "start", str(root), "--base-url", "/proxy/me", "--json", env=env)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    assert info["root"] == str(root.resolve()) and info["base_url"] == "/proxy/me/" and info["ip"] == "127.0.0.1"
    assert f"token={info['token']}" in info["url"] and Path(info["log"]).exists()

    req = urllib.request.Request(f"http://127.0.0.1:{info['port']}/proxy/me/api/contents/sub/nb.ipynb",
                                 headers={"Authorization": f"token {info['token']}"})
    with urllib.request.urlopen(req, timeout=30) as response:
        assert json.loads(response.read())["content"]["cells"][0]["source"] == "x = 1"  # the whole tree is served

    again = nbm("jupyter", "start", str(root), "--json", env=env)
    assert json.loads(again.stdout)["pid"] == info["pid"], "a second start reports the running server"
    status = json.loads(nbm("jupyter", "status", str(root), "--json", env=env).stdout)
    assert status["pid"] == info["pid"]
    assert "nbmergesave | extension was successfully loaded" in Path(info["log"]).read_text()

    assert nbm("jupyter", "stop", str(root), env=env).stdout.startswith(f"stopped pid {info['pid']}")
    with socket.socket() as s:  # the port is free again: nobody listens on it (TIME_WAIT aside, as servers do)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", info["port"]))
        s.listen()
    gone = nbm("jupyter", "status", str(root), "--json", env=env)
    assert (gone.returncode, gone.stdout.strip()) == (1, "[]")


def test_stale_record_is_replaced(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "project"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = Path(env["NBMERGESAVE_HOME"]) / "jupyter"
    state.mkdir(parents=True)
    name = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16] + ".json"
    (state / name).write_text(json.dumps({"pid": dead.pid, "port": 1, "ip": "127.0.0.1", "root": str(root),
                                          "base_url": "/", "token": "x", "url": "", "log": ""}))
    assert nbm("jupyter", "status", str(root), env=env).returncode == 1
    started = nbm("jupyter", "start", str(root), "--json", env=env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["pid"] != dead.pid
