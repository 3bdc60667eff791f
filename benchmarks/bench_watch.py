"""Watcher speed: save-to-merged latency, idle CPU, and the initial scan of a large tree.

    python benchmarks/bench_watch.py            # 10,000 notebooks in 1,000 folders
    python benchmarks/bench_watch.py --quick    # 1,000 notebooks in 100 folders

Runs a real `nbmergesave watch` process for each part and prints the figures.
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
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "3600"],
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


def latency(tmp: Path, cells: int, rounds: int) -> None:
    root = tmp / "latency"
    root.mkdir()
    path = root / "nb.ipynb"
    v0 = notebook(cells)
    path.write_text(notebook_io.dumps(v0))
    watch = Watch(root)
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
    print(f"save-to-merged latency, {cells} cells, {rounds} merges: median {statistics.median(times) * 1000:.0f} ms, "
          f"max {times[-1] * 1000:.0f} ms")
    print(f"idle CPU over 5 s: {idle:.2f} % of a core")


def _stored(root: Path, data: bytes) -> bool:
    from nbmergesave.store import Store, sha256

    with Store.open(root) as store:
        v = store.on_disk(root / "nb.ipynb")
        return v is not None and v.sha256 == sha256(data)


def _wait(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the watcher did not react")
        time.sleep(0.002)


def big_scan(tmp: Path, folders: int, per_folder: int) -> None:
    root = tmp / "tree"
    text = notebook_io.dumps(notebook(10))
    for d in range(folders):
        folder = root / f"group{d // 100}" / f"folder{d}"
        folder.mkdir(parents=True)
        for k in range(per_folder):
            (folder / f"nb{k}.ipynb").write_text(text.replace("x0 = 0", f"x0 = {d * per_folder + k}"))
    n = folders * per_folder
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        latency(Path(tmp), 200, 20)
        big_scan(Path(tmp), 100 if args.quick else 1000, 10)


if __name__ == "__main__":
    main()
