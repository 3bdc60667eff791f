"""Merge on save: the watcher in the foreground, its pauses, the background daemon, and the demo that shows it."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import NbMergeSaveError
from ._common import ENGINE_CHOICES, Refused, _count, _engine_option, _size


def _engines_for(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``ROOT=ENGINE`` pairs as a mapping; the engine is checked here, the root when the watcher starts."""
    found = {}
    for value in values:
        root, sep, name = value.rpartition("=")
        if not sep or not root or name not in ENGINE_CHOICES:
            raise click.BadParameter(f"'{value}' is not ROOT=ENGINE with ENGINE one of {', '.join(ENGINE_CHOICES)}")
        found[root] = name
    return found


@click.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--rescan", default=300.0, show_default=True, help="Seconds between rescans that catch missed events.")
@click.option("--ignore", multiple=True, help="Notebook name patterns to leave alone (repeatable).")
@click.option("--store", "store_location", envvar="NBMERGESAVE_STORE",
              help="Store folder, or a PostgreSQL URL shared across hosts (default ROOT/.nbmergesave, "
                   "or $NBMERGESAVE_STORE_URL).")
@click.option("--project-root", type=click.Path(file_okay=False),
              help="With a PostgreSQL store: the folder notebooks are named relative to (default: the nearest "
                   "folder holding .nbmergesave-project, else each ROOT).")
@click.option("--status-file", type=click.Path(dir_okay=False), help="Keep a JSON status here (the daemon reads it).")
@click.option("--pause-while", "pause_while", multiple=True, type=click.Path(),
              help="While this path exists, record saves but merge none (a tool is rewriting files; repeatable).")
@_engine_option(" for every ROOT")
@click.option("--engine-for", "engine_for", multiple=True, metavar="ROOT=ENGINE", callback=_engines_for,
              help="Another engine for one of ROOTS (repeatable; the daemon passes each root's engine so).")
def watch(roots: tuple[str, ...], rescan: float, ignore: tuple[str, ...], store_location: str | None,
          project_root: str | None, status_file: str | None, pause_while: tuple[str, ...], engine: str,
          engine_for: dict[str, str]) -> None:
    """Merge overlapping notebook saves in ROOTS (recursive) until Ctrl-C.

    Every version seen is kept in ROOT/.nbmergesave/; a save made from an
    older version than the one on disk is merged with it instead of
    replacing it. One line on stderr for each merge, conflict and error.
    Single writers are never merged: in a git work tree, what git writes
    (checkout, reset, stash, rebase, merge, pull) is recorded as git's, and
    while a --pause-while path exists (or after 'nbmergesave pause') every
    save is recorded as the pausing tool's.

    \b
    Example:
        nbmergesave watch ~/projects/survey ~/projects/thesis
        nbmergesave watch . --pause-while /tmp/restoring-backup
        nbmergesave watch ~/projects/survey --engine nbdime
    """
    import json
    import signal
    import time

    from ..watcher import Watcher

    def log(line: str) -> None:
        click.echo(f"nbmergesave: {line}", err=True)

    from ..store.where import configure

    from ..store.where import is_url

    # a database named by --store is the store in effect for the whole process (the local spool that stands
    # in for it while it is away is named after it)
    configure(project_root=project_root or "", roots=list(roots),
              url=store_location if store_location and is_url(store_location) else None)
    try:
        watcher = Watcher(roots, log=log, rescan=rescan, ignore=ignore, store_location=store_location,
                          pause_while=pause_while, engine=engine, engines=engine_for)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    # SIGTERM stops us as Ctrl-C does. (Setting a threading.Event from the handler can
    # deadlock: the handler runs in the main thread, which may hold that Event's lock
    # inside its own wait(); seen once, a watcher that never stopped.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    def progress(paths: list[Path]):  # type: ignore[no-untyped-def]
        if len(paths) < 200 or not sys.stderr.isatty():
            yield from paths
            return
        with click.progressbar(paths, label="recording notebooks", file=sys.stderr) as bar:
            yield from bar

    watcher.start(progress)
    log(f"watching {sum(watcher.tracked().values())} notebooks in {', '.join(map(str, watcher.roots))}")

    def write_status() -> None:
        if status_file:
            from .. import __version__ as version
            from ..notebook_io import write_atomic

            now = time.time()  # before the figures: whatever happened before now is in them
            stats = watcher.stats
            write_atomic(status_file, json.dumps({
                "pid": os.getpid(), "version": version, "roots": [str(r) for r in watcher.roots],
                "stores": [str(s.location) for s in watcher.stores.values()],
                "uptime": round(time.time() - stats.started, 1), "notebooks": watcher.tracked(),
                "merges": stats.merges, "conflicts": stats.conflicts, "errors": stats.errors,
                "last_error": stats.last_error, "pending": watcher.pending(), "time": now,
                "single_writer": dict(stats.single_writer),
                "engines": {str(root): name for root, name in watcher.engines.items()},
            }))

    try:
        write_status()  # its appearance tells `daemon start` that we are ready
        while True:
            # Rewritten after each batch of work (so "pending" turns 0 as soon as the watcher is idle), else each second.
            if watcher.changed.wait(1.0):
                watcher.changed.clear()
                time.sleep(0.02)  # a burst of batches gives a few writes, not one each
            write_status()
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        s = watcher.stats
        log(f"stopped: {s.merges} merges, {s.conflicts} with conflicts, {s.errors} errors")


@click.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def pause(root: str, command: tuple[str, ...]) -> None:
    """Tell the watcher of ROOT that a tool is rewriting its notebooks.

    Until 'nbmergesave resume', every save is recorded as made from the
    version on disk and none is merged (restoring a backup, rsync,
    jupytext --sync, a build step). With a COMMAND after '--', pause, run
    it, resume (even when it fails), and exit with its exit code.

    \b
    Example:
        nbmergesave pause . -- rsync -a ../backup/ .
        nbmergesave pause ~/project && tar xf snapshot.tar && nbmergesave resume ~/project
    """
    import subprocess

    from ..watcher import pause as pause_root, resume as resume_root

    try:
        marker = pause_root(root, reason=" ".join(command))
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    if not command:
        click.echo(f"paused: saves in {root} are recorded, not merged, until 'nbmergesave resume {root}' ({marker})")
        return
    try:
        code = subprocess.call(list(command))
    except OSError as e:
        raise Refused(f"cannot run {command[0]}: {e.strerror}") from None
    finally:
        resume_root(root)
    sys.exit(code)


@click.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
def resume(root: str) -> None:
    """End 'nbmergesave pause': the watcher of ROOT merges overlapping saves again.

    \b
    Example:
        nbmergesave resume ~/project
    """
    from ..watcher import resume as resume_root

    try:
        was = resume_root(root)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    click.echo(f"resumed: {root}" if was else f"{root} was not paused")


@click.group()
def daemon() -> None:
    """One background watcher per user, serving many folders.

    \b
    Example:
        nbmergesave daemon start ~/projects/survey ~/projects/thesis
        nbmergesave daemon status --json
        nbmergesave daemon add ~/projects/new
        nbmergesave daemon remove ~/projects/thesis
        nbmergesave daemon stop
    """


def _print_status(info: dict, as_json: bool) -> None:  # type: ignore[type-arg]
    import json

    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"pid {info['pid']}, up {info.get('uptime', 0):.0f} s, log {info['log']}")
    notebooks = info.get("notebooks", {})
    engines = info.get("engines", {})
    width = max((len(r) for r in info["roots"]), default=4)
    click.echo(f"{'folder':<{width}}  notebooks  engine")
    for root in info["roots"]:
        click.echo(f"{root:<{width}}  {notebooks.get(root, '-')!s:>9}  {engines.get(root, 'cells')}")
    click.echo(f"merges {info.get('merges', 0)}, with conflicts {info.get('conflicts', 0)}, errors {info.get('errors', 0)}"
               + (f", saves waiting {info['pending']}" if info.get("pending") else "")
               + (f", last error: {info['last_error']}" if info.get("last_error") else ""))
    if info.get("degraded"):
        click.echo(f"degraded: {info['degraded']['reason']}")
    for spool in info.get("spools", []):
        click.echo(f"spool {spool['folder']}: {spool['versions']} version(s), {_size(spool['bytes'])}, waiting for "
                   f"{spool['store']}")
    for location, size in info.get("store_sizes", {}).items():
        if "error" in size:
            click.echo(f"store {location}: {size['error']}")
        else:
            click.echo(f"store {location}: {_size(size['size_bytes'])}, {_count(size['notebooks'], 'notebook')}, "
                       f"{_count(size['versions'], 'version')}, reclaimable by gc {_size(size['reclaimable_bytes'])}")


@daemon.command("start")
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print pid, roots, log and stores as JSON.")
@_engine_option(" for ROOTS (the daemon records each root's engine)")
def daemon_start(roots: tuple[str, ...], as_json: bool, engine: str) -> None:
    """Start the background watcher on ROOTS; returns once it is ready.

    A second start reports the running daemon instead of starting another.

    \b
    Example:
        nbmergesave daemon start ~/projects/survey --json
        nbmergesave daemon start ~/projects/team --engine nbdime
    """
    from .. import daemon as d

    try:
        info, started = d.start(list(roots), engines={r: engine for r in roots})
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    if not started and not as_json:
        click.echo("already running:", err=True)
    _print_status(info, as_json)


@daemon.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def daemon_status(as_json: bool) -> None:
    """Show the daemon's folders, notebooks tracked, merges and conflicts (exit 1 when none runs).

    \b
    Example:
        nbmergesave daemon status --json
    """
    from .. import daemon as d

    info = d.status()
    if info is None:
        if as_json:
            click.echo('{"running": false}')
        else:
            click.echo("no daemon is running")
        sys.exit(1)
    from ..store.spool import spools

    info["store_sizes"] = _store_sizes(info.get("stores", []))
    away = {location: size["error"] for location, size in info["store_sizes"].items() if "error" in size}
    info["spools"] = spools()
    info["state"] = "degraded" if away else "ok"
    info["degraded"] = {"reason": "; ".join(f"{k}: {v}" for k, v in away.items())} if away else None
    _print_status(info, as_json)


def _store_sizes(locations: list[str]) -> dict[str, dict]:  # type: ignore[type-arg]
    """Size, notebooks, versions and reclaimable bytes of each store (read from the stores themselves)."""
    from ..store import Store

    sizes = {}
    from ..store.copy import open_location
    from ..private import redact_url
    from ..store.postgres import is_url
    from ..store.where import store_url

    for location in locations:
        try:
            if is_url(location):  # the status file holds it without its password: ours is in the environment
                url = store_url()
                with open_location(url if url and redact_url(url) == location else location, create=False) as store:
                    sizes[location] = store.stats().to_dict()
                continue
            with Store.open(Path(location).parent, location) as store:
                sizes[location] = store.stats().to_dict()
        except (NbMergeSaveError, OSError) as e:
            sizes[location] = {"error": str(e)}
    return sizes


@daemon.command("stop")
def daemon_stop() -> None:
    """Stop the background watcher.

    \b
    Example:
        nbmergesave daemon stop
    """
    from .. import daemon as d

    info = d.stop()
    click.echo(f"stopped pid {info['pid']}" if info else "no daemon was running")


@daemon.command("add")
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@_engine_option(" for these ROOTS (each root keeps its own)")
def daemon_add(roots: tuple[str, ...], engine: str) -> None:
    """Watch more folders with the running daemon (adding a watched one again sets its engine).

    \b
    Example:
        nbmergesave daemon add ~/projects/new
        nbmergesave daemon add ~/projects/team --engine nbdime
    """
    _change_roots(add=list(roots), engine=engine)


@daemon.command("remove")
@click.argument("roots", nargs=-1, required=True, type=click.Path())
def daemon_remove(roots: tuple[str, ...]) -> None:
    """Stop watching folders; the daemon stops when none is left.

    \b
    Example:
        nbmergesave daemon remove ~/projects/thesis
    """
    _change_roots(remove=list(roots))


def _change_roots(**change: Any) -> None:
    from .. import daemon as d

    try:
        info = d.change_roots(**change)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    click.echo("watching: " + (", ".join(info["roots"]) or "nothing (daemon stopped)"))


@click.command()
@click.argument("folder", required=False, type=click.Path(file_okay=False))
def demo(folder: str | None) -> None:
    """Show the main job: two people save one notebook over each other, and nothing is lost.

    Creates a small project in FOLDER (a new temporary folder by default),
    watches it, plays two overlapping saves and a conflicting pair, prints
    what happens, and leaves the folder for inspection.

    \b
    Example:
        nbmergesave demo
        nbmergesave demo ./try-it
    """
    from ..demo import run_demo

    run_demo(folder, click.echo)
