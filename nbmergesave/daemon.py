"""One background watcher per user: start, status, stop, add and remove roots.

The daemon is ``nbmergesave watch ROOT… --status-file …`` started in a new
session with its output in a log file. Its record (pid, roots, log, status
file) lives in the state folder (``$NBMERGESAVE_HOME``, else
``$XDG_STATE_HOME/nbmergesave``, else ``~/.local/state/nbmergesave``), mode 0700
with files 0600 whatever the umask. A record whose pid is gone, or is not our
watcher, is stale and replaced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .errors import DaemonError
from .notebook_io import write_atomic
from .private import open_private_log, private_dir, private_file, state_dir


def _record_file() -> Path:
    return state_dir() / "daemon.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid is not our watcher
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return b"nbmergesave" in b" ".join(cmdline) and b"watch" in cmdline


def _read_record() -> dict[str, Any] | None:
    try:
        record = json.loads(_record_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and _alive(int(record.get("pid", 0))) else None


def status() -> dict[str, Any] | None:
    """The running daemon's record and live figures, or ``None`` when none runs."""
    record = _read_record()
    if record is None:
        return None
    try:
        live = json.loads(Path(record["status_file"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        live = {}
    return {**record, **live, "running": True}


def start(roots: list[str], *, timeout: float = 60.0, extra: list[str] | None = None,
          engines: dict[str, str] | None = None) -> tuple[dict[str, Any], bool]:
    """Start the daemon for ``roots``; return (status, started). A running daemon is reported, not doubled.

    ``engines`` names the merge engine of some roots (the rest merge with ``cells``); the record keeps
    each root's, so adding and removing roots (a restart) keeps them.
    """
    running = status()
    if running is not None:
        return running, False
    folder = private_dir(state_dir())
    log_file, status_file = folder / "daemon.log", folder / "status.json"
    status_file.unlink(missing_ok=True)
    private_file(status_file)  # empty until the watcher is ready; write_atomic keeps its 0600
    resolved = [str(Path(r).resolve()) for r in roots]
    for r in resolved:
        if not Path(r).is_dir():
            raise DaemonError(f"'{r}' is not a folder")
    from .merge.options import engine_name

    chosen = {str(Path(r).resolve()): engine_name(e) for r, e in (engines or {}).items()}
    by_root = {r: chosen.get(r, "cells") for r in resolved}
    cmd = [sys.executable, "-m", "nbmergesave", "watch", *resolved, "--status-file", str(status_file),
           *[f"--engine-for={r}={e}" for r, e in by_root.items() if e != "cells"], *(extra or [])]
    log = open_private_log(log_file)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        os.close(log)
    record = {"pid": proc.pid, "roots": resolved, "engines": by_root, "log": str(log_file),
              "status_file": str(status_file)}
    write_atomic(private_file(_record_file()), json.dumps(record))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            raise DaemonError(f"the watcher exited at start: {tail[0] if tail else 'no output'} (log: {log_file})")
        if status_file.exists() and status_file.stat().st_size:
            return status() or record, True
        time.sleep(0.05)
    raise DaemonError(f"the watcher did not get ready in {timeout:.0f} s (log: {log_file})")


def stop(timeout: float = 20.0) -> dict[str, Any] | None:
    """Stop the daemon; return its last status, or ``None`` when none ran."""
    running = status()
    if running is None:
        _record_file().unlink(missing_ok=True)
        return None
    terminate(int(running["pid"]), timeout, _alive)
    _record_file().unlink(missing_ok=True)
    return running


def terminate(pid: int, timeout: float, alive: Any) -> None:
    """SIGTERM ``pid``, wait up to ``timeout`` while ``alive(pid)``, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        try:  # reap it when it is our child (tests start and stop in one process)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def change_roots(add: list[str] = (), remove: list[str] = (),  # type: ignore[assignment]
                 engine: str = "cells") -> dict[str, Any]:
    """Add roots (merging with ``engine``) or remove roots of the running daemon (it restarts; the stores
    keep everything, and the other roots their engines)."""
    running = status()
    if running is None:
        raise DaemonError("no daemon is running (hint: nbmergesave daemon start ROOT)")
    roots = list(running["roots"])
    engines = dict(running.get("engines") or {})
    for r in add:
        p = str(Path(r).resolve())
        engines[p] = engine
        if p not in roots:
            roots.append(p)
    gone = {str(Path(r).resolve()) for r in remove}
    unknown = gone - set(roots)
    if unknown:
        raise DaemonError(f"not watched: {', '.join(sorted(unknown))}")
    roots = [r for r in roots if r not in gone]
    stop()
    if not roots:
        return {"running": False, "roots": []}
    return start(roots, engines={r: engines.get(r, "cells") for r in roots})[0]
