"""What a save costs with nbmergesave, beside a plain Jupyter save, and the watcher's record beside its floor.

    python benchmarks/bench_jupyter_save.py                 # 40 saves per notebook (the issue's figures)
    python benchmarks/bench_jupyter_save.py --saves 10       # quicker
    python benchmarks/bench_jupyter_save.py --only watcher   # only the watcher's record against its floor

Two real ``jupyter_server`` processes on loopback, one with the extension as installed and one with it
turned off, each serving its own temporary folder holding the same notebooks:

* 60 cells with 15 plots (PNG-sized base64 images, 1.8 MB; the notebook of ``bench_store.py``),
* 600 code cells with small text outputs,
* 3,000 such cells.

A single writer loads each notebook once from each server, then saves it N times, one cell edited per save,
sending the extension the base hash its last reply gave (``nbmergesave_base`` = the reply's
``nbmergesave.sha256``), as the JupyterLab front end does. The saves alternate between the two servers (which
one goes first alternates too), each timed from sending the request to reading the whole reply; the body is
serialised before the clock starts (both servers get the same bytes).

Then an overlapping save: a second writer saves another cell first, so the first writer's save (its base now
one version old) is merged cleanly by the extension; it is timed against the plain server's save of the same
edit, alternately.

Last, in this process: the watcher's record of a single-writer save (``sync_file`` on the 1.8 MB notebook,
one cell edited per save, no declaration) against the floor of reading the file, parsing it, serialising it
and one fsync.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_store import notebook as plots_notebook  # noqa: E402
from nbmergesave import notebook_io  # noqa: E402
from tests.servers import JupyterProcess  # noqa: E402


def text_notebook(n: int) -> dict[str, Any]:
    """``n`` code cells of a few lines, each with a short printed output (deterministic)."""
    cells = [{"cell_type": "code", "execution_count": i + 1, "id": f"c{i}", "metadata": {},
              "outputs": [{"name": "stdout", "output_type": "stream", "text": f"row {i}: {i * 0.37:.4f}\n" * 3}],
              "source": f"x{i} = load({i})\ny{i} = transform(x{i}, k={i})\nprint(y{i})"} for i in range(n)]
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


NOTEBOOKS: dict[str, Callable[[], dict[str, Any]]] = {
    "60 cells, 15 plots": lambda: plots_notebook(random.Random(7)),
    "600 text cells": lambda: text_notebook(600),
    "3,000 cells": lambda: text_notebook(3000),
}
FILES = {"60 cells, 15 plots": "plots.ipynb", "600 text cells": "text600.ipynb", "3,000 cells": "text3000.ipynb"}


class Server(JupyterProcess):
    """A jupyter_server with the nbmergesave extension on or off, over one kept-alive HTTP connection."""

    def __init__(self, root: Path, config: Path, extension: bool) -> None:
        config.mkdir()
        (config / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"nbmergesave": extension}}}))
        self.config = config
        super().__init__("jupyter_server", root, config.parent,
                         {"JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(config / "runtime"),
                          "JUPYTER_DATA_DIR": str(config / "data")},
                         args=[f"--ServerApp.jpserver_extensions=nbmergesave={extension}"])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.headers = {"Content-Type": "application/json", "Authorization": f"token {self.token}"}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[float, Any]:
        """Seconds from sending to the whole reply read and parsed, and the reply."""
        t = time.perf_counter()
        self.conn.request(method, path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        reply = json.loads(data or b"null")
        elapsed = time.perf_counter() - t
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return elapsed, reply

    def stop(self) -> None:
        if hasattr(self, "conn"):
            self.conn.close()
        super().stop()


def body(nb: dict[str, Any], base: str | None) -> bytes:
    return json.dumps({"type": "notebook", "format": "json", "content": nb,
                       **({"nbmergesave_base": base} if base else {})}).encode()


def edit(nb: dict[str, Any], k: int, who: str = "w") -> None:
    cell = nb["cells"][(k * 7) % len(nb["cells"])]
    cell["source"] += f"\n# {who} edit {k}"


def single_writer(ext: Server, plain: Server, name: str, saves: int) -> tuple[list[float], list[float]]:
    """The writer's saves to each server, alternately: (seconds with the extension, seconds plain)."""
    api = f"/api/contents/{name}"
    _, got = ext.call("GET", api)
    assert "nbmergesave" in got and "sha256" in got["nbmergesave"], "the extension did not answer the load"
    _, plain_got = plain.call("GET", api)
    assert "nbmergesave" not in plain_got, "the plain server has the extension on"
    nb, base = got["content"], got["nbmergesave"]["sha256"]
    times: dict[str, list[float]] = {"ext": [], "plain": []}
    for k in range(saves):
        edit(nb, k)
        with_base, without = body(nb, base), body(nb, None)
        for side in (("ext", "plain") if k % 2 == 0 else ("plain", "ext")):
            if side == "ext":
                t, reply = ext.call("PUT", api, with_base)
                info = reply.get("nbmergesave") or {}
                assert not info.get("merged"), f"a single writer's save was merged: {info}"
                base = info["sha256"]
            else:
                t, _ = plain.call("PUT", api, without)
            times[side].append(t)
    return times["ext"], times["plain"]


def overlapping(ext: Server, plain: Server, name: str, saves: int) -> tuple[list[float], list[float]]:
    """A save with one other writer's save in between (merged cleanly), against the plain save of the same edit."""
    api = f"/api/contents/{name}"
    _, got = ext.call("GET", api)
    nb, base = got["content"], got["nbmergesave"]["sha256"]
    times: dict[str, list[float]] = {"ext": [], "plain": []}
    for k in range(saves):
        _, other = ext.call("GET", api)  # the other writer loads and saves another cell first (not timed)
        other_nb = other["content"]
        edit(other_nb, k + 3, "other")
        ext.call("PUT", api, body(other_nb, other["nbmergesave"]["sha256"]))
        edit(nb, k)
        with_base, without = body(nb, base), body(nb, None)
        for side in (("ext", "plain") if k % 2 == 0 else ("plain", "ext")):
            if side == "ext":
                t, reply = ext.call("PUT", api, with_base)
                info = reply["nbmergesave"]
                assert info.get("merged") and not info.get("conflicts"), f"expected a clean merge: {info}"
                nb, base = info["content"], info["sha256"]  # the front end takes the merged notebook in
            else:
                t, _ = plain.call("PUT", api, without)
            times[side].append(t)
    return times["ext"], times["plain"]


def watcher_record(tmp: Path, saves: int) -> tuple[list[float], list[float]]:
    """``sync_file`` of single-writer saves of the 1.8 MB notebook, and the floor, alternately."""
    from nbmergesave.store import Store
    from nbmergesave.sync import Session, sync_file

    root = Path(tempfile.mkdtemp(prefix="watcher-", dir=tmp))
    path, scratch = root / "plots.ipynb", root / "floor.bin"
    nb = notebook_io.parse_notebook(notebook_io.dumps(plots_notebook(random.Random(7))).encode())
    record, floor = [], []
    with Store.open(root) as store:
        session = Session()
        data = notebook_io.dumps(nb).encode()
        path.write_bytes(data)
        assert sync_file(store, path, data=data, session=session).action == "recorded"
        for k in range(saves):
            edit(nb, k)
            data = notebook_io.dumps(nb).encode()
            path.write_bytes(data)
            for side in (("record", "floor") if k % 2 == 0 else ("floor", "record")):
                t = time.perf_counter()
                if side == "record":
                    outcome = sync_file(store, path, data=path.read_bytes(), session=session)
                    record.append(time.perf_counter() - t)
                    assert outcome.action == "recorded", outcome
                else:
                    raw = path.read_bytes()
                    text = notebook_io.dumps(json.loads(raw)).encode()
                    with open(scratch, "wb") as f:
                        f.write(text)
                        f.flush()
                        os.fsync(f.fileno())
                    floor.append(time.perf_counter() - t)
    return record, floor


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(a) / statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=40, help="saves per notebook and per server (default 40)")
    parser.add_argument("--only", choices=["jupyter", "watcher"], help="run one part only")
    args = parser.parse_args()
    results: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-jupyter-save-") as folder:
        tmp = Path(folder)
        if args.only != "watcher":
            servers: list[Server] = []
            try:
                for side in ("ext", "plain"):
                    root = tmp / f"root-{side}"
                    root.mkdir()
                    for label, make in NOTEBOOKS.items():
                        (root / FILES[label]).write_text(notebook_io.dumps(make()), encoding="utf-8")
                        (root / ("overlap-" + FILES[label])).write_text(notebook_io.dumps(make()), encoding="utf-8")
                    try:
                        servers.append(Server(root, tmp / f"config-{side}", extension=side == "ext"))
                    except RuntimeError as e:
                        print(e, file=sys.stderr)
                        raise
                ext, plain = servers
                print(f"single writer, {args.saves} saves per server, alternating; median of each:")
                print(f"| notebook | size | plain Jupyter save | with nbmergesave | ratio |\n|---|---|---|---|---|")
                for label in NOTEBOOKS:
                    size = (tmp / "root-plain" / FILES[label]).stat().st_size
                    e, p = single_writer(ext, plain, FILES[label], args.saves)
                    row = f"| {label} | {size / 1e6:.2f} MB | {ms(p)} | {ms(e)} | {ratio(e, p):.2f}x |"
                    print(row, flush=True)
                    results.append(row)
                print(f"\noverlapping save (one other save in between, clean merge), {args.saves} saves:")
                print(f"| notebook | plain Jupyter save | with nbmergesave (merged) | ratio |\n|---|---|---|---|")
                for label in NOTEBOOKS:
                    e, p = overlapping(ext, plain, "overlap-" + FILES[label], args.saves)
                    print(f"| {label} | {ms(p)} | {ms(e)} | {ratio(e, p):.2f}x |", flush=True)
            finally:
                for s in servers:
                    s.stop()
        if args.only != "jupyter":
            record, floor = watcher_record(tmp, args.saves)
            print(f"\nwatcher's record of a single-writer save (sync_file, 60 cells with 15 plots, {args.saves} saves): "
                  f"median {ms(record)}; floor (read, parse, serialise, one fsync) {ms(floor)}; "
                  f"{ratio(record, floor):.2f}x the floor")


if __name__ == "__main__":
    main()
