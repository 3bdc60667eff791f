"""A real PostgreSQL server for the tests: Debian's binaries, a temporary data folder, a free loopback port.

Started once per test session (``postgres_server`` fixture in conftest.py) and
stopped after it. As root, the server runs as the ``postgres`` user (it
refuses to run as root). Password authentication over TCP, so the tests can
check what a wrong password does; no Unix socket.

Also used by ``benchmarks/soak.py --store temp``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from .servers import free_port

PASSWORD = "s3cret-test-pw"
USER = "postgres"


def bindir() -> Path | None:
    """Where initdb/pg_ctl are: ``$PG_BINDIR``, Debian's ``/usr/lib/postgresql/N/bin`` (newest), or ``$PATH``."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


class Server:
    """One PostgreSQL cluster in a temporary folder. ``url(schema)``: a URL for one schema of it."""

    def __init__(self) -> None:
        self.bin = bindir()
        if self.bin is None:
            raise RuntimeError("no PostgreSQL server binaries (Debian: apt-get install -y postgresql)")
        self.as_root = os.geteuid() == 0
        self.tmp = Path(tempfile.mkdtemp(prefix="nbms-pg-"))
        self.data = self.tmp / "data"
        self.log = self.tmp / "server.log"
        self.port = free_port()
        pwfile = self.tmp / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            import pwd

            pw = pwd.getpwnam("postgres")
            for p in (self.tmp, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={pwfile}",
                  "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.tmp)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c fsync=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``fast`` (sessions rolled back, a clean shutdown) or ``immediate`` (as a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster, then wait until nothing listens (its backends exit once they notice; see
        :meth:`start_when_possible`)."""
        import signal
        import time

        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (self.running() or _alive(pid)):
            time.sleep(0.05)

    def start_when_possible(self, timeout: float = 60) -> None:
        """Start again after a kill (a stale shared memory block may hold the start back for a moment)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def url(self, schema: str | None = None, *, password: str = PASSWORD, database: str = "postgres") -> str:
        url = f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"
        return url + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def close(self) -> None:
        try:
            if self.running():
                self.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
