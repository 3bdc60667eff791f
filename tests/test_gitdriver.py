"""The git merge driver against a real git: install, merge, conflict, uninstall."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest

from nbmergesave import gitdriver, notebook_io

from .conftest import notebook, numbered
from .git import commit_branches
from .git import run_git as git

pytestmark = pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="no git")


NAME = "dir with space/Ana's “notes” ü.ipynb"


def merge_edits(repo: Path, name: str, edit_local, edit_remote, edit_base=None):  # type: ignore[no-untyped-def]
    """Ten numbered cells (``edit_base`` applied) committed at ``name``, ``edit_local`` on main and ``edit_remote`` on
    ``theirs``, then ``git merge theirs`` run as a person runs it: its outcome."""
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    base = notebook(*numbered(10))
    if edit_base is not None:
        edit_base(base)
    local, remote = copy.deepcopy(base), copy.deepcopy(base)
    edit_local(local)
    edit_remote(remote)
    commit_branches(repo, path, base, local, remote)
    return git(repo, "merge", "--no-edit", "theirs", check=False)


def test_install_is_idempotent_and_uninstall_removes_exactly_it(git_repo: Path) -> None:
    (git_repo / ".gitattributes").write_text("*.png binary")  # no final newline
    assert gitdriver.install(cwd=git_repo) != []
    assert gitdriver.install(cwd=git_repo) == []
    assert (git_repo / ".gitattributes").read_text() == "*.png binary\n*.ipynb merge=nbmergesave\n"
    assert "nbmergesave git-driver run %O %A %B %P" in git(git_repo, "config", "merge.nbmergesave.driver").stdout
    assert gitdriver.uninstall(cwd=git_repo) != []
    assert gitdriver.uninstall(cwd=git_repo) == []
    assert (git_repo / ".gitattributes").read_text() == "*.png binary\n"
    assert git(git_repo, "config", "--get-regexp", "merge", check=False).stdout == ""


def test_global_install(git_repo: Path) -> None:
    gitdriver.install(global_=True, cwd=git_repo)
    attributes = Path(os.environ["XDG_CONFIG_HOME"]) / "git" / "attributes"
    assert attributes.read_text() == "*.ipynb merge=nbmergesave\n"
    assert git(git_repo, "config", "--global", "merge.nbmergesave.name").stdout.strip()
    gitdriver.uninstall(global_=True, cwd=git_repo)
    assert not attributes.exists()
    assert git(git_repo, "config", "--global", "--get-regexp", "merge", check=False).stdout == ""


def test_outside_a_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(gitdriver.NbMergeSaveError, match="not inside a git repository"):
        gitdriver.install(cwd=tmp_path)


def test_git_merge_of_different_cells_is_clean(git_repo: Path) -> None:
    gitdriver.install(cwd=git_repo)
    git(git_repo, "add", ".gitattributes")
    git(git_repo, "commit", "-qm", "driver")

    def local(nb):  # type: ignore[no-untyped-def]
        nb["cells"][2]["source"] = "ours"

    def remote(nb):  # type: ignore[no-untyped-def]
        nb["cells"][7]["source"] = "theirs"

    result = merge_edits(git_repo, NAME, local, remote)
    assert result.returncode == 0, result.stdout + result.stderr
    merged = notebook_io.read_notebook(git_repo / NAME)
    assert [c["source"] for c in merged["cells"]][2::5] == ["ours", "theirs"]
    assert git(git_repo, "status", "--porcelain").stdout == ""


def test_git_merge_of_same_line_leaves_markers_in_a_valid_notebook(git_repo: Path) -> None:
    gitdriver.install(cwd=git_repo)

    def local(nb):  # type: ignore[no-untyped-def]
        nb["cells"][4]["source"] = "x4 = 'ours'"

    def remote(nb):  # type: ignore[no-untyped-def]
        nb["cells"][4]["source"] = "x4 = 'theirs'"

    result = merge_edits(git_repo, NAME, local, remote)
    assert result.returncode != 0
    assert "CONFLICT" in result.stdout
    assert f"{NAME}: 1 conflict left in the notebook" in result.stderr + result.stdout
    merged = notebook_io.read_notebook(git_repo / NAME)
    notebook_io.validate(merged)
    assert merged["cells"][4]["source"] == "<<<<<<< local\nx4 = 'ours'\n=======\nx4 = 'theirs'\n>>>>>>> remote"
    assert NAME in git(git_repo, "diff", "--name-only", "--diff-filter=U", "-z").stdout


def test_git_merge_of_delete_versus_edit_stops_with_the_note_in_the_file(git_repo: Path) -> None:
    """Reported as left for a person, and shown: a note cell before the edited cell, which stays runnable."""
    gitdriver.install(cwd=git_repo)

    def local(nb):  # type: ignore[no-untyped-def]
        del nb["cells"][4]

    def remote(nb):  # type: ignore[no-untyped-def]
        nb["cells"][4]["source"] = "x4 = 'edited'"

    result = merge_edits(git_repo, NAME, local, remote)
    assert result.returncode != 0
    assert f"{NAME}: 1 conflict left in the notebook" in result.stderr + result.stdout
    assert "one side deleted a cell the other edited" in result.stderr + result.stdout
    merged = notebook_io.read_notebook(git_repo / NAME)
    notebook_io.validate(merged)
    note, kept = merged["cells"][4], merged["cells"][5]
    assert note["cell_type"] == "markdown" and note["source"].startswith("<<<<<<< nbmergesave: local deleted the next cell")
    assert kept["source"] == "x4 = 'edited'"
    assert NAME in git(git_repo, "diff", "--name-only", "--diff-filter=U", "-z").stdout


def test_git_merge_of_a_line_edit_beside_a_removed_final_newline_is_clean(git_repo: Path) -> None:
    """nbdime's decisions call this a conflict and its renderer merges it; we report what is written: clean."""
    gitdriver.install(cwd=git_repo)

    def base(nb):  # type: ignore[no-untyped-def]
        nb["cells"][3]["source"] = "a = 0\nb = 2\n"

    def local(nb):  # type: ignore[no-untyped-def]
        nb["cells"][3]["source"] = "a = 0\nb = 2"

    def remote(nb):  # type: ignore[no-untyped-def]
        nb["cells"][3]["source"] = "a = 1\nb = 2\n"

    result = merge_edits(git_repo, NAME, local, remote, edit_base=base)
    assert result.returncode == 0, result.stdout + result.stderr
    merged = notebook_io.read_notebook(git_repo / NAME)
    assert merged["cells"][3]["source"] == "a = 1\nb = 2"
