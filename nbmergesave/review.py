"""`nbmergesave review`: see what an automatic merge did, in nbdime's web diff or in the terminal.

The web diff is nbdime's web app, started in a child process with its handlers
narrowed to this review, because nbdime's own server answers anyone who can
reach the port and reads any notebook path (or URL) a request names:

- every request must carry the random secret of the printed URL (``?token=``),
  an ``Authorization: token ...`` header, or the cookie the page sets from it
  (HttpOnly, SameSite=Strict, one name per port); anything else gets 401
  (no secret) or 403 (a wrong one), whatever the path, before any handler runs;
- the three staged versions are handed to the child on its stdin and kept in
  memory: the diff API answers only those names, so no request path ever
  reaches the file system (or the network), and only nbdime's own static
  files, by exact name, are served besides;
- loopback only unless ``ip`` is given, and then the secret is still required.
"""

from __future__ import annotations

import hmac
import io
import json
import os
import secrets
import select
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from . import notebook_io
from .errors import StoreError
from .store import Store, Version


@dataclass(frozen=True)
class Review:
    """A stored merge and the two versions it merged."""

    merged: Version
    save: Version  # the save the watcher merged (remote)
    other: Version  # what was on disk, from the other writer (local)


def find_merge(store: Store, notebook: str | os.PathLike[str], version: int | None = None) -> Review:
    """The merge ``version`` of ``notebook`` (default: the latest) and the versions it merged."""
    if version is None:
        merges = [v for v in store.history(notebook) if v.kind == "merged"]
        if not merges:
            raise StoreError(f"'{notebook}' has no automatic merge to review")
        merged = merges[-1]
    else:
        merged = store.get(notebook, version)
        if merged.kind != "merged" or merged.local is None or merged.remote is None:
            raise StoreError(f"version {version} of '{notebook}' is not a merge (hint: nbmergesave history {notebook})")
    return Review(merged, store.get(notebook, merged.remote), store.get(notebook, merged.local))  # type: ignore[arg-type]


def engine_words(merged: Version) -> str:
    """Which engine made a merge, in words (merges stored before 0.2 did not record it)."""
    return f"engine {merged.engine}" if merged.engine else "engine not recorded"


def text(store: Store, review: Review) -> str:
    """Which engine merged, then nbdime's terminal diff: the save against the merged result, then the other
    version against it."""
    from nbdime.diffing.notebooks import diff_notebooks
    from nbdime.prettyprint import PrettyPrintConfig, pretty_print_diff

    import nbformat

    merged = nbformat.from_dict(notebook_io.parse_notebook(store.content(review.merged)))
    out = io.StringIO()
    out.write(f"merge v{review.merged.version} ({engine_words(review.merged)})\n")
    for title, version in (("the save", review.save), ("the other writer's version", review.other)):
        nb = nbformat.from_dict(notebook_io.parse_notebook(store.content(version)))
        out.write(f"### {title} (v{version.version}) -> merged (v{review.merged.version})\n")
        config = PrettyPrintConfig(out=out)
        pretty_print_diff(nb, diff_notebooks(nb, merged), "", config)
        out.write("\n")
    return out.getvalue()


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class Served:
    """A running web diff of one review; ``urls`` holds its two diffs, each with the secret."""

    process: subprocess.Popen[bytes]
    urls: list[str]
    secret: str

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert process.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            return process.stdout.readline()
        if process.poll() is not None:
            return b""
    return b""


def serve(store: Store, review: Review, port: int | None = None, timeout: float = 60.0, *,
          ip: str = "127.0.0.1") -> Served:
    """Start the web diff of ``review`` on ``ip`` (loopback by default); returns once it answers.

    The printed URLs carry the secret; without it the server refuses every request.
    """
    names = {"save": review.save, "other": review.other, "merged": review.merged}
    files = {f"{name}-v{version.version}.ipynb": store.content(version).decode("utf-8") for name, version in names.items()}
    secret = secrets.token_urlsafe(32)
    payload = {"files": files, "secret": secret, "ip": ip, "port": port or 0}
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_TOKEN")}
    process = subprocess.Popen([sys.executable, "-c", "from nbmergesave.review import _serve_main; _serve_main()"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert process.stdin is not None
    try:  # the secret and the notebooks go through a pipe: not on the command line, not on disk
        process.stdin.write(json.dumps(payload).encode())
        process.stdin.close()
    except BrokenPipeError:
        pass
    deadline = time.monotonic() + timeout
    try:
        started = json.loads(_read_line(process, deadline) or b"{}")
    except ValueError:
        started = {}
    host = "127.0.0.1" if ip in ("0.0.0.0", "::", "") else ip
    host = f"[{host}]" if ":" in host else host
    merged = f"merged-v{review.merged.version}.ipynb"
    urls = [f"http://{host}:{started.get('port')}/diff?" + urllib.parse.urlencode(
                {"base": f"{side}-v{names[side].version}.ipynb", "remote": merged, "token": secret})
            for side in ("save", "other")]
    served = Served(process, urls, secret)
    if "port" not in started:
        served.close()
        why = started.get("error", "no answer")
        raise StoreError(f"nbdime's web diff did not start: {why}")
    request = urllib.request.Request(urls[0].split("?")[0], headers={"Authorization": f"token {secret}"})
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never hand the secret to a proxy
    while True:
        try:
            with direct.open(request, timeout=2):
                return served
        except urllib.error.HTTPError:
            return served  # it answers
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                served.close()
                raise StoreError("nbdime's web diff did not start") from None
            time.sleep(0.1)


# The server side, run in the child process (it imports tornado, jupyter_server and nbdime's web app).

def _presented(request: Any, cookie: str) -> list[str]:
    """The secrets ``request`` carries: Authorization header, ``token`` query argument, our cookie."""
    found = []
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        found.append(value.strip())
    found += [v.decode("utf-8", "replace") for v in request.query_arguments.get("token", []) if v]
    try:
        morsel = request.cookies.get(cookie)
    except Exception:  # a malformed Cookie header carries no secret
        morsel = None
    if morsel is not None and morsel.value:
        found.append(morsel.value)
    return found


def _make_app(files: dict[str, str], secret: str, port: int, ip: str, static: str | None = None) -> Any:
    """nbdime's diff page, diff API and static files, for ``files`` only, behind ``secret``."""
    import base64

    import nbformat
    from jinja2 import Environment, FileSystemLoader
    from nbdime.webapp import nbdimeserver as nbd
    from tornado import web

    static = static or nbd.static_path
    cookie = f"nbmergesave-review-{port}"
    # Only the regular files nbdime ships, by exact name: no path, no symlink.
    static_names = frozenset(e.name for e in os.scandir(static) if e.is_file(follow_symlinks=False))
    expected = secret.encode()

    class Guarded:
        """Headers every answer of ours carries: the secret is in the URL, so no Referer and no cache."""

        def set_default_headers(self) -> None:
            super().set_default_headers()  # type: ignore[misc]
            self.set_header("Referrer-Policy", "no-referrer")  # type: ignore[attr-defined]
            self.set_header("Cache-Control", "no-store")  # type: ignore[attr-defined]
            self.set_header("X-Content-Type-Options", "nosniff")  # type: ignore[attr-defined]

    class ReviewNotebooks:
        """Notebook arguments name one of the staged versions; nothing else is read."""

        def read_notebook(self, arg: Any, fail_on_empty: bool = True) -> Any:
            text = files.get(arg) if isinstance(arg, str) else None
            if text is None:
                raise web.HTTPError(404, "not part of this review")
            return nbformat.reads(text, as_version=4)

        def get_notebook_argument(self, argname: str) -> Any:
            try:
                arg = json.loads(self.request.body)[argname]  # type: ignore[attr-defined]
            except (ValueError, KeyError, TypeError):
                raise web.HTTPError(400, f"expected a JSON body naming '{argname}'") from None
            return self.read_notebook(arg)

    class DiffPage(Guarded, ReviewNotebooks, nbd.MainDiffHandler):
        def get(self) -> None:
            for name in (self.get_argument("base", ""), self.get_argument("remote", "")):
                if name and name not in files:
                    raise web.HTTPError(404, "not part of this review")
            # The page's own requests (scripts, the diff API) carry the secret in this cookie.
            self.set_cookie(cookie, secret, path="/", httponly=True, samesite="Strict")
            super().get()

    class DiffApi(Guarded, ReviewNotebooks, nbd.ApiDiffHandler):
        pass

    class Static(Guarded, web.StaticFileHandler):
        def get(self, path: str, include_body: bool = True) -> Any:
            if path not in static_names:
                raise web.HTTPError(404)
            return super().get(path, include_body)

    class Refused(Guarded, web.RequestHandler):
        def initialize(self, status_code: int) -> None:
            self.status_code = status_code

        def prepare(self) -> None:
            raise web.HTTPError(self.status_code)

        def check_xsrf_cookie(self) -> None:
            pass

        def write_error(self, status_code: int, **kwargs: Any) -> None:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            if status_code == 401:
                self.set_header("WWW-Authenticate", 'Token realm="nbmergesave review"')
            self.finish("refused: open the URL 'nbmergesave review' printed\n")

    class App(web.Application):
        def find_handler(self, request: Any, **kwargs: Any) -> Any:
            # One gate before any routing: no handler, static file or error page runs without the secret.
            presented = _presented(request, cookie)
            if not any(hmac.compare_digest(p.encode(), expected) for p in presented):
                return self.get_handler_delegate(request, Refused, {"status_code": 403 if presented else 401})
            return super().find_handler(request, **kwargs)

    params = {"closable": False, "hide_unchanged": True}
    settings: dict[str, Any] = {
        "log_function": lambda handler: None,  # request URLs hold the secret
        "static_path": static,
        "static_url_prefix": "/static/",
        "static_handler_class": Static,
        "template_path": [nbd.template_path],
        "base_url": "/",
        "jinja2_env": Environment(loader=FileSystemLoader([nbd.template_path]), autoescape=False),
        "local_hostnames": ["localhost", "127.0.0.1"],
        "cookie_secret": base64.encodebytes(os.urandom(32)),
        "allow_unauthenticated_access": True,  # the gate above does it, for every path
        "allow_remote_access": ip not in LOOPBACK,
    }
    from jupyter_server.auth import IdentityProvider

    settings["identity_provider"] = IdentityProvider()
    return App([(r"/diff", DiffPage, params), (r"/api/diff", DiffApi, params)], **settings)


def _serve_main() -> None:
    """The child process: read the review from stdin, serve it, print {"port": N} once listening."""
    import asyncio
    import signal

    try:
        payload = json.loads(sys.stdin.read())
        sys.stdin.close()
        from tornado import httpserver, netutil

        sockets = netutil.bind_sockets(int(payload["port"]), payload["ip"])
        port = int(sockets[0].getsockname()[1])
        app = _make_app(payload["files"], payload["secret"], port, payload["ip"], payload.get("static"))
    except Exception as e:  # the parent prints it as one line
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        raise SystemExit(1) from None

    async def run() -> None:
        server = httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print(json.dumps({"port": port}), flush=True)
        await stop.wait()
        server.stop()

    asyncio.run(run())
