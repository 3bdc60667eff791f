"""`nbmergesave review`: nbdime's terminal diff, and its web diff checked in a real headless Chromium."""

from __future__ import annotations

import copy
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from nbmergesave import notebook_io, sync_file
from nbmergesave.cli import cli
from nbmergesave.store import Store

from .conftest import cell, notebook


@pytest.fixture
def merged_notebook(tmp_path: Path) -> Path:
    """A notebook whose store holds one automatic merge: two writers, one same-line conflict."""
    path = tmp_path / "nb.ipynb"
    v0 = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(6)])
    w1, w2 = copy.deepcopy(v0), copy.deepcopy(v0)
    w1["cells"][1]["source"] = "x1 = 'first writer'"
    w2["cells"][4]["source"] = "x4 = 'second writer'"
    with Store.open(tmp_path) as store:
        for nb in (v0, w1, w2):
            path.write_text(notebook_io.dumps(nb))
            sync_file(store, path)
        assert store.history(path)[-1].kind == "merged"
    return path


def test_review_text(merged_notebook: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(merged_notebook), "--text"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout.startswith("merge v4 (engine cells)\n### the save (v3) -> merged (v4)\n")
    assert "### the other writer's version (v2) -> merged (v4)" in result.stdout
    assert "+  x1 = 'first writer'" in result.stdout and "+  x4 = 'second writer'" in result.stdout


def test_review_of_a_version_that_is_not_a_merge(merged_notebook: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(merged_notebook), "--version", "2", "--text"])
    assert result.exit_code == 2
    assert "version 2 of" in result.stderr and "is not a merge" in result.stderr


def test_review_web_in_headless_chromium(merged_notebook: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "review", str(merged_notebook)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("merge v4 of"), lines
        urls = [line.rsplit(" ", 1)[1].strip() for line in lines[1:]]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)  # loopback only
        with urllib.request.urlopen(urls[0], timeout=30) as response:
            assert response.status == 200
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            pytest.skip("no chromium here (.ci/run installs Debian's)")
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--virtual-time-budget=10000", "--window-size=1200,900"]
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom", urls[0]],
                                 capture_output=True, text=True, timeout=120).stdout
            shot = tmp_path / "review.png"
            subprocess.run([browser, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}", urls[0]],
                           capture_output=True, timeout=120)
        # The save's diff against the merge shows the cell the other writer changed (CodeMirror
        # splits the line into highlighted tokens, so look for the string's words).
        assert "first writer" in dom, "the page shows the merged cell"
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --- The web diff lets in only whoever holds the printed URL, and serves only the staged versions ---

MARKER = "OUTSIDE-MARKER-5f0c2a9e"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace") + "".join(f"{k}: {v}\n" for k, v in self.headers)


def ask(url: str, method: str = "GET", path: str | None = None, headers: dict[str, str] | None = None,
         body: bytes | None = None) -> Answer:
    """One request, the path sent exactly as given (no normalising of ../ or %2e)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = path if path is not None else parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


class Review:
    """`nbmergesave review` running in its own process; ``urls`` as printed."""

    def __init__(self, notebook: Path, cwd: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "review", str(notebook), *extra], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("merge v4 of"), lines
        self.urls = [line.rsplit(" ", 1)[1].strip() for line in lines[1:]]
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.urls[0]).query))
        self.secret, self.base, self.remote = query["token"], query["base"], query["remote"]
        parts = urllib.parse.urlsplit(self.urls[0])
        self.origin = f"{parts.scheme}://{parts.netloc}"

    def session(self) -> dict[str, str]:
        """What the page's own requests carry after the printed URL was opened: its cookies and xsrf header."""
        page = ask(self.urls[0])
        assert page.status == 200, page.body[:300]
        jar = dict(v.split(";", 1)[0].split("=", 1) for k, v in page.headers if k.lower() == "set-cookie")
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items()), "X-XSRFToken": jar.get("_xsrf", ""),
                "Content-Type": "application/json"}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A notebook with a unique marker outside the review, and ways to reach it: a symlink and a ../ path."""
    secret = tmp_path / "private" / "analysis.ipynb"
    secret.parent.mkdir()
    secret.write_text(notebook_io.dumps(notebook(cell(f"print('{MARKER}')", "m"))))
    (tmp_path / "link.ipynb").symlink_to(secret)
    return secret


@pytest.fixture
def running(merged_notebook: Path, outside: Path, tmp_path: Path) -> Iterator[Review]:
    r = Review(merged_notebook, tmp_path)
    yield r
    r.close()


def test_review_url_carries_a_secret_and_the_page_works_through_its_cookie(running: Review) -> None:
    assert len(running.secret) >= 40 and running.urls[1].endswith(f"token={running.secret}")
    page = ask(running.urls[0])
    assert page.status == 200 and b"nbdime-config-data" in page.body
    cookie = next(v for k, v in page.headers if k.lower() == "set-cookie" and v.startswith("nbmergesave-review-"))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert dict(page.headers)["Referrer-Policy"] == "no-referrer"
    session = running.session()
    diff = ask(running.origin + "/api/diff", "POST", headers=session,
                body=json.dumps({"base": running.base, "remote": running.remote}).encode())
    assert diff.status == 200, diff.body[:300]
    data = json.loads(diff.body)
    assert "second writer" in json.dumps(data["base"]) and "first writer" in json.dumps(data["diff"])
    static = ask(running.origin + "/static/nbdime.js", headers={"Cookie": session["Cookie"]})
    assert static.status == 200 and len(static.body) > 10_000
    # The secret is not on the command line of the server process, which every local user can read.
    for pid in (running.proc.pid, *_children(running.proc.pid)):
        assert running.secret not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_review_refuses_every_request_without_the_secret(running: Review) -> None:
    body = json.dumps({"base": running.base, "remote": running.remote}).encode()
    paths = ["/diff?" + urllib.parse.urlencode({"base": running.base, "remote": running.remote}), "/", "/merge",
             "/static/nbdime.js", "/api/diff", "/api/merge", "/api/store", "/api/closetool", "/no/such/page",
             "/diff?token=", "/static/../../../../../../etc/passwd"]
    for path in paths:
        for method in ("GET", "POST", "HEAD", "OPTIONS"):
            answer = ask(running.origin, method, path, body=body if method == "POST" else None)
            assert answer.status == 401, (method, path, answer.status)
            assert b"first writer" not in answer.body and b"_xsrf" not in answer.text().encode()
    # The attack: take the page's xsrf cookie, then post to the API; there is no page and no cookie.
    assert not [v for k, v in ask(running.origin + "/diff").headers if k.lower() == "set-cookie"]
    wrong = {"Authorization": "token " + "x" * len(running.secret)}
    for headers, path in ((wrong, "/diff"), ({}, f"/diff?token={running.secret[:-1]}"),
                          ({"Cookie": f"nbmergesave-review-{urllib.parse.urlsplit(running.origin).port}=nope"}, "/diff"),
                          ({"Cookie": f"nbmergesave-review-1={running.secret}"}, "/api/diff")):  # another port's name
        answer = ask(running.origin, "POST" if path == "/api/diff" else "GET", path, headers=headers, body=body)
        assert answer.status in (401, 403), (headers, path, answer.status)
        assert b"first writer" not in answer.body


def test_review_serves_nothing_outside_the_staged_versions(running: Review, outside: Path, tmp_path: Path) -> None:
    session = running.session()
    auth = {**session, "Authorization": f"token {running.secret}"}
    names = [str(outside), "private/analysis.ipynb", "../private/analysis.ipynb", "link.ipynb", str(tmp_path / "link.ipynb"),
             "../" * 12 + str(outside).lstrip("/"), "%2e%2e%2fprivate%2fanalysis.ipynb",
             urllib.parse.quote(str(outside), safe=""), f"file://{outside}", f"{running.origin}/static/../{outside}",
             f"{running.base}/../../private/analysis.ipynb", "./" + running.base, "", "_NO_FILE", [running.base], None]
    answers = []
    for name in names:
        answer = ask(running.origin + "/api/diff", "POST", headers=auth,
                      body=json.dumps({"base": name, "remote": running.remote}).encode())
        assert answer.status in (400, 404), (name, answer.status, answer.body[:200])
        answers.append(answer)
        if isinstance(name, str) and name:
            page = ask(running.origin + "/diff?" + urllib.parse.urlencode({"base": name, "remote": running.remote}),
                        headers=auth)
            assert page.status == 404, (name, page.status)
            answers.append(page)
    raw = [f"/static/../../../../../../..{outside}", "/static/..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
           f"/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e{urllib.parse.quote(str(outside))}",
           f"/static/{urllib.parse.quote(str(outside), safe='')}", f"/static/{outside}", "/static//etc/passwd",
           "/static/..\\..\\..\\etc\\passwd", "/static/", "/static/.", "/static/templates/diff.html",
           f"/{outside}", f"/..{outside}", "/diff/../../etc/passwd", "/api/diff/../../../etc/passwd"]
    for path in raw:
        answer = ask(running.origin, "GET", path, headers=auth)
        assert answer.status in (400, 403, 404), (path, answer.status)
        answers.append(answer)
    for answer in answers:
        assert MARKER not in answer.text() and "root:" not in answer.text()


def test_review_static_files_refuse_symlinks_out(tmp_path: Path, outside: Path) -> None:
    """The static handler, started on a folder holding a symlink to the outside notebook, serves only regular files."""
    static = tmp_path / "static"
    static.mkdir()
    (static / "ok.js").write_text("// fine")
    (static / "escape.js").symlink_to(outside)
    (static / "sub").symlink_to(outside.parent, target_is_directory=True)
    proc = subprocess.Popen([sys.executable, "-c", "from nbmergesave.review import _serve_main; _serve_main()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(json.dumps({"files": {}, "secret": "s" * 43, "ip": "127.0.0.1", "port": 0,  # type: ignore[union-attr]
                                     "static": str(static)}))
        proc.stdin.close()  # type: ignore[union-attr]
        port = json.loads(proc.stdout.readline())["port"]  # type: ignore[union-attr]
        auth = {"Authorization": "token " + "s" * 43}
        assert ask(f"http://127.0.0.1:{port}/static/ok.js", headers=auth).status == 200
        for path in ("/static/escape.js", "/static/sub/analysis.ipynb", "/static/sub%2fanalysis.ipynb"):
            answer = ask(f"http://127.0.0.1:{port}{path}", headers=auth)
            assert answer.status == 404 and MARKER not in answer.text(), path
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_review_on_another_address_still_requires_the_secret(merged_notebook: Path, tmp_path: Path) -> None:
    r = Review(merged_notebook, tmp_path, "--ip", "127.0.0.2")
    try:
        assert r.origin.startswith("http://127.0.0.2:")
        assert ask(r.urls[0]).status == 200
        bare = r.urls[0].split("?")[0]
        assert ask(bare).status == 401
        assert ask(r.origin + "/api/diff", "POST", body=b"{}").status == 401
    finally:
        r.close()


def test_review_outputs_are_shown_untrusted_in_headless_chromium(tmp_path: Path) -> None:
    """Scripts in a writer's outputs do not run in the review page (nbdime renders outputs untrusted)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium here (.ci/run installs Debian's)")
    path = tmp_path / "nb.ipynb"
    v0 = notebook(*[cell(f"x{i} = {i}", f"c{i}") for i in range(6)])
    w1, w2 = copy.deepcopy(v0), copy.deepcopy(v0)
    w1["cells"][1]["source"] = "show()"
    w1["cells"][1]["outputs"] = [
        {"output_type": "display_data", "metadata": {}, "data": {
            "text/html": "<b>SHOWN-OUTPUT-MARK</b><img src=x onerror=\"document.body.setAttribute('data-ran','img')\">"
                         "<script>document.body.setAttribute('data-ran','script')</script>",
            "text/plain": "fallback"}},
        {"output_type": "display_data", "metadata": {}, "data": {
            "application/javascript": "document.body.setAttribute('data-ran','js')", "text/plain": "js"}}]
    w2["cells"][4]["source"] = "x4 = 'second writer'"
    with Store.open(tmp_path) as store:
        for nb in (v0, w1, w2):
            path.write_text(notebook_io.dumps(nb))
            sync_file(store, path)
    r = Review(path, tmp_path)
    try:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--virtual-time-budget=10000", "--window-size=1200,900"]
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run([browser, *flags, f"--user-data-dir={profile}", "--dump-dom", r.urls[0]],
                                 capture_output=True, text=True, timeout=120).stdout
        assert "SHOWN-OUTPUT-MARK" in dom, "the output is on the page"
        assert "data-ran" not in dom, "no script of the output ran"
    finally:
        r.close()


def test_review_on_a_busy_port_says_so(merged_notebook: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "nbmergesave", "review", str(merged_notebook), "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert "nbdime's web diff did not start: OSError" in result.stderr and "in use" in result.stderr


def test_review_never_hands_its_secret_to_a_proxy(merged_notebook: Path, tmp_path: Path) -> None:
    """With http_proxy set to a listener of ours, starting a review sends it nothing."""
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        proxy.settimeout(0.5)
        env = {**os.environ, "http_proxy": f"http://127.0.0.1:{proxy.getsockname()[1]}", "no_proxy": "",
               "HTTP_PROXY": f"http://127.0.0.1:{proxy.getsockname()[1]}", "NO_PROXY": ""}
        proc = subprocess.Popen([sys.executable, "-m", "nbmergesave", "review", str(merged_notebook)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("merge v4 of")
            with pytest.raises(socket.timeout):
                proxy.accept()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
