"""Background Jupyter servers that merge notebook saves (jupyter_server is imported by them, not here)."""

from __future__ import annotations

import sys

import click

from ..errors import NbMergeSaveError
from ._common import Refused


@click.group("jupyter")
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
    from .. import jupyterd

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
    from .. import jupyterd

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
    from .. import jupyterd

    record = jupyterd.stop(root)
    click.echo(f"stopped pid {record['pid']} (port {record['port']})" if record else "no Jupyter server was running")
