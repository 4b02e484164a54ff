"""The growth planner: which quotas to grow this cycle, by how much, and why not the others.

Pure: plain data and `now` in, `Decision`s out; no IO, no asyncio. The actuator
(`quotapilot.daemon.stages.growth`) gathers the inputs (latest observations, forecasts, policy per
target, recent actions, overrides, reservations, cluster capacity) and acts on the result.

Two steps, so each can be read and tested alone:

- `decide(series, policy, now)` — one series (a quota's bytes or inodes): does it need to grow,
  and to what limit? Trigger: the upper band (p90) plus reservations reaches `grow_at` of the
  hard limit within `lead_time`, or utilization already is at or above it. Size: the new hard
  limit keeps the upper band under `target_utilization` until `now + horizon`, rounded up to
  `step`, at least `min_growth`, at most `max_growth` and `max_hard_limit`. Without a usable
  forecast (cold start) it acts reactively at `grow_at`, sized from the recent observed rate.
- `plan_cycle(cycle)` — every series of one cluster, through the guards: stale or dropped data,
  manual pause and kill switch, per-series cooldown (bypassed only when the series would hit its
  hard limit before the cooldown ends), the global rate limit, and the cluster reserve after the
  sum of this cycle's growths (room handed out by urgency; what does not fit is trimmed or
  blocked, and says so). A growth whose new hard limit would still be below current usage (VMS
  refuses it; it is a sign of a wrong record) is blocked by the `below_usage` guard, whatever
  trimmed or capped it.

`plan_reactive_cycle` is the baseline `quotapilot demo --policy reactive` compares against:
utilization at or above 90 % → add a fixed 1 TiB (as many 1 TiB steps as clear usage when a quota
is already over its limit by more), nothing else.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from quotapilot.forecasting.types import (
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Forecast,
    Observation,
    SeriesForecast,
    TargetId,
    TargetKind,
)
from quotapilot.forecasting.words import format_bytes, format_duration, format_limit

TIB = 2**40


@dataclass(frozen=True, slots=True)
class GrowthPolicy:
    """The per-target growth knobs (the planner's copy of `PolicyRules`, without pydantic)."""

    grow_at: float = 0.75
    target_utilization: float = 0.70
    lead_time_seconds: float = 24 * 3600.0
    horizon_seconds: float = 7 * 86400.0
    step_bytes: int = TIB
    min_growth_bytes: int = TIB
    max_growth_bytes: int = 500 * TIB
    max_hard_limit_bytes: int = 10 * 2**50
    step_inodes: int = 1_000_000
    min_growth_inodes: int = 1_000_000
    max_growth_inodes: int = 1_000_000_000
    max_hard_limit_inodes: int = 10_000_000_000
    cooldown_seconds: float = 6 * 3600.0
    max_forecast_rate_ratio: float = 2.0
    """Size with at most this multiple of the observed day's write rate: a forecast that a burst
    has just thrown upwards would otherwise size a quota for weeks (0 disables the cap). Set by
    `policy.max_forecast_rate_ratio`, globally or per target, like every field here."""

    @classmethod
    def from_fields(cls, source: object) -> GrowthPolicy:
        """Copy the fields of the same names from any object (e.g. a `PolicyRules`)."""
        names = cls.__dataclass_fields__
        return cls(**{name: getattr(source, name) for name in names if hasattr(source, name)})

    def sizing(self, dimension: Dimension) -> tuple[int, int, int, int]:
        """(step, min_growth, max_growth, max_hard_limit) for bytes or inodes."""
        if dimension is Dimension.INODES:
            return (self.step_inodes, self.min_growth_inodes, self.max_growth_inodes,
                    self.max_hard_limit_inodes)
        return self.step_bytes, self.min_growth_bytes, self.max_growth_bytes, self.max_hard_limit_bytes


@dataclass(frozen=True, slots=True)
class SeriesState:
    """One series to decide on: a quota's bytes or inodes as last observed at `t`."""

    target: TargetId
    dimension: Dimension
    t: float
    used: int
    hard: int
    soft: int | None = None
    forecast: SeriesForecast | None = None
    recent_rate_per_second: float | None = None
    """Observed write rate (bytes or files per second) over the last day: sizes a growth when there
    is no forecast. Increases only, so a nightly sweep does not hide the day's writes."""
    latest_rate_per_second: float | None = None
    """Increase per second since the previous sample: how soon the limit could be hit right now."""
    reserved: int = 0
    """Reserved by pipelines (pre-flight API) and not yet written: counts as demand."""
    soft_binding: bool = False
    """The soft limit is enforced: the quota has a grace period, after which VAST refuses every
    write over the soft limit (`GRACE_EXPIRED`); without one it is a warning level only."""

    @property
    def binding_soft(self) -> int | None:
        """The soft limit when it binds and is below the hard one: growth triggers no later than
        the demand reaches it, and is sized so that it holds the horizon's peak (`decide`)."""
        if self.soft_binding and self.soft is not None and 0 < self.soft < self.hard:
            return self.soft
        return None


_CLOCK_DURATION = re.compile(r"^(?:(\d+) )?(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$")
"""VMS's other duration form, "[DD] [HH:[MM:]]ss" (a Django DurationField: "7 00:00:00", "01:30:00")."""


def grace_binds(grace_period: str | None) -> bool:
    """Whether a quota's `grace_period` makes its soft limit bind. VMS writes it as "90m", "7d",
    "3600s", seconds, or "[DD] [HH:[MM:]]ss". Empty or zero: no grace period, the soft limit only
    warns. A form not recognised binds (the safe side: growing early costs room, a soft limit taken
    for a warning costs writes)."""
    text = " ".join((grace_period or "").strip().lower().split())
    if not text:
        return False
    number = text[:-1] if text[-1:] in ("s", "m", "h", "d") else text
    try:
        return float(number) > 0
    except ValueError:
        pass
    clock = _CLOCK_DURATION.match(text)
    if clock is None:
        return True
    return any(float(part) > 0 for part in clock.groups() if part is not None)


# ------------------------------------------------------------------------------ one series
@dataclass(frozen=True, slots=True)
class _DemandPath:
    """Upper-band demand (p90, anchored to the latest sample, plus reservations) over time."""

    forecast: Forecast
    offset: float
    floor: float
    reserved: float
    slope: float

    def at(self, t: float) -> float:
        fc = self.forecast
        level = fc.at(t, "p90") if t <= fc.times[-1] else fc.p90[-1] + max(self.slope, 0.0) * (t - fc.times[-1])
        assert level is not None
        return max(level + self.offset, self.floor) + self.reserved

    def points(self, start: float, end: float) -> tuple[list[float], list[float]]:
        """Times and levels from `start` to `end` through every forecast step in between; the
        steps are read straight from the band (no interpolation: this runs for every series of a
        10,000-quota cycle)."""
        fc, offset, floor, reserved = self.forecast, self.offset, self.floor, self.reserved
        lo, hi = bisect.bisect_right(fc.times, start), bisect.bisect_left(fc.times, end)
        times = [start, *fc.times[lo:hi], end]
        levels = [self.at(start), *[max(v + offset, floor) + reserved for v in fc.p90[lo:hi]], self.at(end)]
        return times, levels


def _demand_path(state: SeriesState, now: float) -> _DemandPath | None:
    """The series' upper-band demand path, or None without a usable forecast."""
    sf = state.forecast
    if sf is None or sf.forecast is None or len(sf.forecast.times) < 2:
        return None
    fc = sf.forecast
    if now > fc.times[-1]:  # the forecast ended before now: it says nothing about what comes
        return None
    offset = 0.0
    if now > fc.times[0]:
        # An older forecast: its level may have drifted from the latest sample; move the band so
        # it starts where reality is.
        base_p50 = fc.at(now, "p50")
        assert base_p50 is not None
        offset = state.used - base_p50
    step = fc.times[-1] - fc.times[-2]
    slope = (fc.p90[-1] - fc.p90[-2]) / step if step > 0 else 0.0
    return _DemandPath(fc, offset, float(state.used), float(state.reserved), slope)


def _first_crossing(times: list[float], levels: list[float], level: float) -> float | None:
    """First time the (piecewise linear) demand reaches `level`, or None."""
    prev_t, prev_v = times[0], levels[0]
    if prev_v >= level:
        return prev_t
    for t, v in zip(times[1:], levels[1:], strict=True):
        if v >= level:
            frac = (level - prev_v) / (v - prev_v) if v > prev_v else 1.0
            return prev_t + frac * (t - prev_t)
        prev_t, prev_v = t, v
    return None


def _round_up(value: float, step: int) -> int:
    return math.ceil(value / step - 1e-12) * step


def decide(state: SeriesState, policy: GrowthPolicy, now: float) -> Decision:
    """Trigger and size for one series, before any cycle-wide guard (see `plan_cycle`)."""
    numbers: dict[str, float] = {
        "used": state.used, "hard": state.hard, "utilization": state.used / state.hard if state.hard else 0.0,
        "reserved": state.reserved,
    }

    def made(kind: DecisionKind, reason: str, **changes: object) -> Decision:
        decision = Decision(
            target=state.target, dimension=state.dimension, kind=kind, reason=reason, t=now,
            current_used=state.used, current_hard=state.hard, current_soft=state.soft,
            numbers=tuple(sorted(numbers.items())))
        return replace(decision, **changes) if changes else decision  # type: ignore[arg-type]  # replace(**dict) is untyped by design

    if state.hard <= 0:
        return made(DecisionKind.NONE, "no hard limit to grow")
    step, min_growth, max_growth, max_hard = policy.sizing(state.dimension)
    demand = _demand_path(state, now)
    # A soft limit its grace period enforces (`SeriesState.binding_soft`): demand may pass it only
    # for the grace period, so growth triggers no later than at it, and sizing keeps the horizon's
    # peak under it (a growth moves it in proportion, `_soft_for`). Where it lies above grow_at and
    # above the target utilization (a soft limit at 90 %, say), nothing changes.
    soft = state.binding_soft
    grow_level = policy.grow_at * state.hard
    sizing_ratio = policy.target_utilization
    level = "grow_at"  # what the trigger is said to reach
    if soft is not None:
        numbers["binding_soft_limit"] = soft
        if soft < grow_level:
            grow_level = float(soft)
            level = f"the soft limit {format_limit(soft, state.dimension)} (its grace period enforces it)"
        sizing_ratio = min(sizing_ratio, soft / state.hard)
    now_demand = float(state.used + state.reserved)

    if demand is not None:
        assert state.forecast is not None and state.forecast.forecast is not None
        fc_times = state.forecast.forecast.times
        lead_end, horizon_end = now + policy.lead_time_seconds, now + policy.horizon_seconds
        crossing = _first_crossing(*demand.points(now, lead_end), grow_level)
        full_at = _first_crossing(*demand.points(now, max(horizon_end, fc_times[-1])), float(state.hard))
        peak = max(demand.points(now, horizon_end)[1])
        basis = "forecast"
        numbers["peak_demand_p90"] = peak
        observed = state.recent_rate_per_second
        if policy.max_forecast_rate_ratio > 0 and observed is not None and observed > 0:
            plausible = now_demand + policy.max_forecast_rate_ratio * observed * policy.horizon_seconds
            if peak > plausible:
                numbers["peak_demand_capped"] = plausible
                peak = plausible
                basis = "forecast (capped by the observed rate)"
        if crossing is not None:
            numbers["grow_at_crossing_in_seconds"] = crossing - now
    else:
        rate = max(state.recent_rate_per_second or 0.0, 0.0)
        if state.forecast is not None and state.forecast.rate_per_second is not None:
            rate = max(rate, state.forecast.rate_per_second)
        fastest = max(rate, state.latest_rate_per_second or 0.0)
        crossing = now if now_demand >= grow_level else None
        full_at = now + (state.hard - now_demand) / fastest if fastest > 0 else None
        if now_demand >= state.hard:
            full_at = now
        peak = now_demand + rate * policy.horizon_seconds
        basis = "reactive (no usable forecast)"
        numbers["peak_demand_observed_rate"] = peak
        numbers["rate_per_second"] = rate
    urgency = None if full_at is None else max(0.0, full_at - now)
    if urgency is not None:
        numbers["seconds_to_hard_limit"] = urgency

    if crossing is None:
        wanted = _round_up(max(peak, 1.0) / sizing_ratio, step)
        if state.used < 0.5 * policy.grow_at * state.hard and wanted * 2 <= state.hard:
            numbers["suggested_hard"] = wanted
            return made(DecisionKind.SHRINK_CANDIDATE,
                        f"{basis}: peak demand over the horizon needs only {format_limit(wanted, state.dimension)} of "
                        f"{format_limit(state.hard, state.dimension)}",
                        urgency_seconds=urgency)
        under = level if level != "grow_at" else f"grow_at {policy.grow_at:.2f}"
        return made(DecisionKind.NONE, f"{basis}: stays under {under} within lead time", urgency_seconds=urgency)

    wanted_hard = _round_up(peak / sizing_ratio, step)
    new_hard = max(wanted_hard, state.hard + min_growth)
    new_hard = min(new_hard, state.hard + max_growth, max_hard)
    numbers["wanted_hard"] = wanted_hard
    if new_hard <= state.hard:
        return made(DecisionKind.BLOCKED, f"at max_hard_limit {format_limit(max_hard, state.dimension)}: cannot grow",
                    urgency_seconds=urgency, guard="max_hard_limit")
    new_soft = _soft_for(state.soft, state.hard, new_hard)
    trigger = (f"at or above {level} now" if crossing <= now
               else f"p90 reaches {level} in {format_duration(crossing - now)}")
    capped = " (capped)" if new_hard < wanted_hard else ""
    sized = f"sized for {policy.target_utilization:.2f} over the horizon"
    if sizing_ratio < policy.target_utilization:
        sized = (f"sized so that the soft limit (moved with it) holds the horizon's peak ({sizing_ratio:.2f} "
                 "of the hard limit)")
    return made(DecisionKind.GROW,
                f"{basis}: {trigger}; {sized}{capped}",
                new_hard=new_hard, new_soft=new_soft, urgency_seconds=urgency)


def _soft_for(soft: int | None, hard: int, new_hard: int) -> int | None:
    """The soft limit keeps its ratio to the hard limit (and never shrinks), never above the new
    hard limit: a soft limit above the hard one (inconsistent; validation drops such a sample) is
    not carried over into a PATCH VMS would refuse or a quota whose soft limit never binds."""
    if soft is None or hard <= 0:
        return None
    return min(new_hard, max(soft, (soft * new_hard) // hard))


# ------------------------------------------------------------------------------ one cycle
@dataclass(frozen=True, slots=True)
class TargetInput:
    """Everything the planner needs about one quota this cycle."""

    observation: Observation
    policy: GrowthPolicy = field(default_factory=GrowthPolicy)
    forecasts: Mapping[Dimension, SeriesForecast] = field(default_factory=dict)
    recent_rate_per_second: Mapping[Dimension, float] = field(default_factory=dict)
    latest_rate_per_second: Mapping[Dimension, float] = field(default_factory=dict)
    reserved_bytes: int = 0
    reserved_inodes: int = 0
    last_growth_at: Mapping[Dimension, float] = field(default_factory=dict)
    """When each series last grew (or, in observe mode, would have): the cooldown's start."""
    paused_reason: str | None = None
    dropped: bool = False
    """The target's latest sample was dropped as invalid this cycle."""
    enforced: bool = True
    """The target is in enforce mode (its growth is a real write); False: observed (a would-grow).
    It says which hourly budget the growth draws from (`CycleInput.actions_last_hour`)."""

    def series(self) -> list[SeriesState]:
        """The series that have a hard limit: bytes, then inodes (when counted)."""
        obs = self.observation
        sides = ((Dimension.BYTES, obs.used_bytes, obs.hard_limit_bytes, obs.soft_limit_bytes, self.reserved_bytes),
                 (Dimension.INODES, obs.used_inodes, obs.hard_limit_inodes, obs.soft_limit_inodes,
                  self.reserved_inodes))
        binds = grace_binds(obs.grace_period)
        return [SeriesState(target=obs.target, dimension=dim, t=obs.t, used=used, hard=hard, soft=soft,
                            forecast=self.forecasts.get(dim),
                            recent_rate_per_second=self.recent_rate_per_second.get(dim),
                            latest_rate_per_second=self.latest_rate_per_second.get(dim),
                            reserved=reserved, soft_binding=binds)
                for dim, used, hard, soft, reserved in sides if hard and used is not None]


@dataclass(frozen=True, slots=True)
class CycleInput:
    """One cluster's cycle, as the planner sees it."""

    now: float
    targets: tuple[TargetInput, ...]
    capacity: ClusterCapacity | None
    cluster_reserve_ratio: float = 0.10
    max_actions_per_hour: int = 20
    actions_last_hour: int = 0
    """The real writes (enforce rows) of the last hour, across clusters: what an enforced
    target's growth counts against `max_actions_per_hour`, with this cycle's enforce growths."""
    all_actions_last_hour: int | None = None
    """Every row of the last hour, would-grows included: what an observed target's would-grow
    counts, with every real write of this cycle and the more urgent would-grows, so that observe
    mode reports the limit as enforce would meet it (None: `actions_last_hour`). A would-grow never
    holds a real write."""
    kill_switch_reason: str | None = None
    stale_after_seconds: float = 180.0


def _blocked(decision: Decision, guard: str, reason: str) -> Decision:
    # new_hard/new_soft stay: "would grow to …, but" is what the operator wants to read
    return replace(decision, kind=DecisionKind.BLOCKED, guard=guard, reason=f"{reason}; {decision.reason}")


def _below_usage(decision: Decision) -> Decision:
    """`decision` blocked (`below_usage`) when it would set a hard limit below current usage."""
    if decision.kind is DecisionKind.GROW and decision.new_hard is not None \
            and decision.current_used is not None and decision.new_hard < decision.current_used:
        return _blocked(decision, "below_usage",
                        f"new hard limit {format_limit(decision.new_hard, decision.dimension)} is below usage "
                        f"{format_limit(decision.current_used, decision.dimension)}")
    return decision


def _urgency_key(decision: Decision) -> tuple[float, str, str]:
    urgency = decision.urgency_seconds if decision.urgency_seconds is not None else math.inf
    return urgency, decision.target.key, decision.dimension.value


def plan_cycle(cycle: CycleInput) -> tuple[Decision, ...]:
    """Decide every series of one cluster, then apply the guards; deterministic for its input."""
    now = cycle.now
    decisions: list[Decision] = []
    candidates: list[tuple[Decision, bool]] = []  # with its target's `enforced`
    for target in sorted(cycle.targets, key=lambda ti: ti.observation.target.key):
        if target.observation.target.kind is not TargetKind.QUOTA:
            continue
        for series in target.series():
            decision = decide(series, target.policy, now)
            if decision.kind is not DecisionKind.GROW:
                decisions.append(decision)
                continue
            age = now - series.t
            if target.dropped:
                decision = _blocked(decision, "dropped", "latest sample was dropped as invalid")
            elif age > cycle.stale_after_seconds:
                decision = _blocked(decision, "stale", f"data is {format_duration(age)} old")
            elif cycle.kill_switch_reason is not None:
                decision = _blocked(decision, "kill_switch", f"kill switch: {cycle.kill_switch_reason}")
            elif target.paused_reason is not None:
                decision = _blocked(decision, "paused", f"paused: {target.paused_reason}")
            else:
                decision = _cooldown(decision, target, series.dimension, now)
            if decision.kind is DecisionKind.GROW:
                candidates.append((decision, target.enforced))
            else:
                decisions.append(decision)

    # two hourly budgets: a real write counts against both, a would-grow only against its own;
    # the real writes are served first (budget and cluster room), so a would-grow never holds
    # one, and the would-grows count every real write of the cycle, as `_act` will find them
    enforce_budget = cycle.max_actions_per_hour - cycle.actions_last_hour
    all_actions = cycle.actions_last_hour if cycle.all_actions_last_hour is None else cycle.all_actions_last_hour
    all_budget = cycle.max_actions_per_hour - all_actions
    room = _cluster_room(cycle)
    for decision, enforced in sorted(candidates, key=lambda candidate: (not candidate[1], *_urgency_key(candidate[0]))):
        if (enforce_budget if enforced else all_budget) <= 0:
            decisions.append(_blocked(decision, "rate_limit",
                                      f"rate limit: {cycle.max_actions_per_hour} actions per hour"))
            continue
        if decision.dimension is Dimension.BYTES:
            if room is None:
                decisions.append(_blocked(decision, "cluster_reserve", "cluster capacity unknown"))
                continue
            if decision.growth > room:
                trimmed = _trim_to_room(decision, room)
                if trimmed is None:
                    decisions.append(_blocked(
                        decision, "cluster_reserve",
                        f"cluster reserve: {format_bytes(max(room, 0))} of room left this cycle, needs "
                        f"{format_bytes(decision.growth)}"))
                    continue
                decision = trimmed
        decision = _below_usage(decision)  # after any cap or trim, before it takes room or budget
        if decision.kind is not DecisionKind.GROW:
            decisions.append(decision)
            continue
        if decision.dimension is Dimension.BYTES and room is not None:
            room -= decision.growth
        if enforced:
            enforce_budget -= 1
        all_budget -= 1
        decisions.append(decision)
    return tuple(sorted(decisions, key=lambda d: (d.target.key, d.dimension.value)))


def _cooldown(decision: Decision, target: TargetInput, dimension: Dimension, now: float) -> Decision:
    last = target.last_growth_at.get(dimension)
    if last is None:
        return decision
    cooldown_end = last + target.policy.cooldown_seconds
    if now >= cooldown_end:
        return decision
    urgency = decision.urgency_seconds
    if urgency is not None and now + urgency < cooldown_end:
        return replace(decision, reason=f"cooldown bypassed: would hit the hard limit first; {decision.reason}")
    return _blocked(decision, "cooldown", f"cooldown for {format_duration(cooldown_end - now)} more")


def net_of_overcommit(capacity: ClusterCapacity | None) -> ClusterCapacity | None:
    """The pool as the cluster-reserve guard must see it: bytes the quotas already promise count
    as taken. With `quotas_allocated_bytes` known, free is at most usable − allocated, so growth
    stops (the guard blocks it) while the quotas over-commit the pool beyond its reserve; and at
    most free − the quotas' unused promises, the larger of VMS's totals (allocated − used) and the
    listed quotas' own (`listed_unused_bytes`: a quota over its limit does not cancel another's
    unused limit) — usable − allocated alone counted data outside any quota as free, and the
    quotas were grown until the pool filled. The promises are logical bytes and the pool physical:
    they count at the pool's data reduction (`data_reduction`), and the room `_cluster_room` hands
    out is logical again. Applied by each caller that plans growth from a pool
    sample — the growth stage and pre-flight — so both see one pool (the planner itself takes
    `CycleInput.capacity` as given)."""
    if capacity is None:
        return capacity
    bounds: list[int] = []
    allocated, used = capacity.quotas_allocated_bytes, capacity.quotas_used_bytes
    # quota limits and usage are logical bytes, the pool's usable and free physical: a promise
    # counts at the pool's data reduction (before, a 2:1 pool whose quotas promised its physical
    # size had every growth blocked while a third of it was used)
    reduction = data_reduction(capacity)
    if allocated is not None:
        bounds.append(capacity.usable_bytes - math.ceil(allocated / reduction))
    unused = [x for x in (None if allocated is None or used is None else allocated - used,
                          capacity.listed_unused_bytes) if x is not None]
    if unused:
        bounds.append(capacity.free_bytes - math.ceil(max(0, *unused) / reduction))
    if not bounds or min(bounds) >= capacity.free_bytes:
        return capacity
    return replace(capacity, free_bytes=min(bounds))


def data_reduction(capacity: ClusterCapacity) -> float:
    """Logical bytes per physical byte in the pool, as VMS reports it (`drr`); 1 where it is
    unknown or below 1 (no reduction to count on)."""
    return capacity.drr if capacity.drr is not None and math.isfinite(capacity.drr) and capacity.drr > 1.0 else 1.0


def unused_promises(observations: Iterable[Observation]) -> int:
    """Σ max(0, hard − used) in bytes over the quotas among `observations` that have a byte limit."""
    return sum(max(0, o.hard_limit_bytes - (o.used_bytes or 0)) for o in observations
               if o.target.kind is TargetKind.QUOTA and o.hard_limit_bytes)


def _cluster_room(cycle: CycleInput) -> int | None:
    """Bytes that may be added to hard limits this cycle while the reserve stays free: logical
    bytes (as the limits are), the physical room at the pool's data reduction."""
    cap = cycle.capacity
    if cap is None:
        return None
    physical = cap.free_bytes - math.ceil(cycle.cluster_reserve_ratio * cap.usable_bytes)
    return int(physical * data_reduction(cap)) if physical > 0 else int(physical)


def _trim_to_room(decision: Decision, room: int) -> Decision | None:
    """The largest growth that still fits in `room` (whole TiB when there is one), or None."""
    assert decision.current_hard is not None and decision.new_hard is not None
    unit = TIB if room >= TIB else 1
    fit = (room // unit) * unit
    if fit <= 0:
        return None
    new_hard = decision.current_hard + fit
    return replace(decision, new_hard=new_hard,
                   new_soft=_soft_for(decision.current_soft, decision.current_hard, new_hard),
                   guard="cluster_reserve",
                   reason=f"trimmed by the cluster reserve to +{format_bytes(fit)}; {decision.reason}")


# -------------------------------------------------------------------------- the baseline
REACTIVE_THRESHOLD = 0.90
REACTIVE_GROWTH_BYTES = TIB


def plan_reactive_cycle(cycle: CycleInput) -> tuple[Decision, ...]:
    """The baseline: a quota at or above 90 % gets a fixed +1 TiB. No guards but `below_usage`.

    A quota already more than 1 TiB over its limit gets as many 1 TiB steps as clear its usage:
    one step would be a limit below usage, which VMS refuses, so the baseline would never grow the
    quotas it most needs to react to."""
    decisions: list[Decision] = []
    for target in sorted(cycle.targets, key=lambda ti: ti.observation.target.key):
        obs = target.observation
        if obs.target.kind is not TargetKind.QUOTA or not obs.hard_limit_bytes:
            continue
        ratio = obs.used_bytes / obs.hard_limit_bytes
        base = Decision(target=obs.target, dimension=Dimension.BYTES, kind=DecisionKind.NONE,
                        reason=f"reactive: utilization {ratio:.2f} below {REACTIVE_THRESHOLD:.2f}",
                        t=cycle.now, current_used=obs.used_bytes, current_hard=obs.hard_limit_bytes,
                        current_soft=obs.soft_limit_bytes, numbers=(("utilization", ratio),))
        if ratio >= REACTIVE_THRESHOLD:
            steps = max(1, (obs.used_bytes - obs.hard_limit_bytes) // REACTIVE_GROWTH_BYTES + 1)
            new_hard = obs.hard_limit_bytes + steps * REACTIVE_GROWTH_BYTES
            base = replace(base, kind=DecisionKind.GROW, new_hard=new_hard,
                           new_soft=_soft_for(obs.soft_limit_bytes, obs.hard_limit_bytes, new_hard),
                           reason=f"reactive: utilization {ratio:.2f} ≥ {REACTIVE_THRESHOLD:.2f}, +{steps} TiB")
        decisions.append(_below_usage(base))
    return tuple(decisions)
