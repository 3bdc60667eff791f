from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io
from nbmergesave.cli import cli

from .conftest import FIXTURES, ROOT, cell, notebook, numbered, write

runner = CliRunner()


def run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(cli, list(args), catch_exceptions=False)


def fixture(case: str) -> list[str]:
    return [str(FIXTURES / f"{case}--{side}.ipynb") for side in ("base", "local", "remote")]


def test_clean_merge_to_stdout_exit_0() -> None:
    result = run("merge", *fixture("different-cells"))
    assert result.exit_code == 0
    assert result.stdout == (FIXTURES / "different-cells--merged.ipynb").read_text(encoding="utf-8")
    assert result.stderr == ""


def test_conflict_exit_1_with_summary(tmp_path: Path) -> None:
    out = tmp_path / "merged.ipynb"
    result = run("merge", *fixture("same-line"), "-o", str(out))
    assert result.exit_code == 1
    assert result.stdout == ""
    local = fixture("same-line")[1]
    assert result.stderr == f"{local}: 1 conflict left in the notebook (marked inline)\n  cell 7 (id 'wettest'): both sides edited the source\n"
    notebook_io.validate(notebook_io.read_notebook(out))


def test_json_report_on_stderr_and_to_file(tmp_path: Path) -> None:
    result = run("merge", *fixture("inserts-same-place"), "-o", str(tmp_path / "m.ipynb"), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stderr)
    assert report["clean"] is False
    assert report["conflicts"] == [{
        "kind": "insert", "cell": 4, "cell_id": None, "base_cell": 4, "resolution": "inline", "left": True,
        "how": "both sides inserted different cells here: local's and remote's are between marker cells",
        "description": "cell 5: both sides inserted cells here",
    }]
    result = run("merge", *fixture("inserts-same-place"), "-o", str(tmp_path / "m.ipynb"), "--report", str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["conflicts"][0]["kind"] == "insert"


def test_inplace_writes_into_local(tmp_path: Path, nb_files) -> None:  # type: ignore[no-untyped-def]
    base = notebook(*numbered(4))
    local = notebook(*numbered(4))
    local["cells"][0]["source"] = "local"
    remote = notebook(*numbered(4))
    remote["cells"][3]["source"] = "remote"
    b, l, r = nb_files(base, local, remote)
    result = run("merge", str(b), str(l), str(r), "--inplace")
    assert result.exit_code == 0, result.stderr
    merged = notebook_io.read_notebook(l)
    assert [c["source"] for c in merged["cells"]] == ["local", "x1 = 1", "x2 = 2", "remote"]


def test_strategy_ours_settles_and_exits_0() -> None:
    result = run("merge", *fixture("same-line"), "--strategy", "ours")
    assert result.exit_code == 0
    assert "min(totals, key=totals.get)" in result.stdout and "<<<<<<<" not in result.stdout
    assert "1 conflict settled by the merge\n  cell 7 (id 'wettest'): both sides changed the same lines; took local's\n" in result.stderr


BAD = {
    "invalid-json": (b'{"cells": [', "is not valid JSON: line 1 column 12 (Expecting value)"),
    "not-a-notebook": (b'{"a": 1}', "is not a Jupyter notebook (no 'nbformat' field)"),
    "nbformat-3": (b'{"nbformat": 3, "nbformat_minor": 0, "worksheets": []}',
                   "is nbformat 3; only nbformat 4 is merged (hint: convert it with 'jupyter nbconvert --to notebook --nbformat 4')"),
    "truncated": (notebook_io.dumps(notebook(cell("a", "a"))).encode()[:40], "is not valid JSON: line"),
    "empty": (b"", "is empty"),
    "binary": (bytes(range(256)), "is a binary file, not a notebook"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
@pytest.mark.parametrize("role", ["BASE", "LOCAL", "REMOTE"])
def test_bad_input_exit_2_one_line_no_output(tmp_path: Path, case: str, role: str) -> None:
    good = write(tmp_path / "good.ipynb", notebook(cell("a", "a")))
    bad = tmp_path / "bad.ipynb"
    bad.write_bytes(BAD[case][0])
    args = [str(good)] * 3
    args[["BASE", "LOCAL", "REMOTE"].index(role)] = str(bad)
    out = tmp_path / "out.ipynb"
    result = run("merge", *args, "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {role} '{bad}' {BAD[case][1]}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_missing_file_and_directory_exit_2(tmp_path: Path) -> None:
    good = str(write(tmp_path / "good.ipynb", notebook()))
    result = run("merge", good, str(tmp_path / "nope.ipynb"), good)
    assert (result.exit_code, result.stderr) == (2, f"Error: LOCAL '{tmp_path / 'nope.ipynb'}' does not exist\n")
    result = run("merge", good, good, str(tmp_path))
    assert (result.exit_code, result.stderr) == (2, f"Error: REMOTE '{tmp_path}' is a directory, not a notebook\n")


def test_inplace_bad_input_leaves_local_untouched(tmp_path: Path) -> None:
    local = write(tmp_path / "local.ipynb", notebook(cell("mine", "a")))
    before = local.read_bytes()
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{")
    assert run("merge", str(local), str(local), str(bad), "--inplace").exit_code == 2
    assert local.read_bytes() == before


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    good = str(write(tmp_path / "good.ipynb", notebook()))
    assert run("merge", good, good).exit_code == 2
    result = run("merge", good, good, good, "--inplace", "-o", "x.ipynb")
    assert result.exit_code == 2
    assert "use either -o/--output or --inplace, not both" in result.stderr
    assert run("merge", good, good, good, "--strategy", "mine").exit_code == 2


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and re.fullmatch(r"nbmergesave, version \d+\.\d+\.\d+\n", result.stdout)


def _commands(group: click.Group, prefix: str = ""):  # type: ignore[no-untyped-def]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def _docs_pages() -> str:
    """The site's written pages (docs/cli.md is generated from the commands, so it would prove nothing)."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")) if p.name != "cli.md")


@pytest.mark.parametrize("name", [n for n, _ in _commands(cli)])
def test_every_command_has_help_with_an_example_and_is_in_the_docs(name: str) -> None:
    result = run(*name.split(), "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    if not name.endswith(" run"):  # what git calls is documented under the driver
        assert f"nbmergesave {name}" in _docs_pages(), f"no page of docs/ shows 'nbmergesave {name}'"


def test_the_cli_reference_page_covers_every_command() -> None:
    """docs/cli.md generates the reference from the click group itself, nested, so no command can be missing."""
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert ".. click:: nbmergesave.cli:cli" in page and ":nested: full" in page
