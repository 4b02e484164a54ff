"""One poll cycle of one cluster, as plain data passed through the daemon's stages, and the one
`Stage` protocol every stage implements.

The poller produces a `PollResult`; the daemon then runs its stages in order
(store → forecaster → growth → alerting), each reading what earlier stages put into the
`CycleContext` and adding its own results. When the cycle ends, the context becomes part of the
immutable `Snapshot` that `/metrics` and `/api/v1` read.

A stage is built by `runtime/wiring.py` with explicit collaborators and registered by the daemon
generically (`StageParts.of`): it must have `name` and `async on_cycle(ctx)`; it may have
`tasks()` (supervised background tasks, by name), `collector()` (a Prometheus collector reading
an immutable view the stage publishes), `async open()` (on daemon entry, in stage order) and
`async close()` (on exit, in reverse order).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from prometheus_client.registry import Collector as PrometheusCollector

from quotapilot.daemon.runtime.supervisor import TaskFactory
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
    `POOL_TARGET`. Absent for a target's first sample and for one that disagrees with an
    unconfirmed sample before it. `observations` includes the pool."""
    unconfirmed: frozenset[str] = frozenset()
    """Target names whose sample is not believed yet (`validation.Accepted.believed`): a target's
    first sample since start, since it was forgotten, or since its identity changed, until a
    second one agrees (`validation.agrees`); a sample whose hard limit moved without a write of
    ours, for one poll (`validation.limit_held`: never two in a row). Kept and forecast, never
    written on; no alert of the target fires or resolves on it."""
    bare_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Each quota name another tenant's quota has in VMS's listing → the target names of the
    quotas so named (`validation.QuotaNaming.bare_names`: the name itself when a home quota has
    it, then `<tenant>:<name>` per other tenant). Empty when every quota is the home tenant's."""

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
    settled: list[ActionOutcome] = field(default_factory=list)
    """Earlier actions (an `unknown` outcome, an intent a crash left open) whose audit row a re-read
    settled since the last cycle: published as `result` events, not this cycle's actions."""
    recovered: dict[TargetId, ActionOutcome] = field(default_factory=dict)
    """At a cluster's first led cycle: each listed target's last settled audit row, the last action
    `status`, the API and the retained state show until a new one (memory starts empty at a restart).
    Not this cycle's actions: no alert, no event."""


class Stage(Protocol):
    """A step of the cycle. Raising is logged and counted; the later stages still run, on what the context holds."""

    name: str

    async def on_cycle(self, ctx: CycleContext) -> None: ...


@runtime_checkable
class RunsTasks(Protocol):
    """A stage with supervised background tasks (e.g. alert delivery): name → factory."""

    def tasks(self) -> Mapping[str, TaskFactory]: ...


@runtime_checkable
class ExportsMetrics(Protocol):
    """A stage with a Prometheus collector; `collect()` reads only what the stage published."""

    def collector(self) -> PrometheusCollector: ...


@runtime_checkable
class Opens(Protocol):
    async def open(self) -> None: ...


@runtime_checkable
class Closes(Protocol):
    async def close(self) -> None: ...


def _nothing() -> Awaitable[None]:
    async def nothing() -> None:
        return None
    return nothing()


@dataclass(frozen=True, slots=True)
class StageParts:
    """Everything the daemon registers for one stage, read once from its optional methods."""

    stage: Stage
    tasks: Mapping[str, TaskFactory] = field(default_factory=lambda: MappingProxyType({}))
    collector: PrometheusCollector | None = None
    open: Callable[[], Awaitable[None]] = _nothing
    close: Callable[[], Awaitable[None]] = _nothing

    @classmethod
    def of(cls, stage: Stage) -> StageParts:
        return cls(
            stage=stage,
            tasks=MappingProxyType(dict(stage.tasks())) if isinstance(stage, RunsTasks) else MappingProxyType({}),
            collector=stage.collector() if isinstance(stage, ExportsMetrics) else None,
            open=stage.open if isinstance(stage, Opens) else _nothing,
            close=stage.close if isinstance(stage, Closes) else _nothing)
