"""Real git repositories for the tests: git run with a fixed identity, outside the user's own git config."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbmergesave import notebook_io


def git_env(home: Path) -> dict[str, str]:
    """This process's environment without its GIT_ variables, ``home`` as HOME (so the user's ~/.gitconfig stays
    out) and a fixed author, committer and date: two repositories built alike get the same commit ids."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="Ana", GIT_AUTHOR_EMAIL="ana@example.org",
               GIT_COMMITTER_NAME="Ana", GIT_COMMITTER_EMAIL="ana@example.org",
               GIT_AUTHOR_DATE="2026-01-01T00:00:00+00:00", GIT_COMMITTER_DATE="2026-01-01T00:00:00+00:00")
    return env


def run_git(repo: Path, *args: str, check: bool = True,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``git ARGS`` in ``repo``, its outcome returned whole (for tests that look at a failing git's exit code);
    ``env``: the whole environment, this process's by default."""
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=check, env=env, timeout=60)


def git(repo: Path, *args: str, check: bool = True) -> str:
    """``git ARGS`` in ``repo`` under :func:`git_env` (HOME: the folder holding ``repo``); its output. A failure
    fails the test with git's own words, unless ``check`` is false."""
    done = run_git(repo, *args, check=False, env=git_env(repo.parent))
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {repo.name}: {done.stderr}")
    return done.stdout


def commit_branches(repo: Path, path: Path, base: dict[str, Any], local: dict[str, Any],
                    remote: dict[str, Any]) -> None:
    """Commit ``base`` at ``path`` on main, then ``remote`` on a new branch ``theirs`` and ``local`` on main, where
    the repository is left: ready for ``git merge theirs`` to merge the three (git run as :func:`run_git`)."""
    path.write_text(notebook_io.dumps(base), encoding="utf-8")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-qm", "base")
    run_git(repo, "checkout", "-qb", "theirs")
    path.write_text(notebook_io.dumps(remote), encoding="utf-8")
    run_git(repo, "commit", "-qam", "theirs")
    run_git(repo, "checkout", "-q", "main")
    path.write_text(notebook_io.dumps(local), encoding="utf-8")
    run_git(repo, "commit", "-qam", "ours")
