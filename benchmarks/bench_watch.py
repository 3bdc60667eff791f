"""Watcher speed: save-to-merged latency, idle CPU, and the initial scan of a large tree.

    python benchmarks/bench_watch.py            # 10,000 notebooks in 1,000 folders
    python benchmarks/bench_watch.py --quick    # 1,000 notebooks in 100 folders
    python benchmarks/bench_watch.py --git-only # only the latency and idle CPU, with and without git
    python benchmarks/bench_watch.py --against 9c425b2 --quick
                                                # this tree's watcher beside another commit's, alternately

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the tree")
    parser.add_argument("--git-only", action="store_true", help="only latency and idle CPU, with and without git")
    parser.add_argument("--against", metavar="REV", help="measure commit REV's watcher beside this tree's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            against(Path(tmp), args.against, 100 if args.quick else 1000, 10, 200, 20)
            return
        latency_side_by_side(Path(tmp), 200, 20)
        if not args.git_only:
            big_scan(Path(tmp), 100 if args.quick else 1000, 10)


if __name__ == "__main__":
    main()
