"""The capacity-planning stage: each cycle, the plan of the cluster's pool (and of each filesystem
pool that reports into it), published as an immutable `CapacityView`.

It reads what the forecaster already put into the cycle (the pool's bytes forecast; the pool is a
target like any other) and the poll's `ClusterCapacity` (usable, used, DRR), and the quota
observations for the headroom granted; the arithmetic is `quotapilot.forecasting.capacity`
(pure). Built with explicit collaborators: its settings group, the clock, and optionally a
`raise_alerts` callable (the alerting stage's `raise_conditions`) through which the "order
capacity by …" alert is evaluated — so it runs after the alerting stage.

`CapacityCollector` yields, per pool, from the view (no IO): the order-by timestamp, each
threshold's date per quantile, the bytes to order and the cost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from prometheus_client.core import GaugeMetricFamily, Metric

from quotapilot.alerts.model import Condition, Severity
from quotapilot.alerts.rules import capacity_order_conditions
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.leadership import Leadership, acts_on
from quotapilot.daemon.settings import CapacitySettings
from quotapilot.forecasting.capacity import CapacityPolicy, PoolPlan, plan_pool, quota_headroom
from quotapilot.forecasting.types import POOL_TARGET, Dimension, Forecast, TargetId, TargetKind

log = get_logger(__name__)

POOL_KIND_CLUSTER = "cluster"
POOL_KIND_FILESYSTEM = "filesystem"

RaiseAlerts = Callable[[Sequence[Condition]], Awaitable[int]]
"""Evaluates conditions through the alert state machine and outbox (`AlertingStage.raise_conditions`)."""


def capacity_policy(settings: CapacitySettings) -> CapacityPolicy:
    return CapacityPolicy(thresholds=tuple(sorted(settings.thresholds)),
                          procurement_lead_time_seconds=settings.procurement_lead_time,
                          plan_horizon_seconds=settings.plan_horizon,
                          price_per_tb=settings.price_per_tb, price_per_tb_month=settings.price_per_tb_month)


@dataclass(frozen=True, slots=True)
class CapacityView:
    """What the collector and `/api/v1/capacity` read: replaced as a whole after each cycle."""

    t: float
    plans: Mapping[tuple[str, str], PoolPlan] = field(default_factory=lambda: MappingProxyType({}))
    """(kind, name) → plan; a cluster pool's name is the cluster's."""

    def ordered(self) -> list[PoolPlan]:
        return [self.plans[key] for key in sorted(self.plans)]


class CapacityStage:
    """The `capacity` stage (after the forecaster; after alerting when it raises alerts)."""

    name = "capacity"

    def __init__(self, settings: CapacitySettings, clock: Clock, *,
                 raise_alerts: RaiseAlerts | None = None, leadership: Leadership | None = None) -> None:
        """`leadership`: in a fleet, a cluster pool's order alert is evaluated by its leader only
        (as the alerting stage evaluates that cluster's alerts); the plan is made everywhere."""
        self.settings = settings
        self.leadership = leadership
        self.policy = capacity_policy(settings)
        self.clock = clock
        self.raise_alerts = raise_alerts
        self._plans: dict[tuple[str, str], PoolPlan] = {}
        self._due: dict[str, bool] = {}
        self._overdue: dict[str, bool] = {}
        self._last_due: dict[str, Condition] = {}
        self._clear_since: dict[str, float] = {}
        """Per pool, by its order alert's id (a cluster `x` and a filesystem `x` are two pools): was
        its order due (overdue) at the last evaluation, its last due condition, since when it is
        clear (the alert's hysteresis)."""
        self.view = CapacityView(t=clock.now())

    def collector(self) -> CapacityCollector:
        return CapacityCollector(lambda: self.view)

    async def on_cycle(self, ctx: CycleContext) -> None:
        poll = ctx.poll
        if not poll.ok:
            return
        filesystems = [plan_pool(name=obs.target.name, kind=POOL_KIND_FILESYSTEM, now=ctx.now,
                                 usable_bytes=obs.hard_limit_bytes or 0, used_bytes=obs.used_bytes,
                                 forecast=_forecast_of(ctx, obs.target), policy=self.policy,
                                 provisional=_provisional(ctx, obs.target))
                       for obs in poll.observations if obs.target.kind is TargetKind.FILESYSTEM]
        for plan in filesystems:
            self._plans[(POOL_KIND_FILESYSTEM, plan.name)] = plan
        if filesystems:
            self._publish(ctx.now)
            await self._raise(filesystems, ctx.now, paths={obs.target.name: obs.target.path for obs in poll.observations
                                                           if obs.target.kind is TargetKind.FILESYSTEM})
        if poll.capacity is None:
            return
        capacity = poll.capacity
        pool = TargetId(capacity.cluster, POOL_TARGET, "/", TargetKind.POOL)
        series = ctx.forecasts.get((pool, Dimension.BYTES))
        forecast = None if series is None else (series.forecast or series.provisional)
        headroom = quota_headroom([(obs.used_bytes, obs.hard_limit_bytes) for obs in poll.observations
                                   if obs.target.kind is TargetKind.QUOTA])
        plan = plan_pool(name=capacity.cluster, kind=POOL_KIND_CLUSTER, now=ctx.now,
                         usable_bytes=capacity.usable_bytes, used_bytes=capacity.used_bytes,
                         forecast=forecast, policy=self.policy, drr=capacity.drr, headroom_bytes=headroom,
                         provisional=_provisional(ctx, pool))
        self._plans[(POOL_KIND_CLUSTER, capacity.cluster)] = plan
        self._publish(ctx.now)
        if acts_on(self.leadership, capacity.cluster):  # a standby's memory of it would diverge
            await self._raise([plan], ctx.now)

    async def _raise(self, plans: Sequence[PoolPlan], now: float, paths: Mapping[str, str] | None = None) -> None:
        """Evaluate the plans' order alerts (`paths`: a filesystem's mount point by name, its alert's `path`)."""
        if self.raise_alerts is None or self.settings.procurement_lead_time is None:
            return
        # a plan from the stopgap is shown (the API, metrics), never alerted: "the alert rules say
        # nothing until a model is fitted" (two samples of a pool ordered 8.7 PB for a 2 PB pool)
        plans = [plan for plan in plans if not plan.provisional]
        conditions = capacity_order_conditions(
            plans, now=now, alert_lead_seconds=self.settings.alert_lead_time,
            for_seconds=self.settings.alert_for, due_before=self._due, overdue_before=self._overdue,
            paths=paths)
        held = []
        for condition in conditions:
            key = condition.alert_id
            if condition.severity is not None:
                self._last_due[key] = condition
                self._clear_since.pop(key, None)
            elif self._due.get(key):
                # an order that was due resolves only once it has stayed clear for `alert_for`, as
                # it fired only once it had held that long: a young pool forecast swings both ways
                since = self._clear_since.setdefault(key, now)
                if now - since < self.settings.alert_for and key in self._last_due:
                    held.append(self._last_due[key])
                    continue
            self._due[key] = condition.severity is not None
            self._overdue[key] = condition.severity is Severity.CRITICAL
            held.append(condition)
        await self.raise_alerts(held)

    def _publish(self, now: float) -> None:
        self.view = CapacityView(t=now, plans=MappingProxyType(dict(self._plans)))


def _forecast_of(ctx: CycleContext, target: TargetId) -> Forecast | None:
    series = ctx.forecasts.get((target, Dimension.BYTES))
    return None if series is None else (series.forecast or series.provisional)


def _provisional(ctx: CycleContext, target: TargetId) -> bool:
    """The target's plan extends the stopgap (no model fitted yet)."""
    series = ctx.forecasts.get((target, Dimension.BYTES))
    return series is not None and series.forecast is None and series.provisional is not None


# ---------------------------------------------------------------------------------- metrics
TIME_QUANTILE_LABELS: dict[str, str] = {"p10": "0.9", "p50": "0.5", "p90": "0.1"}
"""Usage path → the `quantile` label of its crossing time (as for the runway metric): the p90
usage path crosses first, so its date is the 10th percentile (the pessimistic one)."""
COST_ITEMS: tuple[str, ...] = ("expansion", "expansion_per_month", "headroom", "headroom_per_month")


class CapacityCollector:
    """Prometheus families from the stage's latest `CapacityView` (no IO, no mutation).

    Cluster pools: `quotapilot_cluster_*` with label `cluster`; filesystem pools:
    `quotapilot_filesystem_*` with label `filesystem`. A date beyond the plan horizon, or an
    order-by without a configured lead time, has no sample.
    """

    def __init__(self, view: Callable[[], CapacityView]) -> None:
        self._view = view

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        for kind, label in ((POOL_KIND_CLUSTER, "cluster"), (POOL_KIND_FILESYSTEM, "filesystem")):
            plans = [plan for plan in view.ordered() if plan.kind == kind]
            if plans or kind == POOL_KIND_CLUSTER:
                yield from _families(f"quotapilot_{kind}", label, plans)


def _families(prefix: str, label: str, plans: Sequence[PoolPlan]) -> Iterator[Metric]:
    order_by = GaugeMetricFamily(
        f"{prefix}_order_by_timestamp_seconds",
        "When to order capacity: the pessimistic date of the lowest planning threshold minus "
        "[capacity] procurement_lead_time (unix seconds; may be past: overdue).", labels=[label])
    # a summary of quantiles without _sum/_count, as quotapilot_target_runway_seconds: Prometheus
    # reserves the `quantile` label for summaries
    threshold_name = f"{prefix}_capacity_threshold_timestamp_seconds"
    threshold = Metric(
        threshold_name,
        "When pool usage reaches threshold x usable capacity (unix seconds), as quantiles of that "
        "date: 0.1 is the pessimistic one; no sample beyond [capacity] plan_horizon.", "summary")
    order_bytes = GaugeMetricFamily(
        f"{prefix}_order_bytes",
        "Usable capacity to add so the median forecast stays at the lowest planning threshold until "
        "now + plan_horizon.", labels=[label])
    order_logical = GaugeMetricFamily(
        f"{prefix}_order_logical_bytes",
        "What the capacity to order holds at the pool's current data reduction ratio.", labels=[label])
    cost = GaugeMetricFamily(
        f"{prefix}_capacity_cost",
        "Cost (in the configured prices' unit) of the expansion and of the quota headroom granted; "
        "item: expansion, expansion_per_month, headroom, headroom_per_month.", labels=[label, "item"])
    for plan in plans:
        if plan.order_by is not None:
            order_by.add_metric([plan.name], plan.order_by)
        for runway in plan.thresholds:
            for path, quantile in TIME_QUANTILE_LABELS.items():
                when = getattr(runway, path)
                if when is not None:
                    labels = {label: plan.name, "threshold": str(float(runway.threshold_ratio)), "quantile": quantile}
                    threshold.add_sample(threshold_name, labels, when)
        if plan.order_bytes is not None:
            order_bytes.add_metric([plan.name], float(plan.order_bytes))
        if plan.order_logical_bytes is not None:
            order_logical.add_metric([plan.name], float(plan.order_logical_bytes))
        if plan.cost is not None:
            for item in COST_ITEMS:
                value = getattr(plan.cost, item)
                if value is not None:
                    cost.add_metric([plan.name, item], value)
    yield from (order_by, threshold, order_bytes, order_logical, cost)
