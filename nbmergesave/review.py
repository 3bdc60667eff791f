"""`nbmergesave review`: see what an automatic merge did, in nbdime's web diff or in the terminal."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import notebook_io
from .errors import StoreError
from .store import Store, Version


@dataclass(frozen=True)
class Review:
    """A stored merge and the two versions it merged."""

    merged: Version
    save: Version  # the save the watcher merged (remote)
    other: Version  # what was on disk, from the other writer (local)


def find_merge(store: Store, notebook: str | os.PathLike[str], version: int | None = None) -> Review:
    """The merge ``version`` of ``notebook`` (default: the latest) and the versions it merged."""
    if version is None:
        merges = [v for v in store.history(notebook) if v.kind == "merged"]
        if not merges:
            raise StoreError(f"'{notebook}' has no automatic merge to review")
        merged = merges[-1]
    else:
        merged = store.get(notebook, version)
        if merged.kind != "merged" or merged.local is None or merged.remote is None:
            raise StoreError(f"version {version} of '{notebook}' is not a merge (hint: nbmergesave history {notebook})")
    return Review(merged, store.get(notebook, merged.remote), store.get(notebook, merged.local))  # type: ignore[arg-type]


def text(store: Store, review: Review) -> str:
    """nbdime's terminal diff: the save against the merged result, then the other version against it."""
    from nbdime.diffing.notebooks import diff_notebooks
    from nbdime.prettyprint import PrettyPrintConfig, pretty_print_diff

    import nbformat

    merged = nbformat.from_dict(notebook_io.parse_notebook(store.content(review.merged)))
    out = io.StringIO()
    for title, version in (("the save", review.save), ("the other writer's version", review.other)):
        nb = nbformat.from_dict(notebook_io.parse_notebook(store.content(version)))
        out.write(f"### {title} (v{version.version}) -> merged (v{review.merged.version})\n")
        config = PrettyPrintConfig(out=out)
        pretty_print_diff(nb, diff_notebooks(nb, merged), "", config)
        out.write("\n")
    return out.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running nbdime web server showing one review; ``urls`` holds its two diffs."""

    process: subprocess.Popen[bytes]
    folder: tempfile.TemporaryDirectory[str]
    urls: list[str]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.folder.cleanup()


def serve(store: Store, review: Review, port: int | None = None, timeout: float = 60.0) -> Served:
    """Start nbdime's web diff on loopback with the three versions; returns once it answers."""
    folder = tempfile.TemporaryDirectory(prefix="nbmergesave-review-")
    names = {"save": review.save, "other": review.other, "merged": review.merged}
    for name, version in names.items():
        (Path(folder.name) / f"{name}-v{version.version}.ipynb").write_bytes(store.content(version))
    port = port or _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "nbdime.webapp.nbdimeserver", "--ip", "127.0.0.1", "--port", str(port),
         "--workdirectory", folder.name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    merged = f"merged-v{review.merged.version}.ipynb"
    urls = [f"http://127.0.0.1:{port}/diff?" + urllib.parse.urlencode({"base": f"{side}-v{names[side].version}.ipynb", "remote": merged})
            for side in ("save", "other")]
    served = Served(process, folder, urls)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urls[0], timeout=2):
                return served
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                served.close()
                raise StoreError("nbdime's web diff did not start") from None
            time.sleep(0.1)
