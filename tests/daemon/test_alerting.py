"""The alerting stage in the daemon: cycle → rule inputs, persistence, metrics, task crashes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from quotapilot.alerts.errors import SinkUnavailable
from quotapilot.daemon.alerting import AlertingStage, inputs_from_cycle
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.cycle import CycleContext, PollResult
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.supervisor import Supervisor
from quotapilot.forecasting.types import (
    ActionOutcome,
    ActionStatus,
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Forecast,
    Observation,
    Runway,
    SeriesForecast,
    TargetId,
)

T0 = 1_767_225_600.0
TIB = 2**40
RAW = TargetId("c1", "raw", "/c1/raw")


class ListSink:
    def __init__(self, name: str = "list") -> None:
        self.name = name
        self.received: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.down = False

    async def send(self, payload: Mapping[str, Any]) -> None:
        if self.down:
            raise SinkUnavailable(self.name, "down")
        self.received.append(dict(payload))

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        self.states.append(dict(state))

    async def close(self) -> None:
        pass


def settings_for(tmp_path: Path, **alerts: Any) -> Settings:
    return load_settings(None, store={"path": tmp_path / "s.db"}, alerts=alerts,
                         daemon={"shutdown_timeout_seconds": 1})


def forecast_for(target: TargetId, used: float, limit: float, runway_hours: float | None) -> SeriesForecast:
    rate = 1e6
    times = (T0 + 3600, T0 + 7200)
    forecast = Forecast(t0=T0, step_seconds=3600, times=times, p10=(used + 0.5 * rate * 3600, used + rate * 3600),
                        p50=(used + rate * 3600, used + 2 * rate * 3600),
                        p90=(used + 1.5 * rate * 3600, used + 3 * rate * 3600), model="test")
    at = None if runway_hours is None else T0 + runway_hours * 3600
    runway = Runway(threshold_ratio=1.0, p10=None, p50=at, p90=at, horizon_end=T0 + 14 * 86400)
    return SeriesForecast(target=target, dimension=Dimension.BYTES, t=T0, limit=limit, forecast=forecast,
                          runways=(runway,), rate_per_second=rate)


def ctx_with(used_ratio: float, *, now: float = T0, runway_hours: float | None = None,
             actions: tuple[ActionOutcome, ...] = (), decisions: tuple[Decision, ...] = (),
             error: str | None = None) -> CycleContext:
    limit = 10 * TIB
    used = int(used_ratio * limit)
    poll = PollResult("c1", now, error=error) if error else PollResult(
        "c1", now, observations=(Observation(RAW, now, used, limit),),
        capacity=ClusterCapacity("c1", now, usable_bytes=100 * TIB, used_bytes=50 * TIB, free_bytes=50 * TIB))
    ctx = CycleContext(poll=poll, now=now, actions=list(actions), decisions=list(decisions))
    if runway_hours is not None and not error:
        ctx.forecasts[(RAW, Dimension.BYTES)] = forecast_for(RAW, used, limit, runway_hours)
    return ctx


class TestInputs:
    def test_runway_rate_band_growth_and_pool(self, tmp_path: Path) -> None:
        decision = Decision(RAW, Dimension.BYTES, DecisionKind.GROW, "p90 crosses 0.75", T0,
                            current_hard=10 * TIB, new_hard=12 * TIB)
        inputs = inputs_from_cycle(ctx_with(0.5, runway_hours=30, decisions=(decision,)), settings_for(tmp_path))
        raw, pool = inputs.targets
        assert (raw.target, pool.target, pool.is_pool) == ("raw", "pool", True)
        assert raw.bytes is not None and raw.bytes.forecast_known
        assert raw.bytes.runway_seconds == pytest.approx(30 * 3600)
        # the anomaly window (6 polls of 60 s) ends before the forecast's first hourly point
        used = 0.5 * 10 * TIB
        assert raw.bytes.expected == pytest.approx((T0 + 360, used + 0.5e6 * 360, used + 1.5e6 * 360))
        assert [(g.status, g.new_hard) for g in raw.growth] == [("would_grow", 12 * TIB)]  # observe mode

    def test_action_outcome_wins_over_decision(self, tmp_path: Path) -> None:
        decision = Decision(RAW, Dimension.BYTES, DecisionKind.GROW, "grow", T0)
        action = ActionOutcome(RAW, Dimension.BYTES, ActionStatus.VERIFY_FAILED, T0, "read back old limit")
        inputs = inputs_from_cycle(ctx_with(0.5, decisions=(decision,), actions=(action,)), settings_for(tmp_path))
        assert [g.status for g in inputs.targets[0].growth] == ["failed"]

    def test_cooldown_block_is_not_an_alert(self, tmp_path: Path) -> None:
        blocked = Decision(RAW, Dimension.BYTES, DecisionKind.BLOCKED, "cooling down", T0, guard="cooldown")
        reserve = Decision(RAW, Dimension.INODES, DecisionKind.BLOCKED, "pool full", T0, guard="cluster_reserve")
        inputs = inputs_from_cycle(ctx_with(0.5, decisions=(blocked, reserve)), settings_for(tmp_path))
        assert [(g.dimension, g.status) for g in inputs.targets[0].growth] == [
            ("bytes", "none"), ("inodes", "blocked")]


class TestStage:
    async def test_raises_persists_and_restarts_without_refiring(self, tmp_path: Path) -> None:
        clock = VirtualClock(T0)
        settings = settings_for(tmp_path)
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[ListSink()])
        await stage.on_cycle(ctx_with(0.95, runway_hours=20))
        assert stage.alerts_raised == 2
        assert dict(stage.raised_by_kind) == {"utilization": 1, "runway": 1}
        assert await stage.store.pending_counts() == {"list": 2}

        again = AlertingStage(settings, Database(settings.store.path), clock, sinks=[ListSink()])
        await again.on_cycle(ctx_with(0.95, now=T0 + 60, runway_hours=20))
        assert again.alerts_raised == 0
        await again.on_cycle(ctx_with(0.10, now=T0 + 120, runway_hours=None))
        rows = again.store.history_sync("c1/raw/utilization")
        assert [r["status"] for r in rows] == ["firing", "resolved"]

    async def test_collector_alert_through_failed_polls(self, tmp_path: Path) -> None:
        clock = VirtualClock(T0)
        settings = settings_for(tmp_path, rules={"collector_failed_intervals": 2})
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[ListSink()])
        await stage.on_cycle(ctx_with(0.5))
        await stage.on_cycle(ctx_with(0.5, now=T0 + 60, error="VMS unreachable"))
        await stage.on_cycle(ctx_with(0.5, now=T0 + 120, error="VMS unreachable"))
        assert [r["status"] for r in stage.store.history_sync("c1/vms/collector")] == ["firing"]

    async def test_metrics(self, tmp_path: Path) -> None:
        clock = VirtualClock(T0)
        settings = settings_for(tmp_path)
        sink = ListSink()
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[sink], rng=random.Random(0))
        registry = CollectorRegistry()
        registry.register(stage.collector())
        await stage.on_cycle(ctx_with(0.95))
        assert registry.get_sample_value("quotapilot_alerts_firing", {"kind": "utilization",
                                                                      "severity": "critical"}) == 1
        stopping = asyncio.Event()
        task = asyncio.create_task(stage.run(stopping), name="alerts")
        try:
            assert await stage.drain(2)
        finally:
            stopping.set()
            await task
        assert registry.get_sample_value("quotapilot_notifications_total",
                                         {"sink": "list", "result": "delivered"}) == 1
        assert registry.get_sample_value("quotapilot_outbox_pending", {"sink": "list"}) == 0
        assert registry.get_sample_value("quotapilot_notification_latency_seconds_count", {"sink": "list"}) == 1
        assert sink.states and sink.states[-1]["firing"] == ["utilization"]
        await stage.on_cycle(ctx_with(0.10, now=T0 + 60))
        assert registry.get_sample_value("quotapilot_alerts_firing", {"kind": "utilization",
                                                                      "severity": "critical"}) == 0

    async def test_stop_leaves_undelivered_on_disk(self, tmp_path: Path) -> None:
        clock = VirtualClock(T0)
        settings = settings_for(tmp_path)
        sink = ListSink()
        sink.down = True
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[sink])
        stopping = asyncio.Event()
        task = asyncio.create_task(stage.run(stopping), name="alerts")
        await stage.on_cycle(ctx_with(0.95))
        stopping.set()
        await asyncio.wait_for(task, timeout=3)  # the flush is bounded by the shutdown timeout
        assert await stage.store.pending_counts() == {"list": 1}


class FakeDaemon:
    def __init__(self, settings: Settings, clock: VirtualClock) -> None:
        self.settings = settings
        self.clock = clock
        self.db = Database(settings.store.path)
        self.supervisor = Supervisor(shutdown_timeout_seconds=1)

    def add_task(self, name: str, factory: Any) -> None:
        self.supervisor.add(name, factory)


class TestDaemonTasks:
    async def test_a_crashed_task_raises_a_daemon_alert(self, tmp_path: Path) -> None:
        daemon = FakeDaemon(settings_for(tmp_path), VirtualClock(T0))
        stage = AlertingStage.for_daemon(daemon, sinks=[ListSink()])

        async def doomed(stopping: asyncio.Event) -> None:
            raise RuntimeError("boom")

        daemon.add_task("poller:c1", doomed)
        assert "alerts" in daemon.supervisor.task_names
        runner = asyncio.create_task(daemon.supervisor.run(), name="supervisor")
        try:
            for _ in range(20):
                await asyncio.sleep(0)
            assert "poller:c1" in daemon.supervisor.crashes
            assert await stage.check_tasks() == 1
            assert await stage.check_tasks() == 0  # still crashed: no new notification
        finally:
            daemon.supervisor.stop()
            await runner
        [row] = stage.store.history_sync("_daemon/poller:c1/daemon")
        assert (row["status"], stage.alerts_raised) == ("firing", 1)
