"""The ``nbmergesave`` command: thin click doors onto the library.

Each command parses its options, calls one library function and maps
library errors to exit codes (2: bad input or usage). Heavy modules (nbdime,
watchdog) are imported inside the commands that need them, so ``--help`` and
``--version`` start fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

# jsonschema (imported by nbformat, and so by nbdime) imports rfc3987_syntax
# when it is installed (jupyter_server brings it), which builds a grammar for
# about 2 s on every start. We never check IRI formats, so a merge in this
# process does not pay for it: jsonschema then treats the package as absent.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from . import __version__
from .errors import NbMergeSaveError


class Refused(click.ClickException):
    """An expected refusal: one line on stderr, exit 2, no traceback."""

    exit_code = 2


def _store_options(command):  # type: ignore[no-untyped-def]
    """``--store URL`` and ``--project-root DIR`` for a command that opens a store (a shared PostgreSQL one)."""

    def use_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        from .store.postgres import is_url
        from .store.where import configure

        if value and not is_url(value):
            raise click.BadParameter("a PostgreSQL URL, e.g. postgresql://ann@db.team:5432/notebooks "
                                     "(the embedded store is found from the notebook's folder)")
        configure(url=value or "", roots=[])

    def use_root(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        from .store.where import configure

        configure(project_root=value or "")

    command = click.option("--project-root", type=click.Path(file_okay=False), expose_value=False, callback=use_root,
                           help="With a PostgreSQL store: the folder notebooks are named relative to "
                                "(default: the nearest folder holding .nbmergesave-project).")(command)
    return click.option("--store", "store_url", metavar="URL", envvar="NBMERGESAVE_STORE_URL", expose_value=False,
                        callback=use_url, help="A PostgreSQL store shared across hosts "
                                               "(default: $NBMERGESAVE_STORE_URL, else ROOT/.nbmergesave).")(command)


def _paths_differ(a: str, b: str) -> bool:
    return Path(a).absolute() != Path(b).absolute()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nbmergesave")
def cli() -> None:
    """Keep every writer's work when Jupyter notebooks are saved over each other.

    \b
    Example:
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb -o merged.ipynb
    """


STRATEGY_CHOICES = ["inline", "local", "ours", "remote", "theirs", "base"]


@cli.command()
@click.argument("base", type=click.Path(dir_okay=True))
@click.argument("local", type=click.Path(dir_okay=True))
@click.argument("remote", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="Write the merged notebook here (atomically).")
@click.option("-i", "--inplace", is_flag=True, help="Write the merged notebook into LOCAL.")
@click.option("--strategy", type=click.Choice(STRATEGY_CHOICES), default="inline", show_default=True,
              help="How to settle conflicts: inline markers, or take one side.")
@click.option("--outputs", "outputs", type=click.Choice([*STRATEGY_CHOICES, "clear"]), default=None,
              help="Outputs both sides changed: 'inline' keeps both between marker outputs (nbdime's way), 'clear' "
                   "empties them, or take a side (default: outputs follow the side that changed the source, else remote).")
@click.option("--keep-transients", is_flag=True, help="Let execution counts conflict too (by default they never do).")
@click.option("--json", "as_json", is_flag=True, help="Report conflicts as JSON (on stderr, or to --report).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON conflict report to this file.")
def merge(base: str, local: str, remote: str, out: str | None, inplace: bool, strategy: str,
          outputs: str | None, keep_transients: bool, as_json: bool, report: str | None) -> None:
    """Three-way merge of notebooks: the changes LOCAL and REMOTE made to BASE.

    The merged notebook goes to stdout, to -o OUT, or into LOCAL with
    --inplace. Lines both sides changed are left between <<<<<<< local and
    >>>>>>> remote lines, a cell one side deleted and the other edited is kept
    after a note cell; stderr lists those, then (grouped) what the merge
    settled itself. Exit status: 0 clean, 1 conflicts left in the notebook,
    2 bad input or usage.

    \b
    Example:
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb -o merged.ipynb
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb --inplace --json
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb --outputs inline
    """
    if out and inplace:
        raise click.UsageError("use either -o/--output or --inplace, not both")
    from .merge import ALIASES, MergeOptions, merge_files

    target = local if inplace else out
    try:
        options = MergeOptions(
            strategy=ALIASES.get(strategy, strategy),  # type: ignore[arg-type]
            outputs=ALIASES.get(outputs, outputs) if outputs else None,  # type: ignore[arg-type]
            ignore_transients=not keep_transients,
        )
        result, text = merge_files(base, local, remote, target, options)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    except OSError as e:
        raise Refused(f"cannot write '{target}': {e.strerror}") from None
    if not target:
        click.echo(text, nl=False)
    _report(result.conflicts, as_json, report, name=local)
    if target and not result.unresolved and not as_json:
        click.echo(f"{target}: merged cleanly", err=True)
    sys.exit(1 if result.unresolved else 0)


def _report(conflicts, as_json: bool, report_file: str | None, name: str) -> None:  # type: ignore[no-untyped-def]
    from . import report as words

    if as_json or report_file:
        payload = words.as_json(conflicts, notebook=name)
        if report_file:
            Path(report_file).write_text(payload, encoding="utf-8")
        else:
            click.echo(payload, err=True, nl=False)
    if not as_json:
        click.echo(words.human(conflicts, name), err=True, nl=False)


@cli.group("git-driver")
def git_driver() -> None:
    """Merge notebooks cell by cell in `git merge`, `git rebase` and `git pull`.

    \b
    Example:
        nbmergesave git-driver install           # this repository
        nbmergesave git-driver install --global  # every repository of this user
        nbmergesave git-driver uninstall
    """


@git_driver.command("install")
@click.option("--global", "global_", is_flag=True, help="Install for every repository of this user.")
def git_driver_install(global_: bool) -> None:
    """Add '*.ipynb merge=nbmergesave' to .gitattributes and register the driver.

    Running it again changes nothing.

    \b
    Example:
        nbmergesave git-driver install
    """
    from . import gitdriver

    try:
        changed = gitdriver.install(global_=global_)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    click.echo("\n".join(changed) if changed else "git driver already installed")


@git_driver.command("uninstall")
@click.option("--global", "global_", is_flag=True, help="Remove the user-wide installation.")
def git_driver_uninstall(global_: bool) -> None:
    """Remove exactly what install added. Removing what is absent is not an error.

    \b
    Example:
        nbmergesave git-driver uninstall
    """
    from . import gitdriver

    try:
        changed = gitdriver.uninstall(global_=global_)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    click.echo("\n".join(changed) if changed else "git driver was not installed")


@git_driver.command("run")
@click.argument("base", type=click.Path())
@click.argument("local", type=click.Path())
@click.argument("remote", type=click.Path())
@click.argument("path", required=False, default=None)
def git_driver_run(base: str, local: str, remote: str, path: str | None) -> None:
    """What git runs (%O %A %B %P): merge into LOCAL (%A); exit 1 on conflicts.

    \b
    Example (git does this for you):
        nbmergesave git-driver run .merge_file_O .merge_file_A .merge_file_B analysis.ipynb
    """
    from . import report as words
    from .merge import merge_files

    name = path or local
    try:
        # git passes an empty base when both branches added the file.
        result, _ = merge_files(base, local, remote, local, labels=(f"base of {name}", f"our {name}", f"their {name}"),
                                empty_base=True)
    except NbMergeSaveError as e:
        raise Refused(f"nbmergesave: {e}; leaving git's conflict as it is") from None
    click.echo(words.human(result.conflicts, name), err=True, nl=False)
    sys.exit(1 if result.unresolved else 0)


# --- merge on save: the watcher and the version store ----------------------

@cli.command()
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
def watch(roots: tuple[str, ...], rescan: float, ignore: tuple[str, ...], store_location: str | None,
          project_root: str | None, status_file: str | None, pause_while: tuple[str, ...]) -> None:
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
    """
    import json
    import signal
    import time

    from .watcher import Watcher

    def log(line: str) -> None:
        click.echo(f"nbmergesave: {line}", err=True)

    from .store.where import configure

    configure(project_root=project_root or "", roots=list(roots))
    try:
        watcher = Watcher(roots, log=log, rescan=rescan, ignore=ignore, store_location=store_location,
                          pause_while=pause_while)
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
            from . import __version__ as version
            from .notebook_io import write_atomic

            now = time.time()  # before the figures: whatever happened before now is in them
            stats = watcher.stats
            write_atomic(status_file, json.dumps({
                "pid": os.getpid(), "version": version, "roots": [str(r) for r in watcher.roots],
                "stores": [str(s.location) for s in watcher.stores.values()],
                "uptime": round(time.time() - stats.started, 1), "notebooks": watcher.tracked(),
                "merges": stats.merges, "conflicts": stats.conflicts, "errors": stats.errors,
                "last_error": stats.last_error, "pending": watcher.pending(), "time": now,
                "single_writer": dict(stats.single_writer),
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


@cli.command()
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

    from .watcher import pause as pause_root, resume as resume_root

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


@cli.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
def resume(root: str) -> None:
    """End 'nbmergesave pause': the watcher of ROOT merges overlapping saves again.

    \b
    Example:
        nbmergesave resume ~/project
    """
    from .watcher import resume as resume_root

    try:
        was = resume_root(root)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    click.echo(f"resumed: {root}" if was else f"{root} was not paused")


def _store_for(notebook: str):  # type: ignore[no-untyped-def]
    from .store import Store

    try:
        return Store.find(notebook)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None


@cli.command()
@click.argument("notebook", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON list of versions.")
@_store_options
def history(notebook: str, as_json: bool) -> None:
    """List every stored version of NOTEBOOK, oldest first.

    \b
    Example:
        nbmergesave history analysis.ipynb --json
    """
    import json

    with _store_for(notebook) as store:
        versions = store.history(notebook)
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    for v in versions:
        extra = f" base v{v.base} + v{v.local} + v{v.remote}" if v.kind == "merged" else ""
        extra += f", {v.conflicts} conflicts" if v.conflicts else ""
        click.echo(f"v{v.version}  {v.time}  {v.kind:<9} {(v.sha256 or '-')[:12]}{extra}")


@cli.command()
@click.argument("notebook", type=click.Path())
@click.option("--version", "number", type=int, required=True, help="The version number (see history).")
@_store_options
def show(notebook: str, number: int) -> None:
    """Print a stored version of NOTEBOOK.

    \b
    Example:
        nbmergesave show analysis.ipynb --version 3 > old.ipynb
    """
    with _store_for(notebook) as store:
        try:
            data = store.content(store.get(notebook, number))
        except NbMergeSaveError as e:
            raise Refused(str(e)) from None
    click.echo(data.decode("utf-8"), nl=False)


def _write_back(notebook: str, number: int, kind: str) -> int:
    from .notebook_io import write_atomic

    with _store_for(notebook) as store:
        try:
            data = store.content(store.get(notebook, number))
            # The current file goes into the store first, if it is new: nothing is lost.
            from .sync import sync_file

            if Path(notebook).exists():
                sync_file(store, notebook)
            before = store.on_disk(notebook)
            # Recorded as current before the write, so a watcher on the folder
            # takes the write for what it is, not for a new save.
            version = store.add(notebook, data, kind)
            try:
                write_atomic(notebook, data)
            except OSError:
                if before is not None:
                    store.add_on_disk(notebook, before.version)
                raise
            return version.version
        except NbMergeSaveError as e:
            raise Refused(str(e)) from None
        except OSError as e:
            raise Refused(f"cannot write '{notebook}': {e.strerror}") from None


@cli.command()
@click.argument("notebook", type=click.Path())
@click.option("--version", "number", type=int, required=True, help="The version to bring back.")
@_store_options
def restore(notebook: str, number: int) -> None:
    """Write a stored version back to NOTEBOOK (recorded as a new version).

    \b
    Example:
        nbmergesave restore analysis.ipynb --version 3
    """
    new = _write_back(notebook, number, "restored")
    click.echo(f"{notebook}: restored version {number} as version {new}")


@cli.command()
@click.argument("notebook", type=click.Path())
@_store_options
def undo(notebook: str) -> None:
    """Revert the last automatic merge of NOTEBOOK to the save it merged.

    The merged version stays in the history, so undo itself can be undone
    with restore.

    \b
    Example:
        nbmergesave undo analysis.ipynb
    """
    with _store_for(notebook) as store:
        merges = [v for v in store.history(notebook) if v.kind == "merged"]
    if not merges:
        raise Refused(f"'{notebook}' has no automatic merge to undo")
    last = merges[-1]
    new = _write_back(notebook, last.remote, "undone")  # type: ignore[arg-type]
    click.echo(f"{notebook}: undid merge v{last.version}; the save it merged (v{last.remote}) is back as version {new}")


@cli.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON list of notebooks and cells.")
def conflicts(root: str, as_json: bool) -> None:
    """List notebooks under ROOT whose current file still holds merge conflicts.

    \b
    Example:
        nbmergesave conflicts ~/projects/survey --json
    """
    import json

    from . import notebook_io
    from .report import markers
    from .watcher import scan

    found = []
    paths = [Path(root)] if Path(root).is_file() else scan(Path(root))
    for path in sorted(paths):
        try:
            nb = notebook_io.read_notebook(path)
        except NbMergeSaveError:
            continue
        cells = markers(nb)
        if cells:
            found.append({"notebook": str(path), "cells": cells})
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        for item in found:
            where = ", ".join(
                "notebook metadata" if c["cell"] is None else f"cell {c['cell'] + 1}" + (f" ({c['id']})" if c.get("id") else "")
                for c in item["cells"]
            )
            click.echo(f"{item['notebook']}: {where}")


@cli.group()
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
    width = max((len(r) for r in info["roots"]), default=4)
    click.echo(f"{'folder':<{width}}  notebooks")
    for root in info["roots"]:
        click.echo(f"{root:<{width}}  {notebooks.get(root, '-')}")
    click.echo(f"merges {info.get('merges', 0)}, with conflicts {info.get('conflicts', 0)}, errors {info.get('errors', 0)}"
               + (f", saves waiting {info['pending']}" if info.get("pending") else "")
               + (f", last error: {info['last_error']}" if info.get("last_error") else ""))
    for location, size in info.get("store_sizes", {}).items():
        if "error" in size:
            click.echo(f"store {location}: {size['error']}")
        else:
            click.echo(f"store {location}: {_size(size['size_bytes'])}, {_count(size['notebooks'], 'notebook')}, "
                       f"{_count(size['versions'], 'version')}, reclaimable by gc {_size(size['reclaimable_bytes'])}")


@daemon.command("start")
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print pid, roots, log and stores as JSON.")
def daemon_start(roots: tuple[str, ...], as_json: bool) -> None:
    """Start the background watcher on ROOTS; returns once it is ready.

    A second start reports the running daemon instead of starting another.

    \b
    Example:
        nbmergesave daemon start ~/projects/survey --json
    """
    from . import daemon as d

    try:
        info, started = d.start(list(roots))
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
    from . import daemon as d

    info = d.status()
    if info is None:
        if as_json:
            click.echo('{"running": false}')
        else:
            click.echo("no daemon is running")
        sys.exit(1)
    info["store_sizes"] = _store_sizes(info.get("stores", []))
    _print_status(info, as_json)


def _store_sizes(locations: list[str]) -> dict[str, dict]:  # type: ignore[type-arg]
    """Size, notebooks, versions and reclaimable bytes of each store (read from the stores themselves)."""
    from .store import Store

    sizes = {}
    from .store.copy import open_location
    from .private import redact_url
    from .store.postgres import is_url
    from .store.where import store_url

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
    from . import daemon as d

    info = d.stop()
    click.echo(f"stopped pid {info['pid']}" if info else "no daemon was running")


@daemon.command("add")
@click.argument("roots", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def daemon_add(roots: tuple[str, ...]) -> None:
    """Watch more folders with the running daemon.

    \b
    Example:
        nbmergesave daemon add ~/projects/new
    """
    _change_roots(add=list(roots))


@daemon.command("remove")
@click.argument("roots", nargs=-1, required=True, type=click.Path())
def daemon_remove(roots: tuple[str, ...]) -> None:
    """Stop watching folders; the daemon stops when none is left.

    \b
    Example:
        nbmergesave daemon remove ~/projects/thesis
    """
    _change_roots(remove=list(roots))


def _change_roots(**change: list[str]) -> None:
    from . import daemon as d

    try:
        info = d.change_roots(**change)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    click.echo("watching: " + (", ".join(info["roots"]) or "nothing (daemon stopped)"))


# --- writers that know their base --------------------------------------------

@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--base", "base_file", type=click.Path(), required=True, help="The version the new content was made from.")
@click.option("--from", "from_file", type=click.Path(), help="The new content (default: standard input).")
@click.option("--writer", help="Who writes, recorded with the save.")
@click.option("--json", "as_json", is_flag=True, help="Report conflicts as JSON on stderr.")
@_store_options
def save(notebook: str, base_file: str, from_file: str | None, writer: str | None, as_json: bool) -> None:
    """Save new content into NOTEBOOK, merging what others saved since BASE.

    The file becomes merge(BASE, NOTEBOOK as it is now, new content),
    written atomically; everything is recorded in the store. Exit 1 when
    conflicts are left in the notebook, 2 on bad input.

    \b
    Example:
        my-editor-export | nbmergesave save analysis.ipynb --base loaded.ipynb
        nbmergesave save analysis.ipynb --base loaded.ipynb --from edited.ipynb
    """
    from . import notebook_io
    from .sync import save_file

    try:
        new = notebook_io.read_bytes(from_file, f"--from '{from_file}'") if from_file else sys.stdin.buffer.read()
        base = notebook_io.read_bytes(base_file, f"BASE '{base_file}'")
        result = save_file(notebook, new, base, writer=writer)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    _report(result.conflicts, as_json, None, name=notebook)
    if not as_json:
        click.echo(f"{notebook}: {'merged with changes saved since the base' if result.merged else 'saved'}"
                   f" (version {result.version})", err=True)
    sys.exit(1 if any(c.resolution == "inline" for c in result.conflicts) else 0)


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--base-sha256", required=True, help="sha256 of the version the content was made from.")
@click.option("--sha256", "content_sha", help="sha256 of the content written (default: the file as it is now).")
@click.option("--writer", help="Who writes.")
@_store_options
def declare(notebook: str, base_sha256: str, content_sha: str | None, writer: str | None) -> None:
    """Record that NOTEBOOK's content was made from the version with --base-sha256.

    A watcher that sees that content merges against that base instead of
    inferring one.

    \b
    Example:
        nbmergesave declare analysis.ipynb --base-sha256 3f1c0a9b... --writer rsync-hook
    """
    from . import notebook_io
    from .sync import declare as record

    try:
        content: bytes | str = content_sha or notebook_io.read_bytes(notebook, f"'{notebook}'")
        record(notebook, content, base=base_sha256, writer=writer)
    except (NbMergeSaveError, ValueError) as e:
        raise Refused(str(e)) from None
    click.echo(f"{notebook}: declared base {base_sha256[:12]}")


@cli.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--check-only", is_flag=True, help="Report, repair nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_store_options
def fsck(root: str, check_only: bool, as_json: bool) -> None:
    """Verify the version store of ROOT and repair what can be repaired.

    Checks the database's integrity, every piece against its sha256, every
    version's manifest (its pieces joined give the bytes saved), and versions
    whose content is missing or damaged (taken back from the notebook on disk when it still
    holds those bytes, otherwise marked lost). Exit 0 when all was well, 1
    when problems were found.

    \b
    Example:
        nbmergesave fsck ~/projects/survey
    """
    import json

    from .store import STORE_DIR, Store
    from .store.where import configure, store_url

    configure(roots=[root])
    if not (Path(root) / STORE_DIR).is_dir() and not os.environ.get("NBMERGESAVE_STORE") and store_url() is None:
        raise Refused(f"'{root}' has no version store (hint: run 'nbmergesave watch' on it first)")
    try:
        with Store.open(root) as store:
            report = store.fsck(repair=not check_only)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"integrity: {report['integrity']}; {report['contents']} contents and {report['pieces']} pieces "
                   f"checked; {len(report['damaged'])} damaged, {len(report['missing'])} versions without their content "
                   f"({len(report['restored'])} restored from disk, {len(report['lost'])} marked lost)")
    sys.exit(0 if report["ok"] else 1)


# --- the store's size: status, gc, pin ------------------------------------------


def _open_root_store(root: str):  # type: ignore[no-untyped-def]
    from .store import STORE_DIR, Store
    from .store.where import configure, store_url

    configure(roots=[root])  # with a PostgreSQL store, ROOT is a project root unless a marker says otherwise
    if not (Path(root) / STORE_DIR).is_dir() and not os.environ.get("NBMERGESAVE_STORE") and store_url() is None:
        raise Refused(f"'{root}' has no version store (hint: run 'nbmergesave watch' on it first)")
    try:
        return Store.open(Path(root).absolute())
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _days(value: str) -> float | None:
    if value == "forever":
        return None
    try:
        days = float(value)
    except ValueError:
        raise Refused(f"'{value}' is not a number of days (or 'forever')") from None
    if days < 0:
        raise Refused(f"{value}: a number of days cannot be negative")
    return days


@cli.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_store_options
def status(root: str, as_json: bool) -> None:
    """Show the size of ROOT's version store: bytes on disk, notebooks, versions, and what gc would free.

    \b
    Example:
        nbmergesave status ~/projects/survey --json
    """
    import json

    with _open_root_store(root) as store:
        stats = store.stats()
        policy, pins, last = store.retention(), store.pinned(), store.backend.setting("last_gc")
    if as_json:
        click.echo(json.dumps({**stats.to_dict(), "retention": json.loads(policy.to_json()), "pinned": len(pins),
                               "last_gc": last}, indent=2))
        return
    click.echo(f"store {stats.location}: {_size(stats.size_bytes)} on disk")
    click.echo(f"{_count(stats.notebooks, 'notebook')}, {_count(stats.versions, 'version')} ({stats.contents} distinct contents "
               f"in {stats.pieces} pieces), {len(pins)} pinned")
    click.echo(f"reclaimable by gc: {_size(stats.reclaimable_bytes)}")
    click.echo(f"kept: {policy.describe()}; last collection: {last or 'never'}")


@cli.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--dry-run", is_flag=True, help="Print what would be removed and freed; change nothing.")
@click.option("--keep-all", "keep_all", type=float, help="Keep every version this many days (default 7).")
@click.option("--hourly", type=float, help="Then one version per hour until this many days old (default 30).")
@click.option("--daily", help="Then one per day until this many days old, or 'forever' (the default).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_store_options
def gc(root: str, dry_run: bool, keep_all: float | None, hourly: float | None, daily: str | None, as_json: bool) -> None:
    """Thin old versions of ROOT's store by its retention rule and free what no version needs.

    Never removes the newest version of a notebook, the one on disk, a pinned
    one, or, for the --keep-all period, versions a merge used or produced and
    declared bases. Retention options given here are saved in the store and
    used by the watcher's and daemon's daily collection from then on (not
    with --dry-run). Safe while watchers and Jupyter save.

    \b
    Example:
        nbmergesave gc ~/projects/survey --dry-run
        nbmergesave gc ~/projects/survey --keep-all 14 --hourly 60 --daily 365
    """
    import dataclasses
    import json

    changes: dict[str, float | None] = {}
    if keep_all is not None:
        changes["keep_all"] = _days(str(keep_all))
    if hourly is not None:
        changes["hourly"] = _days(str(hourly))
    if daily is not None:
        changes["daily"] = _days(daily)
    if changes.get("keep_all", 0) is None or changes.get("hourly", 0) is None:
        raise Refused("only --daily can be 'forever'")
    with _open_root_store(root) as store:
        policy = dataclasses.replace(store.retention(), **changes)
        if changes and not dry_run:
            store.set_retention(policy)
        report = store.gc(policy, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    would = "would remove" if dry_run else "removed"
    click.echo(f"{would} {report.versions_removed} versions ({report.versions_kept} kept), "
               f"{report.contents_removed} contents, {report.pieces_removed} pieces; "
               f"{'would free about' if dry_run else 'freed'} {_size(report.bytes_freed)}")
    click.echo(f"kept: {policy.describe()}")


@cli.command()
@click.argument("notebook", type=click.Path())
@click.option("--version", "number", type=int, help="The version to pin (default: the one on disk).")
@click.option("--remove", is_flag=True, help="Unpin: let the retention rule apply to it again.")
@click.option("--list", "list_", is_flag=True, help="List the pinned versions of NOTEBOOK.")
@_store_options
def pin(notebook: str, number: int | None, remove: bool, list_: bool) -> None:
    """Keep a version of NOTEBOOK whatever the retention rule says (gc never removes it).

    \b
    Example:
        nbmergesave pin analysis.ipynb --version 12
        nbmergesave pin analysis.ipynb --version 12 --remove
    """
    with _store_for(notebook) as store:
        if list_:
            for _, n in store.pinned(notebook):
                click.echo(f"v{n}")
            return
        if number is None:
            current = store.on_disk(notebook)
            if current is None:
                raise Refused(f"'{notebook}' has no version on disk (hint: give --version; 'nbmergesave history' lists them)")
            number = current.version
        try:
            v = store.pin(notebook, number, not remove)
        except NbMergeSaveError as e:
            raise Refused(str(e)) from None
    click.echo(f"{notebook}: v{v.version} " + ("unpinned" if remove else "pinned (gc keeps it)"))


@cli.command()
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
    from .demo import run_demo

    run_demo(folder, click.echo)


@cli.group("jupyter")
def jupyter_group() -> None:
    """A background Jupyter server for a folder tree, merging notebook saves.

    \b
    Example:
        nbmergesave jupyter start ~/projects/survey --json
        nbmergesave jupyter status
        nbmergesave jupyter stop ~/projects/survey
    """


def _print_servers(records: list, as_json: bool) -> None:  # type: ignore[type-arg]
    import json

    if as_json:
        click.echo(json.dumps(records[0] if len(records) == 1 else records, indent=2))
        return
    for r in records:
        click.echo(f"{r['root']}: {r['url']} (pid {r['pid']}, log {r['log']})")


@jupyter_group.command("start")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=int, help="Port (default: a free one).")
@click.option("--ip", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--base-url", default="/", show_default=True, help="URL prefix, for use behind a proxy.")
@click.option("--json", "as_json", is_flag=True, help="Print pid, port, url (with the token), root, base_url and log as JSON.")
def jupyter_start(root: str, port: int | None, ip: str, base_url: str, as_json: bool) -> None:
    """Start a Jupyter server for ROOT and its subfolders, with merge on save; returns once it answers.

    A second start for the same ROOT reports the running server.

    \b
    Example:
        nbmergesave jupyter start ~/projects/survey
    """
    from . import jupyterd

    try:
        record, started = jupyterd.start(root, port=port, ip=ip, base_url=base_url)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    if not started and not as_json:
        click.echo("already running:", err=True)
    _print_servers([record], as_json)


@jupyter_group.command("status")
@click.argument("root", required=False, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def jupyter_status(root: str | None, as_json: bool) -> None:
    """Show the running servers (or the one for ROOT); exit 1 when none runs.

    \b
    Example:
        nbmergesave jupyter status --json
    """
    from . import jupyterd

    records = jupyterd.status(root)
    if not records:
        click.echo("[]" if as_json else "no Jupyter server is running")
        sys.exit(1)
    _print_servers(records, as_json)


@jupyter_group.command("stop")
@click.argument("root", type=click.Path(file_okay=False))
def jupyter_stop(root: str) -> None:
    """Stop the server for ROOT and free its port.

    \b
    Example:
        nbmergesave jupyter stop ~/projects/survey
    """
    from . import jupyterd

    record = jupyterd.stop(root)
    click.echo(f"stopped pid {record['pid']} (port {record['port']})" if record else "no Jupyter server was running")


@cli.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--version", "number", type=int, help="The merge to review (default: the latest).")
@click.option("--text", "as_text", is_flag=True, help="Print nbdime's terminal diff instead of serving the web diff.")
@click.option("--browser", is_flag=True, help="Open the web diff in a browser.")
@click.option("--port", type=int, help="Port for the web diff (default: a free one).")
@click.option("--ip", default="127.0.0.1", show_default=True,
              help="Address to listen on; the URL's secret is required on any address.")
@_store_options
def review(notebook: str, number: int | None, as_text: bool, browser: bool, port: int | None, ip: str) -> None:
    """Show what an automatic merge of NOTEBOOK did, in nbdime's web diff.

    Two diffs: the writer's save against the merged result, and the other
    writer's version against the merged result, served on loopback until
    Ctrl-C. Only the printed URLs open them: they carry a random secret, and
    the server refuses every request without it. --text prints the diffs in
    the terminal instead.

    \b
    Example:
        nbmergesave review analysis.ipynb
        nbmergesave review analysis.ipynb --version 8 --text
    """
    from . import review as rv

    with _store_for(notebook) as store:
        try:
            found = rv.find_merge(store, notebook, number)
            if as_text:
                click.echo(rv.text(store, found), nl=False)
                return
            served = rv.serve(store, found, port, ip=ip)
        except NbMergeSaveError as e:
            raise Refused(str(e)) from None
    import signal

    # SIGTERM ends it like Ctrl-C does: through `finally`, which stops nbdime's server too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        click.echo(f"merge v{found.merged.version} of {notebook}, in nbdime's web diff (Ctrl-C ends it):")
        click.echo(f"  the save (v{found.save.version}) -> merged: {served.urls[0]}")
        click.echo(f"  the other version (v{found.other.version}) -> merged: {served.urls[1]}")
        if browser:
            import webbrowser

            for url in served.urls:
                webbrowser.open(url, new=2)
        served.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        served.close()


# --- stores shared across hosts (PostgreSQL) ---------------------------------------

@cli.group("store")
def store_group() -> None:
    """Move a project's history between the embedded store and a PostgreSQL store.

    \b
    Example:
        nbmergesave store copy ~/projects/survey postgresql://ann@db.team:5432/notebooks
    """


@store_group.command("copy")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
def store_copy(source: str, target: str, as_json: bool) -> None:
    """Copy every version in FROM into the empty store TO, and check each one.

    FROM and TO are each a project folder (its embedded store, ROOT/.nbmergesave)
    or a PostgreSQL URL. Version numbers, times, merges, declarations and pins
    are kept; every version is compared with the source, byte for byte, before
    this reports success. Notebooks keep the names they have in FROM: copy a
    folder's store from the folder that is the project root. Put the password
    in ~/.pgpass or $PGPASSWORD rather than in the URL.

    \b
    Example:
        nbmergesave store copy ~/projects/survey postgresql://ann@db.team:5432/notebooks
        nbmergesave store copy postgresql://ann@db.team:5432/notebooks ~/projects/survey-backup
    """
    import json

    from .store.copy import copy_store

    def progress(line: str) -> None:
        if not as_json:
            click.echo(f"nbmergesave: {line}", err=True)

    try:
        report = copy_store(source, target, progress=progress)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        def count(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        click.echo(f"copied {count(report.versions, 'version')} of {count(report.notebooks, 'notebook')} "
                   f"({count(report.contents, 'content')}, {report.bytes / 1e6:.1f} MB) from {report.source} to "
                   f"{report.target}; every version verified")
