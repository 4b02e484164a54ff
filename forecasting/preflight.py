"""Will a write of N bytes fit in a target, now and over a window — and if not, what would the
daemon do about it? Pure: plain data in (the target's latest sample, its forecast, the policy,
the cluster, the reservations, the overrides), plain data out; `now` is an argument.

"Fits over the window" means room is left after the pessimistic (p90) forecast growth of the
target over `[sample time, now + needed_for]` *and* the active reservations, not just
`limit − used`. When it does not fit, the growth planner (`forecasting.planner.plan_cycle`) is
asked with the request counted as a reservation — exactly how a granted reservation is seen by
the growth stage — so a pipeline learns "the daemon will grow to X" or "blocked by guard Y (until
T)"; observe mode, which the actuator (not the planner) enforces, blocks too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from quotapilot.forecasting.planner import (
    CycleInput,
    GrowthPolicy,
    TargetInput,
    data_reduction,
    net_of_overcommit,
    plan_cycle,
)
from quotapilot.forecasting.types import (
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    SeriesForecast,
)
from quotapilot.forecasting.words import format_bytes, format_limit

Guard = Literal[
    "stale_data", "no_limit", "kill_switch", "paused", "observe_mode", "ceiling", "max_growth",
    "cluster_reserve", "cluster_full", "cooldown", "rate_limit", "max_reserved",
]
HARD_GUARDS: frozenset[str] = frozenset({"ceiling", "max_growth", "cluster_reserve", "cluster_full", "no_limit"})
"""Guards that no amount of waiting lifts: capacity has to be added by a person (HTTP 507)."""

FORECAST_QUANTILE = "p90"


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the daemon knows about one target at `now`, gathered by the API from its snapshot and store."""

    observation: Observation
    policy: GrowthPolicy
    """The target's growth knobs, as the growth stage applies them."""
    enforce: bool = False
    """False in observe mode: a growth is reported, never made (the actuator's rule)."""
    forecasts: dict[Dimension, SeriesForecast] = field(default_factory=dict)
    recent_rate_per_second: Mapping[Dimension, float] = field(default_factory=dict)
    """Observed ingest per second (the cold-start fallback, as in the planner)."""
    cluster: ClusterCapacity | None = None
    """The pool as polled (its free bytes bound a write now: `cluster_full`); growth is planned on it
    net of what the quotas promise (`net_of_overcommit`), as the growth stage plans."""
    cluster_reserve_ratio: float = 0.10
    reserved_bytes: int = 0
    reserved_inodes: int = 0
    max_reserved: int | None = None
    """The most the active reservations of one dimension may total, the request included (None:
    no cap). The API passes its `MAX_BYTES`, so the stored totals stay far inside 64-bit
    integers even on a target with no limit, where nothing else bounds them."""
    paused: bool = False
    paused_until: float | None = None
    pause_reason: str = ""
    kill_switch: bool = False
    stale: bool = False
    last_growth_at: Mapping[Dimension, float] = field(default_factory=dict)
    """When each series last grew (or would have): the cooldown's start."""
    actions_last_hour: int = 0
    """The rows the hourly limit counts for a growth in this target's mode (enforce: the real
    writes; observe: every row), as `ActionStore.rate_limit_count_since` counts them."""
    max_actions_per_hour: int = 20


@dataclass(frozen=True, slots=True)
class DimensionFit:
    """The fit of one dimension (bytes or inodes)."""

    dimension: Dimension
    requested: int
    used: int
    limit: int | None
    reserved: int
    forecast_growth: int
    growth_basis: GrowthBasis
    fits_now: bool
    fits: bool
    within_max_reserved: bool = True
    """False when the request would take the active reservations past `TargetState.max_reserved`."""

    @property
    def forecast_available(self) -> bool:
        return self.growth_basis == "forecast"

    @property
    def room_now(self) -> int | None:
        return None if self.limit is None else self.limit - self.used - self.reserved

    @property
    def room_after_forecast(self) -> int | None:
        room = self.room_now
        return None if room is None else room - self.forecast_growth

    @property
    def required_limit(self) -> int:
        """The smallest hard limit under which the request fits over the window."""
        return self.used + self.reserved + self.forecast_growth + self.requested

    def as_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested, "used": self.used, "limit": self.limit, "reserved": self.reserved,
            "room_now": self.room_now, "forecast_growth": self.forecast_growth,
            "room_after_forecast": self.room_after_forecast, "forecast_available": self.forecast_available,
            "growth_basis": self.growth_basis,
            "fits_now": self.fits_now, "fits": self.fits,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What the daemon would do so the request fits: nothing, grow, or nothing because of a guard."""

    kind: Literal["none", "grow", "later", "blocked"]
    reason: str
    guard: Guard | None = None
    new_hard_limit_bytes: int | None = None
    new_hard_limit_inodes: int | None = None
    earliest_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "reason": self.reason, "guard": self.guard,
            "new_hard_limit_bytes": self.new_hard_limit_bytes,
            "new_hard_limit_inodes": self.new_hard_limit_inodes, "earliest_at": self.earliest_at,
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    fits: bool
    fits_now: bool
    window_seconds: float
    dimensions: tuple[DimensionFit, ...]
    plan: Plan

    @property
    def bytes(self) -> DimensionFit:
        return self.dimensions[0]


GrowthBasis = Literal["forecast", "model_rate", "observed_rate", "none"]


def forecast_growth(series: SeriesForecast | None, start: float, end: float,
                    observed_rate: float | None = None) -> tuple[int, GrowthBasis]:
    """Pessimistic growth of a series over `[start, end]`, and what it is based on.

    With a forecast: the highest p90 level in the window minus the p50 level at `start` (the
    planner's anchoring: the model's level may lag the latest sample, its increments do not),
    never negative; beyond the forecast horizon the model's rate extends the last level. Without
    one (cold start): the model's current rate, else the observed ingest rate, times the window —
    the same fallback the planner uses; `(0, "none")` with neither."""
    window = max(0.0, end - start)
    rate = series.rate_per_second if series is not None and series.rate_per_second is not None else None
    forecast = series.forecast if series is not None else None
    base = forecast.at(max(start, forecast.times[0]), "p50") if forecast is not None and forecast.times else None
    if forecast is None or base is None or not math.isfinite(base):
        if rate is not None and math.isfinite(rate):
            return max(0, math.ceil(rate * window)), "model_rate"
        if observed_rate is not None and math.isfinite(observed_rate):
            return max(0, math.ceil(observed_rate * window)), "observed_rate"
        return 0, "none"
    levels: list[float] = [lv for t, lv in zip(forecast.times, forecast.p90, strict=False) if start <= t <= end]
    for t in (start, end):
        level_at = forecast.at(t, FORECAST_QUANTILE)
        if level_at is not None:
            levels.append(level_at)
    if end > forecast.times[-1]:
        extra = (end - forecast.times[-1]) * max(0.0, rate or 0.0)
        levels.append(forecast.p90[-1] + extra)
    finite = [lv for lv in levels if math.isfinite(lv)]
    if not finite:
        return 0, "none"
    return max(0, math.ceil(max(finite) - base)), "forecast"


def _fit(dimension: Dimension, requested: int, used: int, limit: int | None, reserved: int,
         series: SeriesForecast | None, start: float, end: float, observed_rate: float | None,
         max_reserved: int | None) -> DimensionFit:
    growth, basis = forecast_growth(series, start, end, observed_rate)
    if max_reserved is not None and reserved + requested > max_reserved:
        return DimensionFit(dimension, requested, used, limit, reserved, growth, basis, False, False,
                            within_max_reserved=False)
    if limit is None:
        return DimensionFit(dimension, requested, used, None, reserved, growth, basis, True, True)
    fits_now = used + reserved + requested <= limit
    fits = fits_now and used + reserved + growth + requested <= limit
    return DimensionFit(dimension, requested, used, limit, reserved, growth, basis, fits_now, fits)


def _over_max_reserved(dimension: Dimension, total: int, max_reserved: int | None) -> Plan:
    # no growth helps: active reservations have to end (release or TTL) first, so it lifts with time
    return Plan("blocked", f"the active {dimension} reservations of this target would total {total}, above "
                f"the most the daemon counts ({max_reserved})", "max_reserved")


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step - 1e-12) * step)


_GUARD_NAMES: dict[str, Guard] = {
    "stale": "stale_data", "dropped": "stale_data", "kill_switch": "kill_switch", "paused": "paused",
    "cooldown": "cooldown", "rate_limit": "rate_limit", "cluster_reserve": "cluster_reserve",
    "max_hard_limit": "ceiling",
}


def _planner_decisions(state: TargetState, fits: list[DimensionFit], now: float) -> dict[Dimension, Decision]:
    """Ask the growth planner, with the request counted as a reservation (demand)."""
    extra = {f.dimension: f.requested for f in fits}
    target = TargetInput(
        observation=state.observation, policy=state.policy, forecasts=state.forecasts,
        recent_rate_per_second=state.recent_rate_per_second,
        reserved_bytes=state.reserved_bytes + extra.get(Dimension.BYTES, 0),
        reserved_inodes=state.reserved_inodes + extra.get(Dimension.INODES, 0),
        last_growth_at=state.last_growth_at, paused_reason=state.pause_reason if state.paused else None,
        enforced=state.enforce)  # `actions_last_hour` is counted in the target's mode
    cycle = CycleInput(
        now=now, targets=(target,), capacity=net_of_overcommit(state.cluster),  # as the growth stage plans
        cluster_reserve_ratio=state.cluster_reserve_ratio,
        max_actions_per_hour=state.max_actions_per_hour, actions_last_hour=state.actions_last_hour,
        kill_switch_reason="on" if state.kill_switch else None,
        stale_after_seconds=math.inf if not state.stale else -math.inf)
    return {d.dimension: d for d in plan_cycle(cycle)}


def _plan(state: TargetState, fits: list[DimensionFit], now: float) -> Plan:
    short = [f for f in fits if not f.fits]
    if not short:
        return Plan("none", "fits: nothing to do")
    for fit in short:
        if not fit.within_max_reserved:
            return _over_max_reserved(fit.dimension, fit.reserved + fit.requested, state.max_reserved)
    decisions = _planner_decisions(state, fits, now)
    rules = state.policy
    new_limits: dict[Dimension, int] = {}
    for fit in short:
        decision = decisions.get(fit.dimension)
        if fit.limit is None or decision is None:
            return Plan("blocked", f"no {fit.dimension} limit to grow", "no_limit")
        step = rules.step_bytes if fit.dimension is Dimension.BYTES else rules.step_inodes
        required = _round_up(fit.required_limit, step)
        if decision.kind is DecisionKind.BLOCKED:
            guard = _GUARD_NAMES.get(decision.guard or "", "ceiling")
            earliest: float | None = None
            if guard == "paused":
                earliest = state.paused_until
            elif guard == "cooldown" and fit.dimension in state.last_growth_at:
                earliest = state.last_growth_at[fit.dimension] + rules.cooldown_seconds
            elif guard == "rate_limit":
                earliest = now + 3600.0
            return Plan("blocked", decision.reason, guard, decision.new_hard if fit.dimension is Dimension.BYTES
                        else None, decision.new_hard if fit.dimension is Dimension.INODES else None, earliest)
        if decision.kind is not DecisionKind.GROW or decision.new_hard is None:
            return Plan("later", f"the planner does not grow yet ({decision.reason}); it acts when the forecast "
                        f"crosses grow_at within the lead time", None)
        if decision.new_hard < required:
            ceiling = rules.max_hard_limit_bytes if fit.dimension is Dimension.BYTES else rules.max_hard_limit_inodes
            guard = "cluster_reserve" if decision.guard == "cluster_reserve" else (
                "ceiling" if decision.new_hard >= ceiling or required > ceiling else "max_growth")
            return Plan("blocked", f"needs a {fit.dimension} hard limit of {format_limit(required, fit.dimension)}; "
                        f"the most the daemon may set is {format_limit(decision.new_hard, fit.dimension)} ({guard})",
                        guard)
        new_limits[fit.dimension] = decision.new_hard
    new_bytes, new_inodes = new_limits.get(Dimension.BYTES), new_limits.get(Dimension.INODES)
    if not state.enforce:
        return Plan("blocked", "mode is observe: the daemon reports but does not grow", "observe_mode",
                    new_bytes, new_inodes)
    parts = [f"{d} hard limit to {format_limit(v, d)}" for d, v in new_limits.items()]
    return Plan("grow", "the daemon would grow the " + " and ".join(parts), None, new_bytes, new_inodes, now)


def assess(state: TargetState, *, request_bytes: int, request_inodes: int | None, window_seconds: float,
           now: float) -> Assessment:
    """Does `request_bytes` (and `request_inodes`) fit now and until `now + window_seconds`?"""
    obs = state.observation
    start = min(obs.t, now)
    end = now + window_seconds
    rates = state.recent_rate_per_second
    fits = [_fit(Dimension.BYTES, request_bytes, obs.used_bytes, obs.hard_limit_bytes, state.reserved_bytes,
                 state.forecasts.get(Dimension.BYTES), start, end, rates.get(Dimension.BYTES), state.max_reserved)]
    if request_inodes is not None and obs.used_inodes is not None:
        fits.append(_fit(Dimension.INODES, request_inodes, obs.used_inodes, obs.hard_limit_inodes,
                         state.reserved_inodes, state.forecasts.get(Dimension.INODES), start, end,
                         rates.get(Dimension.INODES), state.max_reserved))
    plan = _plan(state, fits, now)
    fits_all = all(f.fits for f in fits)
    fits_now = all(f.fits_now for f in fits)
    if state.cluster is not None and request_bytes > state.cluster.free_bytes * data_reduction(state.cluster):
        # the quota has room on paper, but the pool it draws from does not (its free bytes are
        # physical, the request logical: at the pool's data reduction)
        fits_all = fits_now = False
        plan = Plan("blocked", f"the cluster has only {format_bytes(state.cluster.free_bytes)} free (physical)",
                    "cluster_full")
    if (request_inodes is not None and obs.used_inodes is None and state.max_reserved is not None
            and state.reserved_inodes + request_inodes > state.max_reserved):
        # no inode count observed, so no inode fit above, but a reservation stores its inodes all the same
        fits_all = fits_now = False
        plan = _over_max_reserved(Dimension.INODES, state.reserved_inodes + request_inodes, state.max_reserved)
    return Assessment(fits_all, fits_now, window_seconds, tuple(fits), plan)
