"""Merge speed: nbmergesave against nbdime and the JSON floor, side by side in one run.

    python benchmarks/bench_merge.py            # 50 .. 10,000 cells (nbdime skipped above 3,000)
    python benchmarks/bench_merge.py --quick    # 50 and 200 cells only

For each size and edit pattern it prints the median time of nbdime's
merge_notebooks, of nbmergesave.merge, their ratio, the JSON floor
(json.loads of the three files + json.dumps of one in nbformat's layout,
indent 1 and sorted keys, as any notebook writer must) and our full
read-merge-validate-write time (merge_files) against that floor. Then a
plot-heavy re-run merge (120 cells with images, both sides re-ran, a few
source edits: time against nbdime and the floor, merged size, output
markers, the report), the CLI cold start against nbdime's, and the memory of
the 10,000-cell merge.

    python benchmarks/bench_merge.py --plots    # the plot-heavy case only
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbmergesave import merge, notebook_io, report  # noqa: E402
from nbmergesave.merge import merge_files  # noqa: E402

#: Any tool that writes a notebook writes nbformat's layout; the floor does too.
CANONICAL = {"indent": 1, "sort_keys": True, "ensure_ascii": False, "separators": (",", ": ")}

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==" * 40


def make_base(n: int, rng: random.Random) -> dict[str, Any]:
    cells = []
    for i in range(n):
        if i % 5 == 0:
            cells.append({"cell_type": "markdown", "id": f"c{i}", "metadata": {}, "source": f"## Step {i}\nSome notes about step {i}."})
            continue
        outputs: list[dict[str, Any]] = [{"name": "stdout", "output_type": "stream", "text": f"value {i}\n" * 3}]
        if i % 25 == 1:
            outputs.append({"data": {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"},
                            "metadata": {}, "output_type": "display_data"})
        cells.append({"cell_type": "code", "execution_count": i, "id": f"c{i}", "metadata": {}, "outputs": outputs,
                      "source": f"x{i} = compute({i}, scale={rng.random():.3f})\nprint('value', x{i})"})
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def edit(base: dict[str, Any], indices: list[int], tag: str) -> dict[str, Any]:
    nb = copy.deepcopy(base)
    for i in indices:
        nb["cells"][i]["source"] += f"\n# edited by {tag}"
    return nb


def scenarios(n: int, rng: random.Random) -> dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    base = make_base(n, rng)
    idx = list(range(n))
    rng.shuffle(idx)
    few = max(2, n // 200)
    many = max(4, n // 10)
    conflict = n // 2
    return {
        "scattered": (base, edit(base, idx[:few], "local"), edit(base, idx[few:2 * few], "remote")),
        "many": (base, edit(base, idx[:many], "local"), edit(base, idx[many:2 * many], "remote")),
        "conflict": (base, edit(base, [conflict], "local"), edit(base, [conflict], "remote")),
    }


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(sizes: list[int], nbdime_max: int) -> None:
    import nbformat
    from nbdime.merging.notebooks import merge_notebooks

    rng = random.Random(1)
    print(f"{'cells':>6} {'edits':<10} {'nbdime s':>9} {'ours s':>8} {'speedup':>8} {'floor s':>8} {'ours+io s':>9} {'x floor':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for name, (b, l, r) in scenarios(n, rng).items():
                paths = []
                for side, nb in zip("blr", (b, l, r)):
                    p = Path(tmp) / f"{side}.ipynb"
                    p.write_text(notebook_io.dumps(nb), encoding="utf-8")
                    paths.append(p)
                texts = [p.read_text(encoding="utf-8") for p in paths]
                parsed = [notebook_io.parse_notebook(t.encode()) for t in texts]
                repeat = 5 if n <= 1000 else 2
                ours = median_time(lambda: merge(*parsed), repeat)
                if n <= nbdime_max:
                    nodes = [nbformat.reads(t, as_version=4) for t in texts]
                    theirs = median_time(lambda: merge_notebooks(*nodes), 1 if n > 1000 else 3)
                    speed = f"{theirs / ours:7.1f}x"
                    theirs_s = f"{theirs:9.3f}"
                else:
                    theirs_s, speed = f"{'skipped':>9}", f"{'-':>8}"
                floor = median_time(lambda: json.dumps([json.loads(t) for t in texts][1], **CANONICAL), repeat)
                out = Path(tmp) / "out.ipynb"
                total = median_time(lambda: merge_files(*paths, out), repeat)
                print(f"{n:>6} {name:<10} {theirs_s} {ours:8.3f} {speed} {floor:8.3f} {total:9.3f} {total / floor:7.2f}x", flush=True)


def cold_start() -> None:
    def run(cmd: list[str]) -> float:
        return median_time(lambda: subprocess.run(cmd, capture_output=True, check=True), 5)

    bindir = Path(sys.executable).parent
    ours = run([str(bindir / "nbmergesave"), "--version"])
    theirs = run([str(bindir / "nbmerge"), "--version"])
    print(f"\ncold start: nbmergesave --version {ours:.3f} s, nbmerge --version {theirs:.3f} s ({theirs / ours:.1f}x)")


def memory(n: int) -> None:
    rng = random.Random(2)
    b, l, r = scenarios(n, rng)["scattered"]
    texts = [notebook_io.dumps(nb) for nb in (b, l, r)]
    tracemalloc.start()
    parsed = [notebook_io.parse_notebook(t.encode()) for t in texts]
    inputs = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = merge(*parsed)
    notebook_io.validate(result.notebook)
    notebook_io.dumps(result.notebook)
    peak = tracemalloc.get_traced_memory()[1] - inputs
    tracemalloc.stop()
    print(f"memory, {n} cells: three notebooks as objects {inputs / 2**20:.1f} MiB; peak with merge, validation and "
          f"serialisation {(inputs + peak) / 2**20:.1f} MiB ({(inputs + peak) / inputs:.2f}x the notebooks)")


def plot_notebook(n: int, run: int, rng: random.Random, edits: dict[int, str]) -> dict[str, Any]:
    """``n`` cells, each drawing a plot; ``run`` seeds the images and counts of one execution."""
    import base64

    cells = []
    for i in range(n):
        source = f"fig, ax = plt.subplots()\nax.plot(data[{i}])\nax.set_title('series {i}')"
        source += edits.get(i, "")
        png = base64.b64encode(random.Random(run * 100003 + i).randbytes(30000)).decode()  # a 40 kB plot
        cells.append({"cell_type": "code", "execution_count": run * 1000 + i + 1, "id": f"plot{i}", "metadata": {},
                      "outputs": [{"data": {"image/png": png, "text/plain": "<Figure size 640x480 with 1 Axes>"},
                                   "metadata": {}, "output_type": "display_data"}],
                      "source": source})
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def plot_heavy(n: int = 120) -> None:
    """Two people re-ran a notebook of plots (new images and counts everywhere) and each edited a few cells."""
    import nbformat
    from nbdime.merging.notebooks import merge_notebooks

    rng = random.Random(3)
    base = plot_notebook(n, 0, rng, {})
    local = plot_notebook(n, 1, rng, {3: "\nax.grid()", 40: "\nax.legend()", 77: "  # log scale later"})
    remote = plot_notebook(n, 2, rng, {10: "\nax.set_xlim(0, 9)", 60: "\nax.grid()", 99: "  # check units"})
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for side, nb in zip("blr", (base, local, remote)):
            p = Path(tmp) / f"{side}.ipynb"
            p.write_text(notebook_io.dumps(nb), encoding="utf-8")
            paths.append(p)
        texts = [p.read_text(encoding="utf-8") for p in paths]
        out = Path(tmp) / "out.ipynb"
        floor_out = Path(tmp) / "floor.ipynb"

        def json_floor() -> None:
            # What any tool must do for this merge: read and parse the three files, write one in nbformat's layout.
            nbs = [json.loads(p.read_bytes().decode("utf-8")) for p in paths]
            floor_out.write_text(json.dumps(nbs[1], **CANONICAL), encoding="utf-8")

        # Interleaved, best of 30: on a shared machine the floor and ours see the same load.
        floors, ourses = [], []
        for _ in range(30):
            floors.append(median_time(json_floor, 1))
            ourses.append(median_time(lambda: merge_files(*paths, out), 1))
        floor, ours = min(floors), min(ourses)
        result, text = merge_files(*paths, out)

        def nbdime_run() -> str:
            nodes = [nbformat.reads(t, as_version=4) for t in texts]
            merged, _ = merge_notebooks(*nodes)
            return nbformat.writes(merged)

        theirs = min(median_time(nbdime_run, 1) for _ in range(3))
        theirs_text = nbdime_run()
    largest = max(len(t.encode()) for t in texts[1:])
    marker_outputs = sum(1 for c in json.loads(text)["cells"] for o in c.get("outputs", [])
                         if o.get("output_type") == "stream" and "<<<<<<<" in "".join(o.get("text", "")))
    entries = len(result.conflicts)
    print(f"\nplot-heavy re-run merge: {n} cells with a 40 kB image each, both re-ran, 3 source edits per side (best of runs)")
    print(f"  nbdime merge_notebooks (read+merge+write) {theirs:.3f} s; merged file {len(theirs_text.encode()) / largest:.2f}x the larger input")
    print(f"  nbmergesave merge_files (read+merge+validate+write) {ours:.3f} s = {ours / theirs:.2f} of nbdime's time, "
          f"{ours / floor:.2f}x the JSON floor ({floor:.3f} s: read and json.loads the three files, json.dumps and write one)")
    print(f"  merged file {len(text.encode()) / largest:.2f}x the larger input; {marker_outputs} output markers; "
          f"{len(result.unresolved)} left for a person, {entries - len(result.unresolved)} report entries settled")
    print("  report: " + report.human(result.conflicts, "plots.ipynb").replace("\n", "\n  ").rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only 50 and 200 cells")
    parser.add_argument("--nbdime-max", type=int, default=3000, help="largest size to run nbdime on (it is slow)")
    parser.add_argument("--plots", action="store_true", help="only the plot-heavy re-run merge")
    args = parser.parse_args()
    if args.plots:
        plot_heavy()
        return
    sizes = [50, 200] if args.quick else [50, 200, 1000, 3000, 10000]
    bench(sizes, args.nbdime_max)
    plot_heavy()
    cold_start()
    memory(200 if args.quick else 10000)


if __name__ == "__main__":
    main()
