"""Replay: what quotapilot (and the reactive baseline) would have done over a recorded history.

Pure: plain data in (`TargetTrace`: one target's samples, the limits as they were), plain data out
(`TargetReplay`); no IO, no asyncio, no wall clock — the trace's own timestamps are the virtual
clock. Each sample is one cycle, as in the daemon with `forecast.workers = 0`:

1. the series model (`quotapilot.forecasting.series.SeriesModel`, the forecast stage's) takes the
   sample, refits when `refit_reason` says so, and gives its outlook;
2. the sample is scored against the limit the policy has in place *before* it acts (a write
   failure is a sample whose usage is above that hard limit; utilization is used / that limit);
3. the planner decides — `plan_cycle` with the `GrowthPolicy` for quotapilot, `plan_reactive_cycle`
   for the baseline (+1 TiB at 90 %, the soft limit moved with the hard one) — and a GROW takes
   effect at once, as the actuator's verified PATCH does.

What is not replayed: cluster-wide guards (each target is replayed alone, against unbounded pool
capacity, so the cluster reserve and the global rate limit never bind), pauses and the kill
switch, and the effect a limit has on usage (the recorded usage is taken as the demand; where the
real quota refused writes, the trace shows the capped usage, so a replay under-states demand
there — `recorded.near_misses` marks those samples).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quotapilot.forecasting.planner import (
    CycleInput,
    GrowthPolicy,
    TargetInput,
    plan_cycle,
    plan_reactive_cycle,
)
from quotapilot.forecasting.series import ModelConfig, SeriesModel
from quotapilot.forecasting.types import (
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
)

REPLAY_CLUSTER = "replay"
NEAR_MISS_RATIO = 0.95
"""A recorded sample at or above this fraction of the real hard limit came within 5 % of a full
quota: a write failure quotapilot should have avoided."""
RATE_WINDOW_SECONDS = 86400.0
"""The observed write rate the planner sizes with before a forecast exists (as the growth stage's
`UsageHistory`): increases over the last day."""
_UNBOUNDED_POOL = 2**62


class ReplayError(ValueError):
    """A trace that cannot be replayed (the message names the target and the problem)."""


@dataclass(frozen=True, slots=True)
class TargetTrace:
    """One target's recorded history, oldest first.

    `hard_limits`: the hard limit in place at each sample as recorded (None: not recorded); the
    replay then starts from `initial_hard_limit_bytes`, else 1.25 × the first usage."""

    name: str
    times: Sequence[float]
    used_bytes: Sequence[int]
    hard_limits: Sequence[int | None] | None = None
    initial_hard_limit_bytes: int | None = None
    initial_soft_limit_bytes: int | None = None
    path: str | None = None

    @classmethod
    def from_samples(cls, name: str, times: Sequence[float], used_bytes: Sequence[int],
                     hard_limits: Sequence[int | None], *, initial_limit: int | None = None,
                     initial_soft_limit_bytes: int | None = None, path: str | None = None) -> TargetTrace:
        """A trace from samples whose hard limit may be missing (None: an empty CSV cell, a step
        where Prometheus has no limit point). A missing limit is the one of the sample before (the
        limit has not changed); none is known before the first value. 0 ("no limit") is a value,
        not a gap. `initial_limit` sets the start only where the first sample has no limit (None
        or 0); the limits as they were are `recorded` only when every sample has one."""
        carried: list[int | None] = []
        for hard in hard_limits:
            carried.append(carried[-1] if hard is None and carried else hard)
        known = any(h is not None for h in carried)
        return cls(name=name, times=times, used_bytes=used_bytes, hard_limits=carried if known else None,
                   initial_hard_limit_bytes=None if carried and carried[0] else initial_limit,
                   initial_soft_limit_bytes=initial_soft_limit_bytes, path=path)

    def starting_hard_limit(self) -> int:
        if self.initial_hard_limit_bytes is not None:
            return self.initial_hard_limit_bytes
        if self.hard_limits:
            first = next((h for h in self.hard_limits if h), None)
            if first is not None:
                return int(first)
        return math.ceil(1.25 * self.used_bytes[0])

    def validate(self) -> None:
        n = len(self.times)
        if n < 2:
            raise ReplayError(f"{self.name}: need at least 2 samples, got {n}")
        if len(self.used_bytes) != n or (self.hard_limits is not None and len(self.hard_limits) != n):
            raise ReplayError(f"{self.name}: columns of different lengths")
        if any(b <= a for a, b in zip(self.times, self.times[1:], strict=False)):
            raise ReplayError(f"{self.name}: timestamps must increase")
        if any(u < 0 for u in self.used_bytes):
            raise ReplayError(f"{self.name}: negative used_bytes")
        if self.starting_hard_limit() <= 0:
            raise ReplayError(f"{self.name}: the initial hard limit must be > 0 (the first usage is 0 and no "
                              "limit was given: set one, e.g. --initial-limit)")


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """How to replay: the growth policy and the forecaster's model configuration."""

    policy: GrowthPolicy = field(default_factory=GrowthPolicy)
    model: ModelConfig = field(default_factory=ModelConfig)


@dataclass(frozen=True, slots=True)
class Growth:
    """One growth action the policy would have taken."""

    t: float
    old_hard: int
    new_hard: int
    reason: str

    @property
    def bytes_added(self) -> int:
        return self.new_hard - self.old_hard


@dataclass(frozen=True, slots=True)
class BandPoint:
    """The forecast at a decision: p10/p50/p90 usage at `at` (= t + the policy's lead time)."""

    t: float
    at: float
    p10: float
    p50: float
    p90: float


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """One policy over one trace: the hard limit in place at each sample, and its growths."""

    times: tuple[float, ...]
    used_bytes: tuple[int, ...]
    hard_limits: tuple[int, ...]
    growths: tuple[Growth, ...] = ()

    def failure_times(self) -> list[float]:
        """Times of the samples above the hard limit in place (a hard limit of 0 is none, as VAST's is)."""
        return [t for t, u, h in zip(self.times, self.used_bytes, self.hard_limits, strict=True) if 0 < h < u]

    @property
    def write_failures(self) -> int:
        return len(self.failure_times())

    @property
    def near_misses(self) -> int:
        """Samples at or above 95 % of the limit (hit, or came within 5 %)."""
        return sum(1 for u, h in zip(self.used_bytes, self.hard_limits, strict=True)
                   if h > 0 and u >= NEAR_MISS_RATIO * h)

    @property
    def growth_actions(self) -> int:
        return len(self.growths)

    @property
    def bytes_added(self) -> int:
        return sum(g.bytes_added for g in self.growths)

    @property
    def mean_utilization(self) -> float:
        ratios = [u / h for u, h in zip(self.used_bytes, self.hard_limits, strict=True) if h > 0]
        return sum(ratios) / len(ratios) if ratios else 0.0

    @property
    def peak_utilization(self) -> float:
        return max((u / h for u, h in zip(self.used_bytes, self.hard_limits, strict=True) if h > 0), default=0.0)

    def first_failure_at(self) -> float | None:
        return next(iter(self.failure_times()), None)

    def summary(self) -> dict[str, float | int | None]:
        return {
            "write_failures": self.write_failures,
            "near_misses": self.near_misses,
            "first_write_failure_at": self.first_failure_at(),
            "growth_actions": self.growth_actions,
            "bytes_added": self.bytes_added,
            "mean_utilization": round(self.mean_utilization, 4),
            "peak_utilization": round(self.peak_utilization, 4),
            "final_hard_limit_bytes": self.hard_limits[-1] if self.hard_limits else None,
        }


@dataclass(frozen=True, slots=True)
class TargetReplay:
    """What one trace's replay found."""

    name: str
    quotapilot: PolicyRun
    reactive: PolicyRun
    recorded: PolicyRun | None
    """The limits as they were (when the trace has them): `near_misses` there are the write
    failures a policy should have avoided."""
    bands: tuple[BandPoint, ...] = ()


# ------------------------------------------------------------------------------- the engine
class _RateWindow:
    """Write rates over the last day (increases only, as the growth stage's `UsageHistory`)."""

    def __init__(self, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self.entries: deque[tuple[float, int, int]] = deque()  # (t, used, increase since previous)
        self.increase = 0

    def add(self, t: float, used: int) -> None:
        if self.entries:
            grew = max(0, used - self.entries[-1][1])
            self.entries.append((t, used, grew))
            self.increase += grew
        else:
            self.entries.append((t, used, 0))
        while self.entries[0][0] < t - self.window_seconds:
            self.entries.popleft()
            first_t, first_used, first_grew = self.entries[0]
            self.increase -= first_grew
            self.entries[0] = (first_t, first_used, 0)

    def recent(self) -> dict[Dimension, float]:
        if len(self.entries) < 2:
            return {}
        return {Dimension.BYTES: self.increase / (self.entries[-1][0] - self.entries[0][0])}

    def latest(self) -> dict[Dimension, float]:
        if len(self.entries) < 2:
            return {}
        (t0, u0, _), (t1, u1, _) = self.entries[-2], self.entries[-1]
        return {Dimension.BYTES: max(0.0, (u1 - u0) / (t1 - t0))}


@dataclass(slots=True)
class _Limits:
    hard: int
    soft: int | None
    last_growth_at: float | None = None
    hard_at_sample: list[int] = field(default_factory=list)
    growths: list[Growth] = field(default_factory=list)

    def apply(self, decisions: Iterable[Decision], now: float) -> None:
        for decision in decisions:
            if (decision.kind is DecisionKind.GROW and decision.dimension is Dimension.BYTES
                    and decision.new_hard is not None and decision.new_hard > self.hard):
                self.growths.append(Growth(now, self.hard, decision.new_hard, decision.reason))
                self.hard = decision.new_hard
                self.soft = decision.new_soft if decision.new_soft is not None else self.soft
                self.last_growth_at = now

    def run(self, times: Sequence[float], used: Sequence[int]) -> PolicyRun:
        return PolicyRun(tuple(times), tuple(used), tuple(self.hard_at_sample), tuple(self.growths))


def replay_target(trace: TargetTrace, settings: ReplaySettings | None = None) -> TargetReplay:
    """Replay one trace under quotapilot's policy and under the reactive baseline."""
    trace.validate()
    settings = settings or ReplaySettings()
    policy = settings.policy
    target = TargetId(REPLAY_CLUSTER, trace.name, trace.path or f"/{trace.name}")
    model = SeriesModel(settings.model)
    rates = _RateWindow()
    start_hard = trace.starting_hard_limit()
    ours = _Limits(start_hard, trace.initial_soft_limit_bytes)
    baseline = _Limits(start_hard, trace.initial_soft_limit_bytes)
    bands: list[BandPoint] = []

    for t, used in zip(trace.times, trace.used_bytes, strict=True):
        used = int(used)
        model.add_sample(t, float(used))
        if model.refit_reason(t) is not None:
            model.refit(t)
        rates.add(t, used)
        recent, latest = rates.recent(), rates.latest()
        capacity = ClusterCapacity(REPLAY_CLUSTER, t, _UNBOUNDED_POOL, 0, _UNBOUNDED_POOL)

        outlook = model.outlook(t, limit=float(ours.hard))
        forecast = SeriesForecast(target=target, dimension=Dimension.BYTES, t=t, limit=float(ours.hard),
                                  forecast=outlook.forecast, runways=outlook.runways,
                                  rate_per_second=outlook.rate_per_second, reason=outlook.reason)
        if outlook.forecast is not None:
            at = t + policy.lead_time_seconds
            levels = [outlook.forecast.at(at, q) for q in ("p10", "p50", "p90")]
            if all(v is not None for v in levels):
                p10, p50, p90 = (float(v) for v in levels if v is not None)
                bands.append(BandPoint(t, at, p10, p50, p90))

        ours.hard_at_sample.append(ours.hard)
        observation = Observation(target=target, t=t, used_bytes=used, hard_limit_bytes=ours.hard,
                                  soft_limit_bytes=ours.soft)
        ours.apply(plan_cycle(CycleInput(now=t, targets=(TargetInput(
            observation=observation, policy=policy, forecasts={Dimension.BYTES: forecast},
            recent_rate_per_second=recent, latest_rate_per_second=latest,
            last_growth_at=_last(ours)),), capacity=capacity)), t)

        baseline.hard_at_sample.append(baseline.hard)
        observation = Observation(target=target, t=t, used_bytes=used, hard_limit_bytes=baseline.hard,
                                  soft_limit_bytes=baseline.soft)
        baseline.apply(plan_reactive_cycle(CycleInput(now=t, targets=(TargetInput(observation=observation),),
                                                      capacity=capacity)), t)

    recorded = None
    if trace.hard_limits is not None and all(h is not None for h in trace.hard_limits):
        recorded_limits = [int(h) for h in trace.hard_limits if h is not None]
        recorded = PolicyRun(tuple(trace.times), tuple(int(u) for u in trace.used_bytes), tuple(recorded_limits),
                             _recorded_growths(trace.times, recorded_limits))
    return TargetReplay(trace.name, ours.run(trace.times, trace.used_bytes),
                        baseline.run(trace.times, trace.used_bytes), recorded, tuple(bands))


def _last(limits: _Limits) -> Mapping[Dimension, float]:
    return {} if limits.last_growth_at is None else {Dimension.BYTES: limits.last_growth_at}


def _recorded_growths(times: Sequence[float], limits: Sequence[int]) -> tuple[Growth, ...]:
    return tuple(Growth(t, before, after, "recorded")
                 for t, before, after in zip(times[1:], limits, limits[1:], strict=False) if after > before)


# ---------------------------------------------------------------------------------- totals
def combined_summary(runs: Sequence[PolicyRun]) -> dict[str, float | int]:
    """Totals over targets: failures, actions and bytes summed; `mean_utilization` capacity-weighted
    as the simulator's ground truth is (at each sample time, the sum of usage over the sum of the
    limits of the targets sampled then; averaged over those times); `peak_utilization` the max."""
    used_at: dict[float, int] = {}
    hard_at: dict[float, int] = {}
    for run in runs:
        for t, u, h in zip(run.times, run.used_bytes, run.hard_limits, strict=True):
            used_at[t] = used_at.get(t, 0) + u
            hard_at[t] = hard_at.get(t, 0) + h
    ratios = [used_at[t] / hard_at[t] for t in used_at if hard_at[t] > 0]
    return {
        "write_failures": sum(r.write_failures for r in runs),
        "near_misses": sum(r.near_misses for r in runs),
        "growth_actions": sum(r.growth_actions for r in runs),
        "bytes_added": sum(r.bytes_added for r in runs),
        "mean_utilization": round(sum(ratios) / len(ratios), 4) if ratios else 0.0,
        "peak_utilization": round(max((r.peak_utilization for r in runs), default=0.0), 4),
    }


def replay_report(replays: Sequence[TargetReplay]) -> dict[str, object]:
    """The `replay --json` object: totals per policy, and per target."""
    targets: dict[str, object] = {}
    for rep in replays:
        entry: dict[str, object] = {"quotapilot": rep.quotapilot.summary(), "reactive": rep.reactive.summary(),
                                    "growths": [{"t": g.t, "old_hard_bytes": g.old_hard,
                                                 "new_hard_bytes": g.new_hard, "reason": g.reason}
                                                for g in rep.quotapilot.growths],
                                    "samples": len(rep.quotapilot.times)}
        if rep.recorded is not None:
            entry["recorded"] = rep.recorded.summary()
        targets[rep.name] = entry
    report: dict[str, object] = {
        "quotapilot": combined_summary([r.quotapilot for r in replays]),
        "reactive": combined_summary([r.reactive for r in replays]),
        "targets": targets,
    }
    recorded = [r.recorded for r in replays if r.recorded is not None]
    if recorded:
        report["recorded"] = combined_summary(recorded)
    return report


# ------------------------------------------------------------------------- the demo's view
def simulator_by_path(truth: Mapping[str, Any]) -> dict[str, dict[str, float | int]]:
    """Per quota path, from the simulator's ground truth (`Engine.summary()`), the figures replay
    reports per target: `write_failures` (refused write operations), `growth_actions` and
    `bytes_added` (every raise of the hard limit after the initial one), `mean_utilization` and
    `peak_utilization` (of the hard limit in place). `quotapilot demo --json` prints it as
    `by_path`, so a demo and a replay of the same scenario can be compared view by view."""
    failures = truth.get("write_failures_by_path", {})
    means = truth.get("mean_utilization_by_path", {})
    peaks = truth.get("peak_utilization_by_path", {})
    out: dict[str, dict[str, float | int]] = {}
    for path, limits in truth.get("limits_over_time", {}).items():
        raises = [after - before for (_, before), (_, after) in itertools.pairwise(limits)
                  if before is not None and after is not None and after > before]
        out[path] = {
            "write_failures": int(failures.get(path, 0)),
            "growth_actions": len(raises),
            "bytes_added": int(sum(raises)),
            "mean_utilization": round(float(means.get(path, 0.0)), 4),
            "peak_utilization": round(float(peaks.get(path, 0.0)), 4),
        }
    return out
