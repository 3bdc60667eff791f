"""The ``nbmergesave`` command: thin click doors onto the library.

Each command parses its options, calls one library function and maps
library errors to exit codes (2: bad input or usage). Heavy modules (nbdime,
watchdog) are imported inside the commands that need them, so ``--help`` and
``--version`` start fast.

The commands live in one module per group (merging, history and the store,
watching and the daemon, Jupyter, git); this module holds the top-level group
and registers each of them on it, so the whole command line reads here.
"""

from __future__ import annotations

import sys

import click

# jsonschema (imported by nbformat, and so by nbdime) imports rfc3987_syntax
# when it is installed (jupyter_server brings it), which builds a grammar for
# about 2 s on every start. We never check IRI formats, so a merge in this
# process does not pay for it: jsonschema then treats the package as absent.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from .. import __version__
from . import git, history, jupyter, merging, watching


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nbmergesave")
def cli() -> None:
    """Keep every writer's work when Jupyter notebooks are saved over each other.

    \b
    Example:
        nbmergesave merge base.ipynb mine.ipynb theirs.ipynb -o merged.ipynb
    """


for _command in (
    merging.merge, merging.save, merging.declare, merging.conflicts,
    history.history, history.show, history.restore, history.undo, history.review,
    history.fsck, history.status, history.gc, history.pin, history.store_group,
    watching.watch, watching.pause, watching.resume, watching.daemon, watching.demo,
    jupyter.jupyter_group,
    git.git_driver,
):
    cli.add_command(_command)
