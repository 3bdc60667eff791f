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
              help="How to settle conflicting outputs (default: as --strategy; 'clear' empties them).")
@click.option("--keep-transients", is_flag=True, help="Let execution counts conflict too (by default they never do).")
@click.option("--json", "as_json", is_flag=True, help="Report conflicts as JSON (on stderr, or to --report).")
@click.option("--report", type=click.Path(dir_okay=False), help="Write the JSON conflict report to this file.")
def merge(base: str, local: str, remote: str, out: str | None, inplace: bool, strategy: str,
          outputs: str | None, keep_transients: bool, as_json: bool, report: str | None) -> None:
    """Three-way merge of notebooks: the changes LOCAL and REMOTE made to BASE.

    The merged notebook goes to stdout, to -o OUT, or into LOCAL with
    --inplace. Conflicts are kept in the notebook as nbdime's inline markers
    and listed on stderr. Exit status: 0 clean, 1 conflicts left in the
    notebook, 2 bad input or usage.

    \b
    Example:
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb -o merged.ipynb
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb --inplace --json
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
    if target and not result.conflicts and not as_json:
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
@click.option("--store", "store_location", envvar="NBMERGESAVE_STORE", help="Store folder (default ROOT/.nbmergesave).")
@click.option("--status-file", type=click.Path(dir_okay=False), help="Keep a JSON status here (the daemon reads it).")
@click.option("--pause-while", "pause_while", multiple=True, type=click.Path(),
              help="While this path exists, record saves but merge none (a tool is rewriting files; repeatable).")
def watch(roots: tuple[str, ...], rescan: float, ignore: tuple[str, ...], store_location: str | None, status_file: str | None,
          pause_while: tuple[str, ...]) -> None:
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
    _print_status(info, as_json)


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
def fsck(root: str, check_only: bool, as_json: bool) -> None:
    """Verify the version store of ROOT and repair what can be repaired.

    Checks SQLite's integrity, every blob against its sha256, and versions
    whose blob is missing (taken back from the notebook on disk when it still
    holds those bytes, otherwise marked lost). Exit 0 when all was well, 1
    when problems were found.

    \b
    Example:
        nbmergesave fsck ~/projects/survey
    """
    import json

    from .store import STORE_DIR, Store

    if not (Path(root) / STORE_DIR).is_dir() and not os.environ.get("NBMERGESAVE_STORE"):
        raise Refused(f"'{root}' has no version store (hint: run 'nbmergesave watch' on it first)")
    with Store.open(root) as store:
        report = store.fsck(repair=not check_only)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"integrity: {report['integrity']}; {report['blobs']} blobs checked; "
                   f"{len(report['damaged'])} damaged, {len(report['missing'])} versions without their blob "
                   f"({len(report['restored'])} restored from disk, {len(report['lost'])} marked lost)")
    sys.exit(0 if report["ok"] else 1)


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
def review(notebook: str, number: int | None, as_text: bool, browser: bool, port: int | None) -> None:
    """Show what an automatic merge of NOTEBOOK did, in nbdime's web diff.

    Two diffs: the writer's save against the merged result, and the other
    writer's version against the merged result, served on loopback until
    Ctrl-C. --text prints them in the terminal instead.

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
            served = rv.serve(store, found, port)
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
