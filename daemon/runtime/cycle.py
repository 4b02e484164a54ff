"""One poll cycle of one cluster, as plain data passed through the daemon's stages.

The poller produces a `PollResult`; the daemon then runs its stages in order
(store → forecaster → growth → alerting), each reading what earlier stages put into the
`CycleContext` and adding its own results. When the cycle ends, the context becomes part of the
immutable `Snapshot` that `/metrics` and `/api/v1` read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from quotapilot.forecasting.types import (
    ActionOutcome,
    ClusterCapacity,
    Decision,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
)


@dataclass(frozen=True, slots=True)
class DroppedSample:
    """A sample the collector refused to treat as truth, and why (`reason` is a metric label)."""

    cluster: str
    target: str
    reason: str  # malformed | negative | zero_limit | went_backwards | implausible
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PollResult:
    """Everything one poll of one cluster produced.

    `error` is set when the poll failed as a whole (VMS unreachable, auth refused); then the
    other fields are empty and nothing downstream acts on this cluster.
    """

    cluster: str
    t: float
    observations: tuple[Observation, ...] = ()
    capacity: ClusterCapacity | None = None
    ingest_bytes_per_second: float | None = None
    """The cluster's write bandwidth as VMS analytics report it (None when unavailable)."""
    dropped: tuple[DroppedSample, ...] = ()
    requests: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    ingest_rates: Mapping[str, float] = field(default_factory=dict)
    """Net ingest (bytes/s) per target name since its previous accepted sample; the pool is
    `POOL_TARGET`. Absent for a target's first sample. `observations` includes the pool."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class CycleContext:
    """Mutable while one cycle runs; stages fill in their part."""

    poll: PollResult
    now: float
    forecasts: dict[tuple[TargetId, Dimension], SeriesForecast] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    actions: list[ActionOutcome] = field(default_factory=list)


class Stage(Protocol):
    """A step of the cycle. Raising is logged and counted; the later stages still run, on what the context holds."""

    name: str

    async def on_cycle(self, ctx: CycleContext) -> None: ...
