"""What a merge may decide by itself: the strategies and :class:`MergeOptions`.

Kept apart from the merge so the CLI (which maps git's ``ours``/``theirs``
through :data:`ALIASES`) and every part of the merge read one frozen
dataclass, never a CLI namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Strategy = Literal["inline", "local", "remote", "base"]
OutputStrategy = Literal["inline", "local", "remote", "base", "clear"]

STRATEGIES: tuple[str, ...] = ("inline", "local", "remote", "base")
OUTPUT_STRATEGIES: tuple[str, ...] = (*STRATEGIES, "clear")
#: CLI spellings git users know, mapped to ours.
ALIASES = {"ours": "local", "theirs": "remote"}

Engine = Literal["cells", "nbdime"]
#: The merge engines every door offers: ``cells`` (this package's cell-level diff3, the default) and
#: ``nbdime`` (nbdime's ``merge_notebooks``, for teams that standardised on its decisions and markers).
ENGINES: tuple[str, ...] = ("cells", "nbdime")
DEFAULT_ENGINE = "cells"


def engine_name(engine: str | None) -> str:
    """The engine ``engine`` names (``None``: the default; ``fast``, its name before 0.2, is ``cells``).

    Every door checks its engine here, so a typo is refused before anything is read or written.

    >>> engine_name("fast"), engine_name(None), engine_name("nbdime")
    ('cells', 'cells', 'nbdime')
    """
    name = DEFAULT_ENGINE if engine is None or engine == "fast" else engine
    if name not in ENGINES:
        from ..errors import NbMergeSaveError

        raise NbMergeSaveError(f"unknown merge engine {engine!r} (hint: choose {' or '.join(ENGINES)})")
    return name


@dataclass(frozen=True)
class MergeOptions:
    """How conflicts are settled.

    ``strategy`` applies to source lines both sides changed differently, to
    delete-versus-edit and to cells both inserted at one place (``inline``:
    left marked for a person); it also picks the side for metadata keys and
    outputs both changed (``inline``: the remote side). ``outputs`` overrides
    it for outputs both sides changed (``None``: outputs follow their source,
    else the remote side; ``"inline"``: both kept between marker outputs, as
    nbdime does; ``"clear"``: emptied). ``ignore_transients=False`` lets
    execution counts that differ count as changed outputs.
    """

    strategy: Strategy = "inline"
    outputs: OutputStrategy | None = None
    ignore_transients: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.outputs is not None and self.outputs not in OUTPUT_STRATEGIES:
            raise ValueError(f"unknown outputs strategy {self.outputs!r}; choose from {', '.join(OUTPUT_STRATEGIES)}")

    @property
    def output_strategy(self) -> str:
        return self.outputs or self.strategy

    @property
    def side(self) -> str:
        """The side taken where a rule must pick one and the strategy does not: the remote side (the later save)."""
        return self.strategy if self.strategy != "inline" else "remote"
