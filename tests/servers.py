"""Real Jupyter server processes for the tests: on loopback, with a token, waited on until they answer, stopped."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .conftest import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterProcess:
    """``python -m MODULE`` serving ``root`` on 127.0.0.1 with a token, its output in ``log_path``."""

    def __init__(self, module: str, root: Path, log_folder: Path, env: dict[str, str], args: Sequence[str] = (),
                 port: int | None = None, token: str | None = None, timeout: float = 60,
                 python: Sequence[str] | None = None, umask: int = -1) -> None:
        """``python``: the command that runs a module as ``python -m`` does (default: this interpreter), for
        example one that runs it as another user (tests/test_shared_folder.py)."""
        self.root = root
        self.port, self.token = port or free_port(), token or secrets.token_hex(16)
        self.log_path = log_folder / f"{module}-{self.port}-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*(python or (sys.executable, "-m")), module, "--no-browser", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", *args, *(["--allow-root"] if os.geteuid() == 0 and python is None else [])],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "JUPYTER_PLATFORM_DIRS": "1", **env}, umask=umask)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{module} did not start:\n" + self.output())
                time.sleep(0.1)

    def request(self, method: str, path: str, body: Any = None, token: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **({"Authorization": f"token {self.token}"} if token else {})}
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.log.close()
