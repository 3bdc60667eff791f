"""Watcher speed: save-to-merged latency, idle CPU, and the initial scan of a large tree.

    python benchmarks/bench_watch.py            # 10,000 notebooks in 1,000 folders
    python benchmarks/bench_watch.py --quick    # 1,000 notebooks in 100 folders
    python benchmarks/bench_watch.py --git-only # only the latency and idle CPU, with and without git
    python benchmarks/bench_watch.py --against 9c425b2 --quick
                                                # this tree's watcher beside another commit's, alternately
    python benchmarks/bench_watch.py --server   # the Jupyter server watching its folder (10,000 notebooks),
                                                # beside the same server with c.NbMergeSave.watch_root = False

Runs a real `nbmergesave watch` process for each part and prints the figures. The
latency and idle CPU are measured in a plain folder and in a git work tree (where
the watcher asks git whether each save is a blob git holds), alternately, twice
each, side by side in one run. With ``--against REV`` the latency and the scan
are measured for the watcher of commit REV (its code taken with ``git archive``)
and this tree's, alternately, twice each, on the same notebooks (9c425b2 is the
last commit before the deduplicated store).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbmergesave import notebook_io  # noqa: E402


def notebook(n: int, tag: str = "") -> dict[str, Any]:
    cells = [{"cell_type": "code", "execution_count": i, "id": f"c{i}", "metadata": {},
              "outputs": [{"name": "stdout", "output_type": "stream", "text": f"{i}\n" * 3}],
              "source": f"x{i} = {i}{tag}\nprint(x{i})"} for i in range(n)]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


class Watch:
    def __init__(self, root: Path, code: Path | None = None) -> None:
        """``code``: a folder holding another version's ``nbmergesave`` package to run instead of this tree's."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"PYTHONPATH": str(code)} if code else {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "3600"],
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.started = time.perf_counter()
        line = self.proc.stderr.readline()  # type: ignore[union-attr]
        self.ready = time.perf_counter() - self.started
        assert "watching" in line, line

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def latency(tmp: Path, cells: int, rounds: int, git: bool = False, code: Path | None = None) -> tuple[float, float, float]:
    """Median and max save-to-merged latency (s) and idle CPU (% of a core), in a git work tree when ``git``."""
    root = Path(tempfile.mkdtemp(prefix="latency-git-" if git else "latency-", dir=tmp))
    path = root / "nb.ipynb"
    v0 = notebook(cells)
    path.write_text(notebook_io.dumps(v0))
    if git:  # a repository with history, the notebook committed, the store ignored
        env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
               "GIT_COMMITTER_EMAIL": "b@b"}
        subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
        (root / ".gitignore").write_text(".nbmergesave/\n")
        for k in range(20):
            (root / f"other{k}.txt").write_text(f"{k}\n" * 100)
            subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
            subprocess.run(["git", "-C", str(root), "commit", "-qm", f"c{k}"], check=True, env=env)
    watch = Watch(root, code)
    times = []
    w1, w2 = copy.deepcopy(v0), copy.deepcopy(v0)
    for r in range(rounds):
        # W1 saves, then W2 saves from its own older copy: every W2 save is merged.
        w1["cells"][(2 * r) % cells]["source"] += f"\n# w1 {r}"
        data = notebook_io.dumps(w1).encode()
        path.write_bytes(data)
        _wait(lambda: _stored(root, data))
        w2["cells"][(2 * r + 1) % cells]["source"] += f"\n# w2 {r}"
        data = notebook_io.dumps(w2).encode()
        t = time.perf_counter()
        path.write_bytes(data)
        _wait(lambda: path.read_bytes() != data and b"# w1 %d" % r in path.read_bytes())
        times.append(time.perf_counter() - t)
        w1 = notebook_io.read_notebook(path)  # both writers reload, as after "file changed on disk"
        w2 = copy.deepcopy(w1)
    before = watch.cpu()
    time.sleep(5)
    idle = (watch.cpu() - before) / 5 * 100
    watch.stop()
    times.sort()
    return statistics.median(times), times[-1], idle


def latency_side_by_side(tmp: Path, cells: int, rounds: int) -> None:
    figures: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    for git in (False, True, False, True):
        figures[git].append(latency(tmp, cells, rounds, git))
    for git, runs in figures.items():
        where = "git work tree" if git else "plain folder "
        for median, worst, idle in runs:
            print(f"{where}: save-to-merged latency, {cells} cells, {rounds} merges: median {median * 1000:.0f} ms, "
                  f"max {worst * 1000:.0f} ms; idle CPU over 5 s: {idle:.2f} % of a core")
    plain = statistics.median([m for m, _, _ in figures[False]])
    git = statistics.median([m for m, _, _ in figures[True]])
    print(f"median latency, git work tree / plain folder: {git / plain:.2f}")
    # The one thing the watcher adds per save in a work tree, timed alone: hash the bytes as git
    # would and ask the repository's long-lived `git cat-file --batch-check`.
    from nbmergesave.gitrepo import GitRepos

    repo_dir = next(tmp.glob("latency-git-*"))
    repos = GitRepos()
    repo = repos.find(repo_dir / "nb.ipynb")
    assert repo is not None
    data = (repo_dir / "nb.ipynb").read_bytes()
    repo.has_blob(data)  # starts git
    t = time.perf_counter()
    for _ in range(1000):
        repo.has_blob(data)
    each = (time.perf_counter() - t) / 1000
    repos.close()
    print(f"git blob check per save ({len(data) // 1024} KB notebook): {each * 1e6:.0f} us, "
          f"{each / plain * 100:.2f} % of the plain median latency")


def _stored(root: Path, data: bytes) -> bool:
    """Whether the watcher recorded ``data`` as nb.ipynb's content (read with SQL that every store
    layout answers, so that opening the store never upgrades a store another version is using)."""
    import hashlib
    import sqlite3

    db = sqlite3.connect(f"file:{root / '.nbmergesave' / 'index.sqlite'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT v.sha256 FROM on_disk d JOIN versions v ON v.path = d.path AND v.version = d.version "
                         "WHERE d.path = 'nb.ipynb'").fetchone()
    except sqlite3.OperationalError:  # not created yet
        return False
    finally:
        db.close()
    return row is not None and row[0] == hashlib.sha256(data).hexdigest()


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the watcher did not react")
        time.sleep(0.002)


def big_scan(tmp: Path, folders: int, per_folder: int) -> None:
    root = tmp / "tree"
    n = tree(root, folders, per_folder)
    watch = Watch(root)
    print(f"initial scan, {n} notebooks in {folders} folders (first run, every version stored): "
          f"{watch.ready:.1f} s, resident memory {watch.rss_mb():.0f} MB")
    before = watch.cpu()
    time.sleep(5)
    print(f"idle CPU watching {folders} folders: {(watch.cpu() - before) / 5 * 100:.2f} % of a core")
    watch.stop()
    watch = Watch(root)
    print(f"restart over the same tree (versions already stored): {watch.ready:.1f} s, "
          f"resident memory {watch.rss_mb():.0f} MB")
    watch.stop()


def tree(root: Path, folders: int, per_folder: int) -> int:
    text = notebook_io.dumps(notebook(10))
    for d in range(folders):
        folder = root / f"group{d // 100}" / f"folder{d}"
        folder.mkdir(parents=True)
        for k in range(per_folder):
            (folder / f"nb{k}.ipynb").write_text(text.replace("x0 = 0", f"x0 = {d * per_folder + k}"))
    return folders * per_folder


def against(tmp: Path, rev: str, folders: int, per_folder: int, cells: int, rounds: int) -> None:
    """The watcher of commit ``rev`` and this tree's, alternately, twice each: latency, first scan, restart."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    code = tmp / f"code-{rev}"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "nbmergesave"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    sides = {f"commit {rev}": code, "this tree": None}
    root = tmp / "tree"
    n = tree(root, folders, per_folder)
    figures: dict[str, list[tuple[float, ...]]] = {name: [] for name in sides}
    for _ in range(2):
        for name, where in sides.items():
            median, _, idle = latency(tmp, cells, rounds, code=where)
            shutil.rmtree(root / ".nbmergesave", ignore_errors=True)
            watch = Watch(root, where)
            first = (watch.ready, watch.cpu(), watch.rss_mb())
            watch.stop()
            watch = Watch(root, where)
            again = (watch.ready, watch.cpu(), watch.rss_mb())
            watch.stop()
            figures[name].append((median, idle, *first, *again))
    print(f"side by side, twice each, alternately: latency ({cells} cells, {rounds} merges), then the first scan "
          f"of {n} notebooks in {folders} folders (every version stored) and a restart over them")
    for name, runs in figures.items():
        for m, idle, ready, cpu, rss, ready2, cpu2, rss2 in runs:
            print(f"  {name:>16}: latency median {m * 1000:.0f} ms, idle {idle:.2f} %; first scan {ready:.2f} s "
                  f"(CPU {cpu:.2f} s), {rss:.0f} MB; restart {ready2:.2f} s (CPU {cpu2:.2f} s), {rss2:.0f} MB")
    old, new = (list(zip(*runs)) for runs in figures.values())
    for k, what in enumerate(("latency", "idle CPU", "first scan", "first scan CPU", "first scan memory",
                              "restart", "restart CPU", "restart memory")):
        a, b = statistics.median(old[k]), statistics.median(new[k])
        if k == 1:
            print(f"  {what}: this tree {b:.2f} % of a core, commit {rev} {a:.2f} %")
        else:
            print(f"  {what}: this tree / commit {rev} = {b / a:.2f}")


class Server:
    """A real ``jupyter_server`` with the nbmergesave extension serving ``root`` (its watcher on or off)."""

    def __init__(self, root: Path, home: Path, watch: bool) -> None:
        import json
        import secrets
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.token = secrets.token_hex(8)
        home.mkdir(parents=True, exist_ok=True)
        (home / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}, "NbMergeSave": {"watch_root": watch}}))
        self.log = home / f"server-{self.port}.log"
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--ServerApp.port={self.port}",
             "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "JUPYTER_CONFIG_DIR": str(home), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                 "JUPYTER_PLATFORM_DIRS": "1"})
        self._urllib = urllib.request
        _wait(self.answers, timeout=120)
        self.answering = time.perf_counter() - self.started
        if watch:
            _wait(lambda: "for writes made outside Jupyter (ready in" in self.log.read_text(), timeout=300)
        self.ready = time.perf_counter() - self.started

    def request(self, method: str, path: str, body: Any = None) -> Any:
        import json

        req = self._urllib.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                   data=json.dumps(body).encode() if body is not None else None,
                                   headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with self._urllib.urlopen(req, timeout=60) as response:
            return json.loads(response.read() or b"null")

    def answers(self) -> bool:
        try:
            self.request("GET", "/api/status")
            return True
        except OSError:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()) from None
            return False

    cpu = Watch.cpu
    rss_mb = Watch.rss_mb

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def outside_write_latency(server: Server, root: Path, name: str) -> float:
    """A tab loads ``name`` and saves cell 1; an agent that read it before writes cell 4: seconds from
    the agent's write to the merged file (both edits) on disk."""
    path = root / name
    model = server.request("GET", f"/api/contents/{name}")
    loaded = notebook_io.parse_notebook(path.read_bytes())
    content = model["content"]
    content["cells"][1]["source"] = "person = 1"
    server.request("PUT", f"/api/contents/{name}", {"type": "notebook", "format": "json", "content": content,
                                                    "nbmergesave_base": model["nbmergesave"]["sha256"]})
    saved = path.read_bytes()

    def recorded() -> bool:
        state = server.request("GET", f"/nbmergesave/api/state?path={name}")
        return not state["settling"] and state["by"] == "jupyter"

    _wait(recorded)
    loaded["cells"][4]["source"] = "agent = 4"
    t = time.perf_counter()
    path.write_text(notebook_io.dumps(loaded))
    _wait(lambda: (data := path.read_bytes()) != saved and b"person = 1" in data and b"agent = 4" in data)
    return time.perf_counter() - t


def server_side_by_side(tmp: Path, folders: int, per_folder: int) -> None:
    """The server watching its folder beside the same server not watching it, alternately, twice each."""
    root = tmp / "served"
    n = tree(root, folders, per_folder)
    rows: dict[bool, list[tuple[float, ...]]] = {False: [], True: []}
    for i, watch in enumerate((False, True, False, True)):
        server = Server(root, tmp / f"home-{i}", watch)
        try:
            before = server.cpu()
            time.sleep(10)
            idle = (server.cpu() - before) / 10 * 100
            rss = server.rss_mb()
            lat = [outside_write_latency(server, root, f"group{k // 100}/folder{k}/nb0.ipynb") for k in (i, i + 10, i + 20)] \
                if watch else []
            rows[watch].append((server.answering, server.ready, rss, idle, *(sorted(lat)[1:2] or [float("nan")])))
        finally:
            server.stop()
    print(f"jupyter_server serving {n} notebooks in {folders} folders, twice each, alternately:")
    for watch, runs in rows.items():
        for answering, ready, rss, idle, lat in runs:
            what = "watching its folder" if watch else "watch_root = False "
            print(f"  {what}: answers after {answering:.2f} s, watcher ready after {ready:.2f} s, "
                  f"resident memory {rss:.0f} MB, idle CPU over 10 s {idle:.2f} % of a core"
                  + (f", outside write to merged file (median of 3) {lat * 1000:.0f} ms" if watch else ""))
    on, off = (list(zip(*rows[w])) for w in (True, False))
    print(f"  watching / not watching: start to answering {statistics.median(on[0]) / statistics.median(off[0]):.2f}, "
          f"memory +{statistics.median(on[2]) - statistics.median(off[2]):.0f} MB, "
          f"idle CPU {statistics.median(on[3]):.2f} % vs {statistics.median(off[3]):.2f} % of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the tree")
    parser.add_argument("--git-only", action="store_true", help="only latency and idle CPU, with and without git")
    parser.add_argument("--against", metavar="REV", help="measure commit REV's watcher beside this tree's")
    parser.add_argument("--server", action="store_true", help="the Jupyter server watching its folder, on and off")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.server:
            server_side_by_side(Path(tmp), 100 if args.quick else 1000, 10)
            return
        if args.against:
            against(Path(tmp), args.against, 100 if args.quick else 1000, 10, 200, 20)
            return
        latency_side_by_side(Path(tmp), 200, 20)
        if not args.git_only:
            big_scan(Path(tmp), 100 if args.quick else 1000, 10)


if __name__ == "__main__":
    main()
