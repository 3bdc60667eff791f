"""What the tool writes stays its owner's, whatever the umask; a team folder's store stays the team's."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nbmergesave import notebook_io, private, sync_file
from nbmergesave.store import Store

from .conftest import cell, notebook, wait_for


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
    os.chmod(root, 0o755)  # its group may not write it: the store is whoever made it's alone
    with Store.open(root) as store:
        nb = root / "nb.ipynb"
        nb.write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
        sync_file(store, nb)
        folder = root / ".nbmergesave"
        assert mode(folder) == 0o700
        files = list(folder.iterdir())  # while open, so SQLite's -wal and -shm are there too
        assert {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm"} <= {f.name for f in files}
        for f in files:
            assert mode(f) == 0o600, f


@pytest.mark.parametrize("folder_mode", [0o2775, 0o775, 0o770], ids=oct)
def test_store_in_a_group_writable_folder_is_the_groups(tmp_path: Path, umask: int, folder_mode: int) -> None:
    """Group-writable is enough, setgid or not (``chmod 775`` is the common way to share a folder)."""
    team = tmp_path / "team"
    team.mkdir()
    gid = os.getegid()
    if os.geteuid() == 0:  # a group other than ours, as a team's would be
        gid = 100 if gid != 100 else 50
        os.chown(team, -1, gid)
    os.chmod(team, folder_mode)
    with Store.open(team) as store:
        nb = team / "nb.ipynb"
        nb.write_text(notebook_io.dumps(notebook(cell("x = 1", "x"))))
        sync_file(store, nb)
        folder = team / ".nbmergesave"
        assert mode(folder) == 0o2770 and folder.stat().st_gid == gid
        names = {f.name for f in folder.iterdir()}
        assert names == {"index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "save.lock", ".gitignore"}
        for name in names:
            f = folder / name
            assert mode(f) == 0o660 and f.stat().st_gid == gid, f


def test_daemon_state_and_log_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "project"
    root.mkdir()
    os.chmod(root, 0o755)  # not group-writable (umask 002 would make it so, and its store the group's)
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
            assert mode(f) == 0o600, f
    finally:
        subprocess.run([*cmd, "stop"], capture_output=True, env=env, timeout=60)


def test_redact_url() -> None:
    assert private.redact_url("postgresql://ann:s3cr%40t@db:5432/notes") == "postgresql://ann:***@db:5432/notes"
    assert private.redact_url("postgresql://db/notes?user=ann&password=s3cret") == "postgresql://db/notes?user=ann&password=***"
    assert private.redact_url("postgresql://ann@db/notes") == "postgresql://ann@db/notes"
    assert private.redact_url("/home/ann/store") == "/home/ann/store"
    assert "s3cret" not in private.redact_url("postgres://:s3cret@/notes?host=/run/pg")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user")
def test_a_second_user_reads_nothing_of_a_private_store_and_shares_a_team_store() -> None:
    """Act as 'nobody' (in group 100 for the team case), as a colleague on the same machine would."""
    with tempfile.TemporaryDirectory() as tmp:  # not under pytest's 0700 folders: the colleague must reach it
        os.chmod(tmp, 0o755)
        _second_user(Path(tmp))


def _second_user(tmp_path: Path) -> None:
    mine, team = tmp_path / "mine", tmp_path / "team"
    for folder in (mine, team):
        folder.mkdir()
        (folder / "nb.ipynb").write_text(notebook_io.dumps(notebook(cell(f"print('{folder.name}')", "x"))))
    os.chmod(mine, 0o755)
    os.chown(team, -1, 100)
    os.chmod(team, 0o2775)
    for folder in (mine, team):
        with Store.open(folder) as store:
            sync_file(store, folder / "nb.ipynb")
    (team / "theirs.ipynb").write_text(notebook_io.dumps(notebook(cell("y = 1", "y"))))
    os.chown(team / "theirs.ipynb", 65534, 100)

    def colleague(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, user=65534, group=65534,
                              extra_groups=[100], umask=0o002, cwd="/")

    for argv in (["cat", str(mine / ".nbmergesave" / "index.sqlite")], ["ls", str(mine / ".nbmergesave")]):
        probe = colleague(argv)
        assert probe.returncode != 0 and "Permission denied" in probe.stderr, (argv, probe.stdout, probe.stderr)
        assert probe.stdout == ""

    # The colleague saves in the team folder: a forked child that drops to their uid (this interpreter's own
    # files, under /root, are not theirs to run, and everything the save needs is imported already).
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups([100])
            os.setgid(65534)
            os.setuid(65534)
            os.umask(0o002)
            with Store.open(team) as store:
                sync_file(store, team / "theirs.ipynb")
                os.write(write, str(len(store.history(team / "theirs.ipynb"))).encode())
            os._exit(0)
        except BaseException as e:
            os.write(write, f"{type(e).__name__}: {e}".encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and said == "1", said
    with Store.open(team) as store:
        assert len(store.history(team / "theirs.ipynb")) == 1  # the owner sees the colleague's version
    for f in (team / ".nbmergesave").iterdir():
        assert f.stat().st_gid == 100 and mode(f) == 0o660, f
