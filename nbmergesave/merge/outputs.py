"""Outputs follow their source.

Outputs and the execution count belong to the source that made them: when
exactly one side changed a cell's source, its outputs are taken; when both
re-ran an unchanged cell, the remote side's (the later save), reported as
settled. Outputs are compared as whole values, never parsed. Marker outputs
only with ``outputs="inline"``; execution counts alone never clash.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .conflicts import Record
from .metadata import _merge3
from .options import MergeOptions


def _merge_outputs(at: int, base_index: int | None, bc: Mapping[str, Any], lc: Mapping[str, Any],
                   rc: Mapping[str, Any], src_l: bool, src_r: bool, options: MergeOptions,
                   record: Record) -> tuple[list[Any], Any]:
    """Outputs and execution count together: they belong to the source that made them."""
    sides = {"base": bc, "local": lc, "remote": rc}
    out = {k: c.get("outputs", []) for k, c in sides.items()}
    count = {k: c.get("execution_count") for k, c in sides.items()}

    def take(name: str) -> tuple[list[Any], Any]:
        return list(out[name]), count[name]

    # Outputs are compared as whole values: equal strings compare by length and
    # bytes (no parsing, no regular expression over base64 images).
    if out["local"] == out["remote"]:
        value, clash = _merge3(count["base"], count["local"], count["remote"])
        if clash:
            follow = "local" if src_l and not src_r else "remote" if src_r and not src_l else options.side
            value = count[follow]
            if not options.ignore_transients:
                record("outputs", at, base_index, follow, f"both re-ran with equal outputs; took {follow}'s execution count")
        return list(out["local"]), value
    both = out["local"] != out["base"] and out["remote"] != out["base"]
    explicit = options.outputs
    if both and explicit is not None:
        if explicit == "inline":
            record("outputs", at, base_index, "inline", "both sides changed the outputs: both kept between marker outputs")
            return [_output_marker("<<<<<<< local\n"), *out["local"], _output_marker("=======\n"), *out["remote"],
                    _output_marker(">>>>>>> remote\n")], None
        if explicit == "clear":
            record("outputs", at, base_index, "clear", "both sides changed the outputs; cleared them")
            return [], None
        record("outputs", at, base_index, explicit, f"both sides changed the outputs; took {explicit}'s")
        return take(explicit)
    if src_l != src_r:
        follow = "local" if src_l else "remote"
        if both:
            record("outputs", at, base_index, follow, f"only {follow} changed the source; took its outputs")
        return take(follow)
    if out["local"] == out["base"]:
        return take("remote")
    if out["remote"] == out["base"]:
        return take("local")
    side = options.side
    how = "both re-ran" if not src_l else "both changed the source and re-ran"
    record("outputs", at, base_index, side, f"{how}; took {side}'s outputs")
    return take(side)


def _output_marker(text: str) -> dict[str, Any]:
    return {"name": "stderr", "output_type": "stream", "text": text}
