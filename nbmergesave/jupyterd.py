"""`nbmergesave jupyter start|status|stop`: one background Jupyter server per folder tree, merging on save.

The server is jupyter_server (JupyterLab's UI when JupyterLab is installed),
bound to loopback unless told otherwise, with a generated token (handed over
in ``JUPYTER_TOKEN``, not on the command line every local user can read) and
the nbmergesave extension enabled through an extra config folder of ours
(``JUPYTER_CONFIG_PATH``), so the user's own Jupyter config still applies.
Records live in the state folder (see :func:`nbmergesave.private.state_dir`),
one per root, 0600 in a 0700 folder (they hold the token); a record whose
process is gone or does not answer is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .daemon import terminate
from .private import state_dir
from .errors import DaemonError
from .notebook_io import write_atomic
from .private import open_private_log, private_dir, private_file


def _records() -> Path:
    return state_dir() / "jupyter"


def _record_file(root: Path) -> Path:
    return _records() / (hashlib.sha256(str(root).encode()).hexdigest()[:16] + ".json")


def _answers(record: dict[str, Any], timeout: float = 2.0) -> bool:
    base = record["base_url"].rstrip("/")
    req = urllib.request.Request(f"http://{record['ip']}:{record['port']}{base}/api/status",
                                 headers={"Authorization": f"token {record['token']}"})
    try:  # never through a proxy from the environment: the request carries the token
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def status(root: str | None = None) -> list[dict[str, Any]]:
    """Running servers (all, or the one for ``root``); stale records are removed."""
    folder = _records()
    files = [_record_file(Path(root).resolve())] if root else sorted(folder.glob("*.json")) if folder.exists() else []
    running = []
    for f in files:
        try:
            record = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if _alive(int(record["pid"])) and _answers(record):
            running.append(record)
        elif not _alive(int(record["pid"])):
            f.unlink(missing_ok=True)
    return running


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def start(root: str, *, port: int | None = None, ip: str = "127.0.0.1", base_url: str = "/",
          timeout: float = 60.0) -> tuple[dict[str, Any], bool]:
    """Start (or report) the server for ``root``; returns (record, started) once it answers."""
    folder = Path(root).resolve()
    if not folder.is_dir():
        raise DaemonError(f"'{root}' is not a folder")
    if find_spec("jupyter_server") is None:
        raise DaemonError("jupyter_server is not installed (hint: pip install 'nbmergesave[jupyter]')")
    running = status(str(folder))
    if running:
        return running[0], False
    private_dir(state_dir())
    private_dir(_records())
    config = private_dir(_records() / "config")
    write_atomic(private_file(config / "jupyter_server_config.json"),
                 json.dumps({"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}}))
    base_url = "/" + base_url.strip("/") + ("/" if base_url.strip("/") else "")
    port = port or _free_port(ip)
    token = secrets.token_hex(24)
    app = "jupyterlab" if find_spec("jupyterlab") else "jupyter_server"
    record_file = _record_file(folder)
    log = record_file.with_suffix(".log")
    # The token goes through the environment, which only its owner can read (/proc/PID/environ),
    # never the command line, which every local user can (ps).
    env = {**os.environ, "JUPYTER_TOKEN": token,
           "JUPYTER_CONFIG_PATH": os.pathsep.join(filter(None, [str(config), os.environ.get("JUPYTER_CONFIG_PATH")]))}
    env.pop("JUPYTER_TOKEN_FILE", None)
    cmd = [sys.executable, "-m", app, "--no-browser", f"--ServerApp.ip={ip}", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={folder}",
           f"--ServerApp.base_url={base_url}", *(["--allow-root"] if os.geteuid() == 0 else [])]
    out = open_private_log(log)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=env)
    finally:
        os.close(out)
    host = ip if ip not in ("0.0.0.0", "::") else "127.0.0.1"
    record = {"pid": proc.pid, "port": port, "ip": host, "root": str(folder), "base_url": base_url, "token": token,
              "url": f"http://{host}:{port}{base_url}{'lab' if app == 'jupyterlab' else ''}?token={token}",  # no /tree without a UI
              "log": str(log), "app": app}
    write_atomic(private_file(record_file), json.dumps(record))  # 0600: it holds the token
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            record_file.unlink(missing_ok=True)
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            raise DaemonError(f"the Jupyter server exited at start: {tail[0] if tail else 'no output'} (log: {log})")
        if _answers(record, timeout=1.0):
            return record, True
        time.sleep(0.1)
    raise DaemonError(f"the Jupyter server did not answer in {timeout:.0f} s (log: {log})")


def stop(root: str, timeout: float = 20.0) -> dict[str, Any] | None:
    """Stop the server for ``root``; returns its record, or ``None`` when none ran."""
    record_file = _record_file(Path(root).resolve())
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    if _alive(pid):
        terminate(pid, timeout, _alive)
    record_file.unlink(missing_ok=True)
    return record
