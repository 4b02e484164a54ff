"""The "order capacity by …" rule: window, severity, hysteresis, and its path through the state machine."""

from __future__ import annotations

from quotapilot.alerts.model import Severity, Status
from quotapilot.alerts.rules import RuleConfig, capacity_order_conditions, evaluate
from quotapilot.forecasting.capacity import PoolPlan
from quotapilot.forecasting.types import Runway

T0 = 1_767_571_200.0
DAY = 86400.0
C1 = "c1/pool/capacity_order"
"""The order alert of cluster c1's pool: the key of the rule's hysteresis state."""


def plan(order_in_days: float | None, *, now: float = T0, kind: str = "cluster", sized: bool = True) -> PoolPlan:
    return PoolPlan(name="c1", kind=kind, t=now, usable_bytes=10**15, used_bytes=5 * 10**14,
                    thresholds=(Runway(0.8, None, None, None, now + 365 * DAY),), horizon_end=now + 365 * DAY,
                    order_ratio=0.8, order_by=None if order_in_days is None else now + order_in_days * DAY,
                    order_bytes=10**14 if sized else None)


class TestCapacityOrderConditions:
    def test_window_and_severity(self) -> None:
        def severity(days: float | None) -> Severity | None:
            [condition] = capacity_order_conditions([plan(days)], now=T0, alert_lead_seconds=30 * DAY)
            return condition.severity

        assert [severity(d) for d in (45, 29, -1, None)] == [None, Severity.WARNING, Severity.CRITICAL, None]

    def test_ids_and_summary(self) -> None:
        [cluster] = capacity_order_conditions([plan(10)], now=T0, alert_lead_seconds=30 * DAY)
        [fs] = capacity_order_conditions([plan(10, kind="filesystem")], now=T0, alert_lead_seconds=30 * DAY)
        assert (cluster.alert_id, fs.alert_id) == ("c1/pool/capacity_order", "filesystems/c1/capacity_order")
        assert cluster.summary.startswith("order capacity for c1 by 2026-01-15: 100 TB usable")

    def test_hysteresis_keeps_a_due_order_due(self) -> None:
        [fresh] = capacity_order_conditions([plan(33)], now=T0, alert_lead_seconds=30 * DAY)
        [held] = capacity_order_conditions([plan(33)], now=T0, alert_lead_seconds=30 * DAY, due_before={C1: True})
        [gone] = capacity_order_conditions([plan(40)], now=T0, alert_lead_seconds=30 * DAY, due_before={C1: True})
        assert (fresh.severity, held.severity, gone.severity) == (None, Severity.WARNING, None)

    def test_hysteresis_keeps_an_overdue_order_critical(self) -> None:
        # a young forecast's order-by date swings across now: once passed, it stays critical until
        # it moves more than the hysteresis beyond now, or the page would escalate again and again
        def severity(days: float, overdue: bool) -> Severity | None:
            [condition] = capacity_order_conditions([plan(days)], now=T0, alert_lead_seconds=30 * DAY,
                                                    due_before={C1: True}, overdue_before={C1: overdue})
            return condition.severity

        assert [severity(5, False), severity(5, True), severity(9, True)] == [
            Severity.WARNING, Severity.CRITICAL, Severity.WARNING]

    def test_an_order_date_swinging_across_now_escalates_once(self) -> None:
        config = RuleConfig()
        states: dict = {}
        raised = []
        overdue = False
        for day, order_in_days in enumerate((10, 5, -3, 6, -2, 4, -1)):
            now = T0 + day * DAY
            [condition] = capacity_order_conditions(
                [plan(order_in_days, now=now)], now=now, alert_lead_seconds=30 * DAY, for_seconds=0.0,
                due_before={C1: day > 0}, overdue_before={C1: overdue})
            overdue = condition.severity is Severity.CRITICAL
            result = evaluate(states, [condition], config, now)
            states.update(result.states)
            raised.extend(n.severity for n in result.notifications if not n.renotify)
        assert raised == [Severity.WARNING, Severity.CRITICAL]

    def test_hysteresis_is_per_pool_not_per_name(self) -> None:
        """A cluster `c1` and a filesystem `c1` are two pools: the filesystem's order being due
        holds nothing of the cluster's (the state is keyed by alert id, not by name)."""
        fs_due = {"filesystems/c1/capacity_order": True}
        [cluster] = capacity_order_conditions([plan(33)], now=T0, alert_lead_seconds=30 * DAY, due_before=fs_due)
        [fs] = capacity_order_conditions([plan(33, kind="filesystem")], now=T0, alert_lead_seconds=30 * DAY,
                                         due_before=fs_due)
        assert (cluster.severity, fs.severity) == (None, Severity.WARNING)

    def test_an_unsized_plan_says_nothing(self) -> None:
        assert capacity_order_conditions([plan(None, sized=False)], now=T0, alert_lead_seconds=DAY) == []

    def test_fires_only_after_holding_for_seconds(self) -> None:
        config = RuleConfig()
        states: dict = {}
        notes = []
        for hours in (0, 12, 24, 36):
            now = T0 + hours * 3600
            conditions = capacity_order_conditions([plan(5, now=T0)], now=now, alert_lead_seconds=30 * DAY,
                                                   for_seconds=DAY)
            result = evaluate(states, conditions, config, now)
            states.update(result.states)
            notes.extend((hours, n.status, n.severity) for n in result.notifications)
        assert notes == [(24, Status.FIRING, Severity.WARNING)]
