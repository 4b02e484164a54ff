"""The simulator's ground truth about writes: every change VMS applied (and every one it refused),
who asked for it and when — what a soak or a trust test compares the daemon's audit trail with.

`source` names the writer: `api:<user>` for a request authenticated as `<user>` (an API token
counts as its user, `admin` by default), `operator` for a scenario's operator events,
`scenario` for the scenario's own quota churn. A write applied late by a `delayed_apply` fault
keeps the source of the request it came from and has `delayed = True`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One write to a quota, applied or refused by the engine."""

    t: float
    """Simulated time it took effect (or was refused)."""
    source: str
    kind: str
    """`create`, `patch`, `delete`."""
    quota_id: int
    name: str
    path: str
    changes: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)
    """The quota's limits (and name) just before the write."""
    used_bytes: int = 0
    """The quota's usage when the write arrived."""
    applied: bool = True
    refusal: str | None = None
    delayed: bool = False

    @property
    def hard_below_usage(self) -> bool:
        """A hard limit asked for that is below the usage of the moment (VMS refuses a shrink
        below usage; the daemon must never ask for one)."""
        hard = self.changes.get("hard_limit")
        return isinstance(hard, int) and 0 < hard < self.used_bytes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class WriteLog:
    """Append-only list of `WriteRecord`s with the questions a soak asks of it."""

    def __init__(self) -> None:
        self.records: list[WriteRecord] = []

    def add(self, record: WriteRecord) -> None:
        self.records.append(record)

    def by(self, source_prefix: str, *, applied: bool | None = True) -> list[WriteRecord]:
        """Writes whose source starts with `source_prefix` (applied ones by default; None: all)."""
        return [r for r in self.records if r.source.startswith(source_prefix)
                and (applied is None or r.applied == applied)]

    def summary(self) -> dict[str, Any]:
        applied = [r for r in self.records if r.applied]
        sources: dict[str, int] = {}
        for r in applied:
            sources[r.source] = sources.get(r.source, 0) + 1
        return {
            "applied": len(applied),
            "refused": len(self.records) - len(applied),
            "by_source": sources,
            "delayed": sum(r.delayed for r in applied),
            "hard_below_usage_asked": sum(r.hard_below_usage for r in self.records),
        }
