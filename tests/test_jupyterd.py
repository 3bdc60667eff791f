"""`nbmergesave jupyter start|status|stop` against real processes."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmergesave import notebook_io
from nbmergesave.store import Store

from .conftest import cell, nbm, notebook

pytest.importorskip("jupyter_server")


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


MARKER_IN, MARKER_OUT = "INSIDE-MARKER-2b7d01", "OUTSIDE-MARKER-9c44e3"


def ask(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``path`` exactly as given (no normalising of ../ or %2e); (status, body and headers)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace") + "".join(f"{k}: {v}\n" for k, v in r.getheaders())
    finally:
        conn.close()


def test_token_required_loopback_only_and_nothing_outside_the_root(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "project"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell(f"print('{MARKER_IN}')", "x"))))
    Store.open(root).close()  # the version store inside the root is not served either
    outside = tmp_path / "private" / "analysis.ipynb"
    outside.parent.mkdir()
    outside.write_text(notebook_io.dumps(notebook(cell(f"print('{MARKER_OUT}')", "m"))))
    # Started under a permissive umask: what it writes is still private.
    started = subprocess.run([sys.executable, "-m", "nbmergesave", "jupyter", "start", str(root), "--json"],
                             capture_output=True, text=True, env=env, timeout=120, umask=0o000)
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    origin = f"http://127.0.0.1:{info['port']}"

    # The printed URL works; the API answers the token.
    status, body = ask(origin, urllib.parse.urlsplit(info["url"]).path + "?" + urllib.parse.urlsplit(info["url"]).query)
    assert status == 200, body[:300]
    token = {"Authorization": f"token {info['token']}"}
    status, body = ask(origin, "/api/contents/sub/nb.ipynb", token)
    assert status == 200 and MARKER_IN in body

    # Without the token (or with a wrong one) nothing is served.
    for path in ("/api/contents/sub/nb.ipynb", "/files/sub/nb.ipynb", "/api/contents", "/api/sessions",
                 "/api/kernels", "/api/terminals", "/api/status", "/api/nbconvert", "/nbconvert/html/sub/nb.ipynb"):
        for headers in ({}, {"Authorization": "token " + "0" * 48}, {"Cookie": "_xsrf=x"}):
            status, body = ask(origin, path, headers)
            refused = status in (401, 403) or (status == 302 and "Location: /login?next=" in body)
            assert refused, (path, headers, status)
            assert MARKER_IN not in body

    # With the token: ../, absolute, encoded paths, and the store inside the root, are refused.
    answers = []
    for path in ("/api/contents/../private/analysis.ipynb", "/api/contents/..%2fprivate%2fanalysis.ipynb",
                 "/api/contents/%2e%2e/private/analysis.ipynb", f"/api/contents/{outside}",
                 f"/api/contents/{urllib.parse.quote(str(outside), safe='')}", f"/api/contents//{outside}",
                 "/files/../private/analysis.ipynb", "/files/%2e%2e/private/analysis.ipynb", f"/files/{outside}",
                 f"/files/{urllib.parse.quote(str(outside), safe='')}", "/api/contents/sub/../../private/analysis.ipynb",
                 "/nbconvert/html/..%2fprivate%2fanalysis.ipynb", "/api/contents/.nbmergesave/index.sqlite",
                 "/files/.nbmergesave/index.sqlite"):
        status, body = ask(origin, path, token)
        assert status in (400, 403, 404), (path, status)
        answers.append(body)
    assert not [b for b in answers if MARKER_OUT in b]

    # Loopback only: the port does not answer on another address of this host.
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex(("127.0.0.2", info["port"])) != 0
    # The token is not on the server's command line, which every local user can read.
    assert info["token"] not in Path(f"/proc/{info['pid']}/cmdline").read_text(errors="replace")

    # What it wrote is its owner's only, though the umask was 000.
    state = Path(env["NBMERGESAVE_HOME"])
    for folder in (state, state / "jupyter", state / "jupyter" / "config"):
        assert oct(folder.stat().st_mode & 0o777) == "0o700", folder
    for f in (state / "jupyter").rglob("*"):
        if f.is_file():
            assert oct(f.stat().st_mode & 0o777) == "0o600", f
    assert Path(info["log"]).exists() and Path(info["log"]).stat().st_mode & 0o777 == 0o600


def test_another_address_still_requires_the_token(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell(f"print('{MARKER_IN}')", "x"))))
    with socket.socket() as proxy:  # a proxy in the environment never gets the token
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        proxy.settimeout(0.5)
        url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        started = nbm("jupyter", "start", str(root), "--ip", "127.0.0.2", "--json",
                      env={**env, "http_proxy": url, "HTTP_PROXY": url, "no_proxy": "", "NO_PROXY": ""})
        assert started.returncode == 0, started.stderr
        with pytest.raises(socket.timeout):
            proxy.accept()
    info = json.loads(started.stdout)
    assert info["ip"] == "127.0.0.2" and info["url"].startswith(f"http://127.0.0.2:{info['port']}/")
    origin = f"http://127.0.0.2:{info['port']}"
    status, body = ask(origin, "/api/contents/nb.ipynb")
    assert status == 403 and MARKER_IN not in body
    status, body = ask(origin, "/api/contents/nb.ipynb", {"Authorization": f"token {info['token']}"})
    assert status == 200 and MARKER_IN in body
