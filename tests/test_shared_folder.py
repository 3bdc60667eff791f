"""Two real users share a folder their group can write (``chmod 775`` or ``2775``): the store the first one's
save makes is the group's, so the second one's saves are merged as well (issue 25).

The users are made for the test (``groupadd``, ``useradd``) and removed after it. Their processes run
as them (``setpriv``), on the system's Python of this interpreter's version with this checkout's packages
(this interpreter may sit under a home folder they cannot enter).
"""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nbmergesave import notebook_io
from nbmergesave.store import Store

from .conftest import cell, notebook, stop_process, wait_for
from .servers import JupyterProcess

SITE = sysconfig.get_paths()["purelib"]
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
# python -I -S -c BOOT SITE MODULE ARGS...: this checkout's packages (their .pth files too), then MODULE as -m runs it
BOOT = ("import runpy, site, sys; site.addsitedir(sys.argv[1]); sys.argv = sys.argv[2:]; "
        "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")
TOOLS = ("useradd", "userdel", "groupadd", "groupdel", "setpriv")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create two users"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"needs {SYSTEM_PYTHON} (the users' interpreter, this one's version)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def python(self) -> list[str]:
        """The command that runs a module as ``python -m`` would, as this user."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                SYSTEM_PYTHON, "-I", "-S", "-c", BOOT, SITE]

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "PATH": "/usr/bin:/bin",
                "NBMERGESAVE_HOME": str(self.home / "state"), "LANG": "C.UTF-8"}

    def run(self, module: str, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.python(), module, *args], capture_output=True, text=True, env=self.env(),
                              umask=umask, timeout=180, cwd=str(self.home))

    def give(self, path: Path, data: bytes) -> Path:
        """A file of this user's, in their home."""
        path.write_bytes(data)
        os.chown(path, self.uid, self.gid)
        return path


@dataclass
class Team:
    group: str
    gid: int
    a: User
    b: User
    base: Path  # a folder the users can reach (pytest's temporary folders are root's alone)

    def folder(self, mode: int) -> Path:
        """A folder owned by root and the team's group, with ``mode`` (``775``: shared the common way)."""
        path = Path(tempfile.mkdtemp(prefix=f"share{mode:o}-", dir=self.base))
        os.chown(path, 0, self.gid)
        os.chmod(path, mode)
        return path


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    import grp
    import pwd

    tag = secrets.token_hex(3)
    group, names = f"nbms{tag}", (f"nbms{tag}a", f"nbms{tag}b")
    base = Path(tempfile.mkdtemp(prefix="nbmergesave-shared-"))
    os.chmod(base, 0o755)
    made: list[str] = []
    try:
        _sh("groupadd", group)
        for name in names:  # each with a group of their own (the usual setup), and the team's
            _sh("useradd", "--no-create-home", "--user-group", "--groups", group, "--shell", "/usr/sbin/nologin", name)
            made.append(name)
        users = []
        for name in names:
            pw = pwd.getpwnam(name)
            home = base / name
            home.mkdir(mode=0o700)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            users.append(User(name, pw.pw_uid, pw.pw_gid, home))
        probe = users[0].run("nbmergesave", "--version")
        if probe.returncode != 0:
            pytest.skip(f"the system's Python cannot run this checkout as another user: {probe.stderr[-300:]}")
        yield Team(group, grp.getgrnam(group).gr_gid, users[0], users[1], base)
    finally:
        for name in made:
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, timeout=30)  # only the test's users
            subprocess.run(["userdel", name], capture_output=True, timeout=60)
            subprocess.run(["groupdel", name], capture_output=True, timeout=60)  # if userdel left their own group
        subprocess.run(["groupdel", group], capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def plot(seed: int) -> dict[str, Any]:
    """A display output large enough to be stored as a file of its own (``pieces/``)."""
    data = base64.b64encode(random.Random(seed).randbytes(60_000)).decode()
    return {"output_type": "display_data", "data": {"image/png": data, "text/plain": "<Figure>"}, "metadata": {}}


def base_nb() -> dict[str, Any]:
    return notebook(cell("a = 0", "a"), cell("b = 0", "b"), cell("plot()", "p", outputs=[plot(0)]),
                    *[cell(f"x{i} = {i}", f"x{i}") for i in range(5)], cell("c = 0", "c"))


def edited(nb: dict[str, Any], cell_id: str, source: str, output_seed: int | None = None) -> dict[str, Any]:
    nb = json.loads(json.dumps(nb))
    for c in nb["cells"]:
        if c["id"] == cell_id:
            c["source"] = source
        if output_seed is not None and c["id"] == "p":
            c["outputs"] = [plot(output_seed)]
    return nb


def sources(path: Path) -> dict[str, str]:
    return {c["id"]: "".join(c["source"]) for c in notebook_io.read_notebook(path)["cells"]}


def check_store_is_the_groups(folder: Path, gid: int) -> list[Path]:
    """Every folder of the store ``2770``, every file ``0660``, all with the team's group; returns the files."""
    store = folder / ".nbmergesave"
    found = []
    for path in [store, *store.rglob("*")]:
        st = os.lstat(path)
        want = 0o2770 if stat.S_ISDIR(st.st_mode) else 0o660
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (want, gid), (path, oct(st.st_mode), st.st_gid)
        found.append(path)
    return found


def stored_sources(folder: Path) -> list[dict[str, str]]:
    """The cells' sources of every version in the store (read as root, once the users are done)."""
    with Store.open(folder) as store:
        return [{c["id"]: "".join(c["source"]) for c in json.loads(store.content(v))["cells"]}
                for v in store.history(folder / "nb.ipynb") if v.sha256]


def start_notebook(team: Team, folder: Path, mode: int, team_group: bool = False) -> Path:
    """The notebook, made by user A with ``mode``: A's own group unless the folder is setgid (or ``team_group``:
    given to the team with ``chgrp``, so that the others can write it in place as Jupyter does)."""
    nb = folder / "nb.ipynb"
    nb.write_text(notebook_io.dumps(base_nb()))
    setgid = os.stat(folder).st_mode & stat.S_ISGID
    os.chown(nb, team.a.uid, team.gid if setgid or team_group else team.a.gid)
    os.chmod(nb, mode)
    return nb


@pytest.mark.parametrize("folder_mode", [0o775, 0o2775], ids=oct)
def test_the_second_user_saves_into_the_store_the_first_made(team: Team, folder_mode: int) -> None:
    folder = team.folder(folder_mode)
    nb = start_notebook(team, folder, 0o644)  # umask 022, the default: the store's modes must not depend on it
    base = notebook_io.dumps(base_nb()).encode()
    a_base, b_base = team.a.give(team.a.home / "base.ipynb", base), team.b.give(team.b.home / "base.ipynb", base)
    mine_a = team.a.give(team.a.home / "mine.ipynb", notebook_io.dumps(edited(base_nb(), "a", "a = 'from A'")).encode())
    mine_b = team.b.give(team.b.home / "mine.ipynb", notebook_io.dumps(
        edited(base_nb(), "c", "c = 'from B'", output_seed=2)).encode())

    saved_a = team.a.run("nbmergesave", "save", str(nb), "--base", str(a_base), "--from", str(mine_a), "--writer", "A")
    assert saved_a.returncode == 0, saved_a.stderr
    files = check_store_is_the_groups(folder, team.gid)  # made by A, for the group
    assert {p.name for p in files} >= {".nbmergesave", "index.sqlite", "save.lock", ".gitignore", "pieces"}

    # B saves an edit made from the same base: merged with A's, nothing refused
    saved_b = team.b.run("nbmergesave", "save", str(nb), "--base", str(b_base), "--from", str(mine_b), "--writer", "B")
    assert saved_b.returncode == 0, saved_b.stderr
    assert "denied" not in saved_b.stderr.lower()
    now = sources(nb)
    assert (now["a"], now["c"]) == ("a = 'from A'", "c = 'from B'")
    assert notebook_io.read_notebook(nb)["cells"][2]["outputs"] == [plot(2)]  # B's plot came through the merge
    history_b = team.b.run("nbmergesave", "history", str(nb), "--json")
    assert history_b.returncode == 0, history_b.stderr
    assert [v["kind"] for v in json.loads(history_b.stdout)].count("merged") >= 1
    history_a = team.a.run("nbmergesave", "history", str(nb), "--json")
    assert history_a.returncode == 0 and json.loads(history_a.stdout) == json.loads(history_b.stdout)
    files = check_store_is_the_groups(folder, team.gid)
    owners = {os.lstat(p).st_uid for p in files}
    assert team.b.uid in owners  # B wrote files of the store (a plot's piece): the group's too
    versions = stored_sources(folder)
    assert any(v["a"] == "a = 'from A'" and v["c"] == "c = 0" for v in versions)  # A's own save
    assert any(v["c"] == "c = 'from B'" and v["a"] == "a = 0" for v in versions)  # B's own save
    assert versions[-1]["a"] == "a = 'from A'" and versions[-1]["c"] == "c = 'from B'"


def test_a_watcher_of_the_first_user_and_saves_of_the_second(team: Team) -> None:
    folder = team.folder(0o775)
    nb = start_notebook(team, folder, 0o664)
    log = team.a.home / "watch.log"
    out = log.open("w")
    watcher = subprocess.Popen([*team.a.python(), "nbmergesave", "watch", str(folder)], stdout=out,
                               stderr=subprocess.STDOUT, env=team.a.env(), umask=0o022)
    try:
        index = folder / ".nbmergesave" / "index.sqlite"
        wait_for(lambda: index.exists() and team.a.run("nbmergesave", "history", str(nb)).stdout.count("\n") >= 1,
                 "the watcher's store and first version", timeout=60)
        check_store_is_the_groups(folder, team.gid)
        # A edits the file directly (the watcher records it); B then saves an edit of the version B loaded
        subprocess.run(["setpriv", f"--reuid={team.a.uid}", f"--regid={team.a.gid}", "--init-groups", "--",
                        "cp", str(team.a.give(team.a.home / "mine.ipynb", notebook_io.dumps(
                            edited(base_nb(), "a", "a = 'from A'")).encode())), str(nb)], check=True, timeout=30)
        wait_for(lambda: team.a.run("nbmergesave", "history", str(nb)).stdout.count("\n") >= 2,
                 "the watcher recording A's edit", timeout=60)
        b_base = team.b.give(team.b.home / "base.ipynb", notebook_io.dumps(base_nb()).encode())
        mine_b = team.b.give(team.b.home / "mine.ipynb", notebook_io.dumps(
            edited(base_nb(), "c", "c = 'from B'", output_seed=3)).encode())
        saved = team.b.run("nbmergesave", "save", str(nb), "--base", str(b_base), "--from", str(mine_b))
        assert saved.returncode == 0, saved.stderr
        assert (sources(nb)["a"], sources(nb)["c"]) == ("a = 'from A'", "c = 'from B'")
        wait_for(lambda: team.b.run("nbmergesave", "history", str(nb)).stdout.count("\n") >= 4,
                 "B's save and its merge in the history", timeout=60)
    finally:
        stop_process(watcher, timeout=20)
        out.close()
    said = log.read_text()
    assert "denied" not in said.lower() and "Traceback" not in said, said
    check_store_is_the_groups(folder, team.gid)
    versions = stored_sources(folder)
    assert any(v["c"] == "c = 'from B'" and v["a"] == "a = 0" for v in versions)
    assert versions[-1]["a"] == "a = 'from A'" and versions[-1]["c"] == "c = 'from B'"


class UserServer(JupyterProcess):
    """A jupyter_server with the extension, run as ``user`` (as a JupyterHub runs one per person)."""

    def __init__(self, user: User, root: Path, logs: Path) -> None:
        config = user.home / "jupyter"
        if not config.exists():
            config.mkdir()
            (config / "jupyter_server_config.json").write_text(
                json.dumps({"ServerApp": {"jpserver_extensions": {"nbmergesave": True}}}))
            for path in (config, config / "jupyter_server_config.json"):
                os.chown(path, user.uid, user.gid)
        super().__init__("jupyter_server", root, logs,
                         {**user.env(), "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(config / "data"),
                          "JUPYTER_RUNTIME_DIR": str(config / "runtime")},
                         python=user.python(), umask=0o002, timeout=120)

    def get(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/contents/{name}")["content"]  # type: ignore[no-any-return]

    def put(self, name: str, nb: dict[str, Any]) -> None:
        self.request("PUT", f"/api/contents/{name}", {"type": "notebook", "format": "json", "content": nb})


@pytest.mark.parametrize("folder_mode", [0o775, 0o2775], ids=oct)
def test_two_users_servers_lose_no_edit(team: Team, folder_mode: int, tmp_path: Path) -> None:
    """Four rounds: each user's server loads the notebook, each saves an edit of its own cell, B's from the
    version it loaded (stale once A has saved). Every edit must be in the file after its round."""
    folder = team.folder(folder_mode)
    # Jupyter writes the file in place: the others may do so when it is the team's (umask 002, chgrp)
    nb = start_notebook(team, folder, 0o664, team_group=True)
    servers: list[UserServer] = []
    try:
        servers = [UserServer(team.a, folder, tmp_path), UserServer(team.b, folder, tmp_path)]
        a, b = servers
        lost = []
        for round_ in range(1, 5):
            nb_a, nb_b = a.get("nb.ipynb"), b.get("nb.ipynb")
            a.put("nb.ipynb", edited(nb_a, "a", f"a = {round_}  # A"))
            b.put("nb.ipynb", edited(nb_b, "c", f"c = {round_}  # B", output_seed=10 + round_))
            now = sources(nb)
            lost += [who for who, cid in (("A", "a"), ("B", "c")) if now[cid] != f"{cid} = {round_}  # {who}"]
        assert lost == [], lost
        outputs = [s.output() for s in servers]
    finally:
        for s in servers:
            s.stop()
    for said in outputs:
        assert "denied" not in said.lower() and "could not merge" not in said, said[-3000:]
    assert "merged cleanly" in outputs[1]
    check_store_is_the_groups(folder, team.gid)
    versions = stored_sources(folder)
    for round_ in range(1, 5):  # each user's own save is in the history, every round
        assert any(v["a"] == f"a = {round_}  # A" for v in versions), round_
        assert any(v["c"] == f"c = {round_}  # B" for v in versions), round_


def test_a_private_store_found_in_a_shared_folder_says_how_to_share_it(team: Team, tmp_path: Path) -> None:
    """A store made private (by an older version, or before the folder was shared) is left as it is; the
    second user's error says what its owner runs to share it, and is one line; a server says it once."""
    folder = team.folder(0o755)
    nb = start_notebook(team, folder, 0o664, team_group=True)
    os.chown(folder, team.a.uid, team.gid)  # A's own folder
    a_base = team.a.give(team.a.home / "base.ipynb", notebook_io.dumps(base_nb()).encode())
    mine_a = team.a.give(team.a.home / "mine.ipynb", notebook_io.dumps(edited(base_nb(), "a", "a = 1")).encode())
    saved = team.a.run("nbmergesave", "save", str(nb), "--base", str(a_base), "--from", str(mine_a))
    assert saved.returncode == 0, saved.stderr
    store = folder / ".nbmergesave"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700  # the folder was A's alone: so is the store
    os.chmod(folder, 0o775)  # then A shares the folder with the team
    b_base = team.b.give(team.b.home / "base.ipynb", notebook_io.dumps(base_nb()).encode())
    mine_b = team.b.give(team.b.home / "mine.ipynb", notebook_io.dumps(edited(base_nb(), "c", "c = 1")).encode())
    refused = team.b.run("nbmergesave", "save", str(nb), "--base", str(b_base), "--from", str(mine_b))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr == (
        f"Error: cannot use the store at '{store}': Permission denied (hint: the store is private to {team.a.name}; "
        f"to share it with the group '{team.group}' of the folder, {team.a.name} (or root) runs: chgrp -R "
        f"{team.group} {store} && chmod -R g+rwX {store} && chmod g+s {store})\n")
    assert stat.S_IMODE(store.stat().st_mode) == 0o700  # left as it was
    server = UserServer(team.b, folder, tmp_path)  # B's Jupyter server meets it on every save: says so once
    try:
        for n in range(3):
            server.put("nb.ipynb", edited(server.get("nb.ipynb"), "c", f"c = 'B {n}'"))
        said = server.output()
    finally:
        server.stop()
    assert said.count("chgrp -R") == 1 and f"private to {team.a.name}" in said, said[-3000:]
    errors = [line for line in said.splitlines() if line.startswith("[E") and "cannot use the store" in line]
    assert len(errors) <= 2 and "Traceback" not in said, said[-3000:]  # not once a save (the watcher's, the lock's)
    assert sources(nb)["c"] == "c = 'B 2'"  # the saves went through (as sent)
    # A follows the hint; B's save then goes through, merged with A's
    for argv in (["chgrp", "-R", team.group, str(store)], ["chmod", "-R", "g+rwX", str(store)],
                 ["chmod", "g+s", str(store)]):
        subprocess.run(["setpriv", f"--reuid={team.a.uid}", f"--regid={team.a.gid}", "--init-groups", "--", *argv],
                       check=True, timeout=30)
    mine_b = team.b.give(team.b.home / "mine.ipynb", notebook_io.dumps(edited(base_nb(), "x0", "x0 = 'B'")).encode())
    saved = team.b.run("nbmergesave", "save", str(nb), "--base", str(b_base), "--from", str(mine_b))
    assert saved.returncode == 0, saved.stderr
    assert (sources(nb)["a"], sources(nb)["c"], sources(nb)["x0"]) == ("a = 1", "c = 'B 2'", "x0 = 'B'")
    for path in [store, *store.rglob("*")]:  # chmod g+rwX made its subfolders 0770, not setgid: still the group's
        st = os.lstat(path)
        assert st.st_gid == team.gid and stat.S_IMODE(st.st_mode) & 0o660 == 0o660, (path, oct(st.st_mode))
