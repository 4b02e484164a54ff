"""The capacity stage, its metrics, `/api/v1/capacity`, `quotapilot capacity` and `[capacity]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from capacity_cycles import DAY, HOUR, T0, TB, RecordingAlerts, pool_cycle
from prometheus_client import CollectorRegistry

from quotapilot.alerts.model import Condition, Severity
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.commands.capacity import plot_pools, render_capacity
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.http.capacity import add_capacity_routes, capacity_document
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.settings import CapacitySettings, load_settings
from quotapilot.daemon.stages.capacity import CapacityStage, CapacityView
from quotapilot.forecasting.types import (
    POOL_TARGET,
    ClusterCapacity,
    Dimension,
    Forecast,
    Observation,
    SeriesForecast,
    TargetId,
    TargetKind,
)


def settings(**fields: Any) -> CapacitySettings:
    return load_settings(None, capacity=fields).capacity


class TestCapacityStage:
    """Each cycle plans the cluster's pool from the forecaster's pool forecast and publishes a view."""

    async def test_plan_published_and_exported(self) -> None:
        clock = VirtualClock(T0)
        stage = CapacityStage(settings(procurement_lead_time="8w", price_per_tb=100), clock)
        # 1000 TB usable, 500 used, +10 TB/day median, +20 pessimistic: 80 % in 15 days on p90
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        [plan] = stage.view.ordered()
        assert (plan.name, plan.kind, plan.headroom_bytes, plan.drr) == ("c1", "cluster", 6 * TB, 1.5)
        at80 = plan.threshold(0.8)
        assert at80 is not None and at80.p90 == pytest.approx(T0 + 15 * DAY)
        registry = CollectorRegistry()
        registry.register(stage.collector())
        assert registry.get_sample_value("quotapilot_cluster_order_by_timestamp_seconds",
                                         {"cluster": "c1"}) == pytest.approx(T0 + 15 * DAY - 56 * DAY)
        assert registry.get_sample_value("quotapilot_cluster_capacity_threshold_timestamp_seconds",
                                         {"cluster": "c1", "threshold": "0.8", "quantile": "0.1"}) == \
            pytest.approx(T0 + 15 * DAY)
        assert registry.get_sample_value("quotapilot_cluster_capacity_threshold_timestamp_seconds",
                                         {"cluster": "c1", "threshold": "0.8", "quantile": "0.5"}) == \
            pytest.approx(T0 + 30 * DAY)
        assert registry.get_sample_value("quotapilot_cluster_order_bytes", {"cluster": "c1"}) == plan.order_bytes
        assert registry.get_sample_value("quotapilot_cluster_capacity_cost",
                                         {"cluster": "c1", "item": "expansion"}) == pytest.approx(
            plan.order_bytes / TB * 100, abs=0.01)  # type: ignore[operator]  # sized: a forecast exists

    async def test_no_lead_time_no_order_by_sample(self) -> None:
        stage = CapacityStage(settings(), VirtualClock(T0))
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        registry = CollectorRegistry()
        registry.register(stage.collector())
        assert registry.get_sample_value("quotapilot_cluster_order_by_timestamp_seconds", {"cluster": "c1"}) is None
        assert registry.get_sample_value("quotapilot_cluster_order_bytes", {"cluster": "c1"}) is not None

    async def test_a_failed_poll_keeps_the_last_plan(self) -> None:
        stage = CapacityStage(settings(), VirtualClock(T0))
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        before = stage.view
        await stage.on_cycle(CycleContext(poll=PollResult(cluster="c1", t=T0 + HOUR, error="down"), now=T0 + HOUR))
        assert stage.view is before


class TestOrderAlert:
    """"Order capacity by …" through the alerting collaborator, with its own lead time."""

    async def test_warning_within_the_alert_lead_time_then_critical_once_overdue(self) -> None:
        alerts = RecordingAlerts()
        # p90 reaches 80 % in 15 days; lead 2 weeks: order by day 1; alert from 30 days before
        stage = CapacityStage(settings(procurement_lead_time="2w", alert_lead_time="30d"), VirtualClock(T0),
                              raise_alerts=alerts)
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        [warning] = alerts.conditions
        assert (warning.alert_id, warning.severity) == ("c1/pool/capacity_order", Severity.WARNING)
        assert "order capacity for c1 by 2026-01-06" in warning.summary
        # two days on, usage has grown faster: 80 % is 10 days away on p90, the order date has passed
        await stage.on_cycle(pool_cycle(used=600 * TB, usable=1000 * TB, rate_per_day=10 * TB, now=T0 + 2 * DAY))
        assert alerts.conditions[-1].severity is Severity.CRITICAL
        assert "by 2026-01-03" in alerts.conditions[-1].summary

    async def test_far_order_date_resolves(self) -> None:
        alerts = RecordingAlerts()
        stage = CapacityStage(settings(procurement_lead_time="1w", alert_lead_time="7d"), VirtualClock(T0),
                              raise_alerts=alerts)
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=1 * TB))
        [condition] = alerts.conditions
        assert condition.severity is None

    async def test_without_a_lead_time_no_alert_is_evaluated(self) -> None:
        alerts = RecordingAlerts()
        stage = CapacityStage(settings(), VirtualClock(T0), raise_alerts=alerts)
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        assert alerts.conditions == []


def flat(target: TargetId, now: float, level: float) -> SeriesForecast:
    """A forecast that stays at `level` for two days."""
    forecast = Forecast(t0=now, step_seconds=DAY, times=(now + DAY, now + 2 * DAY), p10=(level, level),
                        p50=(level, level), p90=(level, level), model="test")
    return SeriesForecast(target=target, dimension=Dimension.BYTES, t=now, limit=None, forecast=forecast)


class TestSameNameClusterAndFilesystem:
    """A VAST cluster `cosmos7` and its NFS export watched as a filesystem also named `cosmos7`
    (filesystem names are free; alert ids `cosmos7/pool/…` and `filesystems/cosmos7/…` do not
    clash). After the cluster's pool is expanded its order alert must resolve once clear for
    `alert_for`. The stage kept its hysteresis per bare name, so while the filesystem's own order
    stayed due its cycle re-armed the cluster's hold, and the cluster's alert never resolved; it
    is keyed by the order alert's id now (in the stage and in the rule's `due_before`)."""

    async def test_cluster_order_alert_resolves_while_a_same_named_filesystem_stays_due(self) -> None:
        clock = VirtualClock(T0)
        alerts = RecordingAlerts()
        stage = CapacityStage(settings(procurement_lead_time="8w", alert_for="1d"), clock, raise_alerts=alerts)
        pool = TargetId("cosmos7", POOL_TARGET, "/", TargetKind.POOL)
        fs = TargetId("filesystems", "cosmos7", "/mnt/cosmos7", TargetKind.FILESYSTEM, tier="cold")
        cluster_alert, fs_alert = f"cosmos7/{POOL_TARGET}/capacity_order", "filesystems/cosmos7/capacity_order"

        async def cluster_cycle(usable: int) -> list[Condition]:
            now = clock.now()
            poll = PollResult(cluster="cosmos7", t=now, capacity=ClusterCapacity(
                "cosmos7", now, usable_bytes=usable, used_bytes=85 * TB, free_bytes=usable - 85 * TB))
            before = len(alerts.conditions)
            await stage.on_cycle(CycleContext(poll=poll, now=now, forecasts={
                (pool, Dimension.BYTES): flat(pool, now, 85 * TB)}))
            return alerts.conditions[before:]

        async def fs_cycle() -> list[Condition]:
            now = clock.now()
            poll = PollResult(cluster="filesystems", t=now, observations=(Observation(
                target=fs, t=now, used_bytes=85 * TB, hard_limit_bytes=100 * TB),))
            before = len(alerts.conditions)
            await stage.on_cycle(CycleContext(poll=poll, now=now, forecasts={
                (fs, Dimension.BYTES): flat(fs, now, 85 * TB)}))
            return alerts.conditions[before:]

        first = await cluster_cycle(100 * TB)        # 85 % of the pool: the order is overdue
        await fs_cycle()                             # so is the filesystem's
        assert [c.severity is not None for c in first if c.alert_id == cluster_alert] == [True]
        last: list[Condition] = []
        fs_last: list[Condition] = []
        for _ in range(72):                          # the pool is expanded ten-fold; three days pass
            clock.advance(HOUR)
            last = await cluster_cycle(1000 * TB)
            fs_last = await fs_cycle()
        ours = [c for c in last if c.alert_id == cluster_alert]
        assert [c.severity for c in ours] == [None], [(c.alert_id, c.severity) for c in last]
        assert [c.severity for c in fs_last if c.alert_id == fs_alert] == [Severity.CRITICAL]  # still due


class TestCapacityApi:
    """`GET /api/v1/capacity` serves the view as the documented JSON."""

    async def test_document(self) -> None:
        stage = CapacityStage(settings(procurement_lead_time="8w"), VirtualClock(T0))
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        app = web.Application()
        add_capacity_routes(app, lambda: stage.view)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/api/v1/capacity")
            assert response.status == 200
            body = await response.json()
        [pool] = body["pools"]
        assert {"name", "kind", "usable_bytes", "used_bytes", "thresholds", "order_by", "order_bytes",
                "cost"} <= set(pool)
        assert pool["thresholds"]["0.8"]["p90"] == "2026-01-20T00:00:00.000Z"
        assert pool["thresholds"]["0.9"]["p10"] == "2026-03-26T00:00:00.000Z"  # 400 TB at 5 TB/day: 80 days
        assert pool["order_by"] == "2025-11-25T00:00:00.000Z"
        assert len(pool["band"]) == 366

    async def test_without_a_capacity_stage_404(self) -> None:
        app = web.Application()
        add_capacity_routes(app, lambda: None)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/api/v1/capacity")
            assert response.status == 404


class TestCapacityCommand:
    """The table and the plot of `quotapilot capacity` (the JSON is checked against the simulator)."""

    async def test_table_and_plot(self, tmp_path: Path) -> None:
        stage = CapacityStage(settings(procurement_lead_time="8w", price_per_tb=100), VirtualClock(T0))
        await stage.on_cycle(pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB))
        pools = json.loads(json.dumps(capacity_document(stage.view)))["pools"]
        table = render_capacity(pools)
        lines = table.splitlines()
        assert lines[0].split()[:5] == ["POOL", "KIND", "USED", "USABLE", "THRESHOLD"]
        assert "2026-01-20" in lines[1] and "2025-11-25" in lines[1]
        assert lines[2].split()[0] == "90%"
        pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
        plot_pools(pools, tmp_path / "capacity.png")
        assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_empty_view(self) -> None:
        assert "no pool planned yet" in render_capacity(capacity_document(CapacityView(t=T0))["pools"])

    def test_a_plot_path_that_cannot_be_written_is_bad_usage(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
        """Guards the exit code shared with `forecast --plot` and `replay --plot`: a path on the
        command line no file can be written at is bad usage (2), found before the daemon is asked;
        it was exit 1 after the request, like a daemon that could not answer."""
        from quotapilot.daemon.cli import main
        from quotapilot.daemon.commands import capacity

        def no_daemon(args: object) -> object:
            raise AssertionError("the daemon was asked before --plot was checked")

        monkeypatch.setattr(capacity, "_client", no_daemon)
        plot = tmp_path / "no" / "such" / "capacity.png"
        assert main(["capacity", "--url", "http://127.0.0.1:9", "--json", "--plot", str(plot)]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("quotapilot capacity: --plot ")
        assert str(plot) in captured.err and len(captured.err.strip().splitlines()) == 1


class TestCapacitySettings:
    def test_long_durations(self) -> None:
        group = settings(procurement_lead_time="8w", plan_horizon="1y", alert_lead_time="6mo")
        assert (group.procurement_lead_time, group.plan_horizon, group.alert_lead_time) == (
            56 * DAY, 365 * DAY, 180 * DAY)

    def test_threshold_above_one_names_the_field(self) -> None:
        with pytest.raises(ConfigError) as err:
            settings(thresholds=[0.8, 1.1])
        assert err.value.field == "capacity.thresholds.1"

    def test_bad_duration_names_the_field(self) -> None:
        with pytest.raises(ConfigError) as err:
            settings(plan_horizon="soon")
        assert err.value.field == "capacity.plan_horizon"
