"""The alerting stage in the daemon: cycle → rule inputs, persistence, metrics, task crashes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.alerts.errors import SinkUnavailable
from quotapilot.alerts.formats import to_alertmanager
from quotapilot.alerts.model import Severity
from quotapilot.alerts.rules import NEVER_RESENT_EXPIRY_SECONDS, RuleConfig, target_conditions
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.events import EventStage
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.supervisor import Supervisor
from quotapilot.daemon.runtime.wiring import Collaborators, alerting_stage
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.stages.alerting import AlertingStage, build_sinks, inputs_from_cycle, target_state_payload
from quotapilot.daemon.stages.presence import REMOVED_TARGET_GRACE_SECONDS
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.outbox import AsyncOutbox, OutboxStore
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
        self.cleared: list[tuple[str, str]] = []
        self.down = False

    async def send(self, payload: Mapping[str, Any]) -> None:
        if self.down:
            raise SinkUnavailable(self.name, "down")
        self.received.append(dict(payload))

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        self.states.append(dict(state))

    async def clear_state(self, cluster: str, target: str) -> None:
        self.cleared.append((cluster, target))

    async def close(self) -> None:
        pass


async def deliver_all(stage: AlertingStage) -> None:
    """Run the stage's delivery task until the outbox is drained, then stop it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(stage.run(stopping), name="alerts")
    try:
        assert await stage.drain(2)
    finally:
        stopping.set()
        await task


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
             error: str | None = None, unconfirmed: frozenset[str] = frozenset()) -> CycleContext:
    limit = 10 * TIB
    used = int(used_ratio * limit)
    poll = PollResult("c1", now, error=error) if error else PollResult(
        "c1", now, observations=(Observation(RAW, now, used, limit),),
        capacity=ClusterCapacity("c1", now, usable_bytes=100 * TIB, used_bytes=50 * TIB, free_bytes=50 * TIB),
        unconfirmed=unconfirmed)
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

    def test_an_unknown_outcome_is_a_hold_not_a_failure(self, tmp_path: Path) -> None:
        """Issue 13 defect 1: a lost answer is alerted as what it is (growth held until a read
        settles it), not as a critical `growth_failed`."""
        decision = Decision(RAW, Dimension.BYTES, DecisionKind.GROW, "grow", T0)
        action = ActionOutcome(RAW, Dimension.BYTES, ActionStatus.UNKNOWN, T0,
                               "outcome unknown: answer lost; growth of this quota frozen until a read settles it")
        inputs = inputs_from_cycle(ctx_with(0.5, decisions=(decision,), actions=(action,)), settings_for(tmp_path))
        assert [(g.status, g.reason) for g in inputs.targets[0].growth] == [("blocked", action.reason)]

    def test_unsettled_and_external_change_holds_are_alerts(self, tmp_path: Path) -> None:
        unsettled = Decision(RAW, Dimension.BYTES, DecisionKind.BLOCKED, "frozen", T0, guard="unsettled")
        changed = Decision(RAW, Dimension.INODES, DecisionKind.BLOCKED, "moved", T0, guard="external_change")
        inputs = inputs_from_cycle(ctx_with(0.5, decisions=(unsettled, changed)), settings_for(tmp_path))
        assert [g.status for g in inputs.targets[0].growth] == ["blocked", "blocked"]

    def test_the_collectors_unconfirmed_targets_are_marked(self, tmp_path: Path) -> None:
        inputs = inputs_from_cycle(ctx_with(0.5, unconfirmed=frozenset({"raw", "pool"})), settings_for(tmp_path))
        assert [(t.target, t.confirmed) for t in inputs.targets] == [("raw", False), ("pool", False)]
        inputs = inputs_from_cycle(ctx_with(0.5), settings_for(tmp_path))
        assert [(t.target, t.confirmed) for t in inputs.targets] == [("raw", True), ("pool", True)]

    def test_cooldown_block_is_not_an_alert(self, tmp_path: Path) -> None:
        blocked = Decision(RAW, Dimension.BYTES, DecisionKind.BLOCKED, "cooling down", T0, guard="cooldown")
        reserve = Decision(RAW, Dimension.INODES, DecisionKind.BLOCKED, "pool full", T0, guard="cluster_reserve")
        inputs = inputs_from_cycle(ctx_with(0.5, decisions=(blocked, reserve)), settings_for(tmp_path))
        assert [(g.dimension, g.status) for g in inputs.targets[0].growth] == [
            ("bytes", "none"), ("inodes", "blocked")]

    def test_a_quota_without_a_byte_limit_alerts_on_its_inodes_only(self, tmp_path: Path) -> None:
        """VMS's "no limit" (hard limit 0, read as None): no byte limit to cross, so no bytes
        utilization or runway condition at all (not even a resolving one), whatever its usage or
        forecast; its inodes alert as any quota's, and its growth is its inodes'."""
        files = TargetId("c1", "files-only", "/c1/files-only")
        obs = Observation(files, T0, used_bytes=900 * TIB, hard_limit_bytes=None, soft_limit_bytes=80 * TIB,
                          used_inodes=950_000, hard_limit_inodes=1_000_000)
        unlimited = replace(forecast_for(files, 900 * TIB, 1.0, None), limit=None, runways=())
        grow = Decision(files, Dimension.INODES, DecisionKind.GROW, "at or above grow_at now", T0,
                        current_used=950_000, current_hard=1_000_000, new_hard=2_000_000)
        ctx = CycleContext(poll=PollResult("c1", T0, observations=(obs,)), now=T0, decisions=[grow])
        ctx.forecasts[(files, Dimension.BYTES)] = unlimited
        (target,) = inputs_from_cycle(ctx, settings_for(tmp_path)).targets
        assert target.bytes is not None and (target.bytes.limit, target.bytes.utilization_ratio) == (None, None)
        assert not target.bytes.forecast_known
        kinds = {c.kind: c.severity for c in target_conditions(target, {}, RuleConfig())}
        assert "utilization" not in kinds and "runway" not in kinds
        assert (kinds["utilization_inodes"], kinds["growth_would_grow_inodes"]) == (Severity.CRITICAL, Severity.INFO)
        assert "growth_would_grow" not in kinds
        state = target_state_payload(target, None, [])
        assert (state["used_bytes"], state["hard_limit_bytes"], state["utilization_ratio"]) == (900 * TIB, None, None)
        assert state["inode_utilization_ratio"] == 0.95


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
        rows = again.store.tables.history("c1/raw/utilization")
        assert [r["status"] for r in rows] == ["firing", "resolved"]

    async def test_an_unconfirmed_sample_neither_fires_nor_resolves(self, tmp_path: Path) -> None:
        """A target the collector marks unconfirmed (its first sample, or a hard limit that moved
        without a write of ours) keeps its alerts and retained state as they were until a confirmed
        sample: a one-poll glitch paged on-call, and resolved on the next poll."""
        settings = settings_for(tmp_path, mqtt={"host": "127.0.0.1"})
        sink = ListSink()
        stage = AlertingStage(settings, Database(settings.store.path), VirtualClock(T0), sinks=[sink])
        raw = frozenset({"raw"})
        history: list[list[str]] = []
        stopping = asyncio.Event()
        task = asyncio.create_task(stage.run(stopping), name="alerts")
        try:
            for t, ratio, unconfirmed in ((T0, 0.95, raw), (T0 + 60, 0.95, frozenset()),
                                          (T0 + 120, 0.10, raw), (T0 + 180, 0.10, frozenset())):
                await stage.on_cycle(ctx_with(ratio, now=t, runway_hours=None, unconfirmed=unconfirmed))
                assert await stage.drain(2)
                history.append([r["status"] for r in stage.store.tables.history("c1/raw/utilization")])
        finally:
            stopping.set()
            await task
        assert history == [[], ["firing"], ["firing"], ["firing", "resolved"]]
        assert [s["utilization_ratio"] for s in sink.states if s["path"] == RAW.path] == [0.95, 0.1]

    async def test_collector_alert_through_failed_polls(self, tmp_path: Path) -> None:
        clock = VirtualClock(T0)
        settings = settings_for(tmp_path, rules={"collector_failed_intervals": 2})
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[ListSink()])
        await stage.on_cycle(ctx_with(0.5))
        await stage.on_cycle(ctx_with(0.5, now=T0 + 60, error="VMS unreachable"))
        await stage.on_cycle(ctx_with(0.5, now=T0 + 120, error="VMS unreachable"))
        assert [r["status"] for r in stage.store.tables.history("c1/vms/collector")] == ["firing"]

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
        await deliver_all(stage)
        assert registry.get_sample_value("quotapilot_notifications_total",
                                         {"sink": "list", "result": "delivered"}) == 1
        assert registry.get_sample_value("quotapilot_outbox_pending", {"sink": "list"}) == 0
        assert registry.get_sample_value("quotapilot_notification_latency_seconds_count", {"sink": "list"}) == 1
        assert sink.states and sink.states[-1]["firing"] == ["utilization"]
        await stage.on_cycle(ctx_with(0.10, now=T0 + 60))
        assert registry.get_sample_value("quotapilot_alerts_firing", {"kind": "utilization",
                                                                      "severity": "critical"}) == 0

    async def test_a_growth_publishes_the_state_once(self, tmp_path: Path) -> None:
        """The cycle that grows a quota publishes its new hard limit already; the next poll, which
        reads that limit back, has nothing new to say."""
        settings = settings_for(tmp_path, mqtt={"host": "127.0.0.1"})
        sink = ListSink()
        stage = AlertingStage(settings, Database(settings.store.path), VirtualClock(T0), sinks=[sink])
        used = 8 * TIB

        def ctx(now: float, limit: int, actions: tuple[ActionOutcome, ...] = ()) -> CycleContext:
            poll = PollResult("c1", now, observations=(Observation(RAW, now, used, limit),))
            return CycleContext(poll=poll, now=now, actions=list(actions))

        grown = ActionOutcome(RAW, Dimension.BYTES, ActionStatus.VERIFIED, T0, "forecast",
                              old_hard=10 * TIB, new_hard=20 * TIB)
        stopping = asyncio.Event()
        task = asyncio.create_task(stage.run(stopping), name="alerts")
        try:
            await stage.on_cycle(ctx(T0, 10 * TIB, (grown,)))
            assert await stage.drain(2)
            await stage.on_cycle(ctx(T0 + 900, 20 * TIB))
            assert await stage.drain(2)
        finally:
            stopping.set()
            await task
        assert [(s["hard_limit_bytes"], s["utilization_ratio"]) for s in sink.states] == [(20 * TIB, 0.4)]

    async def test_each_alert_expires_after_twice_its_own_resend_interval(self, tmp_path: Path) -> None:
        """Review round 7: every firing notification expired 2 × `renotify_seconds` (8 h) after it
        was sent, so a warning (re-sent every 24 h) and an info alert (never re-sent) ended at
        their receivers (Alertmanager: resolved) while they still fired."""
        settings = settings_for(tmp_path)
        sink = ListSink()
        clock = VirtualClock(T0)
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[sink])
        grow = Decision(RAW, Dimension.BYTES, DecisionKind.GROW, "p90 crosses 0.75", T0,
                        current_hard=10 * TIB, new_hard=12 * TIB)
        await stage.on_cycle(ctx_with(0.85, decisions=(grow,)))   # observe mode: would grow (info)
        await deliver_all(stage)
        clock.advance(60)
        await stage.on_cycle(ctx_with(0.95, now=T0 + 60))         # the warning escalates
        await deliver_all(stage)

        def expires_in(payload: Mapping[str, Any]) -> float:
            return datetime.fromisoformat(payload["expires_at"]).timestamp() - float(payload["evaluated_at_epoch"])

        assert [(p["kind"], p["severity"], p["previous_severity"], expires_in(p)) for p in sink.received] == [
            ("utilization", "warning", None, 48 * 3600.0),
            ("growth_would_grow", "info", None, NEVER_RESENT_EXPIRY_SECONDS),
            ("utilization", "critical", "warning", 8 * 3600.0)]

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


def alertmanager_firing(posts: list[dict[str, Any]], now: float) -> list[dict[str, str]]:
    """What Alertmanager holds firing at `now` after these notifications were posted in its
    format, in order: one alert per label set, the latest `endsAt` posted wins."""
    ends: dict[frozenset[tuple[str, str]], tuple[dict[str, str], float]] = {}
    for payload in posts:
        for alert in to_alertmanager(payload):
            labels = alert["labels"]
            ends[frozenset(labels.items())] = (labels, datetime.fromisoformat(alert["endsAt"]).timestamp())
    return [labels for labels, end in ends.values() if end > now]


class TestAlertmanagerAfterAnOutage:
    """Review round 8: `previous_severity` belongs to one notification, but after an outage the
    outbox sends only the newest pending notification of an alert. When the escalation that
    carried it was superseded (by the 4 h critical re-send, or by the resolve), Alertmanager was
    never told to end the warning: it stayed firing beside the critical, or after everything
    resolved, until its `endsAt` (up to 48 h). What Alertmanager holds must not depend on which
    notifications were delivered."""

    @staticmethod
    async def warning_delivered(tmp_path: Path) -> tuple[AlertingStage, ListSink, VirtualClock]:
        """A stage (no log sink) whose utilization warning fired at T0 and was delivered to the sink."""
        settings = settings_for(tmp_path, log_sink=False)
        sink = ListSink()
        clock = VirtualClock(T0)
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[sink])
        await stage.on_cycle(ctx_with(0.85))                 # the warning fires, delivered
        await deliver_all(stage)
        return stage, sink, clock

    async def test_an_escalation_superseded_by_its_resolve_leaves_nothing_firing(self, tmp_path: Path) -> None:
        stage, sink, clock = await self.warning_delivered(tmp_path)
        clock.advance(60)                                    # Alertmanager unreachable: both queue up
        await stage.on_cycle(ctx_with(0.95, now=T0 + 60))    # critical, previous_severity=warning
        clock.advance(60)
        await stage.on_cycle(ctx_with(0.10, now=T0 + 120))   # resolved
        await deliver_all(stage)                             # back: the latest state wins
        assert [(p["severity"], p["status"]) for p in sink.received] == [
            ("warning", "firing"), ("critical", "resolved")]
        assert alertmanager_firing(sink.received, T0 + 3600) == []

    async def test_an_escalation_superseded_by_its_resend_ends_the_warning(self, tmp_path: Path) -> None:
        stage, sink, clock = await self.warning_delivered(tmp_path)
        clock.advance(60)
        await stage.on_cycle(ctx_with(0.95, now=T0 + 60))    # the escalation queues (receiver down)
        clock.advance(4 * 3600)
        await stage.on_cycle(ctx_with(0.95, now=clock.now()))  # the 4 h re-send supersedes it
        await deliver_all(stage)
        assert [(p["severity"], p["previous_severity"], p["renotify"]) for p in sink.received] == [
            ("warning", None, False), ("critical", None, True)]
        firing = alertmanager_firing(sink.received, clock.now() + 60)
        assert [labels["severity"] for labels in firing] == ["critical"]


class TestLogSink:
    """The built-in `log` sink: on by default, every notification through the outbox to the log."""

    async def test_metrics_have_series_from_the_first_scrape(self, tmp_path: Path) -> None:
        settings = settings_for(tmp_path)
        stage = AlertingStage(settings, Database(settings.store.path), VirtualClock(T0))
        registry = CollectorRegistry()
        registry.register(stage.collector())
        assert stage.sink_names == ["log"]
        for kind in ("utilization", "runway_inodes", "growth_blocked", "collector", "daemon"):
            for severity in ("info", "warning", "critical"):
                assert registry.get_sample_value("quotapilot_alerts_firing",
                                                 {"kind": kind, "severity": severity}) == 0
        for result in ("delivered", "retry", "rejected", "superseded", "expired"):
            assert registry.get_sample_value("quotapilot_notifications_total",
                                             {"sink": "log", "result": result}) == 0
        assert registry.get_sample_value("quotapilot_outbox_pending", {"sink": "log"}) == 0
        assert registry.get_sample_value("quotapilot_notification_latency_seconds_bucket",
                                         {"sink": "log", "le": "1.0"}) == 0
        assert registry.get_sample_value("quotapilot_notification_latency_seconds_count", {"sink": "log"}) == 0
        await stage.close()

    async def test_every_notification_is_logged_whatever_the_routes(self, tmp_path: Path) -> None:
        settings = settings_for(tmp_path, routes=[{"min_severity": "critical", "sinks": ["list"],
                                                   "quiet": [{"start": "00:00", "end": "23:59"}]}])
        clock = VirtualClock(T0)
        other = ListSink()
        stage = AlertingStage(settings, Database(settings.store.path), clock,
                              sinks=[*build_sinks(settings.alerts), other])
        registry = CollectorRegistry()
        registry.register(stage.collector())
        stopping = asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(stage.run(stopping), name="alerts")
            try:
                await stage.on_cycle(ctx_with(0.85))  # a warning: the only route takes critical ones
                assert await stage.drain(2)
            finally:
                stopping.set()
                await task
        notified = [e for e in logs if e["event"] == "alert.notified"]
        assert [(e["alert_id"], e["severity"], e["status"]) for e in notified] == \
            [("c1/raw/utilization", "warning", "firing")]
        assert notified[0]["summary"] == "raw bytes at 85.0% of the hard limit"
        assert other.received == [] and other.states  # routed away; the retained state still goes
        assert registry.get_sample_value("quotapilot_notifications_total",
                                         {"sink": "log", "result": "delivered"}) == 1
        assert registry.get_sample_value("quotapilot_notification_latency_seconds_count", {"sink": "log"}) == 1

    async def test_a_broken_log_does_not_hold_the_others(self, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        import quotapilot.alerts.sinks.log as log_sink

        class Closed:
            def info(self, *args: Any, **kwargs: Any) -> None:
                raise ValueError("I/O operation on closed file")

        monkeypatch.setattr(log_sink, "log", Closed())
        settings = settings_for(tmp_path)
        other = ListSink()
        stage = AlertingStage(settings, Database(settings.store.path), VirtualClock(T0),
                              sinks=[*build_sinks(settings.alerts), other])
        stopping = asyncio.Event()
        task = asyncio.create_task(stage.run(stopping), name="alerts")
        try:
            await stage.on_cycle(ctx_with(0.95))
            await stage.dispatcher.drain(0.3)
            assert [p["id"] for p in other.received] == ["c1/raw/utilization"]
            assert await stage.store.pending_counts() == {"log": 1}
        finally:
            stopping.set()
            await task

    def test_off_and_reserved_name(self, tmp_path: Path) -> None:
        assert build_sinks(settings_for(tmp_path, log_sink=False).alerts) == []
        with pytest.raises(ConfigError) as caught:
            settings_for(tmp_path, webhooks=[{"url": "http://127.0.0.1:1/x", "name": "log"}])
        assert "name" in caught.value.field


class TestSinkFiles:
    """`ca_file`, `password_file`, `token_file` of the sinks expand `$VARS` like the cluster's."""

    def test_credentials_directory(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from quotapilot.alerts.sinks.mqtt import MqttSink
        from quotapilot.alerts.sinks.webhook import WebhookSink

        for name, text in (("ca.pem", "pem"), ("mqtt.password", "s3cret\n"), ("hook.token", "t0ken\n")):
            (tmp_path / name).write_text(text)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        settings = settings_for(
            tmp_path, log_sink=False,
            mqtt={"host": "127.0.0.1", "username": "qp", "password_file": "${CREDENTIALS_DIRECTORY}/mqtt.password",
                  "tls": True, "ca_file": "${CREDENTIALS_DIRECTORY}/ca.pem"},
            webhooks=[{"url": "https://127.0.0.1:1/x", "token_file": "$CREDENTIALS_DIRECTORY/hook.token",
                       "ca_file": "${CREDENTIALS_DIRECTORY}/ca.pem"}])
        mqtt, hook = build_sinks(settings.alerts)
        assert isinstance(mqtt, MqttSink) and isinstance(hook, WebhookSink)
        assert (mqtt.config.ca_file, mqtt.config.password) == (tmp_path / "ca.pem", "s3cret")
        assert (hook.config.ca_file, hook.config.token) == (tmp_path / "ca.pem", "t0ken")

    def test_a_missing_file_is_a_config_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        with pytest.raises(ConfigError) as caught:
            settings_for(tmp_path, mqtt={"host": "h", "tls": True, "ca_file": "${CREDENTIALS_DIRECTORY}/none.pem"})
        assert "ca_file" in caught.value.field


class TestDaemonTasks:
    async def test_a_crashed_task_raises_a_daemon_alert(self, tmp_path: Path) -> None:
        settings = settings_for(tmp_path)
        supervisor = Supervisor(shutdown_timeout_seconds=1)
        db = Database(settings.store.path)
        deps = Collaborators(settings=settings, clock=VirtualClock(T0), db=db, observations=ObservationStore(
            db, raw_retention_seconds=86400.0, hourly_retention_seconds=86400.0),
                             writers={}, supervisor=supervisor)
        stage = alerting_stage(deps, sinks=[ListSink()])
        assert list(stage.tasks()) == ["alerts"]

        async def doomed(stopping: asyncio.Event) -> None:
            raise RuntimeError("boom")

        supervisor.add("poller:c1", doomed)
        runner = asyncio.create_task(supervisor.run(), name="supervisor")
        try:
            for _ in range(20):
                await asyncio.sleep(0)
            assert "poller:c1" in supervisor.crashes
            assert await stage.check_tasks() == 1
            assert await stage.check_tasks() == 0  # still crashed: no new notification
        finally:
            supervisor.stop()
            await runner
        [row] = stage.store.tables.history("_daemon/poller:c1/daemon")
        assert (row["status"], stage.alerts_raised) == ("firing", 1)


class TestRemovedTargets:
    """A target gone from VMS past the grace period has its alerts resolved and its state evicted
    (DESIGN, "Targets, identity and time") — its retained state on the sinks too."""

    async def test_its_retained_state_is_cleared_even_if_this_run_never_published_it(self,
                                                                                     tmp_path: Path) -> None:
        """Review round 7: the retained `{prefix}/{cluster}/{target}/state` stayed on the broker for
        ever. Cleared on eviction — also for a target this process knows only from its stored
        alerts (a restart in between): the broker may hold what the previous run published."""
        settings = settings_for(tmp_path, mqtt={"host": "127.0.0.1"})
        scratch = TargetId("c1", "scratch", "/c1/scratch")

        def ctx(now: float, *targets: TargetId) -> CycleContext:
            observations = tuple(Observation(t, now, int(0.95 * 10 * TIB), 10 * TIB) for t in targets)
            return CycleContext(poll=PollResult("c1", now, observations=observations), now=now)

        first = AlertingStage(settings, Database(settings.store.path), VirtualClock(T0), sinks=[ListSink()])
        await first.on_cycle(ctx(T0, RAW, scratch))
        sink = ListSink()
        clock = VirtualClock(T0)
        stage = AlertingStage(settings, Database(settings.store.path), clock, sinks=[sink])  # a restart
        while clock.now() < T0 + REMOVED_TARGET_GRACE_SECONDS + 600:
            clock.advance(300)
            await stage.on_cycle(ctx(clock.now(), RAW))
        await deliver_all(stage)
        assert sink.cleared == [("c1", "scratch")]
        assert [p["status"] for p in sink.received if p["target"] == "scratch"] == ["resolved"]
        assert not any(alert.startswith("c1/scratch/") for alert in await stage.states())


class TestRemovedSinks:
    """Rows queued for a sink that is no longer configured are dropped at start, counted and
    logged once per sink — the events' sinks left to the events stage, and the other way round."""

    async def test_rows_of_a_removed_sink_are_dropped_counted_and_logged(self, tmp_path: Path) -> None:
        """Before: the rows of `webhook-1` (removed from the configuration) stayed pending for ever,
        never sent, expired nor counted, and absent from quotapilot_outbox_pending."""
        settings = settings_for(tmp_path)
        db = Database(settings.store.path)
        clock = VirtualClock(T0)
        outbox = AsyncOutbox(OutboxStore(db))
        await outbox.enqueue([
            OutboxEntry(sink=sink, alert_id=f"c1/raw/{kind}", dedup_key=f"c1/raw/{kind}#1", status="firing",
                        payload={"secret": "never logged"}, created_at=T0, next_attempt_at=T0)
            for sink in ("webhook-1", "events-webhook-3") for kind in ("utilization", "runway")])
        stage = AlertingStage(settings, db, clock, sinks=[ListSink()])
        events = EventStage(settings.events, clock, AsyncOutbox(OutboxStore(db)), sinks=[ListSink("events-webhook-0")])
        registry = CollectorRegistry()
        registry.register(stage.collector())
        with capture_logs() as logs:
            await deliver_all(stage)
            # the alerts' dispatcher leaves the events' rows alone: those are the events stage's
            assert await outbox.pending_counts() == {"events-webhook-3": 2}
            stopping = asyncio.Event()
            stopping.set()
            await events.run(stopping)
        assert await outbox.pending_counts() == {}
        assert registry.get_sample_value("quotapilot_notifications_total",
                                         {"sink": "webhook-1", "result": "sink_removed"}) == 2
        assert events.dispatcher.stats.results[("events-webhook-3", "sink_removed")] == 2
        removed = [entry for entry in logs if entry["event"] == "alert_sink.removed"]
        assert [(entry["sink"], entry["dropped"]) for entry in removed] == [("webhook-1", 2), ("events-webhook-3", 2)]
        assert "never logged" not in repr(logs)
        rows = db.query("SELECT sink, last_error FROM outbox WHERE dropped_at IS NOT NULL ORDER BY id")
        assert {(r["sink"], r["last_error"]) for r in rows} == {("webhook-1", "sink_removed"),
                                                                  ("events-webhook-3", "sink_removed")}

    async def test_a_shared_outbox_keeps_what_another_instance_may_deliver(self, tmp_path: Path) -> None:
        """In a fleet the sink may be one only another instance's (newer) configuration has, during
        a rolling change: only rows older than max_age — delivered by nobody any more — go."""
        settings = settings_for(tmp_path)
        db = Database(settings.store.path)
        clock = VirtualClock(T0)
        outbox = AsyncOutbox(OutboxStore(db))
        outbox.shared = True  # as on PostgreSQL
        old, new = T0 - settings.alerts.max_age_seconds - 60, T0 - 60
        await outbox.enqueue([
            OutboxEntry(sink="webhook-9", alert_id=f"c1/raw/{kind}", dedup_key=f"c1/raw/{kind}#1", status="firing",
                        payload={}, created_at=at, next_attempt_at=at)
            for kind, at in (("utilization", old), ("runway", new))])
        stage = AlertingStage(settings, db, clock, sinks=[ListSink()])
        stage.dispatcher.outbox = outbox
        assert await stage.dispatcher.drop_removed_sinks() == {"webhook-9": 1}
        assert await outbox.pending_counts() == {"webhook-9": 1}
