"""The daemon's published state: one immutable `Snapshot`, replaced (never mutated) after every
poll cycle. `/metrics`, `/healthz` and `/api/v1` read it; a reader holding a snapshot sees one
consistent picture however many cycles run meanwhile.

Per target it carries everything a reader needs: the latest accepted observation, the ingest rate,
the latest forecasts (per dimension), the latest decision (per dimension), the latest action,
and whether the newest sample was dropped. Stages that did not produce something this cycle
leave the previous value in place.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from quotapilot.daemon.runtime.cycle import CycleContext, DroppedSample
from quotapilot.forecasting.types import (
    ActionOutcome,
    ClusterCapacity,
    Decision,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
)

_EMPTY: Mapping[Any, Any] = MappingProxyType({})

POLL_DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of `quotapilot_poll_duration_seconds`; +Inf is implied."""


def frozen_map(items: Mapping[Any, Any] | None = None) -> Mapping[Any, Any]:
    return MappingProxyType(dict(items)) if items else _EMPTY


@dataclass(frozen=True, slots=True)
class HistogramState:
    """A histogram frozen in time: per-bucket (non-cumulative) counts, one more than `bounds`."""

    bounds: tuple[float, ...] = POLL_DURATION_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(POLL_DURATION_BUCKETS) + 1)
    total: float = 0.0

    def observe(self, value: float) -> HistogramState:
        counts = list(self.counts)
        counts[bisect.bisect_left(self.bounds, value)] += 1
        return HistogramState(self.bounds, tuple(counts), self.total + value)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: [(le, cumulative count)], ending with +Inf."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


@dataclass(frozen=True, slots=True)
class PollHealth:
    """A frozen copy of a cluster's coordinator state."""

    last_success_t: float | None = None
    last_failure_t: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    polls: int = 0
    skipped_ticks: int = 0
    last_duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the daemon knows about one target (a quota or a cluster's pool)."""

    target: TargetId
    observation: Observation | None
    ingest_rate_bytes_per_second: float | None = None
    forecasts: Mapping[Dimension, SeriesForecast] = field(default_factory=lambda: _EMPTY)
    decisions: Mapping[Dimension, Decision] = field(default_factory=lambda: _EMPTY)
    last_action: ActionOutcome | None = None
    dropped: DroppedSample | None = None
    """Set when the newest sample of this target was refused (then `observation` is older)."""

    def data_age_seconds(self, now: float) -> float | None:
        return None if self.observation is None else max(0.0, now - self.observation.t)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """One cluster in a snapshot."""

    name: str
    health: PollHealth = PollHealth()
    capacity: ClusterCapacity | None = None
    ingest_bytes_per_second: float | None = None
    pool: TargetState | None = None
    targets: Mapping[str, TargetState] = field(default_factory=lambda: _EMPTY)
    """Quotas by target name (the pool is `pool`, not in here)."""
    samples_dropped_total: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    poll_errors_total: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    poll_duration: HistogramState = HistogramState()
    requests_total: int = 0
    listings_unsettled_total: int = 0
    """Listings taken while the VMS kept changing under them (`VmsTransport.list_all`)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the daemon publishes, at time `t` (daemon clock)."""

    t: float
    clusters: Mapping[str, ClusterState] = field(default_factory=lambda: _EMPTY)
    mode: str | None = None
    """"observe" | "enforce" once the growth stage reports it."""
    stage_errors_total: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    stage_seconds_total: Mapping[str, float] = field(default_factory=lambda: _EMPTY)

    def targets(self) -> Iterator[TargetState]:
        """Every quota target of every cluster (not the pools)."""
        for cluster in self.clusters.values():
            yield from cluster.targets.values()

    def find_target(self, name_or_path: str, cluster: str | None = None) -> TargetState | None:
        """A quota target by name or path (first match across clusters unless `cluster`)."""
        for cluster_state in self.clusters.values():
            if cluster is not None and cluster_state.name != cluster:
                continue
            found = cluster_state.targets.get(name_or_path)
            if found is not None:
                return found
            for state in cluster_state.targets.values():
                if state.target.path == name_or_path:
                    return state
        return None


def empty_snapshot(t: float, clusters: tuple[str, ...]) -> Snapshot:
    return Snapshot(t=t, clusters=frozen_map({name: ClusterState(name) for name in clusters}))


def apply_cycle(previous: ClusterState, ctx: CycleContext, *, health: PollHealth,
                samples_dropped_total: Mapping[str, int], poll_errors_total: Mapping[str, int],
                requests_total: int, listings_unsettled_total: int = 0) -> ClusterState:
    """The cluster's new state after one cycle. On a failed poll only health and counters move."""
    poll = ctx.poll
    duration = previous.poll_duration.observe(poll.duration_seconds)
    common: dict[str, Any] = {
        "health": health, "samples_dropped_total": frozen_map(samples_dropped_total),
        "poll_errors_total": frozen_map(poll_errors_total), "poll_duration": duration,
        "requests_total": requests_total, "listings_unsettled_total": listings_unsettled_total,
    }
    if not poll.ok:
        return replace(previous, **common)

    forecasts: dict[TargetId, dict[Dimension, SeriesForecast]] = {}
    for (target, dimension), forecast in ctx.forecasts.items():
        forecasts.setdefault(target, {})[dimension] = forecast
    decisions: dict[TargetId, dict[Dimension, Decision]] = {}
    for decision in ctx.decisions:
        decisions.setdefault(decision.target, {})[decision.dimension] = decision
    actions: dict[TargetId, ActionOutcome] = {action.target: action for action in ctx.actions}
    dropped = {sample.target: sample for sample in poll.dropped}

    def evolve(old: TargetState | None, target: TargetId, obs: Observation | None) -> TargetState:
        new_forecasts = forecasts.get(target)
        new_decisions = decisions.get(target)
        if old is None:  # a new target: nothing earlier to keep
            old = TargetState(target=target, observation=None)
        return TargetState(
            target=target,
            observation=obs if obs is not None else old.observation,
            ingest_rate_bytes_per_second=(poll.ingest_rates.get(target.name, old.ingest_rate_bytes_per_second)
                                          if obs is not None else old.ingest_rate_bytes_per_second),
            forecasts=frozen_map({**old.forecasts, **new_forecasts}) if new_forecasts else old.forecasts,
            decisions=frozen_map({**old.decisions, **new_decisions}) if new_decisions else old.decisions,
            last_action=actions.get(target, old.last_action or ctx.recovered.get(target)),
            dropped=dropped.get(target.name))

    targets: dict[str, TargetState] = {}
    pool: TargetState | None = previous.pool
    for obs in poll.observations:
        if obs.target.kind.value == "pool":
            pool = evolve(previous.pool, obs.target, obs)
        else:
            targets[obs.target.name] = evolve(previous.targets.get(obs.target.name), obs.target, obs)
    for name in dropped:  # refused this time: keep what we knew, flagged
        old = previous.targets.get(name)
        if old is not None and name not in targets:
            targets[name] = evolve(old, old.target, None)
        if pool is not None and pool is previous.pool and name == pool.target.name:  # no pool sample this poll
            pool = evolve(pool, pool.target, None)
    return replace(previous, capacity=poll.capacity or previous.capacity,
                   ingest_bytes_per_second=poll.ingest_bytes_per_second,
                   pool=pool, targets=MappingProxyType(targets), **common)
