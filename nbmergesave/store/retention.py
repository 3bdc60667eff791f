"""Which versions a collection keeps: the retention rule, as a pure function of the history.

Every version younger than ``keep_all`` days is kept; then one per hour (the
newest of each hour) until ``hourly`` days old, then one per day until
``daily`` days old (``None``: for ever); older ones go. Whatever their age,
these are never removed: the newest version of each notebook, the version on
disk, pinned versions, and, while the merge or declaration is younger than
``keep_all``, the versions a recorded merge used or produced and the bases
writers declared.

>>> from datetime import datetime, timezone
>>> from nbmergesave.store import Version
>>> now = datetime(2026, 3, 1, tzinfo=timezone.utc)
>>> old = [Version("nb.ipynb", i, f"s{i}", f"2026-01-10T10:{i:02d}:00.000Z", "observed") for i in (1, 2, 3)]
>>> [v.version for v in drop(old, Retention(), now=now, protected=set())]
[1, 2]
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import Version


@dataclass(frozen=True)
class Retention:
    """How long versions are kept (days). ``daily=None``: one a day is kept for ever."""

    keep_all: float = 7.0
    hourly: float = 30.0
    daily: float | None = None

    def __post_init__(self) -> None:
        if self.keep_all < 0 or self.hourly < 0 or (self.daily is not None and self.daily < 0):
            raise ValueError("retention periods are days, zero or more")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> Retention:
        return cls(**json.loads(text)) if text else cls()

    def describe(self) -> str:
        daily = "for ever" if self.daily is None else f"until {self.daily:g} days old"
        return (f"every version for {self.keep_all:g} days, then one per hour until {max(self.hourly, self.keep_all):g} "
                f"days old, then one per day {daily}")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def time_text(when: datetime) -> str:
    """``when`` (in UTC) as the store records times: to the millisecond, with ``Z``, so that the text sorts as
    the times do (the collection compares them as text, in SQL and here)."""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def drop(versions: Iterable[Version], policy: Retention, *, now: datetime,
         protected: set[tuple[str, int]]) -> list[Version]:
    """The versions ``policy`` removes from ``versions`` (any number of notebooks), oldest first."""
    by_path: dict[str, list[Version]] = {}
    for v in versions:
        by_path.setdefault(v.path, []).append(v)
    keep_all = now - timedelta(days=policy.keep_all)
    hourly = now - timedelta(days=max(policy.hourly, policy.keep_all))
    daily = None if policy.daily is None else now - timedelta(days=max(policy.daily, policy.hourly, policy.keep_all))
    gone: list[Version] = []
    for history in by_path.values():
        history.sort(key=lambda v: v.version)
        newest = history[-1].version
        seen: set[str] = set()
        for v in reversed(history):  # newest first: the first of each bucket is the one kept
            when = parse_time(v.time)
            if when >= keep_all:
                continue
            if when >= hourly:
                bucket = "h" + v.time[:13]
            elif daily is None or when >= daily:
                bucket = "d" + v.time[:10]
            else:
                bucket = None
            keep = bucket is not None and bucket not in seen
            if bucket is not None:
                seen.add(bucket)
            if not keep and v.version != newest and (v.path, v.version) not in protected:
                gone.append(v)
    gone.sort(key=lambda v: (v.path, v.version))
    return gone
