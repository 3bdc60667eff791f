"""The git merge driver: install it, remove it, and what git runs."""

from __future__ import annotations

import sys

import click

from ..errors import NbMergeSaveError
from ._common import Refused, _engine_option


@click.group("git-driver")
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
@_engine_option(", written into the driver's command line in git config")
def git_driver_install(global_: bool, engine: str) -> None:
    """Add '*.ipynb merge=nbmergesave' to .gitattributes and register the driver.

    Running it again changes nothing; running it with another --engine
    changes only the driver's command line.

    \b
    Example:
        nbmergesave git-driver install
        nbmergesave git-driver install --engine nbdime
    """
    from .. import gitdriver

    try:
        changed = gitdriver.install(global_=global_, engine=engine)
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
    from .. import gitdriver

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
@_engine_option(" (install records it)")
def git_driver_run(base: str, local: str, remote: str, path: str | None, engine: str) -> None:
    """What git runs (%O %A %B %P): merge into LOCAL (%A); exit 1 on conflicts.

    \b
    Example (git does this for you):
        nbmergesave git-driver run .merge_file_O .merge_file_A .merge_file_B analysis.ipynb
        nbmergesave git-driver run --engine nbdime .merge_file_O .merge_file_A .merge_file_B analysis.ipynb
    """
    from .. import report as words
    from ..merge import merge_files

    name = path or local
    try:
        # git passes an empty base when both branches added the file.
        result, _ = merge_files(base, local, remote, local, labels=(f"base of {name}", f"our {name}", f"their {name}"),
                                empty_base=True, engine=engine)
    except NbMergeSaveError as e:
        raise Refused(f"nbmergesave: {e}; leaving git's conflict as it is") from None
    click.echo(words.human(result.conflicts, name), err=True, nl=False)
    sys.exit(1 if result.unresolved else 0)
