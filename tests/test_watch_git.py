"""End-to-end: a real `nbmergesave watch` process over real git repositories (issue 12).

Every git command is run twice: in the watched repository and in an
identical twin nobody watches. After each step, once the watcher is idle,
both must show the same `git status --porcelain`, the same HEAD and the same
bytes in every notebook, and the store must hold no merge: what git writes
is git's, never merged. Commits use fixed dates, so both repositories get the
same commit ids.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io
from nbmergesave.gitrepo import GitRepos
from nbmergesave.store import Store
from nbmergesave.sync import sync_file

from .conftest import cell, notebook, stop_process, wait_for
from .git import git, git_env

TIMEOUT = 30.0
NOTEBOOKS = ("a.ipynb", "b.ipynb", "sub/c.ipynb")
SENTINEL = "zz-sentinel.ipynb"


def nb(*sources: str, ids: str = "c") -> dict[str, Any]:
    return notebook(*[cell(s, f"{ids}{i}") for i, s in enumerate(sources)])


def put(repo: Path, name: str, content: dict[str, Any]) -> bytes:
    data = notebook_io.dumps(content).encode()
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # an editor's save: rewritten in place
        f.write(data)
    return data


def with_line(content: dict[str, Any], index: int, line: str) -> dict[str, Any]:
    out = copy.deepcopy(content)
    out["cells"][index]["source"] += "\n" + line
    return out


# The histories: `old` (from C1) looks, to content alone, like a stale writer's
# save next to `main` (C2): it holds none of the lines main added since C1.
A1 = nb(*[f"x{i} = {i}" for i in range(8)])
B1 = nb(*[f"y{i} = {i}" for i in range(8)])
C1_ = nb(*[f"z{i} = {i}" for i in range(8)])
A2 = with_line(with_line(A1, 1, "x1 += 1"), 2, "x2 += 2")
B2 = with_line(B1, 0, "y0 += 1")
A_OLD = with_line(A1, 6, "x6 *= 6")
C_OLD = with_line(C1_, 3, "z3 *= 3")
A_FEATURE = copy.deepcopy(A2)
A_FEATURE["cells"].append(cell("feature = True", "f0"))
B_FEATURE = with_line(B2, 5, "y5 -= 5")


def build(repo: Path) -> None:
    """Two repositories built by this are identical, commit ids included."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "core.fsmonitor", "false")
    for name, content in zip(NOTEBOOKS, (A1, B1, C1_)):
        put(repo, name, content)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "C1")
    git(repo, "tag", "c1")
    git(repo, "switch", "-qc", "old")
    put(repo, "a.ipynb", A_OLD)
    put(repo, "sub/c.ipynb", C_OLD)
    git(repo, "commit", "-qam", "old")
    git(repo, "switch", "-q", "main")
    put(repo, "a.ipynb", A2)
    put(repo, "b.ipynb", B2)
    git(repo, "commit", "-qam", "C2")
    git(repo, "switch", "-qc", "feature")
    put(repo, "a.ipynb", A_FEATURE)
    put(repo, "b.ipynb", B_FEATURE)
    git(repo, "commit", "-qam", "feature")
    git(repo, "switch", "-q", "main")
    # Our own files stay out of git's sight, as a user would keep them (.git/info/exclude).
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text(f".nbmergesave/\n{SENTINEL}\n")


class Watched:
    """A real watcher process over ``root``, and a way to wait until it is idle."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.status = root.parent / f"{root.name}-status.json"
        self.log = root.parent / f"{root.name}-watcher.log"
        self.sentinel = 0
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbmergesave", "watch", str(root), "--rescan", "600",
                 "--status-file", str(self.status), *extra],
                stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(self.status.exists, "the watcher to start")

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def read_status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None

    def idle(self) -> dict[str, Any]:
        """Wait until the watcher has handled every event up to now.

        A notebook git ignores is saved after the step: its event comes after
        all of git's in the same inotify queue, so once the store shows it,
        every earlier save has been read; then a status computed after that
        moment must show nothing pending (saves held for git included).
        """
        assert self.proc.poll() is None, self.output()
        self.sentinel += 1
        data = put(self.root, SENTINEL, nb("\n".join(f"s{i} = {i}" for i in range(self.sentinel)), ids="s"))
        digest = hashlib.sha256(data).hexdigest()

        def recorded() -> bool:
            with Store.open(self.root) as store:
                v = store.on_disk(self.root / SENTINEL)
                return v is not None and v.sha256 == digest

        wait_for(recorded, "the watcher to take in the sentinel save")
        seen = time.time()
        return wait_for(lambda: (s := self.read_status()) and s["time"] > seen and s["pending"] == 0 and s,
                        "the watcher to be idle")

    def merges(self) -> list[str]:
        with Store.open(self.root) as store:
            return [f"{key} v{v.version}" for key in store.tracked() for v in store.history(self.root / key)
                    if v.kind == "merged"]

    def kinds(self, name: str) -> list[str]:
        with Store.open(self.root) as store:
            return [v.kind for v in store.history(self.root / name)]

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Watched:
        """Idle once (the first sweep done), for the block; stopped when the block ends, however it ends."""
        try:
            self.idle()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository holding the histories of :func:`build`, in a folder of its own (``tmp_path / "w"``: the
    watcher's status and log files go beside it, and it is git's HOME)."""
    (tmp_path / "w").mkdir()
    made = tmp_path / "w" / "repo"
    build(made)
    return made


@pytest.fixture
def twins(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    (tmp_path / "w").mkdir()
    (tmp_path / "t").mkdir()
    watched, twin = tmp_path / "w" / "repo", tmp_path / "t" / "repo"
    build(watched)
    build(twin)
    assert git(watched, "rev-parse", "HEAD") == git(twin, "rev-parse", "HEAD")
    yield watched, twin


def state(repo: Path) -> dict[str, Any]:
    files = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*.ipynb"))
             if ".nbmergesave" not in p.parts and p.name != SENTINEL}
    return {"status": git(repo, "status", "--porcelain"), "head": git(repo, "rev-parse", "HEAD").strip(), "files": files}


def test_git_writes_are_recorded_never_merged(twins: tuple[Path, Path]) -> None:
    watched, twin = twins
    for repo in twins:  # the nbmergesave merge driver, for the merges that ask for it
        git(repo, "config", "merge.nbmergesave.driver", f"{sys.executable} -m nbmergesave git-driver run %O %A %B %P")
    steps: list[str] = []
    with Watched(watched) as watcher:
        def step(*args: str, check: bool = True) -> None:
            """Run one git command in both repositories, then compare them."""
            for repo in (watched, twin):
                git(repo, *args, check=check)
            compare(" ".join(args))

        def edit(name: str, content: dict[str, Any]) -> None:
            """A user's save (an editor), in both repositories."""
            put(watched, name, content)
            put(twin, name, content)
            compare(f"edit {name}")

        def compare(what: str) -> None:
            steps.append(what)
            watcher.idle()
            mine, alone = state(watched), state(twin)
            assert mine["status"] == alone["status"], f"after {what}: {mine['status']!r} != {alone['status']!r}"
            assert mine == alone, f"after {what}: the work trees differ"
            assert watcher.merges() == [], f"after {what}: the watcher merged {watcher.merges()}\n{watcher.output()}"

        # checkout between branches and commits, every ordered pair of main, old, feature, c1
        for target in ("old", "main", "feature", "main", "c1", "old", "feature", "old", "c1", "feature", "c1", "main"):
            step("checkout", "-q", target)
        step("switch", "-q", "old")
        step("switch", "-q", "-")
        step("switch", "-q", "--detach", "c1")
        step("switch", "-q", "main")
        # reset --hard, to an older commit and back
        step("switch", "-qc", "scratch")
        step("reset", "-q", "--hard", "c1")
        step("reset", "-q", "--hard", "old")
        step("reset", "-q", "--hard", "main")
        # local edits carried across checkouts, stashed, popped
        edit("sub/c.ipynb", with_line(C1_, 5, "z5 = 'local'"))
        step("checkout", "-q", "feature")
        step("checkout", "-q", "main")
        step("stash", "-q")
        step("checkout", "-q", "old")
        step("checkout", "-q", "main")
        step("stash", "pop", "-q")
        step("stash", "-q")
        step("checkout", "-q", "feature")
        step("stash", "pop", "-q")
        # git checkout -- file, and git restore
        step("checkout", "--", "sub/c.ipynb")
        edit("a.ipynb", with_line(A_FEATURE, 0, "x0 = 'local'"))
        step("restore", "a.ipynb")
        step("checkout", "-q", "main")
        # rebase: old's commit onto main (git merges a.ipynb as text and writes the result)
        step("switch", "-qc", "old2", "old")
        step("rebase", "-q", "main")
        # fast-forward merge, then a true merge without the driver
        step("switch", "-q", "main")
        step("merge", "-q", "--ff-only", "old2")
        step("merge", "-q", "--no-edit", "feature")
        # a true merge with the nbmergesave driver: one side edits a cell the other moved (git's
        # line merge conflicts on this; the driver merges it, so the merge commit is made)
        step("switch", "-qc", "left", "c1")
        edit("b.ipynb", with_line(B1, 5, "y5 = 'left'"))
        step("commit", "-qam", "left")
        step("switch", "-qc", "right", "c1")
        right = copy.deepcopy(B1)
        right["cells"].insert(0, right["cells"].pop(5))
        edit("b.ipynb", right)
        step("commit", "-qam", "right")
        for repo in (watched, twin):
            (repo / ".git" / "info" / "attributes").write_text("*.ipynb merge=nbmergesave\n")
        step("merge", "-q", "--no-edit", "left")
        assert len(git(watched, "rev-parse", "HEAD^@").split()) == 2  # merged by the driver, committed
        # a merge git cannot finish: it writes conflict markers (no notebook), then is aborted
        (watched / ".git" / "info" / "attributes").unlink()
        (twin / ".git" / "info" / "attributes").unlink()
        step("switch", "-qc", "clash", "c1")
        edit("b.ipynb", with_line(B1, 0, "y0 = 'clash'"))
        step("commit", "-qam", "clash")
        step("switch", "-q", "main")
        step("merge", "-q", "--no-edit", "clash", check=False)
        assert "UU b.ipynb" in git(watched, "status", "--porcelain")
        step("merge", "--abort")
        # pull from a second clone: fast-forward, then a true merge
        upstream = watched.parent.parent / "upstream"
        git(watched.parent.parent, "clone", "-q", str(watched), str(upstream))
        put(upstream, "sub/c.ipynb", with_line(C_OLD, 7, "z7 = 'upstream'"))
        git(upstream, "commit", "-qam", "upstream 1")
        step("pull", "-q", "--no-rebase", str(upstream), "main")
        put(upstream, "a.ipynb", with_line(notebook_io.read_notebook(upstream / "a.ipynb"), 4, "x4 = 'up'"))
        git(upstream, "commit", "-qam", "upstream 2")
        edit("b.ipynb", with_line(notebook_io.read_notebook(watched / "b.ipynb"), 7, "y7 = 'here'"))
        step("commit", "-qam", "here")
        step("pull", "-q", "--no-rebase", "--no-edit", str(upstream), "main")
        assert len(git(watched, "log", "--merges", "--format=%H").split()) >= 2  # true merges happened
    log = watcher.output()
    assert "merged " not in log, log
    assert "error " not in log and "deleted " not in log, log  # git's remove-then-write is no deletion
    # git's writes were seen and recorded as git's (not merely missed)
    assert "git" in watcher.kinds("a.ipynb") and "git" in watcher.kinds("b.ipynb")
    assert "skipped" in log and "b.ipynb" in log  # the conflicted file was left alone, and said so
    assert len(steps) > 50


def test_content_alone_would_merge_these_checkouts(tmp_path: Path, repo: Path) -> None:
    """Why git must be asked: the same checkouts, judged on content alone, give a merge."""
    path = repo / "a.ipynb"
    repos = GitRepos()
    try:
        for writer_of, expected in ((None, "merged"), (lambda d: "git" if repos.find(path).has_blob(d) else None, "recorded")):
            with Store.open(repo, tmp_path / f"store-{expected}") as store:
                outcomes = []
                for target in ("main", "c1", "main", "old"):
                    git(repo, "checkout", "-q", target)
                    outcomes.append(sync_file(store, path, writer_of=writer_of).action)
                assert outcomes[-1] == expected, outcomes
            git(repo, "checkout", "-q", "-f", "main")
    finally:
        repos.close()


def test_a_save_during_git_pull_is_still_merged_and_undone_exactly(tmp_path: Path, repo: Path) -> None:
    """An editor saves one notebook while `git pull` writes others: the save waits for git, then merges."""
    # A slow file git checks out last, so the pull holds index.lock long enough to save into.
    (repo / "zz.dat").write_text("v1\n")
    (repo / ".gitattributes").write_text("zz.dat filter=slow\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "slow file")
    upstream = tmp_path / "upstream"
    git(tmp_path, "clone", "-q", str(repo), str(upstream))
    put(upstream, "b.ipynb", with_line(B2, 6, "y6 = 'upstream'"))
    put(upstream, "sub/c.ipynb", with_line(C1_, 6, "z6 = 'upstream'"))
    (upstream / "zz.dat").write_text("v2\n")
    git(upstream, "commit", "-qam", "upstream")
    git(repo, "config", "filter.slow.smudge", "sleep 1.5; cat")
    git(repo, "config", "filter.slow.clean", "cat")
    with Watched(repo) as watcher:
        mine = with_line(A2, 3, "x3 = 'writer one'")  # a first writer saves ...
        put(repo, "a.ipynb", mine)
        watcher.idle()
        theirs = with_line(A2, 5, "x5 = 'writer two'")  # ... a second, who loaded before, saves during the pull
        pull = subprocess.Popen(["git", "pull", "-q", "--no-rebase", str(upstream), "main"], cwd=repo,
                                env=git_env(repo.parent), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lock = repo / ".git" / "index.lock"
        try:
            wait_for(lock.exists, "git pull to take the index lock")
            saved = put(repo, "a.ipynb", theirs)
            assert lock.exists(), "the save was meant to land while git held the index lock"
        finally:
            out, _ = pull.communicate(timeout=60)
        assert pull.returncode == 0, out
        watcher.idle()
        merged = notebook_io.read_notebook(repo / "a.ipynb")
        sources = [c["source"] for c in merged["cells"]]
        assert "x3 = 3\nx3 = 'writer one'" in sources and "x5 = 5\nx5 = 'writer two'" in sources
        assert [m.split()[0] for m in watcher.merges()] == ["a.ipynb"], watcher.merges()
        assert git(repo, "status", "--porcelain") == " M a.ipynb\n"  # the pulled files are exactly upstream's
        for name in ("b.ipynb", "sub/c.ipynb"):
            assert (repo / name).read_bytes() == (upstream / name).read_bytes()
            assert watcher.kinds(name)[-1] == "git"
        log = watcher.output()
        assert f"merged {repo / 'a.ipynb'}: base v" in log and "nbmergesave undo" in log, log
        assert watcher.read_status()["single_writer"]["git"] >= 2  # type: ignore[index]
        undo = subprocess.run([sys.executable, "-m", "nbmergesave", "undo", str(repo / "a.ipynb")],
                              capture_output=True, text=True, timeout=60)
        assert undo.returncode == 0, undo.stderr
        watcher.idle()
        assert (repo / "a.ipynb").read_bytes() == saved  # exactly the save the merge took in


def test_repositories_are_found_per_notebook(tmp_path: Path) -> None:
    """Nested repositories, worktrees, submodules and `.git` files (separate git dirs)."""
    outer = tmp_path / "outer"
    build(outer)
    inner = outer / "nested"
    git(outer, "init", "-q", str(inner))
    put(inner, "n.ipynb", A1)
    git(inner, "add", ".")
    git(inner, "commit", "-qm", "inner")
    worktree = tmp_path / "wt"
    git(outer, "worktree", "add", "-q", str(worktree), "old")
    separate = tmp_path / "sep"
    git(tmp_path, "init", "-q", "--separate-git-dir", str(tmp_path / "sep.git"), str(separate))
    put(separate, "s.ipynb", B1)
    git(separate, "add", ".")
    git(separate, "commit", "-qm", "sep")
    git(outer, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(separate), "mod")
    repos = GitRepos()
    try:
        assert repos.find(outer / "sub" / "c.ipynb").work_tree == outer  # type: ignore[union-attr]
        assert repos.find(inner / "n.ipynb").work_tree == inner  # type: ignore[union-attr]
        wt = repos.find(worktree / "a.ipynb")
        assert wt is not None and wt.git_dir == outer / ".git" / "worktrees" / "wt"
        assert wt.has_blob((worktree / "a.ipynb").read_bytes())
        assert wt.has_blob(notebook_io.dumps(A2).encode())  # main's objects, through the common dir
        sep = repos.find(separate / "s.ipynb")
        assert sep is not None and sep.git_dir == tmp_path / "sep.git" and sep.has_blob((separate / "s.ipynb").read_bytes())
        mod = repos.find(outer / "mod" / "s.ipynb")
        assert mod is not None and mod.git_dir == outer / ".git" / "modules" / "mod"
        assert mod.has_blob((outer / "mod" / "s.ipynb").read_bytes())
        assert not mod.has_blob(notebook_io.dumps(A_OLD).encode())  # another repository's blob
        assert repos.find(tmp_path / "elsewhere.ipynb") is None
        assert not repos.find(outer / "a.ipynb").busy()  # type: ignore[union-attr]
        (outer / ".git" / "index.lock").touch()
        assert repos.find(outer / "a.ipynb").busy()  # type: ignore[union-attr]
        assert not wt.busy()  # a worktree has its own index
        (outer / ".git" / "index.lock").unlink()
        assert len(repos.repos()) == 5  # one per repository, found again by its git folder
    finally:
        repos.close()


def test_a_crlf_checkout_is_a_blob_too(repo: Path) -> None:
    git(repo, "config", "core.autocrlf", "true")
    (repo / "a.ipynb").unlink()
    git(repo, "checkout", "--", "a.ipynb")
    data = (repo / "a.ipynb").read_bytes()
    assert b"\r\n" in data
    repos = GitRepos()
    try:
        assert repos.find(repo / "a.ipynb").has_blob(data)  # type: ignore[union-attr]
    finally:
        repos.close()


def test_saves_wait_while_git_holds_the_index_lock(repo: Path) -> None:
    """A stale writer's save made while index.lock exists is held, then merged once the lock is gone."""
    with Watched(repo) as watcher:
        put(repo, "a.ipynb", with_line(A2, 3, "x3 = 'one'"))
        watcher.idle()
        lock = repo / ".git" / "index.lock"
        lock.touch()
        put(repo, "a.ipynb", with_line(A2, 5, "x5 = 'two'"))
        status = wait_for(lambda: (s := watcher.read_status()) and s["pending"] >= 1 and s, "the save to be held")
        assert watcher.merges() == [] and status["merges"] == 0
        lock.unlink()
        watcher.idle()
        assert [m.split()[0] for m in watcher.merges()] == ["a.ipynb"], watcher.output()


def test_stopping_keeps_saves_held_for_git(repo: Path) -> None:
    with Watched(repo) as watcher:
        (repo / ".git" / "index.lock").touch()
        data = put(repo, "a.ipynb", with_line(A2, 5, "x5 = 'held'"))
        wait_for(lambda: (s := watcher.read_status()) and s["pending"] >= 1, "the save to be held")
    assert "kept in the store" in watcher.output()
    with Store.open(repo) as store:
        assert store.latest_with(repo / "a.ipynb", hashlib.sha256(data).hexdigest()) is not None



def test_a_repository_made_while_watching_is_found(tmp_path: Path) -> None:
    """`git init` and a checkout after the watcher started: the new repository answers too."""
    root = tmp_path / "w" / "root"
    root.mkdir(parents=True)
    with Watched(root) as watcher:
        repo = root / "repo"
        put(repo, "a.ipynb", A2)  # the watcher sees these folders before they are in a repository
        put(repo, "sub/c.ipynb", C1_)
        watcher.idle()
        shutil.rmtree(repo)
        build(repo)  # made under a watched folder while the watcher runs
        (repo / ".git" / "info" / "exclude").write_text(".nbmergesave/\n")
        watcher.idle()
        for target in ("c1", "main", "old", "c1", "main", "old"):
            git(repo, "checkout", "-q", target)
            watcher.idle()
            assert git(repo, "status", "--porcelain") == "", watcher.output()
        assert watcher.merges() == []
        assert "git" in watcher.kinds("repo/a.ipynb")  # the new repository was asked


def test_a_conflicted_new_notebook_is_left_alone_not_retried(repo: Path) -> None:
    """Both branches add the same notebook and git writes conflict markers; the watcher starts then."""
    git(repo, "switch", "-qc", "one", "c1")
    put(repo, "new.ipynb", A_OLD)
    git(repo, "add", "new.ipynb")
    git(repo, "commit", "-qm", "one")
    git(repo, "switch", "-qc", "two", "c1")
    put(repo, "new.ipynb", A2)
    git(repo, "add", "new.ipynb")
    git(repo, "commit", "-qm", "two")
    git(repo, "merge", "-q", "one", check=False)
    assert "AA new.ipynb" in git(repo, "status", "--porcelain")
    with Watched(repo) as watcher:  # started in the middle of the conflicted merge
        time.sleep(0.5)  # time for retries, if there were any
        watcher.idle()
        assert "skipped" in watcher.output() and "new.ipynb" in watcher.output()
        assert watcher.read_status()["pending"] == 0  # type: ignore[index]  # not retried again and again


def test_a_git_that_does_not_answer_is_given_up(
        tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hung `git cat-file` (a stuck file system, a partial clone fetching) must not stop the watcher."""
    from nbmergesave import gitrepo

    real = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = cat-file ] && exec sleep 60; done\nexec {real} "$@"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(gitrepo.GitRepo, "ANSWER_TIMEOUT", 0.5)
    repos = GitRepos()
    try:
        found = repos.find(repo / "a.ipynb")
        assert found is not None
        assert not found.has_blob((repo / "a.ipynb").read_bytes())
        assert found.broken is not None and "did not answer" in found.broken
        assert not found.has_blob(b"anything")  # given up: not asked again
    finally:
        repos.close()


def test_a_repository_asked_mid_init_is_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git asked while `git init` or `clone` is still making the repository fails; it is tried again later."""
    from nbmergesave import gitrepo

    monkeypatch.setattr(gitrepo.GitRepo, "RETRY_AFTER", 0.0)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # what a half-made repository has first
    data = notebook_io.dumps(A1).encode()
    repos = GitRepos()
    try:
        found = repos.find(repo / "a.ipynb")
        assert found is not None and not found.has_blob(data) and found.broken is not None
        (repo / ".git" / "HEAD").unlink()
        (repo / ".git").rmdir()
        build(repo.parent / "made")
        (repo.parent / "made").rename(repo)
        assert found.has_blob(data)
        assert found.broken is None
    finally:
        repos.close()


def test_a_sha256_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    made = subprocess.run(["git", "init", "-q", "--object-format=sha256", str(repo)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this git cannot make sha256 repositories: {made.stderr.strip()}")
    data = put(repo, "a.ipynb", A1)
    git(repo, "add", "a.ipynb")
    repos = GitRepos()
    try:
        found = repos.find(repo / "a.ipynb")
        assert found is not None and len(found.blob_id(data)) == 64
        assert found.has_blob(data) and not found.has_blob(notebook_io.dumps(A2).encode())
    finally:
        repos.close()


def test_a_work_tree_named_by_git_dir_and_git_work_tree(tmp_path: Path) -> None:
    """A bare repository with a separate work tree (dotfiles style) has no `.git` to find."""
    bare, home = tmp_path / "dotfiles.git", tmp_path / "home"
    home.mkdir()
    git(tmp_path, "init", "-q", "--bare", str(bare))
    data = put(home, "notes/n.ipynb", A1)
    env = {**git_env(tmp_path), "GIT_DIR": str(bare), "GIT_WORK_TREE": str(home)}
    subprocess.run(["git", "add", "notes/n.ipynb"], cwd=home, env=env, check=True)
    repos = GitRepos(environ=env)
    try:
        found = repos.find(home / "notes" / "n.ipynb")
        assert found is not None and found.work_tree == home and found.git_dir == bare
        assert found.has_blob(data)
        assert GitRepos(environ={}).find(home / "notes" / "n.ipynb") is None  # not without them
    finally:
        repos.close()


def test_checkouts_through_a_smudge_filter_are_gits(repo: Path) -> None:
    """A filter rewrites what checkout writes (as git lfs does): no blob, but git's index knows the file."""
    smudge = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read() + b'\\\\n')"
    clean = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read().rstrip(b'\\\\n') + b'\\\\n')"
    git(repo, "config", "filter.pad.smudge", f"{sys.executable} -c \"{smudge}\"")
    git(repo, "config", "filter.pad.clean", f"{sys.executable} -c \"{clean}\"")
    (repo / ".git" / "info" / "attributes").write_text("*.ipynb filter=pad\n")
    git(repo, "checkout", "-q", "-f", "old")
    git(repo, "checkout", "-q", "-f", "main")  # every notebook now as the filter writes it
    assert (repo / "a.ipynb").read_bytes().endswith(b"\n\n")
    with Watched(repo) as watcher:
        for target in ("c1", "main", "old", "c1", "old", "main"):
            git(repo, "checkout", "-q", target)
            watcher.idle()
            assert git(repo, "status", "--porcelain") == "", watcher.output()
        assert watcher.merges() == []
        assert "git" in watcher.kinds("a.ipynb")
        # and an editor's save in such a repository is still an ordinary save, merged when it overlaps
        put(repo, "a.ipynb", with_line(A2, 3, "x3 = 'one'"))
        watcher.idle()
        put(repo, "a.ipynb", with_line(A2, 5, "x5 = 'two'"))
        watcher.idle()
        assert [m.split()[0] for m in watcher.merges()] == ["a.ipynb"]


def test_a_revert_read_late_is_still_recorded(tmp_path: Path) -> None:
    """A single writer goes back to older content (a checkout back) and saves again at once; the watcher
    reads the first of the two only after the second is on disk. Both are recorded, neither merged
    (skipping the first as "seen before" left the second to be judged against the wrong version)."""
    root, path = tmp_path, tmp_path / "a.ipynb"

    def write(content: dict[str, Any]) -> bytes:
        data = notebook_io.dumps(content).encode()
        path.write_bytes(data)
        return data

    with Store.open(root) as store:
        write(A2)
        assert sync_file(store, path).action == "recorded"
        write(A1)
        assert sync_file(store, path).action == "recorded"
        back = write(A2)  # the older content again ...
        feature = write(A_FEATURE)  # ... and the next save, before the watcher read the first
        assert sync_file(store, path, data=back).action == "recorded"
        assert sync_file(store, path, data=feature).action == "recorded"
        assert [v.kind for v in store.history(path)] == ["observed"] * 4
        assert path.read_bytes() == feature


# --- deletions: git's remove-then-write is none, a real removal is one --------------------------

class Gate:
    """A smudge filter that stops git in the middle of replacing ``b.ipynb``: git has taken
    ``index.lock`` and removed the old file, and writes the new one once the gate opens (the
    order `strace` shows git follow: lock, unlink, filter, create and write, rename the lock
    over the index)."""

    def __init__(self, repo: Path, folder: Path) -> None:
        self.repo, self.started, self.release = repo, folder / "gate-started", folder / "gate-release"
        script = folder / "gate.sh"
        # (the filter gives up waiting after 60 s, so a failing test never leaves git behind)
        script.write_text(': > "$1"\ni=0\nwhile [ ! -e "$2" ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done\n'
                          'exec cat\n')
        git(repo, "config", "filter.gate.smudge",
            f"sh {shlex.quote(str(script))} {shlex.quote(str(self.started))} {shlex.quote(str(self.release))}")
        (repo / ".git" / "info" / "attributes").write_text("b.ipynb filter=gate\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a git command that replaces b.ipynb (it stops at the gate)."""
        self.started.unlink(missing_ok=True)
        self.release.unlink(missing_ok=True)
        self.proc = subprocess.Popen(["git", *args], cwd=self.repo, env=git_env(self.repo.parent),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self.proc

    def run(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a git command that replaces b.ipynb; return once it is stopped at the gate."""
        self.start(*args)
        assert self.proc is not None
        wait_for(lambda: self.started.exists() or self.proc.poll() is not None, "git to reach the gate")
        assert self.proc.poll() is None, "git ended before it reached the gate"
        assert (self.repo / ".git" / "index.lock").exists() and not (self.repo / "b.ipynb").exists()
        return self.proc

    def finish(self) -> None:
        """Open the gate and wait for git to end."""
        assert self.proc is not None
        self.release.touch()
        assert self.proc.wait(timeout=TIMEOUT) == 0


def _is(path: object, target: Path) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(target)


def test_git_ending_between_the_watchers_looks_is_no_deletion(
        tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The flake of test_git_writes_are_recorded_never_merged, made certain: git removes b.ipynb, and finishes
    writing it anew (its lock gone) right after the watcher's first look that shows git at work, before its
    next look. The watcher looked at the file (missing), then at the lock (gone), and recorded a deletion."""
    from nbmergesave.watcher import Watcher

    gate = Gate(repo, tmp_path)
    path, lock = repo / "b.ipynb", repo / ".git" / "index.lock"
    looks: list[str] = []
    real_stat, real_lstat = os.stat, os.lstat

    def git_ends(look: str) -> None:
        """Called right after a look by the watcher's worker: while git is at the gate, let it end now."""
        if threading.current_thread().name == "nbmergesave-sync" and gate.proc is not None \
                and gate.proc.poll() is None:
            looks.append(look)
            gate.finish()

    def stat(p: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return real_stat(p, *args, **kwargs)
        except FileNotFoundError:
            if _is(p, path):
                git_ends("b.ipynb missing")
            raise

    def lstat(p: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_lstat(p, *args, **kwargs)
        if _is(p, lock):
            git_ends("index.lock there")
        return result

    lines: list[str] = []
    watcher = Watcher([repo], log=lines.append)
    watcher.start()
    try:
        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "lstat", lstat)
        # (the watcher may look, and let git end, before git even reaches the gate: then the gate is open)
        proc = gate.start("checkout", "-q", "c1", "--", "b.ipynb")
        wait_for(lambda: proc.poll() is not None, "the watcher to look while git writes (git ends right after)")
        assert proc.returncode == 0
        monkeypatch.undo()
        written = hashlib.sha256(path.read_bytes()).hexdigest()

        def took_in() -> bool:
            with Store.open(repo) as store:
                current = store.on_disk(path)
            return current is not None and current.sha256 == written and watcher.pending() == 0

        wait_for(took_in, "the watcher to take in what git wrote")
    finally:
        monkeypatch.undo()
        watcher.stop()
    assert len(looks) == 1, looks  # git did end between two looks of the watcher
    with Store.open(repo) as store:
        kinds = [v.kind for v in store.history(path)]
    assert "deleted" not in kinds and kinds[-1] == "git", (kinds, looks, lines)
    assert not any(line.startswith("deleted ") for line in lines), lines


def test_gone_asks_again_when_git_ran_between_its_looks(
        tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GitRepo.gone, against a git that starts right after it found no lock and ends right after it found the file
    missing (looking at the lock first and then at the file would call this a deletion), and the plain cases."""
    gate = Gate(repo, tmp_path)
    path, lock = repo / "b.ipynb", repo / ".git" / "index.lock"
    repos = GitRepos()
    try:
        found = repos.find(path)
        assert found is not None and found.gone(path) is False
        real_stat, real_lstat = os.stat, os.lstat
        looks: list[str] = []

        def lstat(p: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return real_lstat(p, *args, **kwargs)
            except FileNotFoundError:
                if _is(p, lock) and not looks:
                    gate.run("checkout", "-q", "c1", "--", "b.ipynb")  # git starts and removes the file
                    looks.append("no index.lock")
                raise

        def stat(p: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return real_stat(p, *args, **kwargs)
            except FileNotFoundError:
                if _is(p, path) and looks == ["no index.lock"]:
                    looks.append("b.ipynb missing")
                    gate.finish()  # git writes the file and ends
                raise

        monkeypatch.setattr(os, "lstat", lstat)
        monkeypatch.setattr(os, "stat", stat)
        assert found.gone(path) is None
        monkeypatch.undo()
        assert looks == ["no index.lock", "b.ipynb missing"]
        assert found.gone(path) is False and path.exists()
        # while git holds the lock, nothing is decided; a file missing with git done is gone
        lock.touch()
        path.unlink()
        assert found.gone(path) is None
        lock.unlink()
        assert found.gone(path) is True
    finally:
        monkeypatch.undo()
        repos.close()


def test_real_deletions_in_a_work_tree_are_recorded(repo: Path) -> None:
    """A person removing a notebook, `git rm`, and a checkout of a branch without the file are deletions."""
    git(repo, "switch", "-qc", "no-b", "main")
    git(repo, "rm", "-q", "b.ipynb")
    git(repo, "commit", "-qm", "no b")
    git(repo, "switch", "-q", "main")
    with Watched(repo) as watcher:
        (repo / "a.ipynb").unlink()  # a person
        git(repo, "rm", "-q", "sub/c.ipynb")
        git(repo, "checkout", "-q", "no-b")  # carries the two removals along
        watcher.idle()
        for name in ("a.ipynb", "b.ipynb", "sub/c.ipynb"):
            assert watcher.kinds(name)[-1] == "deleted", (name, watcher.output())
        git(repo, "checkout", "-q", "-f", "main")  # back: each is there again, as git wrote it
        watcher.idle()
        for name in ("a.ipynb", "b.ipynb", "sub/c.ipynb"):
            assert watcher.kinds(name)[-1] == "git", (name, watcher.kinds(name), watcher.output())
        assert git(repo, "status", "--porcelain") == "" and watcher.merges() == []
