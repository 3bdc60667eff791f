"""Concurrent-writer soak: N editors save one notebook under a running watcher; nothing may be lost.

    python benchmarks/soak.py                      # 4 writers x 200 saves, files on disk
    python benchmarks/soak.py --jupyter            # the same, saving through two real jupyter_servers
    python benchmarks/soak.py --writers 3 --saves 30 --min-wait 0.02 --max-wait 0.1
    python benchmarks/soak.py --jupyter --store postgresql://ann@db:5432/soak   # one PostgreSQL store
    python benchmarks/soak.py --jupyter --store temp   # the same, on a PostgreSQL server started for the run

Each writer behaves like an editor: it keeps its own copy in memory, appends
a numbered line to its own cell (and now and then to a shared cell), and
saves every 50-500 ms at random, in one of the ways real writers save
(Jupyter's copy-then-write-in-place, temporary file + rename, plain write;
with --jupyter, a PUT to its server). Now and then it reloads the file from
disk, as an editor does after "file changed on disk". When the writers are
done, the soak waits until the watcher reports no save pending. Then every
line each writer put in its own cell that any stored version held must be in
the final notebook (a conflict's markers count: they hold both sides), and
the file must be a valid notebook. Prints saves, merges, conflicts, lost
edits, saves never stored (for files: replaced by another writer's save, or
torn by one, within milliseconds; through Jupyter, where every save says its
base, this must be 0) and the edits lost with them, and the save-to-merged
latency.

With ``--store URL`` every process (the watcher, both servers, the soak's own
checks) uses that PostgreSQL store instead of the folder's SQLite one, and the
second server reaches the project through another path (a symlink to it), as
a second host mounting the same volume elsewhere would; at the end the project
folder must hold nothing but the notebook (and Jupyter's own checkpoints).
``--store temp`` starts a PostgreSQL server for the run (tests/pg.py) and
stops it after.

``--flap SECONDS`` (with ``--store temp``): the database goes down (an
immediate shutdown, as a crash) and comes back every SECONDS while the
writers save; saves go on merging from each server's local spool meanwhile.
When the writers are done the database is started, the servers are asked
until they have caught up (their state route says no longer ``degraded``),
and only then are the checks made: the same figures, 0 lost.

    python benchmarks/soak.py --jupyter --store temp --flap 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbmergesave import notebook_io  # noqa: E402
from nbmergesave.jupyter.files import as_written  # noqa: E402
from nbmergesave.store import Store, sha256  # noqa: E402

NAME = "shared.ipynb"


def initial(writers: int) -> dict[str, Any]:
    cells = [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Shared analysis"}]
    for k in range(writers):
        cells.append({"cell_type": "code", "execution_count": None, "id": f"w{k}", "metadata": {}, "outputs": [],
                      "source": f"# writer {k}"})
        cells.append({"cell_type": "markdown", "id": f"shared{k}", "metadata": {}, "source": f"shared notes {k}"})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _append(nb: dict[str, Any], cell_id: str, line: str) -> None:
    for c in nb["cells"]:
        if c.get("id") == cell_id:
            c["source"] += "\n" + line
            return


def writer(k: int, root: str, saves: int, waits: tuple[float, float], seed: int, events: Any,
           server: dict[str, Any] | None) -> None:
    """One editor process; puts (writer, line, time saved, sha256 or None) on ``events``, then ("done", k)."""
    try:
        _edit_and_save(k, Path(root) / NAME, saves, waits, random.Random(seed), events, server)
    except HTTPError as e:
        body = e.read().decode(errors="replace")
        print(f"writer {k} stopped: HTTP {e.code} for {e.url}: {body[:500]}", file=sys.stderr)
        raise
    finally:
        events.put(("done", k, 0.0, None))


def _edit_and_save(k: int, path: Path, saves: int, waits: tuple[float, float], rng: random.Random, events: Any,
                   server: dict[str, Any] | None) -> None:
    nb = _load(path, server)
    for n in range(saves):
        time.sleep(rng.uniform(*waits))
        if rng.random() < 0.05:
            nb = _load(path, server)  # "file changed on disk": reload
        line = f"w{k} edit {n}"
        _append(nb, f"w{k}", line)
        if rng.random() < 0.1:
            _append(nb, f"shared{rng.randrange(len(nb['cells']) // 2)}", f"w{k} shared note {n}")
        data = notebook_io.dumps(nb).encode()
        if server is not None:
            _request(server, "PUT", f"/api/contents/{NAME}", {"type": "notebook", "format": "json", "content": nb})
            events.put((k, line, time.time(), sha256(as_written(nb))))  # what the server stores of it
            continue
        style = rng.choice(["jupyter", "rename", "plain"])
        if style == "jupyter":  # FileContentsManager: copy aside, rewrite in place, remove the copy
            aside = path.with_name(f".~{NAME}")  # shared by all writers, as by two Jupyter servers
            try:
                shutil.copy2(path, aside)
            except FileNotFoundError:
                pass
            with open(path, "wb") as f:
                f.write(data)
            aside.unlink(missing_ok=True)
        elif style == "rename":
            tmp = path.with_name(f".{NAME}.{k}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            with open(path, "wb") as f:
                f.write(data)
        events.put((k, line, time.time(), sha256(data)))


def _load(path: Path, server: dict[str, Any] | None) -> dict[str, Any]:
    if server is not None:
        for _ in range(50):
            try:
                return _request(server, "GET", f"/api/contents/{NAME}")["content"]
            except OSError:  # 400 while another save rewrites the file in place: ask again
                time.sleep(0.01)
        return _request(server, "GET", f"/api/contents/{NAME}")["content"]
    for _ in range(50):
        try:
            return notebook_io.read_notebook(path)
        except Exception:  # caught mid-write by another writer: read again
            time.sleep(0.01)
    return notebook_io.read_notebook(path)


def _request(server: dict[str, Any], method: str, url: str, body: Any = None) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server['port']}{url}", data=data, method=method,
                                 headers={"Authorization": f"token {server['token']}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as response:
        return json.loads(response.read() or b"null")


@dataclass
class SoakResult:
    """``lost``: edits missing from the final file although a stored version held them (the tool's
    fault; must be empty). ``unseen``: edits missing from the file that no stored version ever held:
    their save was replaced by another writer's within the watcher's read latency (a writer-vs-writer
    race, invisible to any file watcher), and their writer then reloaded from disk before saving again.
    ``missing``: saves never seen, for that same reason."""

    saves: int
    merges: int
    conflicts: int
    lost: list[str]
    unseen: list[str]
    missing: int
    latencies: list[float]
    valid: bool
    gaps: list[float]  # for each unseen save: how soon another writer's save replaced it (s)
    marked_own: int = 0  # writers' own cells holding conflict markers at the end (one writer each: none is right)
    marked_shared: int = 0  # shared cells holding them (several writers: a conflict there can be real)

    def report(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return (f"saves {self.saves}, merges {self.merges}, merges with conflicts {self.conflicts}, valid notebook {self.valid}\n"
                f"cells with conflict markers at the end: {self.marked_own} of the writers' own cells (one writer "
                f"each: none is right), {self.marked_shared} shared cells\n"
                f"lost edits {len(self.lost)} (an edit the store had, missing from the file)\n"
                f"saves replaced by another writer's before any watcher could read them: {self.missing}"
                + (f" (replaced within {_ms(statistics.median(self.gaps))} median, {_ms(max(self.gaps))} at most)"
                   if self.gaps else "") + "; "
                f"edits lost with them (their writer reloaded before saving again): {len(self.unseen)}\n"
                f"save-to-merged latency: median {statistics.median(lat) * 1000:.0f} ms, "
                f"99th percentile {p99 * 1000:.0f} ms")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _start_servers(root: Path, tmp: Path, count: int, roots: list[Path] | None = None,
                   env: dict[str, str] | None = None) -> list[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    import secrets
    import socket

    config = tmp / "jupyter"
    config.mkdir(exist_ok=True)
    (config / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}}))
    started = []
    for n in range(count):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        info = {"port": port, "token": secrets.token_hex(16)}
        with open(tmp / f"server{n}.log", "w") as log:  # the server keeps its own copy of the file
            proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--no-browser", f"--ServerApp.port={port}",
                 "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={info['token']}",
                 f"--ServerApp.root_dir={(roots or [root] * count)[n]}", *(["--allow-root"] if os.geteuid() == 0 else [])],
                stdout=subprocess.DEVNULL, stderr=log,
                env={**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(config),
                     "JUPYTER_RUNTIME_DIR": str(config / "runtime")},
            )
        started.append((proc, info))
    for proc, info in started:
        deadline = time.monotonic() + 60
        while True:
            try:
                _request(info, "GET", "/api/status")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter_server did not start") from None
                time.sleep(0.1)
    return started


def run(writers: int = 4, saves: int = 200, waits: tuple[float, float] = (0.05, 0.5), seed: int = 1,
        jupyter: bool = False, timeout: float = 600.0, keep: str | None = None, store: str | None = None,
        database: Any = None, flap: float = 0.0) -> SoakResult:
    """``database`` (a tests/pg.py server) with ``flap``: stop and start it every ``flap`` seconds meanwhile."""
    global _STORE_URL
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(keep or tmp_name)
        root = tmp / "project"
        root.mkdir()
        path = root / NAME
        path.write_text(notebook_io.dumps(initial(writers)))
        log, status = tmp / "watcher.log", tmp / "status.json"
        env, roots = {}, None
        _STORE_URL = store
        if store:  # one PostgreSQL store; the second server reaches the folder by another path
            from nbmergesave.store.where import configure

            env = {"NBMERGESAVE_STORE_URL": store}
            configure(roots=[str(root)])
            (tmp / "project-elsewhere").symlink_to(root, target_is_directory=True)
            roots = [root, tmp / "project-elsewhere"]
        with open(log, "w") as out:  # a file, not a pipe: a pipe nobody reads fills up and stops the watcher
            watcher = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "5",
                                        "--status-file", str(status)],
                                       stderr=out, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})
        servers = _start_servers(root, tmp, 2, roots, env) if jupyter else []
        try:
            _wait_for(lambda: "watching" in log.read_text(), 60)
            ctx = mp.get_context("fork")
            events = ctx.Queue()
            procs = [ctx.Process(target=writer, args=(k, str(root), saves, waits, seed * 1000 + k, events,
                                                      servers[k % 2][1] if servers else None)) for k in range(writers)]
            for p in procs:
                p.start()
            flapping = threading.Event()
            flapper = None
            if database is not None and flap:
                def outages() -> None:
                    while not flapping.wait(flap):
                        database.stop("immediate")
                        if flapping.wait(flap):
                            break
                        database.start()
                    if not database.running():
                        database.start()

                flapper = threading.Thread(target=outages, daemon=True)
                flapper.start()
            pending: dict[str, float] = {}
            latencies: list[float] = []
            lines: dict[int, list[str]] = {k: [] for k in range(writers)}
            shas: list[str] = []
            saved_at: dict[str, float] = {}
            done = 0
            deadline = time.monotonic() + timeout
            while done < writers and time.monotonic() < deadline:
                while not events.empty():
                    k, line, at, digest = events.get()
                    if k == "done":
                        done += 1
                        continue
                    lines[k].append(line)
                    pending[line] = at
                    if digest:
                        shas.append(digest)
                        saved_at[digest] = at
                text = _read_text(path)
                now = time.time()
                for line in [x for x in pending if x in text]:
                    latencies.append(now - pending.pop(line))
                time.sleep(0.005)
            for p in procs:
                p.join(timeout=30)
            if flapper is not None:
                flapping.set()
                flapper.join(timeout=120)
                for _, info in servers:  # ask, as open tabs do, until each has replayed its spool
                    _wait_for(lambda: _request(info, "GET", f"/nbmergesave/api/state?path={NAME}")["degraded"] is None,
                              300)
            _wait_idle(root, status, deadline)  # the watcher may still be merging saves it read
            text = _read_text(path)
            latencies += [time.time() - pending.pop(line) for line in list(pending) if line in text]
            final = notebook_io.read_notebook(path)
            try:
                notebook_io.validate(final)
                valid = True
            except Exception:
                valid = False
            text = json.dumps(final)
            gone = [line for k in lines for line in lines[k] if line not in text]
            if _STORE_URL:  # nothing of ours in the project folder
                extra = sorted(p.name for p in root.iterdir() if p.name not in (NAME, ".ipynb_checkpoints"))
                if extra:
                    raise AssertionError(f"the project folder holds more than the notebook: {extra}")
            with Store.open(root, _STORE_URL) as store:
                versions = store.history(path)
                known = {v.sha256 for v in versions}
                merges = [v for v in versions if v.kind == "merged"]
                stored = "".join(store.content(v).decode() for v in versions if v.sha256)
            lost = [line for line in gone if line in stored]
            unseen = [line for line in gone if line not in stored]
            missing = {d for d in shas if d not in known}
            order = sorted(saved_at, key=saved_at.__getitem__)
            gaps = [saved_at[b] - saved_at[a] for a, b in zip(order, order[1:]) if a in missing]
            marked = [c["id"] for c in final["cells"] if "<<<<<<<" in "".join(c["source"])]
            return SoakResult(sum(len(v) for v in lines.values()), len(merges), sum(m.conflicts > 0 for m in merges),
                              lost, unseen, len(missing), latencies, valid, gaps,
                              marked_own=sum(i.startswith("w") for i in marked),
                              marked_shared=sum(i.startswith("shared") for i in marked))
        finally:
            watcher.terminate()
            watcher.wait(timeout=30)
            for proc, _ in servers:
                proc.terminate()
                proc.wait(timeout=30)


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the watcher did not start")
        time.sleep(0.02)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


_STORE_URL: str | None = None  # --store URL: every check reads that store


def _settled(root: Path) -> bool:
    with Store.open(root, _STORE_URL) as store:
        current = store.on_disk(root / NAME)
        return current is not None and current.sha256 == sha256((root / NAME).read_bytes())


def _wait_idle(root: Path, status: Path, deadline: float) -> None:
    """Until the watcher has handled every save it read (its status says so twice) and the store matches the file."""
    idle_reports: set[float] = set()
    while len(idle_reports) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the watcher did not catch up before the soak's timeout")
        try:
            report = json.loads(status.read_text())
        except (OSError, ValueError):
            report = {}
        if report.get("pending") == 0 and _settled(root):
            idle_reports.add(report["uptime"])
        else:
            idle_reports.clear()
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--saves", type=int, default=200, help="saves per writer")
    parser.add_argument("--min-wait", type=float, default=0.05)
    parser.add_argument("--max-wait", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jupyter", action="store_true", help="save through two real jupyter_server processes")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (new, empty) and leave it for inspection")
    parser.add_argument("--flap", type=float, default=0.0, metavar="SECONDS",
                        help="with --store temp: the database goes down and comes back every SECONDS")
    parser.add_argument("--store", metavar="URL", help="a PostgreSQL store for every process ('temp': start a "
                                                       "PostgreSQL server for the run)")
    args = parser.parse_args()
    server = None
    if args.store == "temp":
        from tests import pg

        server = pg.Server()
        args.store = server.url("soak")
    try:
        result = run(args.writers, args.saves, (args.min_wait, args.max_wait), args.seed, args.jupyter, keep=args.keep,
                     store=args.store, database=server, flap=args.flap)
    finally:
        if server is not None:
            server.close()
    if args.store:
        from nbmergesave.private import redact_url

        print(f"store: PostgreSQL at {redact_url(args.store)}, "
              + ("two jupyter_servers reaching the folder by two paths" if args.jupyter else "files on disk"))
    print(result.report())
    if result.lost:
        print("lost:", ", ".join(result.lost[:20]))
    sys.exit(1 if result.lost or not result.valid else 0)


if __name__ == "__main__":
    main()
