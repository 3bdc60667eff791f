"""Git awareness for the watcher: which repository holds a notebook, and what git itself wrote.

Everything ``git checkout``, ``switch``, ``reset``, ``stash``, ``rebase``,
``merge`` and ``pull`` writes into a work tree is content git already holds
as a blob (conflicted files and a merge driver's result included: git stores
them before it writes them), and git holds ``index.lock`` in the work tree's
git folder while it writes. So before the watcher merges a save in a work
tree it asks git, through one long-lived ``git cat-file --batch-check`` per
repository, whether the saved bytes are a blob git has; and it holds back
saves while ``index.lock`` exists.

Repositories are found per notebook, walking up from its folder to the
first ``.git``: a folder, or a file ``gitdir: …`` as worktrees, submodules
and ``git init --separate-git-dir`` leave. A nested repository is its own.
A work tree with no ``.git`` at all (a bare repository's, as dotfiles are
often kept) is named by ``GIT_DIR`` and ``GIT_WORK_TREE`` when the watcher starts.

>>> # repos = GitRepos(); repo = repos.find(Path("project/nbs/intro.ipynb"))
>>> # repo.has_blob(Path("project/nbs/intro.ipynb").read_bytes())   # True right after a checkout
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import threading
import time
from pathlib import Path

#: Environment variables that would point git at another repository than the one we name.
_REPO_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                   "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES")


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_VARIABLES}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take index.lock ourselves: a user's git command would fail on it
    env["GIT_NO_LAZY_FETCH"] = "1"  # a partial clone must not fetch from the network on a miss (git >= 2.44)
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def git_dir_of(dot_git: Path) -> Path | None:
    """The git folder a ``.git`` entry stands for: the folder itself, or where a ``gitdir:`` file points."""
    try:
        if dot_git.is_dir():
            return dot_git if (dot_git / "HEAD").exists() else None
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    target = Path(text[len("gitdir:"):].strip())
    target = target if target.is_absolute() else dot_git.parent / target
    target = Path(os.path.normpath(target))
    return target if (target / "HEAD").exists() else None


class GitRepo:
    """One work tree and its git folder; answers "is this content a blob git holds?" and "is git writing?"."""

    #: Seconds to wait for git's answer before giving up on this repository (then saves are judged on content).
    ANSWER_TIMEOUT = 10.0
    #: Seconds before git is tried again after it failed (it may have been asked mid `git init` or `clone`) ...
    RETRY_AFTER = 2.0
    #: ... or after it did not answer in time.
    RETRY_AFTER_TIMEOUT = 300.0

    def __init__(self, work_tree: Path, git_dir: Path) -> None:
        self.work_tree = work_tree
        self.git_dir = git_dir  # per work tree: holds index and index.lock
        self.lock_file = git_dir / "index.lock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._format: str | None = None
        self.broken: str | None = None  # why git cannot be asked here, once it failed
        self._retry_at = 0.0
        self._smudges: bool | None = None  # a filter here rewrites what checkout writes (git lfs, ...)
        self._filtered: dict[str, bool] = {}  # by path in the work tree: has such a filter

    def __repr__(self) -> str:
        return f"GitRepo({str(self.work_tree)!r})"

    def busy(self) -> bool:
        """Whether a git command holds the index lock (it is writing the work tree or the index)."""
        return os.path.lexists(self.lock_file)

    def quiet(self) -> tuple[int, ...] | None:
        """``None`` while git holds the index lock; else a mark of the index as it is now.

        A git command that writes the work tree takes ``index.lock`` first and, once its
        files are written, renames the lock over ``index``: a new file. So two equal marks
        taken one after the other mean no such command ended in between.
        """
        if self.busy():
            return None
        try:
            st = os.stat(self.git_dir / "index")
        except OSError:
            return ()  # no index yet (a new repository)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def gone(self, path: str | os.PathLike[str]) -> bool | None:
        """Whether the file ``path`` is gone for good: ``False`` if it is there, ``None`` if git is writing
        (or wrote) the work tree while we looked: ask again once it is done.

        Git replaces a file by removing it and writing it anew, all while it holds the index
        lock. Looking at the lock and then at the file is not enough: git can finish between
        the two looks, and the file, missing a moment before, is back. So the lock and the
        index are looked at before and after the file, and a missing file counts only if
        neither changed.
        """
        before = self.quiet()
        if before is None:
            return None
        if os.path.isfile(path):
            return False
        return True if self.quiet() == before else None

    def blob_id(self, data: bytes) -> str:
        """The id git gives ``data`` as a blob (sha1, or sha256 in a repository made with that format)."""
        header = b"blob %d\0" % len(data)
        h = hashlib.sha256() if self._object_format() == "sha256" else hashlib.sha1()
        h.update(header)
        h.update(data)
        return h.hexdigest()

    def has_blob(self, data: bytes) -> bool:
        """Whether git holds ``data`` as a blob: then git (or a user through git) wrote it whole.

        Also tried with CRLF turned into LF, for repositories that check text out with
        CRLF line ends (``core.autocrlf``). ``False`` when git cannot be asked.
        """
        candidates = [data]
        if b"\r\n" in data:
            candidates.append(data.replace(b"\r\n", b"\n"))
        with self._lock:
            return any(self._ask(self.blob_id(c)) for c in candidates)

    def as_in_index(self, path: str | os.PathLike[str], data: bytes) -> bool:
        """Whether git says the file, holding ``data``, is exactly what its index has, through a filter.

        For notebooks a smudge filter rewrites on checkout (git lfs, a custom filter), so
        what git writes is not a blob; git itself can still tell, from the stat data it keeps
        in the index (or by running the clean filter), that the file is as it wrote it. Asked
        only where such a filter applies: elsewhere the blob check says it all.
        """
        if not self._has_smudge_filters():
            return False
        rel = os.path.relpath(os.path.abspath(path), self.work_tree)
        if rel not in self._filtered:
            out = self._run("check-attr", "filter", "--", rel)
            value = out.rsplit(":", 1)[-1].strip() if out is not None else "unspecified"
            self._filtered[rel] = value not in ("unspecified", "unset", "")
        if not self._filtered[rel]:
            return False
        # Empty output: tracked, not ignored, and unchanged from the index.
        out = self._run("status", "--porcelain", "--ignored", "--untracked-files=all", "--", rel)
        if out is None or out.strip():
            return False
        try:
            return Path(path).read_bytes() == data
        except OSError:
            return False

    def _has_smudge_filters(self) -> bool:
        if self._smudges is None:
            out = self._run("config", "--get-regexp", r"^filter\..*\.(smudge|process)$")
            self._smudges = bool(out and out.strip())
        return self._smudges

    def _run(self, *args: str) -> str | None:
        """One git command in this work tree; its output, or ``None`` when it fails."""
        try:
            out = subprocess.run(["git", f"--git-dir={self.git_dir}", f"--work-tree={self.work_tree}", *args],
                                 capture_output=True, env=_git_env(), cwd=self.work_tree, timeout=self.ANSWER_TIMEOUT)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None

    def _object_format(self) -> str:
        """``sha1`` or ``sha256``, asked once (again later if git could not say: a repository being made)."""
        if self._format is None:
            out = self._run("rev-parse", "--show-object-format")
            if not out or not out.strip():
                return "sha1"
            self._format = out.strip()
        return self._format

    def _ask(self, oid: str) -> bool:
        for _ in range(2):  # one restart if git went away (killed, upgraded)
            proc = self._process()
            if proc is None:
                return False
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(oid.encode() + b"\n")
                proc.stdin.flush()
                # One line answers each question. A git that does not answer in time (a stuck
                # file system; a partial clone fetching a missing object on git < 2.44) is given up.
                ready, _, _ = select.select([proc.stdout], [], [], self.ANSWER_TIMEOUT)
                line = proc.stdout.readline() if ready else b""
                if not ready:
                    self._give_up(f"git cat-file did not answer within {self.ANSWER_TIMEOUT:.0f} s",
                                  self.RETRY_AFTER_TIMEOUT)
            except OSError:
                line = b""
            if line:
                # "<oid> blob <size>", "<oid> missing", "<oid> tree <size>" ...
                parts = line.split()
                return len(parts) == 3 and parts[1] == b"blob"
            self._close_process()
            if self.broken is not None:
                return False
        self._give_up("git cat-file stopped answering", self.RETRY_AFTER)
        return False

    def _give_up(self, why: str, retry_after: float) -> None:
        self.broken = why
        self._retry_at = time.monotonic() + retry_after

    def _process(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self.broken is not None:
            if time.monotonic() < self._retry_at:
                return None
            self.broken = None  # try again
        try:
            self._proc = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch-check"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_git_env(),
                cwd=self.work_tree)
        except OSError as e:
            self._give_up(f"cannot run git: {e.strerror}", self.RETRY_AFTER_TIMEOUT)
            return None
        return self._proc

    def _close_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        except ValueError:  # stdin already closed
            pass
        finally:
            if proc.stdout is not None:
                proc.stdout.close()

    def close(self) -> None:
        with self._lock:
            self._close_process()


class GitRepos:
    """The repositories of many notebooks, each kept (with its git process) once found.

    The walk up to the nearest ``.git`` is done for every lookup (a few ``lstat``
    calls), not cached by folder: a repository made, removed or nested later
    under a watched folder is found as soon as it is there.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._by_git_dir: dict[Path, GitRepo] = {}
        self._lock = threading.Lock()
        # A work tree whose git folder is elsewhere and found by no `.git` (a bare repository
        # with a work tree, as dotfiles are often kept): named as git names it, by GIT_DIR and GIT_WORK_TREE.
        env = os.environ if environ is None else environ
        self._named: tuple[Path, Path] | None = None
        if env.get("GIT_DIR") and env.get("GIT_WORK_TREE"):
            git_dir, work_tree = Path(os.path.abspath(env["GIT_DIR"])), Path(os.path.abspath(env["GIT_WORK_TREE"]))
            if (git_dir / "HEAD").exists():
                self._named = (work_tree, git_dir)

    def find(self, path: str | os.PathLike[str]) -> GitRepo | None:
        """The repository whose work tree holds ``path`` (the innermost one), or ``None``."""
        folder = Path(os.path.abspath(path)).parent
        named = self._named
        while True:
            if named is not None and folder == named[0]:
                return self._repo(named[1], folder)
            dot_git = folder / ".git"
            if os.path.lexists(dot_git):
                git_dir = git_dir_of(dot_git)
                if git_dir is not None:
                    return self._repo(git_dir, folder)
            if folder.parent == folder:
                return None
            folder = folder.parent

    def _repo(self, git_dir: Path, work_tree: Path) -> GitRepo:
        with self._lock:
            repo = self._by_git_dir.get(git_dir)
            if repo is None or repo.work_tree != work_tree:
                if repo is not None:
                    repo.close()
                repo = self._by_git_dir[git_dir] = GitRepo(work_tree, git_dir)
            return repo

    def repos(self) -> list[GitRepo]:
        with self._lock:
            return list(self._by_git_dir.values())

    def close(self) -> None:
        for repo in self.repos():
            repo.close()
