"""The ``nbmergesave`` command: thin click doors onto the library.

Each command parses its options, calls one library function and maps
library errors to exit codes (2: bad input or usage). Heavy modules (nbdime,
watchdog) are imported inside the commands that need them, so ``--help`` and
``--version`` start fast.
"""

from __future__ import annotations

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
    from .merge import ALIASES, MergeOptions
    from .merge import merge as merge_notebooks
    from . import notebook_io

    try:
        nbs = [notebook_io.read_notebook(p, label) for p, label in ((base, "BASE"), (local, "LOCAL"), (remote, "REMOTE"))]
        options = MergeOptions(
            strategy=ALIASES.get(strategy, strategy),  # type: ignore[arg-type]
            outputs=ALIASES.get(outputs, outputs) if outputs else None,  # type: ignore[arg-type]
            ignore_transients=not keep_transients,
        )
        result = merge_notebooks(*nbs, options)
        notebook_io.validate(result.notebook, "the merged notebook")
        text = notebook_io.dumps(result.notebook)
        target = local if inplace else out
        if target:
            notebook_io.write_atomic(target, text)
        else:
            click.echo(text, nl=False)
    except NbMergeSaveError as e:
        raise Refused(str(e)) from None
    except OSError as e:
        raise Refused(f"cannot write '{target}': {e.strerror}") from None
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
    from . import notebook_io, report as words
    from .merge import merge as merge_notebooks

    name = path or local
    try:
        # git passes an empty base when both branches added the file.
        b = notebook_io.read_notebook(base, f"base of {name}", empty_ok=True)
        nb_local = notebook_io.read_notebook(local, f"our {name}")
        nb_remote = notebook_io.read_notebook(remote, f"their {name}")
        result = merge_notebooks(b, nb_local, nb_remote)
        notebook_io.validate(result.notebook, f"merged {name}")
        notebook_io.write_atomic(local, notebook_io.dumps(result.notebook))
    except NbMergeSaveError as e:
        raise Refused(f"nbmergesave: {e}; leaving git's conflict as it is") from None
    click.echo(words.human(result.conflicts, name), err=True, nl=False)
    sys.exit(1 if result.unresolved else 0)
