"""The version store: a notebook's history and its merges, and the store's own upkeep (checks, size, copies)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..errors import NbMergeSaveError
from ._common import Refused, _count, _size, _store_options


def _store_for(notebook: str):  # type: ignore[no-untyped-def]
    from ..store import Store

    try:
        return Store.find(notebook)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None


@click.command()
@click.argument("notebook", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON list of versions.")
@_store_options
def history(notebook: str, as_json: bool) -> None:
    """List every stored version of NOTEBOOK, oldest first (a merge with its
    inputs, its conflicts left, and the engine that made it).

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
        extra += f", engine {v.engine}" if v.engine else ""  # merges stored before 0.2 did not record theirs
        click.echo(f"v{v.version}  {v.time}  {v.kind:<9} {(v.sha256 or '-')[:12]}{extra}")


@click.command()
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
    from ..notebook_io import write_atomic

    with _store_for(notebook) as store:
        try:
            data = store.content(store.get(notebook, number))
            # The current file goes into the store first, if it is new: nothing is lost.
            from ..sync import sync_file

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


@click.command()
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


@click.command()
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


@click.command()
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
    from .. import review as rv

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
        click.echo(f"merge v{found.merged.version} of {notebook} ({rv.engine_words(found.merged)}), "
                   "in nbdime's web diff (Ctrl-C ends it):")
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


# --- the store itself: integrity, size, retention ----------------------------

@click.command()
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

    from ..store import STORE_DIR, Store
    from ..store.where import configure, store_url

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


def _open_root_store(root: str):  # type: ignore[no-untyped-def]
    from ..store import STORE_DIR, Store
    from ..store.where import configure, store_url

    configure(roots=[root])  # with a PostgreSQL store, ROOT is a project root unless a marker says otherwise
    if not (Path(root) / STORE_DIR).is_dir() and not os.environ.get("NBMERGESAVE_STORE") and store_url() is None:
        raise Refused(f"'{root}' has no version store (hint: run 'nbmergesave watch' on it first)")
    try:
        return Store.open(Path(root).absolute())
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None


def _spools_of(root: str) -> list[dict]:  # type: ignore[type-arg]
    """This user's spools holding versions of notebooks under ``root`` (or of a project ``root`` is in)."""
    from ..store.spool import spools

    here = os.path.realpath(root)
    found = []
    for spool in spools():
        there = os.path.realpath(spool.get("root") or "/nonexistent")
        if here == there or here.startswith(there + os.sep) or there.startswith(here + os.sep):
            found.append(spool)
    return found


def _is_trouble_text(message: str) -> bool:
    return any(words in message for words in ("cannot reach", "refused the credentials", "needs psycopg",
                                              "cannot create the store", "cannot open the store", "readonly",
                                              "Permission denied", "disk is full"))


def _echo_spools(waiting: list[dict]) -> None:  # type: ignore[type-arg]
    for spool in waiting:
        click.echo(f"spool {spool['folder']}: {spool['versions']} version(s), {_size(spool['bytes'])}, waiting for "
                   f"{spool['store']} (recorded there when it answers)")


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


@click.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@_store_options
def status(root: str, as_json: bool) -> None:
    """Show the size of ROOT's version store: bytes on disk, notebooks, versions, and what gc would free.

    While the store is away (its database down, its driver missing, its folder
    not writable) it says "degraded", why, and what waits in the local spool,
    and exits 1.

    \b
    Example:
        nbmergesave status ~/projects/survey --json
    """
    import json

    waiting = _spools_of(root)
    try:
        store = _open_root_store(root)
    except Refused as e:
        if "has no version store" in str(e) or not (waiting or _is_trouble_text(str(e))):
            raise
        # degraded: the store is away; saves are merged from the spools, which wait for it
        if as_json:
            click.echo(json.dumps({"state": "degraded", "degraded": {"reason": str(e)}, "spools": waiting}, indent=2))
        else:
            click.echo(f"degraded: {e}")
            _echo_spools(waiting)
        sys.exit(1)
    with store:
        stats = store.stats()
        policy, pins, last = store.retention(), store.pinned(), store.backend.setting("last_gc")
    if as_json:
        click.echo(json.dumps({**stats.to_dict(), "retention": json.loads(policy.to_json()), "pinned": len(pins),
                               "last_gc": last, "state": "ok", "degraded": None, "spools": waiting}, indent=2))
        return
    click.echo(f"store {stats.location}: {_size(stats.size_bytes)} on disk")
    _echo_spools(waiting)
    click.echo(f"{_count(stats.notebooks, 'notebook')}, {_count(stats.versions, 'version')} ({stats.contents} distinct contents "
               f"in {stats.pieces} pieces), {len(pins)} pinned")
    click.echo(f"reclaimable by gc: {_size(stats.reclaimable_bytes)}")
    click.echo(f"kept: {policy.describe()}; last collection: {last or 'never'}")


@click.command()
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


@click.command()
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


# --- stores shared across hosts (PostgreSQL) ---------------------------------------

@click.group("store")
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

    from ..store.copy import copy_store

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
