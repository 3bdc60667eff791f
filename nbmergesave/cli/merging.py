"""Merging: three files on the command line, a save by a writer that knows its base, conflicts left in files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import NbMergeSaveError
from ._common import Refused, _engine_option, _store_options


STRATEGY_CHOICES = ["inline", "local", "ours", "remote", "theirs", "base"]


@click.command()
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
@_engine_option("")
def merge(base: str, local: str, remote: str, out: str | None, inplace: bool, strategy: str,
          outputs: str | None, keep_transients: bool, as_json: bool, report: str | None, engine: str) -> None:
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
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb --engine nbdime -o merged.ipynb
    """
    if out and inplace:
        raise click.UsageError("use either -o/--output or --inplace, not both")
    from ..merge import ALIASES, MergeOptions, merge_files

    target = local if inplace else out
    try:
        options = MergeOptions(
            strategy=ALIASES.get(strategy, strategy),  # type: ignore[arg-type]
            outputs=ALIASES.get(outputs, outputs) if outputs else None,  # type: ignore[arg-type]
            ignore_transients=not keep_transients,
        )
        result, text = merge_files(base, local, remote, target, options, engine=engine)
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
    from .. import report as words

    if as_json or report_file:
        payload = words.as_json(conflicts, notebook=name)
        if report_file:
            Path(report_file).write_text(payload, encoding="utf-8")
        else:
            click.echo(payload, err=True, nl=False)
    if not as_json:
        click.echo(words.human(conflicts, name), err=True, nl=False)


@click.command()
@click.argument("root", required=False, default=".", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON list of notebooks and cells.")
def conflicts(root: str, as_json: bool) -> None:
    """List notebooks under ROOT whose current file still holds merge conflicts.

    \b
    Example:
        nbmergesave conflicts ~/projects/survey --json
    """
    import json

    from .. import notebook_io
    from ..report import markers
    from ..watcher import scan

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


# --- writers that know their base --------------------------------------------

@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--base", "base_file", type=click.Path(), required=True, help="The version the new content was made from.")
@click.option("--from", "from_file", type=click.Path(), help="The new content (default: standard input).")
@click.option("--writer", help="Who writes, recorded with the save.")
@click.option("--json", "as_json", is_flag=True, help="Report conflicts as JSON on stderr.")
@_engine_option(", recorded with the merge")
@_store_options
def save(notebook: str, base_file: str, from_file: str | None, writer: str | None, as_json: bool, engine: str) -> None:
    """Save new content into NOTEBOOK, merging what others saved since BASE.

    The file becomes merge(BASE, NOTEBOOK as it is now, new content),
    written atomically; everything is recorded in the store. Exit 1 when
    conflicts are left in the notebook, 2 on bad input.

    \b
    Example:
        my-editor-export | nbmergesave save analysis.ipynb --base loaded.ipynb
        nbmergesave save analysis.ipynb --base loaded.ipynb --from edited.ipynb --engine nbdime
    """
    from .. import notebook_io
    from ..sync import save_file

    try:
        new = notebook_io.read_bytes(from_file, f"--from '{from_file}'") if from_file else sys.stdin.buffer.read()
        base = notebook_io.read_bytes(base_file, f"BASE '{base_file}'")
        result = save_file(notebook, new, base, writer=writer, engine=engine)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    _report(result.conflicts, as_json, None, name=notebook)
    if not as_json:
        click.echo(f"{notebook}: {'merged with changes saved since the base' if result.merged else 'saved'}"
                   f" (version {result.version})", err=True)
    sys.exit(1 if any(c.resolution == "inline" for c in result.conflicts) else 0)


@click.command()
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
    from .. import notebook_io
    from ..sync import declare as record

    try:
        content: bytes | str = content_sha or notebook_io.read_bytes(notebook, f"'{notebook}'")
        record(notebook, content, base=base_sha256, writer=writer)
    except (NbMergeSaveError, ValueError) as e:
        raise Refused(str(e)) from None
    click.echo(f"{notebook}: declared base {base_sha256[:12]}")
