"""The two store backends side by side: the same saves recorded in SQLite and in PostgreSQL, in one run.

    python benchmarks/bench_store_backends.py                      # a PostgreSQL server started for the run
    python benchmarks/bench_store_backends.py --store postgresql://ann@db:5432/bench --saves 300

The workload is bench_store.py's (a 60-cell notebook with 15 plots, one cell
changed per save, a plot re-run every tenth save), recorded through the
public API (``Store.add``), then a sample of versions read back byte for
byte. Printed per backend: median and 90th-percentile cost of recording a
save, median cost of reading a version, the store's size, and the ratio
PostgreSQL / SQLite. With ``--store temp`` (the default) the server runs on
this machine over loopback with fsync off, so the ratio shows the cost of
the client/server round trips, not of a network or of durable commits.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store import saves  # noqa: E402

from nbmergesave.store import Store  # noqa: E402
from nbmergesave.store.where import configure  # noqa: E402


def run(store: Store, root: Path, versions: list[bytes], sample: int) -> dict[str, float]:
    path = root / "analysis.ipynb"
    times = []
    for data in versions:
        t = time.perf_counter()
        store.add(path, data, "observed")
        times.append(time.perf_counter() - t)
    history = store.history(path)
    reads = []
    for i in random.Random(3).sample(range(len(versions)), min(sample, len(versions))):
        t = time.perf_counter()
        data = store.content(history[i])
        reads.append(time.perf_counter() - t)
        assert data == versions[i], f"version {i + 1} came back different"
    times.sort()
    return {"record": statistics.median(times), "record_p90": times[int(len(times) * 0.9)],
            "read": statistics.median(reads), "size": store.stats().size_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--saves", type=int, default=300)
    parser.add_argument("--sample", type=int, default=50, help="versions read back")
    parser.add_argument("--store", default="temp", metavar="URL",
                        help="a PostgreSQL database (a new schema is used), or 'temp' to start a server for the run")
    args = parser.parse_args()
    versions, _ = saves(args.saves)
    server = None
    url = args.store
    if url == "temp":
        from tests import pg

        server = pg.Server()
        url = server.url()
    schema = "bench_" + uuid.uuid4().hex[:8]
    url += ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {}
            for name in ("sqlite", "postgresql"):
                root = Path(tmp) / name
                root.mkdir()
                configure(project_root=str(root))
                store = Store.open(root) if name == "sqlite" else Store.open(root, url)
                with store:
                    results[name] = run(store, root, versions, args.sample)
    finally:
        if server is not None:
            server.close()
    print(f"{args.saves} saves of a {len(versions[-1]) / 1e6:.1f} MB notebook, {args.sample} versions read back")
    print(f"{'':24}{'SQLite':>12}{'PostgreSQL':>14}{'ratio':>8}")
    rows = [("record a save, median", "record", 1e3, "ms"), ("record a save, p90", "record_p90", 1e3, "ms"),
            ("read a version, median", "read", 1e3, "ms"), ("store size", "size", 1e-6, "MB")]
    for label, key, scale, unit in rows:
        a, b = results["sqlite"][key], results["postgresql"][key]
        print(f"{label:24}{a * scale:>9.2f} {unit}{b * scale:>11.2f} {unit}{b / a:>7.1f}x")


if __name__ == "__main__":
    main()
