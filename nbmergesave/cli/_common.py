"""What the command modules share: the refusal they raise, the store options, how sizes and counts read."""

from __future__ import annotations

import click


class Refused(click.ClickException):
    """An expected refusal: one line on stderr, exit 2, no traceback."""

    exit_code = 2


def _store_options(command):  # type: ignore[no-untyped-def]
    """``--store URL`` and ``--project-root DIR`` for a command that opens a store (a shared PostgreSQL one)."""

    def use_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        from ..store.postgres import is_url
        from ..store.where import configure

        if value and not is_url(value):
            raise click.BadParameter("a PostgreSQL URL, e.g. postgresql://ann@db.team:5432/notebooks "
                                     "(the embedded store is found from the notebook's folder)")
        configure(url=value or "", roots=[])

    def use_root(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        from ..store.where import configure

        configure(project_root=value or "")

    command = click.option("--project-root", type=click.Path(file_okay=False), expose_value=False, callback=use_root,
                           help="With a PostgreSQL store: the folder notebooks are named relative to "
                                "(default: the nearest folder holding .nbmergesave-project).")(command)
    return click.option("--store", "store_url", metavar="URL", envvar="NBMERGESAVE_STORE_URL", expose_value=False,
                        callback=use_url, help="A PostgreSQL store shared across hosts "
                                               "(default: $NBMERGESAVE_STORE_URL, else ROOT/.nbmergesave).")(command)


#: nbmergesave.merge.ENGINES, spelled here so that parsing options does not import the merge.
ENGINE_CHOICES = ("cells", "nbdime")


def _engine_option(what: str):  # type: ignore[no-untyped-def]
    """``--engine cells|nbdime`` (``cells`` the default) for a command that merges; ``what`` ends the help."""
    return click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="cells", show_default=True,
                        help="Merge engine: 'cells' (nbmergesave's cell-level diff3) or 'nbdime' (nbdime's "
                             f"merge_notebooks, its decisions and markers){what}. See docs/engines.md.")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
