"""The alert rules: plain data and `now` in, new alert states and notifications out.

Pure (no asyncio, no IO). Two layers:

1. *conditions*: each rule looks at one cycle's `RuleInputs` (and the alert's previous state, for
   hysteresis and counters) and says, per alert id, which severity holds now — or nothing at all
   when it cannot tell (no data, or a sample VMS has said only once: `TargetInput.confirmed`), so
   an alert is never resolved by missing data, nor fired or resolved by one glitch;
2. *the state machine* (`step`): inactive → pending (`for_seconds`) → firing → resolved, with
   re-notification of firing alerts and a notification on every severity change.

Alert ids are `cluster/target/kind`; `kind` carries a suffix for the inode dimension
(`utilization_inodes`) and for the growth sub-kinds (`growth_blocked`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Protocol

from quotapilot.alerts.model import (
    AlertState,
    Condition,
    Notification,
    Phase,
    Severity,
    Status,
    alert_id,
)
from quotapilot.alerts.words import iso8601, runway_in_words
from quotapilot.forecasting.capacity import PoolPlan
from quotapilot.forecasting.types import POOL_TARGET
from quotapilot.forecasting.words import format_decimal_bytes, format_limit

DAEMON_CLUSTER = "_daemon"
"""The `cluster` part of daemon alert ids (`_daemon/<task>/daemon`); not a valid cluster name."""
COLLECTOR_TARGET = "vms"
"""The `target` part of collector alert ids (`<cluster>/vms/collector`)."""

_WARNING_OR_CRITICAL = (Severity.WARNING, Severity.CRITICAL)
KIND_SEVERITIES: Mapping[str, tuple[Severity, ...]] = MappingProxyType({
    "utilization": _WARNING_OR_CRITICAL, "utilization_inodes": _WARNING_OR_CRITICAL,
    "runway": _WARNING_OR_CRITICAL, "runway_inodes": _WARNING_OR_CRITICAL,
    "quota_state": _WARNING_OR_CRITICAL, "ingest_anomaly": (Severity.WARNING,),
    "growth": (Severity.INFO,), "growth_inodes": (Severity.INFO,),
    "growth_would_grow": (Severity.INFO,), "growth_would_grow_inodes": (Severity.INFO,),
    "growth_blocked": _WARNING_OR_CRITICAL, "growth_blocked_inodes": _WARNING_OR_CRITICAL,
    "growth_failed": (Severity.CRITICAL,), "growth_failed_inodes": (Severity.CRITICAL,),
    "collector": (Severity.CRITICAL,), "daemon": (Severity.CRITICAL,),
    "capacity_order": _WARNING_OR_CRITICAL, "filesystem_unreachable": (Severity.CRITICAL,),
})
"""Every `kind` the rules produce and the severities it fires with (README "Alert kinds"). A kind
with more than one is one alert here, but one per severity at a receiver that tells alerts apart
by labels (Alertmanager): `formats.to_alertmanager` ends it under the others."""

ALERT_KINDS: tuple[str, ...] = tuple(KIND_SEVERITIES)
"""Every `kind` the rules produce (the `kind` label of quotapilot_alerts_firing: bounded)."""

QUOTA_STATE_SEVERITY: Mapping[str, Severity] = {
    "SOFT_EXCEEDED": Severity.WARNING,
    "GRACE_EXPIRED": Severity.CRITICAL,
    "HARD_EXCEEDED": Severity.CRITICAL,
}


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """The thresholds the rules use (from `[alerts.rules]`; utilization thresholds come per target
    from the growth policy's `warning_at` / `critical_at`)."""

    runway_warning_seconds: float = 72 * 3600.0
    runway_critical_seconds: float = 24 * 3600.0
    pool_runway_warning_seconds: float = 90 * 86400.0
    pool_runway_critical_seconds: float = 30 * 86400.0
    hysteresis_ratio: float = 0.02
    runway_hysteresis_ratio: float = 0.10
    for_seconds: float = 0.0
    renotify_seconds: float = 4 * 3600.0
    renotify_warning_seconds: float = 24 * 3600.0
    pool_renotify_seconds: float = 24 * 3600.0
    anomaly_margin_ratio: float = 1.0
    anomaly_floor_bytes_per_second: float = 1024.0 * 1024.0
    anomaly_samples: int = 6
    collector_failed_intervals: int = 3
    runway_beyond_horizon_resolve_seconds: float = 86400.0


# ------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True, slots=True)
class SeriesInput:
    """One dimension (bytes or inodes) of one target, as this cycle saw it.

    Runways are seconds from now until the series reaches 100 % of its limit on the p50 and the
    pessimistic (p90) path; None with `forecast_known` means "not within the horizon", while
    `forecast_known=False` means there is no forecast yet (the runway rule then says nothing).
    """

    used: float
    limit: float | None
    forecast_known: bool = False
    runway_p50_seconds: float | None = None
    runway_p90_seconds: float | None = None
    expected: tuple[float, float, float] | None = None
    """(t_end, p10, p90): the usage the forecast expects at the end of the next anomaly window."""
    horizon_seconds: float | None = None
    """How far ahead the forecast looks: a runway of None means "at least this long". A window
    longer than the horizon (the pool's procurement windows) cannot be cleared by "beyond"."""

    @property
    def utilization_ratio(self) -> float | None:
        if not self.limit:
            return None
        return self.used / self.limit

    @property
    def runway_seconds(self) -> float | None:
        """The shorter of the p50 and pessimistic runways (None: beyond the horizon)."""
        known = [r for r in (self.runway_p50_seconds, self.runway_p90_seconds) if r is not None]
        return max(0.0, min(known)) if known else None


@dataclass(frozen=True, slots=True)
class GrowthInput:
    """What the planner and the actuator did for one series this cycle.

    `status`: grown | would_grow | blocked | failed | none.
    """

    dimension: str  # "bytes" | "inodes"
    status: str
    reason: str = ""
    old_hard: int | None = None
    new_hard: int | None = None


@dataclass(frozen=True, slots=True)
class TargetInput:
    cluster: str
    target: str
    path: str
    is_pool: bool
    t: float
    state: str = "OK"
    warning_at: float = 0.80
    critical_at: float = 0.90
    bytes: SeriesInput | None = None
    inodes: SeriesInput | None = None
    growth: tuple[GrowthInput, ...] = ()
    growth_managed: bool = False
    """The daemon grows this quota itself (enforce mode, not paused, not blocked by a guard other
    than cooldown): its runway is then the daemon's job, not on-call's, and raises no alert."""
    confirmed: bool = True
    """False while no second sample agrees with this one (the collector's `unconfirmed`: the
    target's first sample, or a hard limit that moved without a write of ours): what is computed
    from it — utilization, runway, quota state, ingest, what the planner made of it — neither fires
    nor resolves an alert until a confirmed sample. What we did ourselves (a growth, a failed
    write) is said at once."""


@dataclass(frozen=True, slots=True)
class RuleInputs:
    """One poll cycle of one cluster, reduced to what the rules read."""

    cluster: str
    now: float
    poll_ok: bool = True
    poll_error: str | None = None
    invalid_samples: int = 0
    targets: tuple[TargetInput, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskHealth:
    """A supervised daemon task: crashed (with the error) or running."""

    name: str
    crashed: bool
    error: str = ""
    still_running: bool = False
    """With `crashed`: the task did not end but reports that its work keeps failing (it retries)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The result of one evaluation: the states that changed and what to send."""

    states: Mapping[str, AlertState]
    notifications: tuple[Notification, ...]


# --------------------------------------------------------------------------------- conditions
class _MakeCondition(Protocol):
    def __call__(self, kind: str, severity: Severity | None, summary: str, **extra: Any) -> Condition: ...


def _severity_of(state: AlertState | None) -> Severity | None:
    if state is None or state.phase is Phase.INACTIVE:
        return None
    return state.severity


def utilization_severity(value: float, warning_at: float, critical_at: float,
                         current: Severity | None, hysteresis: float) -> Severity | None:
    """Thresholds with hysteresis: an alert at a severity holds until the value falls
    `hysteresis` below that severity's threshold."""
    if value >= critical_at or (current is Severity.CRITICAL and value >= critical_at - hysteresis):
        return Severity.CRITICAL
    if value >= warning_at or (current in (Severity.WARNING, Severity.CRITICAL)
                               and value >= warning_at - hysteresis):
        return Severity.WARNING
    return None


def runway_severity(runway: float | None, warning_seconds: float, critical_seconds: float,
                    current: Severity | None, hysteresis_ratio: float,
                    horizon_seconds: float | None = None) -> Severity | None:
    """Shorter than a window fires; it resolves only once the runway is `hysteresis_ratio`
    longer than the window. A runway beyond the forecast's horizon (None) is only known to be at
    least `horizon_seconds`: it never fires, and it resolves (or lowers) a firing alert only as
    far as that bound proves — else a pool alert with a 30-day window flapped whenever one
    forecast saw the pool fill in 13 days and the next beyond its 14."""
    if runway is None:
        if horizon_seconds is None or current is None:
            return None
        runway = horizon_seconds
    if runway < critical_seconds or (current is Severity.CRITICAL
                                     and runway < critical_seconds * (1 + hysteresis_ratio)):
        return Severity.CRITICAL
    if runway < warning_seconds or (current in (Severity.WARNING, Severity.CRITICAL)
                                    and runway < warning_seconds * (1 + hysteresis_ratio)):
        return Severity.WARNING
    return None


def _suffix(dimension: str) -> str:
    return "" if dimension == "bytes" else f"_{dimension}"


def target_conditions(target: TargetInput, states: Mapping[str, AlertState],
                      config: RuleConfig) -> list[Condition]:
    """Utilization, runway, quota state, ingest anomaly and growth conditions of one target."""
    out: list[Condition] = []

    def make(kind: str, severity: Severity | None, summary: str, **extra: Any) -> Condition:
        return Condition(
            alert_id=alert_id(target.cluster, target.target, kind), kind=kind,
            cluster=target.cluster, target=target.target, path=target.path,
            severity=severity, summary=summary, **extra)

    def previous(kind: str) -> AlertState | None:
        return states.get(alert_id(target.cluster, target.target, kind))

    if not target.confirmed:  # VMS said it once: held as it was (a one-poll glitch paged, and resolved)
        return _growth_conditions(target, make, ours_only=True)
    name = target.target
    for dimension, series in (("bytes", target.bytes), ("inodes", target.inodes)):
        if series is None:
            continue
        suffix = _suffix(dimension)
        ratio = series.utilization_ratio
        if ratio is not None:
            kind = f"utilization{suffix}"
            severity = utilization_severity(ratio, target.warning_at, target.critical_at,
                                            _severity_of(previous(kind)), config.hysteresis_ratio)
            threshold = target.critical_at if severity is Severity.CRITICAL else target.warning_at
            out.append(make(kind, severity, f"{name} {dimension} at {ratio:.1%} of the hard limit",
                            value=ratio, threshold=threshold))
        if target.growth_managed and not target.is_pool:
            kind = f"runway{suffix}"
            out.append(make(kind, None, f"{name} {dimension}: grown by quotapilot as needed"))
        elif series.forecast_known:
            kind = f"runway{suffix}"
            warning, critical = ((config.pool_runway_warning_seconds, config.pool_runway_critical_seconds)
                                 if target.is_pool else
                                 (config.runway_warning_seconds, config.runway_critical_seconds))
            runway = series.runway_seconds
            before = previous(kind)
            severity = runway_severity(runway, warning, critical, _severity_of(before),
                                       config.runway_hysteresis_ratio, series.horizon_seconds)
            # the last time the forecast saw the limit within its horizon: an alert kept firing
            # on "beyond" alone resolves once that is runway_beyond_horizon_resolve_seconds ago
            seen_at = target.t
            if runway is None and before is not None:
                seen_at = before.remembered("seen_at", target.t) or target.t
            if (runway is None and severity is not None
                    and target.t - seen_at >= config.runway_beyond_horizon_resolve_seconds):
                severity = None
            if runway is not None:
                summary = f"{name} {dimension} full in {runway_in_words(runway)}"
            elif series.horizon_seconds:
                summary = f"{name} {dimension} full in more than {runway_in_words(series.horizon_seconds)}"
            else:
                summary = f"{name} {dimension} not full within the forecast horizon"
            out.append(make(kind, severity, summary, value=runway,
                            threshold=critical if severity is Severity.CRITICAL else warning,
                            runway_seconds=runway,
                            memory=(("seen_at", float(seen_at)),) if severity is not None else ()))
    if not target.is_pool:
        severity = QUOTA_STATE_SEVERITY.get(target.state)
        out.append(make("quota_state", severity, f"{name} quota state {target.state}",
                        labels=(("quota_state", target.state),), for_seconds=0.0))
    if target.bytes is not None and not target.is_pool:  # the pool's ingest is its quotas'
        anomaly = _anomaly_condition(target, target.bytes, previous("ingest_anomaly"), config)
        if anomaly is not None:
            out.append(make("ingest_anomaly", anomaly[0], anomaly[1], value=anomaly[2],
                            memory=anomaly[3], for_seconds=0.0))
    out.extend(_growth_conditions(target, make))
    return out


REFUSING_STATES = frozenset({"HARD_EXCEEDED", "GRACE_EXPIRED", "HARD_BOTH_EXCEEDED", "INODE_HARD_EXCEEDED"})
"""VMS quota states in which VAST refuses writes (`../shared/vast-api/README.md`): a stall then is
the quota's, not the feed's."""


def _anomaly_condition(
    target: TargetInput, series: SeriesInput, state: AlertState | None, config: RuleConfig,
) -> tuple[Severity | None, str, float | None, tuple[tuple[str, float], ...]] | None:
    """What was written over the last window (`anomaly_samples` polls) against what the forecast
    expected for that window when it began (its p10–p90 band, so seasonality is accounted for):
    a spike above the p90 increment × (1 + margin), or a stall below the p10 increment ÷ (1 +
    margin), while writes are expected. A window in which usage went down (deletes, a sweep) says
    nothing about ingest. An anomalous window fires; a normal one resolves."""
    memory = dict(state.memory) if state else {}
    current = _severity_of(state)
    summary = state.summary if state else ""
    severity = current
    observed: float | None = None
    w_end = memory.get("w_end")
    if w_end is not None and target.t >= w_end - 1.0:
        t0, u0, low, high = memory["w_t0"], memory["w_u0"], memory["w_low"], memory["w_high"]
        span = target.t - t0
        late = target.t - w_end > (w_end - t0) / 2  # polls were missed: the expectation is stale
        written = series.used - u0
        if span > 0 and not late and written >= 0:
            observed = written / span
            floor = config.anomaly_floor_bytes_per_second * span
            margin = config.anomaly_margin_ratio
            expected_low, expected_high = low - u0, high - u0
            # judged only when the whole band expects writes: where it expects deletes (a
            # sweep) a missed or shifted sweep would look like a spike
            growing = expected_low > floor
            spike = growing and written > expected_high * (1 + margin)
            stall = growing and written < expected_low / (1 + margin)
            per_day = 86400.0 / 1e12 / span
            if spike or stall:
                severity = Severity.WARNING
                summary = (f"{target.target} ingest {'spike' if spike else 'stall'}: "
                           f"{written * per_day:.2f} TB/day, forecast {expected_low * per_day:.2f} to "
                           f"{expected_high * per_day:.2f} TB/day")
                if stall and target.state in REFUSING_STATES:  # not the feed: VAST holds the quota
                    summary += f"; the quota refuses writes ({target.state})"
            else:
                if current is not None:
                    summary = f"{target.target} ingest back within the forecast band"
                severity = None
        w_end = None
    if w_end is None:  # open the next window
        memory = {}
        if series.expected is not None and series.expected[0] > target.t:
            end, low, high = series.expected
            memory = {"w_t0": target.t, "w_u0": float(series.used), "w_end": end, "w_low": low, "w_high": high}
    return severity, summary, observed, tuple(sorted(memory.items())) or (("idle", 1.0),)


def _growth_conditions(target: TargetInput, make: _MakeCondition, *, ours_only: bool = False) -> list[Condition]:
    """`ours_only`: only what our own writes did (a growth, a failed write), not what the planner
    concluded from the sample (would grow, blocked)."""
    conditions: list[Condition] = []
    by_dimension: dict[str, list[GrowthInput]] = {}
    for item in target.growth:
        by_dimension.setdefault(item.dimension, []).append(item)
    for dimension, items in by_dimension.items():
        suffix = _suffix(dimension)
        statuses = {item.status for item in items}
        name = f"{target.target}{'' if dimension == 'bytes' else ' inodes'}"
        for item in items:
            if item.status == "grown":
                conditions.append(make(
                    f"growth{suffix}", Severity.INFO,
                    f"{name} grown from {_amount(item.old_hard, dimension)} to {_amount(item.new_hard, dimension)}: "
                    f"{item.reason}",
                    value=float(item.new_hard or 0), event=True, for_seconds=0.0))
        if not ours_only:
            conditions.extend(_planned_conditions(name, suffix, items, make))
        failed = next((i for i in items if i.status == "failed"), None)
        if failed is not None:
            conditions.append(make(
                f"growth_failed{suffix}", Severity.CRITICAL, f"{name} growth failed: {failed.reason}",
                for_seconds=0.0))
        elif "grown" in statuses:
            conditions.append(make(
                f"growth_failed{suffix}", None, f"{name} grown and verified", for_seconds=0.0))
    return conditions


def _planned_conditions(name: str, suffix: str, items: list[GrowthInput], make: _MakeCondition) -> list[Condition]:
    """What the planner concluded for one series: would grow (observe mode), growth blocked."""
    would = next((i for i in items if i.status == "would_grow"), None)
    blocked = next((i for i in items if i.status == "blocked"), None)
    severity = None
    if blocked is not None:
        severity = Severity.CRITICAL if "reserve" in blocked.reason else Severity.WARNING
    return [
        make(f"growth_would_grow{suffix}", Severity.INFO if would else None,
             (f"{name} would grow from {_amount(would.old_hard, would.dimension)} to "
              f"{_amount(would.new_hard, would.dimension)} "
              f"(observe mode): {would.reason}") if would else f"{name} no longer needs to grow",
             for_seconds=0.0),
        make(f"growth_blocked{suffix}", severity,
             f"{name} growth blocked: {blocked.reason}" if blocked else f"{name} growth no longer blocked",
             for_seconds=0.0),
    ]


def _amount(value: int | None, dimension: str) -> str:
    """A hard limit as people read it: bytes in binary units (a 100 GiB tier grown to 110 GiB read
    "from 0.1 TiB to 0.1 TiB"), an inode limit as a count of files."""
    if value is None:
        return "?"
    return format_limit(value, dimension)


def collector_condition(inputs: RuleInputs, state: AlertState | None, config: RuleConfig) -> Condition:
    """VMS unreachable or answering only invalid data for N polls in a row; one good poll resolves."""
    failed_before = int(state.remembered("failed", 0.0) or 0) if state else 0
    bad = not inputs.poll_ok or (not inputs.targets and inputs.invalid_samples > 0)
    failed = failed_before + 1 if bad else 0
    severity = Severity.CRITICAL if failed >= config.collector_failed_intervals else None
    reason = inputs.poll_error or f"{inputs.invalid_samples} invalid samples"
    summary = (f"VMS of {inputs.cluster}: {failed} failed polls in a row ({reason})" if bad
               else f"VMS of {inputs.cluster} answers again")
    return Condition(
        alert_id=alert_id(inputs.cluster, COLLECTOR_TARGET, "collector"), kind="collector",
        cluster=inputs.cluster, target=COLLECTOR_TARGET, path="/", severity=severity,
        summary=summary, value=float(failed), memory=(("failed", float(failed)),), for_seconds=0.0)


def cycle_conditions(inputs: RuleInputs, states: Mapping[str, AlertState],
                     config: RuleConfig) -> list[Condition]:
    conditions = [collector_condition(
        inputs, states.get(alert_id(inputs.cluster, COLLECTOR_TARGET, "collector")), config)]
    for target in inputs.targets:
        conditions.extend(target_conditions(target, states, config))
    return conditions


def task_conditions(tasks: Iterable[TaskHealth], instance: str | None = None) -> list[Condition]:
    """A crashed supervised task (or one that keeps failing) is critical until it runs again.
    `instance`: in a fleet, the instance whose tasks these are — its alerts are its own
    (`_daemon/<task>@<instance>/daemon`; the states are shared, and a healthy peer resolved another
    instance's alert while that one was still broken); alone, None (`_daemon/<task>/daemon`)."""
    out = []
    for task in tasks:
        target = task.name if instance is None else f"{task.name}@{instance}"
        where = "" if instance is None else f" on {instance}"
        out.append(Condition(
            alert_id=alert_id(DAEMON_CLUSTER, target, "daemon"), kind="daemon",
            cluster=DAEMON_CLUSTER, target=target, path="/",
            severity=Severity.CRITICAL if task.crashed else None,
            summary=(f"daemon task {task.name}{where} {'keeps failing' if task.still_running else 'crashed'}: "
                     f"{task.error}" if task.crashed else f"daemon task {task.name}{where} runs again"),
            for_seconds=0.0))
        if instance is not None:  # one stored under the id without an instance (before 2026-12-05) ends
            out.append(Condition(
                alert_id=alert_id(DAEMON_CLUSTER, task.name, "daemon"), kind="daemon", cluster=DAEMON_CLUSTER,
                target=task.name, path="/", severity=None, for_seconds=0.0,
                summary=f"daemon task {task.name}: alerted per instance now, as {target}"))
    return out


def capacity_order_conditions(plans: Iterable[PoolPlan], *, now: float, alert_lead_seconds: float,
                              for_seconds: float = 86400.0, due_before: Mapping[str, bool] | None = None,
                              overdue_before: Mapping[str, bool] | None = None,
                              hysteresis_ratio: float = 0.25,
                              paths: Mapping[str, str] | None = None) -> list[Condition]:
    """"Order capacity by …": warning from `alert_lead_seconds` before a pool's order-by date,
    critical once it has passed, after the condition has held `for_seconds` (a young forecast
    swings; a purchase is not a matter of hours). A pool whose order was due at the previous
    evaluation (`due_before[<its alert id>]`, not its name: a cluster and a filesystem of the same
    name are two pools) stays due until its order-by date moves more than `hysteresis_ratio` × the
    lead beyond the window, or beyond the plan horizon; one whose order-by date had passed
    (`overdue_before[<its alert id>]`) stays critical until that date moves more than
    `hysteresis_ratio` × the lead beyond now (a swing across now would otherwise de-escalate it
    silently and page again as a new escalation at the next swing back). Says nothing for a
    plan without an order-by date that could not be sized (no forecast), so missing data never
    resolves it. Plans without a procurement lead time have no order-by date: pass none. A plan
    with nothing to order (`order_bytes` 0) has no order due. `paths`: a filesystem's mount point
    by name (its alert's `path`, as its other alerts carry; "/" for a cluster pool)."""
    conditions = []
    for plan in plans:
        if plan.order_bytes is None:
            continue
        if plan.order_bytes <= 0:
            # above a threshold already, but the median path needs nothing more within the
            # horizon (a pool being emptied): "order 0 TB by <weeks ago>" paged critical. The
            # utilization alerts speak for the level; an order that was due resolves.
            plan = replace(plan, order_by=None)
        target = POOL_TARGET if plan.kind == "cluster" else plan.name
        cluster = plan.name if plan.kind == "cluster" else "filesystems"
        order_id = alert_id(cluster, target, "capacity_order")
        window = alert_lead_seconds * (1.0 + hysteresis_ratio if (due_before or {}).get(order_id) else 1.0)
        severity: Severity | None = None
        summary = f"{plan.name}: no capacity order due within {runway_in_words(alert_lead_seconds)}"
        if plan.order_by is not None and now >= plan.order_by - window:
            overdue_from = plan.order_by - (alert_lead_seconds * hysteresis_ratio
                                            if (overdue_before or {}).get(order_id) else 0.0)
            severity = Severity.CRITICAL if now >= overdue_from else Severity.WARNING
            summary = (f"order capacity for {plan.name} by {iso8601(plan.order_by)[:10]}: "
                       f"{format_decimal_bytes(plan.order_bytes or 0)} usable to stay under {plan.order_ratio:.0%} "
                       "for the plan horizon")
        conditions.append(Condition(
            alert_id=order_id, kind="capacity_order", cluster=cluster,
            target=target, path=(paths or {}).get(plan.name, "/") if plan.kind != "cluster" else "/",
            severity=severity, summary=summary,
            value=None if plan.order_by is None else plan.order_by - now, threshold=plan.order_ratio,
            runway_seconds=None if plan.order_by is None else max(0.0, plan.order_by - now),
            for_seconds=for_seconds))
    return conditions


# ------------------------------------------------------------------------------ state machine
def step(state: AlertState, condition: Condition, config: RuleConfig,
         now: float) -> tuple[AlertState, Notification | None]:
    """Advance one alert by one condition. Returns the new state and at most one notification."""
    memory = condition.memory or state.memory
    if memory != state.memory or condition.kind != state.kind:
        state = state.evolve(memory=memory, kind=condition.kind)
    severity = condition.severity
    for_seconds = config.for_seconds if condition.for_seconds is None else condition.for_seconds

    if condition.event:
        if severity is None:
            return state, None
        state = state.evolve(episode=state.episode + 1, sequence=state.sequence + 1,
                             last_notified_at=now, started_at=now, summary=condition.summary,
                             phase=Phase.INACTIVE, severity=None, pending_since=None)
        return state, _notification(state, condition, Status.FIRING, severity, now, ended_at=now,
                                    event=True)

    if severity is None:
        if state.phase is Phase.FIRING:
            fired_severity = state.severity or Severity.INFO
            state = state.evolve(phase=Phase.INACTIVE, sequence=state.sequence + 1,
                                 last_notified_at=now, summary=condition.summary, pending_since=None)
            note = _notification(state, condition, Status.RESOLVED, fired_severity, now, ended_at=now,
                                 previous=state.notified_severity)
            return state.evolve(severity=None, notified_severity=None), note
        if state.phase is Phase.INACTIVE:
            return state, None  # the common case: nothing wrong, nothing to write
        return state.evolve(phase=Phase.INACTIVE, severity=None, pending_since=None,
                            summary=condition.summary), None

    if state.phase is Phase.INACTIVE:
        state = state.evolve(phase=Phase.PENDING, pending_since=now, severity=severity)
    if state.phase is Phase.PENDING:
        since = state.pending_since if state.pending_since is not None else now
        if now - since < for_seconds:
            return state.evolve(severity=severity, summary=condition.summary), None
        state = state.evolve(phase=Phase.FIRING, severity=severity, episode=state.episode + 1,
                             sequence=state.sequence + 1, started_at=now, last_notified_at=now,
                             summary=condition.summary, pending_since=None, notified_severity=severity)
        return state, _notification(state, condition, Status.FIRING, severity, now)

    # firing: notify when the severity rises, and again every re-notify interval; a lower
    # severity is recorded silently (the next re-notify or the resolve carries it). That next
    # re-notify comes no later than the last notification's own interval: its receivers hold it
    # for twice that (`expiry_seconds`), so a critical that dropped to warning is re-sent after
    # 4 h, not 24 h (its 8 h expiry would have lapsed in between).
    # Firing without a notified severity is a state stored before that field existed: its last
    # notification went out with the old expiry (8 h at every severity), so its receivers have
    # likely ended it, and an info alert would never be re-sent. It is re-sent once, now.
    escalated = severity.rank > (state.severity or Severity.INFO).rank
    last = state.last_notified_at if state.last_notified_at is not None else now
    interval = renotify_interval(condition.target, severity, config)
    if state.notified_severity is not None and state.notified_severity is not severity:
        interval = _sooner(interval, renotify_interval(condition.target, state.notified_severity, config))
    due = state.notified_severity is None or (interval > 0 and now - last >= interval)
    if not (escalated or due):
        if severity is not state.severity:
            return state.evolve(severity=severity, summary=condition.summary), None
        return (state if state.summary == condition.summary else state.evolve(summary=condition.summary)), None
    previous = state.notified_severity
    state = state.evolve(severity=severity, sequence=state.sequence + 1, last_notified_at=now,
                         summary=condition.summary, notified_severity=severity)
    return state, _notification(state, condition, Status.FIRING, severity, now, renotify=not escalated,
                                previous=previous)


def renotify_interval(target: str, severity: Severity, config: RuleConfig) -> float:
    """How often a firing alert of `target` at `severity` is re-sent (0: never). Critical:
    `renotify_seconds`; warning: `renotify_warning_seconds`; info: never. The cluster pool's
    alerts are a procurement matter: at most `pool_renotify_seconds`."""
    interval = {Severity.CRITICAL: config.renotify_seconds,
                Severity.WARNING: config.renotify_warning_seconds}.get(severity, 0.0)
    if interval > 0 and target == POOL_TARGET:
        interval = max(interval, config.pool_renotify_seconds)
    return interval


def _sooner(interval: float, other: float) -> float:
    """The shorter of two re-send intervals, where 0 is never."""
    return min(interval, other) if interval > 0 and other > 0 else max(interval, other)


NEVER_RESENT_EXPIRY_SECONDS = 10 * 365 * 86400.0
"""The expiry of a firing alert the rules never re-send (info; a re-send interval of 0): ten
years, for "not while it fires". Leaving it out is no way to say so: Alertmanager ends an alert
without `endsAt` after its `resolve_timeout` (5 minutes by default)."""


def expiry_seconds(note: Notification, config: RuleConfig, *, evaluated_every_seconds: float = 0.0) -> float:
    """How long after `note` its receivers should hold the alert firing without hearing more (the
    payload's `expires_at`, Alertmanager's `endsAt`): twice its re-send interval at its severity
    (`renotify_interval`; the rules re-send it at the first evaluation past that interval, so at
    least every `evaluated_every_seconds`). One the rules never re-send (info; an interval of 0)
    gets `NEVER_RESENT_EXPIRY_SECONDS`; an event (no resolve, `ended_at` set) expires at once."""
    if note.event:
        return 0.0
    interval = renotify_interval(note.target, note.severity, config)
    if interval <= 0:
        return NEVER_RESENT_EXPIRY_SECONDS
    return 2 * max(interval, evaluated_every_seconds)


def _notification(state: AlertState, condition: Condition, status: Status, severity: Severity,
                  now: float, *, ended_at: float | None = None, event: bool = False,
                  renotify: bool = False, previous: Severity | None = None) -> Notification:
    """`previous`: the severity the alert was last notified with (None: none is out)."""
    return Notification(
        alert_id=condition.alert_id, dedup_key=f"{condition.alert_id}#{state.sequence}",
        sequence=state.sequence, episode=state.episode, status=status, severity=severity,
        kind=condition.kind, cluster=condition.cluster, target=condition.target, path=condition.path,
        summary=condition.summary, evaluated_at=now,
        started_at=state.started_at if state.started_at is not None else now, ended_at=ended_at,
        value=condition.value, threshold=condition.threshold, runway_seconds=condition.runway_seconds,
        event=event, renotify=renotify, labels=condition.labels,
        previous_severity=previous if previous is not severity else None)


def evaluate(states: Mapping[str, AlertState], conditions: Iterable[Condition], config: RuleConfig,
             now: float) -> Evaluation:
    """Run the state machine of every alert a condition speaks about."""
    changed: dict[str, AlertState] = {}
    notes: list[Notification] = []
    for condition in conditions:
        before = changed.get(condition.alert_id) or states.get(condition.alert_id) \
            or AlertState(alert_id=condition.alert_id, kind=condition.kind)
        after, note = step(before, condition, config, now)
        if after != before:
            changed[condition.alert_id] = after
        if note is not None:
            notes.append(note)
    return Evaluation(states=changed, notifications=tuple(notes))
