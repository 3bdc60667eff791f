"""Real-time collaboration (jupyter-collaboration) and writers outside the room.

Run in an environment with jupyter-collaboration installed (CI: ``.venv-collab``,
``pip install -e '.[test,jupyter]' jupyter-collaboration``); skipped elsewhere.
The servers are real ``jupyter lab`` processes on loopback, started as a user
starts them after the install; the room's clients are pycrdt documents over
the room's websocket (as JupyterLab's docprovider is one), and one test drives
Debian's Chromium through Playwright.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jupyter_server_ydoc", reason="jupyter-collaboration is not installed here (the collaboration tests "
                    "run in their own environment: pip install -e '.[test,jupyter]' jupyter-collaboration)")

from nbmergesave import notebook_io  # noqa: E402
from nbmergesave.jupyter.ydoc import apply_notebook, kept_cells, normal, set_text  # noqa: E402
from nbmergesave.store import Store  # noqa: E402

from .conftest import cell, nbm, notebook, numbered, sources, wait_for  # noqa: E402
from .git import git  # noqa: E402
from .lab import Lab  # noqa: E402

# --- the shared document, cell by cell (no server) ---------------------------------------


def _ynotebook(nb: dict[str, Any]) -> Any:
    from jupyter_ydoc import YNotebook
    from pycrdt import Doc

    ynb = YNotebook(Doc())
    ynb.set(nb)
    return ynb


def _client_of(ynb: Any) -> Any:
    """A second document kept in sync with ``ynb`` (a client of the room), updates counted."""
    from jupyter_ydoc import YNotebook
    from pycrdt import Doc

    doc = Doc()
    doc.apply_update(ynb.ydoc.get_update())
    client = YNotebook(doc)
    client.updates = 0

    def forward(event: Any) -> None:
        client.updates += 1
        doc.apply_update(event.update)

    client.subscription = ynb.ydoc.observe(forward)
    return client


@pytest.mark.parametrize("seed", range(300))
def test_set_text_reaches_the_target_with_small_edits(seed: int) -> None:
    from pycrdt import Doc, Text

    rng = random.Random(seed)
    alphabet = ["a", "b", " ", "\n", "é", "ü", "→", "😀", "x = 1\n"]
    old = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
    new = list(old)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(0, len(new) + 1)
        if rng.random() < 0.5 and at < len(new):
            del new[at:at + rng.randrange(1, 4)]
        else:
            new[at:at] = rng.choice(alphabet)
    doc = Doc()
    doc["t"] = text = Text(old)
    set_text(text, "".join(new))
    assert str(text) == "".join(new)


def test_set_text_keeps_a_cursor_before_and_after_the_change() -> None:
    from pycrdt import Assoc, Doc, StickyIndex, Text

    doc = Doc()
    doc["t"] = text = Text("c = 3\nd = 4\n")
    before = StickyIndex.new(text, 3, Assoc.AFTER)  # after "c =": the change is at the end of the line
    after = StickyIndex.new(text, len("c = 3\nd ".encode()), Assoc.AFTER)
    set_text(text, "c = 3  # written outside\nd = 4\n")  # ratio 0.36: jupyter_ydoc would rewrite it whole
    assert str(text) == "c = 3  # written outside\nd = 4\n"
    assert before.get_index() == 3
    assert after.get_index() == len("c = 3  # written outside\nd ".encode())


def test_apply_notebook_touches_only_what_changed_in_one_update() -> None:
    from pycrdt import Assoc, StickyIndex

    base = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(5)], metadata={"kernelspec": {"name": "python3"}})
    ynb = _ynotebook(base)
    client = _client_of(ynb)
    untouched = StickyIndex.new(client.ycells[1]["source"], 2, Assoc.AFTER)
    changed = StickyIndex.new(client.ycells[3]["source"], 2, Assoc.AFTER)
    target = json.loads(json.dumps(base))
    target["cells"][3]["source"] = "x3 = 3  # edited"
    target["cells"][3]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]
    target["cells"][3]["execution_count"] = 7
    del target["cells"][0]
    target["cells"].insert(2, cell("new = 1", "n1"))
    target["metadata"]["tags"] = ["t"]
    stats = apply_notebook(ynb, target)
    assert stats == {"inserted": 1, "deleted": 1, "updated": 1}
    assert client.updates == 1  # one transaction: clients get one update
    assert normal(client.get()) == normal(target)
    assert untouched.get_index() == 2 and changed.get_index() == 2  # cursors kept in the kept cells
    assert str(client.ycells[0]["source"]) == "x1 = 1"
    assert apply_notebook(ynb, target) == {"inserted": 0, "deleted": 0, "updated": 0}
    assert client.updates == 1  # nothing to change: no update at all


def test_apply_notebook_moves_and_retypes_cells() -> None:
    base = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(4)])
    ynb = _ynotebook(base)
    target = json.loads(json.dumps(base))
    target["cells"] = [target["cells"][2], target["cells"][0], target["cells"][1],
                       {**cell("# title", "c3", kind="markdown")}]
    apply_notebook(ynb, target)
    assert normal(ynb.get()) == normal(target)


def test_cells_without_ids_are_updated_in_place() -> None:
    """nbformat 4.4 notebooks have no cell ids: a changed cell is still the same cell (cursors stay)."""
    a = [{"cell_type": "code", "source": s} for s in ("a = 1", "b = 2", "c = 3")]
    b = [{"cell_type": "code", "source": s} for s in ("a = 1", "b = 2  # changed", "c = 3")]
    assert kept_cells(a, b) == {0: 0, 1: 1, 2: 2}
    base = notebook(*[cell(s) for s in ("a = 1", "b = 2", "c = 3")], minor=4)
    ynb = _ynotebook(base)
    target = json.loads(json.dumps(base))
    target["cells"][1]["source"] = "b = 2  # changed"
    assert apply_notebook(ynb, target) == {"inserted": 0, "deleted": 0, "updated": 1}
    assert [c["source"] for c in ynb.get()["cells"]] == ["a = 1", "b = 2  # changed", "c = 3"]


# --- real servers ----------------------------------------------------------------------


class CollabLab(Lab):
    """``jupyter lab`` with jupyter-collaboration, its databases in the test's home folder."""

    def __init__(self, root: Path, home: Path, *args: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        super().__init__(root, home, args=(f"--SQLiteYStore.db_path={home / 'ystore.db'}",
                                           f"--BaseFileIdManager.db_path={home / 'fileid.db'}", *args))

    def log_lines(self, words: str) -> list[str]:
        return [line for line in self.output().splitlines() if words in line]


def _sources_now(path: Path) -> list[str]:
    """The file's cells, or none while a writer is halfway through it (for polling)."""
    try:
        return sources(path)
    except Exception:
        return []


def _story(world: World, name: str) -> str:
    """For a failure message: the store's history of ``name`` and what the server said of it."""
    with Store.find(world.root / name) as store:
        lines = [f"v{v.version} {v.kind} base={v.base} local={v.local} remote={v.remote} "
                 f"{[c['source'] for c in notebook_io.parse_notebook(store.content(v))['cells']][2:3] if v.sha256 else '-'}"
                 for v in store.history(world.root / name)]
    said = [line for line in world.a.output().splitlines() if "nbmergesave" in line]
    return "\n".join(["history:", *lines, "server:", *said[-30:]])


def _changed(data: bytes, index: int, source: str) -> dict[str, Any]:
    nb = notebook_io.parse_notebook(data)
    nb["cells"][index]["source"] = source
    return nb


def write_nbformat(path: Path, nb: dict[str, Any]) -> None:
    """As a script writes a notebook (nbformat.write: truncates and writes in place)."""
    import nbformat

    nbformat.write(nbformat.from_dict(nb), str(path))


def write_in_place(path: Path, nb: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(notebook_io.dumps(nb))


def write_by_rename(path: Path, nb: dict[str, Any]) -> None:
    """As editors and agents that save atomically do: a temporary file renamed over the notebook."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(notebook_io.dumps(nb), encoding="utf-8")
    os.replace(tmp, path)


WRITERS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "nbformat.write": write_nbformat, "in-place": write_in_place, "rename": write_by_rename}


class Ws:
    """A tornado websocket as a pycrdt channel."""

    def __init__(self, conn: Any, path: str) -> None:
        self.conn, self._path = conn, path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> Ws:
        return self

    async def __anext__(self) -> bytes:
        message = await self.conn.read_message()
        if message is None:
            raise StopAsyncIteration
        return message

    async def recv(self) -> bytes:
        return await self.__anext__()

    async def send(self, message: bytes) -> None:
        await self.conn.write_message(message, binary=True)


class RoomClient:
    """A client of a notebook's room, as JupyterLab's docprovider is one (``async with``)."""

    def __init__(self, server: CollabLab, name: str) -> None:
        self.server, self.name = server, name

    async def __aenter__(self) -> RoomClient:
        from jupyter_ydoc import YNotebook
        from pycrdt import Doc, Provider
        from tornado.websocket import websocket_connect

        session = await asyncio.to_thread(self.server.request, "PUT", f"/api/collaboration/session/{self.name}",
                                          {"format": "json", "type": "notebook"})
        room = f"json:notebook:{session['fileId']}"
        url = (f"ws://127.0.0.1:{self.server.port}/api/collaboration/room/{room}"
               f"?sessionId={session['sessionId']}&token={self.server.token}")
        self.conn = await websocket_connect(url)
        self.doc = Doc()
        self.nb = YNotebook(self.doc)
        self.provider = Provider(self.doc, Ws(self.conn, room))
        await self.provider.__aenter__()
        await asyncio.wait_for(self.provider.synced.wait(), 30)
        await self.until(lambda: len(self.nb.ycells) > 0, "the room's cells")
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.provider.__aexit__(*exc)
        self.conn.close()

    def sources(self) -> list[str]:
        return [str(c["source"]) for c in self.nb.ycells]

    def type(self, index: int, text: str) -> None:
        """Type ``text`` at the end of cell ``index`` (a Text edit, as an editor makes)."""
        source = self.nb.ycells[index]["source"]
        source += text  # (not `ycells[i]["source"] += ...`: that assigns the key again and empties the cell)

    def cursor(self, index: int, offset: int) -> Any:
        from pycrdt import Assoc, StickyIndex

        return StickyIndex.new(self.nb.ycells[index]["source"], offset, Assoc.AFTER)

    async def until(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: room {self.sources()}")
            await asyncio.sleep(0.05)


class World:
    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "project"
        self.root.mkdir()
        self.tmp = tmp
        self.a = CollabLab(self.root, tmp / "home-a")
        self._b: CollabLab | None = None

    @property
    def b(self) -> CollabLab:
        """A second server on the same folder (another host sharing it), started when a test needs it."""
        if self._b is None:
            self._b = CollabLab(self.root, self.tmp / "home-b")
        return self._b

    def write(self, name: str, nb: dict[str, Any]) -> Path:
        path = self.root / name
        path.write_text(notebook_io.dumps(nb), encoding="utf-8")
        return path

    def close(self) -> None:
        self.a.stop()
        if self._b is not None:
            self._b.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("collab"))
    try:
        assert w.a.log_lines("rooms merge changes made outside them"), w.a.output()
        yield w
    finally:
        w.close()


def history(root: Path, name: str) -> list[Any]:
    with Store.find(root / name) as store:
        return store.history(root / name)


async def _wait_disk(path: Path, condition: Callable[[list[str]], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition(sources(path)):
                return
        except Exception:
            pass  # a write in progress
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: file {sources(path)}")
        await asyncio.sleep(0.05)


def test_an_outside_write_after_a_saved_edit_keeps_both(world: World) -> None:
    """An agent read the notebook, the room then edited and saved; the agent writes its version (made
    from the older one): the room's saved edit stays, in the room and in the file."""
    path = world.write("saved.ipynb", notebook(*numbered(6)))
    read_by_agent = path.read_bytes()

    async def scenario() -> None:
        async with RoomClient(world.a, "saved.ipynb") as room:
            room.type(1, "  # room")
            await _wait_disk(path, lambda s: s[1] == "x1 = 1  # room", "the room's autosave")
            write_nbformat(path, _changed(read_by_agent, 4, "x4 = 'agent'"))
            expected = ["x0 = 0", "x1 = 1  # room", "x2 = 2", "x3 = 3", "x4 = 'agent'", "x5 = 5"]
            await room.until(lambda: room.sources() == expected, "the agent's cell in the room")
            await _wait_disk(path, lambda s: s == expected, "both in the file")
            assert room.sources() == expected

    asyncio.run(scenario())
    merges = [v for v in history(world.root, "saved.ipynb") if v.kind == "merged"]
    assert merges and merges[-1].conflicts == 0
    assert not world.a.log_lines("Out-of-band changes. Overwriting")


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_outside_write_0_2_s_after_an_unsaved_edit_keeps_both_and_the_cursors(world: World, writer: str) -> None:
    name = f"unsaved-{writer.replace('.', '-')}.ipynb"
    path = world.write(name, notebook(*numbered(3)))

    async def scenario() -> None:
        async with RoomClient(world.a, name) as room:
            in_changed, in_untouched = room.cursor(2, 3), room.cursor(1, 2)
            room.type(0, "  # typed in the room")
            await asyncio.sleep(0.2)  # the scenario itself: the outside write lands 0.2 s after the edit
            WRITERS[writer](path, _changed(path.read_bytes(), 2, "x2 = 2  # written outside"))
            expected = ["x0 = 0  # typed in the room", "x1 = 1", "x2 = 2  # written outside"]
            await room.until(lambda: room.sources() == expected, "both edits in the room")
            await _wait_disk(path, lambda s: s == expected, "both edits in the file")
            assert in_changed.get_index() == 3, "a cursor in the cell changed outside moved"
            assert in_untouched.get_index() == 2

    asyncio.run(scenario())


def test_a_writer_every_second_for_20_s_while_the_room_types(world: World) -> None:
    """Every second an outside writer reads the notebook, thinks 0.5 s and writes it back with a line
    added to cell 5 (as agents' file tools do: a temporary file renamed over the notebook); meanwhile the room types in cell 1, in bursts with pauses
    (the room autosaves in the pauses, sometimes between the writer's read and its write). Nothing is
    lost, from the file or the room.

    (A writer that rewrites the same line each time, with nothing else changing in between, cannot be
    told by content from a second writer editing that line: the base search then shows a conflict
    rather than risk dropping an edit; see docs/collaboration.md.)"""
    path = world.write("loop.ipynb", notebook(*numbered(6)))
    typed: list[str] = []

    async def writer(stop: float) -> int:
        n = 0
        while time.monotonic() < stop:
            read = path.read_bytes()
            await asyncio.sleep(0.5)
            n += 1
            nb = notebook_io.parse_notebook(read)
            nb["cells"][5]["source"] += f"\nstep = {n}"
            write_by_rename(path, nb)
            await asyncio.sleep(0.5)
        return n

    async def scenario() -> None:
        async with RoomClient(world.a, "loop.ipynb") as room:
            stop = time.monotonic() + 20
            writing = asyncio.create_task(writer(stop))
            while time.monotonic() < stop:
                for _ in range(4):  # a burst of typing ...
                    word = f" w{len(typed)}"
                    room.type(1, word)
                    typed.append(word)
                    await asyncio.sleep(0.15)
                await asyncio.sleep(1.3)  # ... and a pause (the room autosaves 1 s after the last change)
            n = await writing
            expected_1 = "x1 = 1" + "".join(typed)
            expected_5 = "x5 = 5" + "".join(f"\nstep = {i}" for i in range(1, n + 1))
            await room.until(lambda: room.sources()[1] == expected_1 and room.sources()[5] == expected_5,
                             "the room's typing and the writer's lines")
            await _wait_disk(path, lambda s: s[1] == expected_1 and s[5] == expected_5, "both in the file")
            assert room.sources() == sources(path)
            assert n >= 18

    asyncio.run(scenario())
    assert not world.a.log_lines("Out-of-band changes")
    assert not world.a.log_lines("conflict(s) marked inline")
    assert len(world.a.log_lines("Saving the content from room")) >= 5, "the room hardly saved: not the scenario"


def test_two_rooms_on_two_servers_sharing_one_folder(world: World) -> None:
    path = world.write("two.ipynb", notebook(*numbered(6)))

    async def scenario() -> None:
        async with RoomClient(world.a, "two.ipynb") as alice, RoomClient(world.b, "two.ipynb") as bob:
            alice.type(1, "  # alice")
            bob.type(4, "  # bob")
            expected = ["x0 = 0", "x1 = 1  # alice", "x2 = 2", "x3 = 3", "x4 = 4  # bob", "x5 = 5"]
            await alice.until(lambda: alice.sources() == expected, "bob's edit in alice's room")
            await bob.until(lambda: bob.sources() == expected, "alice's edit in bob's room")
            await _wait_disk(path, lambda s: s == expected, "both edits in the file")
            # and once more, now that each room has saved what the other wrote
            alice.type(2, "  # alice again")
            expected[2] = "x2 = 2  # alice again"
            await bob.until(lambda: bob.sources() == expected, "alice's second edit in bob's room")

    asyncio.run(scenario())
    for server in (world.a, world.b):
        assert not server.log_lines("Out-of-band changes"), server.output()


def test_git_checkout_under_an_open_room(world: World) -> None:
    """git's writes are a single writer's: the room shows git's version, nothing is merged or written back."""
    repo = world.root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    path = repo / "nb.ipynb"
    path.write_text(notebook_io.dumps(notebook(*numbered(6))), encoding="utf-8")
    git(repo, "add", "nb.ipynb")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "checkout", "-q", "-b", "other")
    path.write_text(notebook_io.dumps(_changed(path.read_bytes(), 2, "x2 = 'other'")), encoding="utf-8")
    git(repo, "commit", "-q", "-am", "other")
    git(repo, "checkout", "-q", "main")
    name = "repo/nb.ipynb"

    async def scenario() -> None:
        async with RoomClient(world.a, name) as room:
            await room.until(lambda: room.sources()[2] == "x2 = 2", "main's version in the room")
            before = len(world.a.log_lines("changed outside room"))
            git(repo, "checkout", "-q", "other")
            await room.until(lambda: room.sources()[2] == "x2 = 'other'", "git's version in the room")
            await room.until(lambda: len(world.a.log_lines("changed outside room")) > before, "the server's log line")
            git(repo, "checkout", "-q", "main")
            await room.until(lambda: room.sources()[2] == "x2 = 2", "main's version in the room again")
            await asyncio.sleep(2.5)  # an autosave (1 s after a change) would have written by now

    asyncio.run(scenario())
    assert path.read_bytes().decode() == git(repo, "show", "main:nb.ipynb")
    assert git(repo, "status", "--porcelain") == ""
    versions = history(world.root, name)
    assert [v.kind for v in versions if v.kind == "merged"] == []
    # recorded as git's, by the room or by the server's watcher (whichever takes the save lock first)
    assert [v.kind for v in versions][-2:] == ["git", "git"]


def test_a_conflict_with_an_outside_writer_shows_in_the_room_and_is_settled_with_a_button(world: World) -> None:
    """In Chromium: the room edits a line and saves; an agent that read the notebook before writes the same
    line. Both people in the room see the conflict bar, one settles it, the file follows; no dialog."""
    from .lab import CHROMIUM, People, Tab, chromium, lab_notebook

    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium (apt-get install chromium)")
    path = world.write("conflict.ipynb", lab_notebook(4))
    read_by_agent = path.read_bytes()
    with chromium() as browser:
        people = People(browser)
        try:
            tabs = [Tab(people.person(), world.a, "conflict.ipynb") for _ in range(2)]  # two people in the room
            alice, bob = tabs
            alice.edit(2, "x = 'room'")
            wait_for(lambda: _sources_now(path)[2:3] == ["x = 'room'"], "the room's autosave")
            write_nbformat(path, _changed(read_by_agent, 2, "x = 'agent'"))
            for tab in tabs:
                bar = tab.page.locator(".nbmergesave-conflict")
                bar.wait_for(timeout=30_000)
                assert [b.inner_text() for b in bar.locator("button").all()] == ["Keep mine", "Keep theirs", "Keep both"]
                assert "x = 'agent'" in tab.sources()[2] and "x = 'room'" in tab.sources()[2], _story(world, "conflict.ipynb")
            wait_for(lambda: "<<<<<<<" in "".join(_sources_now(path)[2:3]), "the conflict in the file")
            bob.page.locator(".nbmergesave-conflict").get_by_role("button", name="Keep mine").click()
            for tab in tabs:
                tab.wait("() => !document.querySelector('.nbmergesave-conflict')")
                assert tab.sources()[2] == "x = 'room'"
            wait_for(lambda: _sources_now(path) == ["x0 = 0", "x1 = 1", "x = 'room'", "x3 = 3"], "the settled file")
            for tab in tabs:
                assert tab.page.locator(".jp-Dialog").count() == 0
        finally:
            people.close()
    assert people.errors == []
    listed = nbm("conflicts", str(path), "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed
    assert not world.a.log_lines("Out-of-band changes")
