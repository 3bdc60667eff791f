"""What the tool writes stays its owner's, whatever the umask; a team folder's store stays the team's."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmergesave import notebook_io, private, sync_file
from nbmergesave.store import Store

from .conftest import cell, notebook
from .test_watcher import wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(params=[0o000, 0o002], ids=["umask000", "umask002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_private_dir_and_file_ignore_the_umask(tmp_path: Path, umask: int) -> None:
    folder = private.private_dir(tmp_path / "a" / "b" / "state")
    assert mode(folder) == 0o700
    for parent in (tmp_path / "a", tmp_path / "a" / "b"):  # made on the way: never writable by others
        assert mode(parent) & 0o022 == 0
    f = private.private_file(folder / "record.json")
    assert mode(f) == 0o600 and f.read_bytes() == b""
    f.write_text("kept")
    os.chmod(f, 0o666)  # a file left wide by an older version is narrowed, never truncated
    assert mode(private.private_file(f)) == 0o600 and f.read_text() == "kept"
    os.chmod(folder, 0o777)
    assert mode(private.private_dir(folder)) == 0o700
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):  # a planted symlink is not followed
        private.private_file(folder / "link")
    assert not (tmp_path / "elsewhere").exists()


def test_store_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "project"
    root.mkdir()
    os.chmod(root, 0o775)  # group-writable without setgid: not a team folder
    with Store.open(root) as store:
        nb = root / "nb.ipynb"
        nb.write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
        sync_file(store, nb)
        folder = root / ".nbmergesave"
        assert mode(folder) == 0o700
        files = list(folder.iterdir())  # while open, so SQLite's -wal and -shm are there too
        assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"} <= {f.name for f in files}
        for f in files:
            assert mode(f) & 0o077 == 0, f  # 0600 (a lock file may be 0600 or less)


def test_store_in_a_team_folder_keeps_the_group(tmp_path: Path, umask: int) -> None:
    team = tmp_path / "team"
    team.mkdir()
    gid = os.getegid()
    if os.geteuid() == 0:  # a group other than ours, as a team's would be
        gid = 100 if gid != 100 else 50
        os.chown(team, -1, gid)
    os.chmod(team, 0o2775)  # chgrp team && chmod 2775: shared on purpose
    with Store.open(team) as store:
        nb = team / "nb.ipynb"
        nb.write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
        sync_file(store, nb)
        folder = team / ".nbmergesave"
        assert mode(folder) == 0o2770 and folder.stat().st_gid == gid
        names = {f.name for f in folder.glob("index.sqlite*")}
        assert names == {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"}
        for name in names:
            f = folder / name
            assert mode(f) == 0o660 and f.stat().st_gid == gid, f


def test_daemon_state_and_log_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
    env = {**os.environ, "NBMERGESAVE_HOME": str(tmp_path / "home" / "state")}
    cmd = [sys.executable, "-m", "nbmergesave", "daemon"]
    try:
        started = subprocess.run([*cmd, "start", str(root), "--json"], capture_output=True, text=True, env=env,
                                 timeout=90, umask=umask)
        assert started.returncode == 0, started.stderr
        info = json.loads(started.stdout)
        (root / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell("x = 2", "x"))))
        wait_for(lambda: (root / ".nbmergesave" / "index.sqlite-wal").exists(), "the store's log")
        state = Path(env["NBMERGESAVE_HOME"])
        assert mode(state) == 0o700 and mode(state.parent) & 0o022 == 0
        for name in ("daemon.json", "daemon.log", "status.json"):
            assert mode(state / name) == 0o600, name
        assert Path(info["log"]) == state / "daemon.log"
        store = root / ".nbmergesave"
        assert mode(store) == 0o700
        for f in store.iterdir():
            assert mode(f) & 0o077 == 0, f
    finally:
        subprocess.run([*cmd, "stop"], capture_output=True, env=env, timeout=60)


def test_redact_url() -> None:
    assert private.redact_url("postgresql://ann:s3cr%40t@db:5432/notes") == "postgresql://ann:***@db:5432/notes"
    assert private.redact_url("postgresql://db/notes?user=ann&password=s3cret") == "postgresql://db/notes?user=ann&password=***"
    assert private.redact_url("postgresql://ann@db/notes") == "postgresql://ann@db/notes"
    assert private.redact_url("/home/ann/store") == "/home/ann/store"
    assert "s3cret" not in private.redact_url("postgres://:s3cret@/notes?host=/run/pg")
