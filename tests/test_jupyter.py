"""The Jupyter integration against real jupyter_server processes over HTTP (token auth, loopback)."""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from nbmergesave import notebook_io, sync_file
from nbmergesave.store import Store, sha256

from .conftest import cell, edited, notebook, numbered, sources, stepped_back_by_a_plain_server, write
from .servers import JupyterProcess

pytest.importorskip("jupyter_server")


class Server(JupyterProcess):
    """A jupyter_server process with the nbmergesave extension, on loopback."""

    def __init__(self, root: Path, config_dir: Path) -> None:
        super().__init__("jupyter_server", root, config_dir,
                         {"JUPYTER_CONFIG_DIR": str(config_dir), "JUPYTER_RUNTIME_DIR": str(config_dir / "runtime"),
                          "JUPYTER_DATA_DIR": str(config_dir / "data")})

    def get(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/contents/{name}")["content"]

    def put(self, name: str, nb: dict[str, Any], base: str | None = None) -> dict[str, Any]:
        """Save ``nb`` as a client does, declaring the ``base`` it loaded (a sha256) when given; the reply's model."""
        body = {"type": "notebook", "format": "json", "content": nb, **({"nbmergesave_base": base} if base else {})}
        return self.request("PUT", f"/api/contents/{name}", body)  # type: ignore[no-any-return]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, list[Server]]]:
    root = tmp_path / "project"
    root.mkdir()
    config = tmp_path / "jupyter"
    config.mkdir()
    # These test the save hook alone, with the test playing any watcher (tests/test_outside_writers.py
    # tests the server watching its folder, the default).
    (config / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"nbmergesave": True}},
                                                                   "NbMergeSave": {"watch_root": False}}))
    started: list[Server] = []
    yield root, started
    for s in started:
        s.stop()


def start(root: Path, started: list[Server]) -> Server:
    server = Server(root, root.parent / "jupyter")
    started.append(server)
    return server


def base() -> dict[str, Any]:
    return notebook(*numbered(8))


def test_two_servers_each_save_their_edit(servers: tuple[Path, list[Server]]) -> None:
    root, started = servers
    (root / "nb.ipynb").write_text(notebook_io.dumps(base()))
    a, b = start(root, started), start(root, started)
    nb_a, nb_b = a.get("nb.ipynb"), b.get("nb.ipynb")
    a.put("nb.ipynb", edited(nb_a, 1, "edited through server A"))
    b.put("nb.ipynb", edited(nb_b, 6, "edited through server B"))
    assert sources(root / "nb.ipynb")[1::5] == ["edited through server A", "edited through server B"]
    assert "merged cleanly" in b.output()
    # B's next save builds on what B holds, and A's edit survives it again
    b.put("nb.ipynb", edited(edited(nb_b, 6, "edited through server B"), 7, "B again"))
    assert sources(root / "nb.ipynb")[1::5] + sources(root / "nb.ipynb")[7:] == [
        "edited through server A", "edited through server B", "B again"]
    with Store.open(root) as store:
        kinds = [v.kind for v in store.history(root / "nb.ipynb")]
    assert kinds.count("merged") == 2


def test_a_watcher_takes_the_servers_saves_as_they_are(servers: tuple[Path, list[Server]]) -> None:
    """Each save is declared as the bytes the server wrote (Jupyter drops the cells' 'trusted'
    marks it served), and marked as the file's, so a watcher on the folder finds it there and never
    merges it again."""
    root, started = servers
    path = write(root / "nb.ipynb", base())
    with Store.open(root) as store:
        sync_file(store, path)  # the watcher knows the file as it was
        a, b = start(root, started), start(root, started)
        nb_a, nb_b = a.get("nb.ipynb"), b.get("nb.ipynb")
        assert "trusted" in json.dumps(nb_a), "the server marks trust on what it serves"
        for server, nb, cell_index, text in ((a, nb_a, 1, "A"), (b, nb_b, 6, "B")):  # B's is merged with A's
            server.put("nb.ipynb", edited(nb, cell_index, text))
            written = path.read_bytes()
            assert sync_file(store, path).action == "unchanged"
            assert path.read_bytes() == written
            assert store.on_disk(path).sha256 == sha256(written)
        assert sources(path)[1::5] == ["A", "B"]
        assert [v.kind for v in store.history(path)] == ["observed", "observed", "observed", "merged"]


def test_save_merges_a_plain_file_write_and_reports_conflicts(servers: tuple[Path, list[Server]]) -> None:
    root, started = servers
    (root / "nb.ipynb").write_text(notebook_io.dumps(base()))
    server = start(root, started)
    loaded = server.get("nb.ipynb")
    (root / "nb.ipynb").write_text(notebook_io.dumps(edited(edited(base(), 0, "written on disk"), 3, "x3 = 'disk'")))
    server.put("nb.ipynb", edited(edited(loaded, 5, "saved in the browser"), 3, "x3 = 'browser'"))
    final = notebook_io.read_notebook(root / "nb.ipynb")
    notebook_io.validate(final)
    assert [c["source"] for c in final["cells"]][0] == "written on disk"
    assert [c["source"] for c in final["cells"]][5] == "saved in the browser"
    assert final["cells"][3]["source"] == "<<<<<<< local\nx3 = 'disk'\n=======\nx3 = 'browser'\n>>>>>>> remote"
    assert "1 conflict(s) marked inline: cell 4 (id 'c3'): both sides edited the source" in server.output()


def test_other_files_are_untouched_and_a_failing_merge_still_saves(servers: tuple[Path, list[Server]]) -> None:
    root, started = servers
    server = start(root, started)
    server.request("PUT", "/api/contents/notes.txt", {"type": "file", "format": "text", "content": "hello"})
    assert (root / "notes.txt").read_text() == "hello"
    (root / "nb.ipynb").write_text(notebook_io.dumps(base()))
    loaded = server.get("nb.ipynb")
    (root / "nb.ipynb").write_text("{ this is not json")  # something broke the file on disk
    mine = edited(loaded, 2, "my edit")
    reply = server.put("nb.ipynb", mine)
    assert sources(root / "nb.ipynb")[2] == "my edit"
    assert "could not merge the save of nb.ipynb" in server.output()
    # the tab is told the hash of what it saved: its next save is placed on it, not on the version before
    assert reply["nbmergesave"]["sha256"] == sha256((root / "nb.ipynb").read_bytes())
    assert not reply["nbmergesave"]["merged"]
    with Store.open(root) as store:
        stored = [store.content(v) for v in store.history(root / "nb.ipynb")]
    assert b"{ this is not json" in stored, "the broken file is kept too"
    assert (root / "nb.ipynb").read_bytes() in stored


# --- base by hash, the routes and their security (issue 11) -----------------

def test_the_base_travels_as_a_hash_and_survives_a_restart(servers: tuple[Path, list[Server]]) -> None:
    root, started = servers
    path = write(root / "nb.ipynb", base())
    server = start(root, started)
    loaded = server.request("GET", "/api/contents/nb.ipynb")
    sha = loaded["nbmergesave"]["sha256"]
    assert sha == sha256(path.read_bytes())
    server.stop()
    server = start(root, started)  # a new process: nothing of the load in memory
    path.write_text(notebook_io.dumps(edited(base(), 0, "written by someone else")))
    reply = server.put("nb.ipynb", edited(loaded["content"], 6, "mine"), base=sha)["nbmergesave"]
    assert sources(path)[0] == "written by someone else" and sources(path)[6] == "mine"
    assert reply["merged"] is True and reply["sha256"] == sha256(path.read_bytes())
    assert reply["changes"] == {"added": 0, "changed": 1, "removed": 0} and reply["conflicts"] == []
    assert [c["source"] for c in reply["content"]["cells"]] == sources(path)
    assert "without a known base" not in server.output()


def test_a_save_without_a_base_is_placed_from_the_store_and_logged(servers: tuple[Path, list[Server]]) -> None:
    root, started = servers
    path = write(root / "nb.ipynb", base())
    server = start(root, started)
    loaded = server.get("nb.ipynb")  # stored on load
    server.stop()
    server = start(root, started)
    path.write_text(notebook_io.dumps(edited(base(), 0, "written by someone else")))
    server.put("nb.ipynb", edited(loaded, 6, "mine"))  # an old client: no base
    assert sources(path)[0] == "written by someone else" and sources(path)[6] == "mine"
    assert "came without a known base; base: inferred from the store" in server.output()


def test_a_conflict_reply_names_the_cell(servers: tuple[Path, list[Server]]) -> None:
    root, started = servers
    path = write(root / "nb.ipynb", base())
    server = start(root, started)
    loaded = server.request("GET", "/api/contents/nb.ipynb")
    path.write_text(notebook_io.dumps(edited(base(), 2, "theirs")))
    reply = server.put("nb.ipynb", edited(loaded["content"], 2, "mine"), base=loaded["nbmergesave"]["sha256"])
    assert reply["nbmergesave"]["conflicts"] == [
        {"cell": 2, "id": "c2", "kind": "source", "words": "both changed the same lines"}]


def raw(server: Server, path: str, token: bool = True) -> tuple[int, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    headers = {"Authorization": f"token {server.token}"} if token else {}
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", headers=headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_routes_need_the_token_and_a_notebook_under_the_root(servers: tuple[Path, list[Server]], tmp_path: Path) -> None:
    root, started = servers
    path = write(root / "nb.ipynb", base())
    outside = tmp_path / "outside.ipynb"
    outside.write_text(notebook_io.dumps(edited(base(), 0, "SECRET OUTSIDE")))
    (root / "link.ipynb").symlink_to(outside)
    (root / "sub").mkdir()
    server = start(root, started)
    loaded = server.request("GET", "/api/contents/nb.ipynb")
    path.write_text(notebook_io.dumps(edited(base(), 0, "theirs")))
    server.put("nb.ipynb", edited(loaded["content"], 5, "mine"), base=loaded["nbmergesave"]["sha256"])

    status, body = raw(server, "/nbmergesave/api/state?path=nb.ipynb")
    assert status == 200 and json.loads(body)["sha256"] == sha256(path.read_bytes())
    assert json.loads(body)["merge"]["conflicts"] == 0
    status, body = raw(server, "/nbmergesave/review?path=nb.ipynb")
    assert status == 200 and b"theirs" in body and b"mine" in body
    for route in ("/nbmergesave/api/state?path=nb.ipynb", "/nbmergesave/review?path=nb.ipynb"):
        status, body = raw(server, route, token=False)
        assert status in (302, 403) and b"theirs" not in body, (route, status)
    hostile = ["../outside.ipynb", str(outside), "sub/../../outside.ipynb", "%2e%2e/outside.ipynb",
               "link.ipynb", "sub/../nb.ipynb", "./nb.ipynb", "nb.ipynb%00", "", "sub", "~/outside.ipynb"]
    for bad in hostile:
        for route in ("/nbmergesave/api/state", "/nbmergesave/review"):
            status, body = raw(server, f"{route}?path={urllib.parse.quote(bad, safe='')}")
            assert status == 404 and b"SECRET" not in body, (route, bad, status)
    status, _ = raw(server, "/nbmergesave/review?path=nb.ipynb&version=1")  # a version that is no merge
    assert status == 404


def test_a_client_whose_merged_save_was_merged_again_is_placed_by_its_own_save_next_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client without the front end (no hash sent) saves over a changed file (merged), and another server's
    save lands during our swap (merged again). The server must then take the client's own save for what it
    holds, not the merge it built on: placed against that merge, the client's next save took its own earlier
    line for the other side's and conflicted with itself (seen with two hosts on one folder, store away)."""
    pytest.importorskip("jupyter_server")
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    if notebook_io._renameat2 is None:
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: such a save is replaced (a window of microseconds)")
    monkeypatch.setenv("NBMERGESAVE_HOME", str(tmp_path / "state"))
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook_io.dumps(notebook(cell("a = 0", "a"), cell("b = 0", "b"), cell("c = 0", "c"))))
    cm = FileContentsManager(root_dir=str(tmp_path))
    merger = install(cm)
    client = cm.get("nb.ipynb")["content"]
    changed = edited(notebook_io.parse_notebook(path.read_bytes()), 2, "c = 5")
    path.write_text(notebook_io.dumps(changed))  # someone else's edit: the client's first save is merged
    other = notebook_io.dumps(edited(changed, 1, "b = 2")).encode()
    real_exchange = notebook_io._exchange

    def other_lands(a: str, b: Path) -> bool:  # another server's save, after our compare, before our swap
        monkeypatch.setattr(notebook_io, "_exchange", real_exchange)
        (tmp_path / "other.tmp").write_bytes(other)
        (tmp_path / "other.tmp").replace(path)
        return real_exchange(a, b)

    monkeypatch.setattr(notebook_io, "_exchange", other_lands)
    for line in ("a = 1", "a = 2"):
        client["cells"][0]["source"] += "\n" + line
        cm.save({"type": "notebook", "content": copy.deepcopy(client)}, "nb.ipynb")
    assert notebook_io._exchange is real_exchange  # the other save did land during the first
    assert sources(path) == ["a = 0\na = 1\na = 2", "b = 2", "c = 5"]  # clean: each line written once
    for store in list(merger.stores.held.values()):
        store.close()


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "full path"])
def test_a_save_that_lands_during_the_swap_goes_back_on_disk_at_once_then_both_merge(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    """Another server's save lands between our compare and our swap (RENAME_EXCHANGE hands it back): it is put
    back on disk at once, so no reader ever sees the file without it, and our save is then merged into it."""
    pytest.importorskip("jupyter_server")
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave import fastpath
    from nbmergesave.jupyter import install

    if notebook_io._renameat2 is None:
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: such a save is replaced (a window of microseconds)")
    monkeypatch.setattr(fastpath, "FAST", fast)
    monkeypatch.setenv("NBMERGESAVE_HOME", str(tmp_path / "state"))
    path = tmp_path / "nb.ipynb"
    path.write_text(notebook_io.dumps(notebook(cell("a = 0", "a"), cell("b = 0", "b"))))
    cm = FileContentsManager(root_dir=str(tmp_path))
    merger = install(cm)
    tab = cm.get("nb.ipynb")
    other = notebook_io.dumps(edited(notebook_io.parse_notebook(path.read_bytes()), 1, "b = 2")).encode()
    seen: list[list[str]] = []  # what a reader finds right after each write of ours
    real_exchange, real_put_back = notebook_io._exchange, merger.writes.put_back

    def other_lands(a: str, b: Path) -> bool:  # after our compare, before our swap
        monkeypatch.setattr(notebook_io, "_exchange", real_exchange)
        (tmp_path / "other.tmp").write_bytes(other)
        (tmp_path / "other.tmp").replace(path)
        return real_exchange(a, b)

    def put_back(os_path: str, displaced: bytes, ours: bytes, **how: bool) -> bytes | None:
        held = real_put_back(os_path, displaced, ours, **how)
        seen.append(sources(path))
        return held

    monkeypatch.setattr(notebook_io, "_exchange", other_lands)
    monkeypatch.setattr(merger.writes, "put_back", put_back)
    tab["content"]["cells"][0]["source"] = "a = 1"
    reply = cm.save({"type": "notebook", "content": tab["content"], "nbmergesave_base": tab["nbmergesave"]["sha256"]},
                    "nb.ipynb")
    assert seen == [["a = 0", "b = 2"]]  # the other save, back at once (not ours without it)
    assert sources(path) == ["a = 1", "b = 2"]  # then both
    assert reply["nbmergesave"]["merged"] and reply["nbmergesave"]["sha256"] == sha256(path.read_bytes())
    for store in list(merger.stores.held.values()):
        store.close()
    with Store.open(tmp_path) as store:
        assert store.latest_with(path, sha256(other)) is not None  # the other save is in the history too


def begun_in_place(path: Path, data: bytes, after: float, then: Any = None) -> tuple[threading.Thread, IO[bytes]]:
    """Another program's write of ``data`` in place, begun: ``path`` truncated and 100 bytes written. The
    thread returned (not started) writes the rest ``after`` seconds later, closes the file and calls ``then``."""
    f = open(path, "wb")
    f.write(data[:100])
    f.flush()

    def finish() -> None:
        time.sleep(after)
        f.write(data[100:])
        f.close()
        if then is not None:
            then()

    return threading.Thread(target=finish), f


def test_a_read_waits_for_a_write_in_place_instead_of_stepping_the_notebook_back(tmp_path: Path) -> None:
    """A plain jupyter_server (another host) writes a save in place, its ``.~`` copy beside it; a GET through
    this server meanwhile waits for the write to end and serves it, instead of putting the copy back over it."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    before = notebook_io.dumps(notebook(*numbered(4))).encode()
    save = notebook_io.dumps(edited(notebook(*numbered(4)), 2, "x2 = 'saved'")).encode()
    path = tmp_path / "nb.ipynb"
    path.write_bytes(before)
    (tmp_path / ".~nb.ipynb").write_bytes(before)
    cm = FileContentsManager(root_dir=str(tmp_path))
    install(cm)
    # (the plain server removes its copy once its write is done)
    writer, _ = begun_in_place(path, save, 0.3, then=(tmp_path / ".~nb.ipynb").unlink)
    writer.start()
    model = cm.get("nb.ipynb")
    writer.join()
    assert [c["source"] for c in model["content"]["cells"]][2] == "x2 = 'saved'"
    assert path.read_bytes() == save
    assert not (tmp_path / "nb.ipynb.invalid").exists()

    # and a plain server's read, which does step it back, is what the merge forward below is about
    (tmp_path / "plain").mkdir()
    stepped = stepped_back_by_a_plain_server(tmp_path / "plain", before, save)
    assert stepped.read_bytes() == before
    assert Path(f"{stepped}.invalid").read_bytes() == save


def test_a_save_a_read_stepped_back_is_merged_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook jupyter_server stepped back (the save it put aside as ``NAME.invalid``, finished there) is
    merged forward by the next look at the file once its writer is done: the save is on disk again."""
    v1 = notebook(*numbered(4))
    before = notebook_io.dumps(v1).encode()
    save = notebook_io.dumps(edited(v1, 2, "x2 = 'saved'")).encode()
    root = tmp_path / "project"
    root.mkdir()
    (root / "nb.ipynb").write_bytes(before)
    with Store.open(root) as store:
        assert sync_file(store, root / "nb.ipynb").action == "recorded"
    path = stepped_back_by_a_plain_server(root, before, save)
    assert path.read_bytes() == before
    with Store.open(root) as store:
        outcome = sync_file(store, path)  # the writer may still be at work: not yet
        assert [o.action for o in (*outcome.earlier, outcome)][0] == "partial" and path.read_bytes() == before
        monkeypatch.setattr("nbmergesave.sync.STEP_BACK_QUIET", 0)  # (rather than a second's wait)
        outcome = sync_file(store, path)
        assert any("merged forward" in o.message for o in (*outcome.earlier, outcome)), outcome
        assert path.read_bytes() == save
        assert store.on_disk(path).sha256 == sha256(save)
        assert sync_file(store, path).action == "unchanged"  # once: the save is in the store now
    # a NAME.invalid older than the window (a crash long ago) is left alone
    path.write_bytes(before)
    Path(f"{path}.invalid").write_bytes(notebook_io.dumps(edited(v1, 3, "long ago")).encode())
    monkeypatch.setattr("nbmergesave.sync.STEPPED_BACK_WINDOW", -1)  # (a file's ctime cannot be set back)
    monkeypatch.setattr("nbmergesave.sync.STEPPING_BACK", -1)
    with Store.open(root) as store:
        assert sync_file(store, path).action == "recorded"  # the file's own change, a revert to v1
    assert path.read_bytes() == before


def test_a_save_a_read_moved_aside_with_no_copy_to_put_back_is_put_back(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two plain servers: one's read moved the half-written notebook aside (``NAME.invalid``), but the writer had
    removed its ``.~`` copy meanwhile, so nothing came back in its place (seen by hand: the notebook was gone and
    the writer's next save failed with 404). The next look at the notebook puts the save back."""
    v1 = notebook(*numbered(4))
    save = notebook_io.dumps(edited(v1, 2, "x2 = 'saved'")).encode()
    path = write(tmp_path / "nb.ipynb", v1)
    with Store.open(tmp_path) as store:
        assert sync_file(store, path).action == "recorded"
        path.rename(f"{path}.invalid")
        Path(f"{path}.invalid").write_bytes(save)  # the writer finishes into the file it had open
        monkeypatch.setattr("nbmergesave.sync.STEP_BACK_QUIET", 0)  # (rather than a second's wait)
        outcome = sync_file(store, path)
        assert [(o.action, "merged forward" in o.message) for o in (*outcome.earlier, outcome)] == \
            [("recorded", True), ("unchanged", False)], outcome
        assert path.read_bytes() == save
        assert store.on_disk(path).sha256 == sha256(save)


@pytest.mark.parametrize("overlap", [False, True], ids=["a save from the file", "a merged save"])
@pytest.mark.parametrize("during", [False, True], ids=["after", "during"])
def test_an_outside_write_just_after_a_save_is_merged_with_that_save(tmp_path: Path, overlap: bool,
                                                                      during: bool) -> None:
    """A person saves (made from the file, or meeting another save and merged); an agent that read the notebook
    before writes its version at once, before any watcher has read the person's save. The agent's write is
    merged with that save (the server marked it as the file's before letting go of the save lock), not with
    the version before it, which would undo the person's edit. ``during``: the agent writes the moment the
    save's bytes land, before the server has finished the save (which then must not take the agent's bytes,
    read back, for its own save)."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    path = write(tmp_path / "nb.ipynb", notebook(*numbered(6)))
    cm = FileContentsManager(root_dir=str(tmp_path))
    merger = install(cm)
    loaded = cm.get("nb.ipynb")
    read_by_agent = path.read_bytes()
    agents = edited(notebook_io.parse_notebook(read_by_agent), 4, "x4 = 'agent'")
    if during:
        swap = merger.writes.swap

        def swap_then_the_agent(os_path: str, payload: bytes, expected: bytes) -> None:
            swap(os_path, payload, expected)
            if b"x2 = 'person'" in payload:
                write(path, agents)

        merger.writes.swap = swap_then_the_agent  # type: ignore[method-assign]
    if overlap:  # someone else saved since the person loaded: the person's save is merged on the server
        other = cm.get("nb.ipynb")
        cm.save({**other, "content": edited(other["content"], 0, "x0 = 'other'"),
                 "nbmergesave_base": other["nbmergesave"]["sha256"]}, "nb.ipynb")
    # (during: from a client without the front end, so the server serialises the save itself, not the fast path)
    reply = cm.save({**loaded, "content": edited(loaded["content"], 2, "x2 = 'person'"),
                     **({} if during else {"nbmergesave_base": loaded["nbmergesave"]["sha256"]})}, "nb.ipynb")
    assert bool(reply["nbmergesave"]["merged"]) == overlap
    if not during:
        write(path, agents)  # at once, in place
    with Store.open(tmp_path) as store:
        outcome = sync_file(store, path)
    assert outcome.action == "merged", outcome
    assert [sources(path)[i] for i in (0, 2, 4)] == ["x0 = 'other'" if overlap else "x0 = 0", "x2 = 'person'",
                                                      "x4 = 'agent'"]


@pytest.mark.parametrize("finished", [True, False])
def test_a_save_that_finds_an_outside_write_half_done_waits_for_it(tmp_path: Path, finished: bool) -> None:
    """An agent writes the notebook in place (truncated, then written) while a person saves. The save finds
    the file half written: it waits for the write to end and merges with it, instead of taking the half file
    for a broken one and writing over the agent's edit. A file that stays broken is kept in the store, and
    the save goes as sent, soon (nobody is writing it)."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    path = write(tmp_path / "nb.ipynb", notebook(*numbered(6)))
    cm = FileContentsManager(root_dir=str(tmp_path))
    install(cm)
    loaded = cm.get("nb.ipynb")
    agents = notebook_io.dumps(edited(notebook(*numbered(6)), 4, "x4 = 'agent'")).encode()
    writer, f = begun_in_place(path, agents, 0.3)
    if finished:
        writer.start()
    began = time.monotonic()
    reply = cm.save({**loaded, "content": edited(loaded["content"], 2, "x2 = 'person'"),
                     "nbmergesave_base": loaded["nbmergesave"]["sha256"]}, "nb.ipynb")
    took = time.monotonic() - began
    if finished:
        writer.join()
        assert reply["nbmergesave"]["merged"]
        assert [sources(path)[i] for i in (2, 4)] == ["x2 = 'person'", "x4 = 'agent'"]
    else:
        f.close()
        assert sources(path)[2] == "x2 = 'person'"
        assert took < 1.0, took  # a file nobody writes is not waited for long
        with Store.open(tmp_path) as store:
            assert agents[:100] in [store.content(v) for v in store.history(path) if v.sha256]


def test_an_outside_write_begun_in_place_as_the_save_swaps_in_is_read_to_its_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent opens the notebook for writing in place between the save's compare and its swap, and is still
    writing when the swap takes that file off the disk. The save reads the displaced file to the end of the
    agent's write (it holds it open), puts it back and merges with it: the agent's edit is not lost, nor a
    half file put back."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    from nbmergesave.jupyter import install

    path = write(tmp_path / "nb.ipynb", notebook(*numbered(6)))
    cm = FileContentsManager(root_dir=str(tmp_path))
    install(cm)
    loaded = cm.get("nb.ipynb")
    agents = notebook_io.dumps(edited(notebook(*numbered(6)), 4, "x4 = 'agent'")).encode()
    exchange = notebook_io._exchange
    writers: list[threading.Thread] = []

    def the_agent_begins_then_swap(a: str, b: Path) -> bool:
        if not writers:
            writers.append(begun_in_place(path, agents, 0.2)[0])
            writers[0].start()
        return exchange(a, b)

    monkeypatch.setattr(notebook_io, "_exchange", the_agent_begins_then_swap)
    reply = cm.save({**loaded, "content": edited(loaded["content"], 2, "x2 = 'person'"),
                     "nbmergesave_base": loaded["nbmergesave"]["sha256"]}, "nb.ipynb")
    writers[0].join()
    assert reply["nbmergesave"]["merged"]
    assert [sources(path)[i] for i in (2, 4)] == ["x2 = 'person'", "x4 = 'agent'"]
