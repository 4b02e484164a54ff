"""Decision events: the builders, the schema, the outbox entries (the live delivery is in
test_events_live.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import test_actuator as actuator_tests

from quotapilot.alerts.model import AlertState, Phase, Severity
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.events import (
    Event,
    EventStage,
    alert_events,
    alert_view,
    decision_event,
    leadership_event,
    mode_event,
    result_event,
)
from quotapilot.daemon.fs.growth import FilesystemGrowthStage
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER, target_id
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.leadership import LeadershipChange
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.stages.growth import GrowthStage, Planner
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.outbox import AsyncOutbox, OutboxStore
from quotapilot.forecasting.planner import CycleInput
from quotapilot.forecasting.types import (
    ActionOutcome,
    ActionStatus,
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    TargetId,
)

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "events.schema.json").read_text())
T0 = 1_767_571_200.0
RAW = TargetId("c1", "raw", "/raw")
TIB = 2**40


def decision_events(decisions: list[Decision], actions: list[ActionOutcome], *, mode: str | None) -> list[Event]:
    """`intent` per GROW decision, `blocked` per BLOCKED one, `result` per action outcome."""
    events = [event for decision in decisions if (event := decision_event(decision, mode=mode)) is not None]
    return events + [event for action in actions if (event := result_event(action, mode=mode)) is not None]


def grow() -> Decision:
    return Decision(target=RAW, dimension=Dimension.BYTES, kind=DecisionKind.GROW, reason="p90 crosses 0.75",
                    t=T0, current_used=8 * TIB, current_hard=10 * TIB, new_hard=14 * TIB, urgency_seconds=3600.0)


def blocked() -> Decision:
    return Decision(target=RAW, dimension=Dimension.BYTES, kind=DecisionKind.BLOCKED, reason="cluster reserve",
                    t=T0, current_used=8 * TIB, current_hard=10 * TIB, new_hard=14 * TIB, guard="cluster_reserve")


def verified(action_id: int = 7) -> ActionOutcome:
    return ActionOutcome(target=RAW, dimension=Dimension.BYTES, status=ActionStatus.VERIFIED, t=T0,
                         reason="grown", old_hard=10 * TIB, new_hard=14 * TIB, action_id=action_id)


def state(alert_id: str, phase: Phase, severity: Severity | None, sequence: int) -> AlertState:
    return AlertState(alert_id=alert_id, phase=phase, severity=severity, sequence=sequence, summary="s",
                      kind="utilization")


class TestBuilders:
    """Each builder's events validate against deploy/events.schema.json."""

    def test_decisions_and_results(self) -> None:
        events = decision_events([grow(), blocked()], [verified()], mode="enforce")
        assert [(e.type, e.id) for e in events] == [
            ("intent", f"c1/raw/bytes/intent@{T0:.3f}"), ("blocked", f"c1/raw/bytes/blocked@{T0:.3f}"),
            ("result", "action-7/verified")]
        assert events[1].data["guard"] == "cluster_reserve"
        for event in events:
            jsonschema.validate(event.payload(), SCHEMA)

    def test_alert_transitions_not_renotifications(self) -> None:
        before = alert_view({"c1/raw/utilization": state("c1/raw/utilization", Phase.FIRING, Severity.WARNING, 1),
                             "c1/tmp/utilization": state("c1/tmp/utilization", Phase.FIRING, Severity.WARNING, 3),
                             "c1/old/utilization": state("c1/old/utilization", Phase.FIRING, Severity.CRITICAL, 1)})
        after = alert_view({"c1/raw/utilization": state("c1/raw/utilization", Phase.FIRING, Severity.CRITICAL, 2),
                            "c1/tmp/utilization": state("c1/tmp/utilization", Phase.FIRING, Severity.WARNING, 4),
                            "c1/old/utilization": state("c1/old/utilization", Phase.INACTIVE, None, 2),
                            "c1/new/utilization": state("c1/new/utilization", Phase.FIRING, Severity.WARNING, 1)})
        events = alert_events(before, after, T0)
        assert [(e.id, e.data["transition"]) for e in events] == [
            ("c1/new/utilization#1", "fired"), ("c1/old/utilization#2", "resolved"),
            ("c1/raw/utilization#2", "severity_changed")]  # tmp: a re-notification, no event
        for event in events:
            jsonschema.validate(event.payload(), SCHEMA)

    def test_mode(self) -> None:
        event = mode_event(None, "observe", T0)
        jsonschema.validate(event.payload(), SCHEMA)
        assert (event.type, event.data) == ("mode", {"from": None, "to": "observe"})

    def test_leadership(self) -> None:
        change = LeadershipChange("c1", "b/1234abcd", 7, T0, "a/5678ef01", "takeover")
        event = leadership_event(change)
        jsonschema.validate(event.payload(), SCHEMA)
        assert (event.type, event.id, event.cluster) == ("leadership", "leadership/c1@7", "c1")
        assert event.data == {"holder": "b/1234abcd", "epoch": 7, "previous_holder": "a/5678ef01",
                              "transition": "takeover"}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(event.payload() | {"data": {**event.data, "transition": "coup"}}, SCHEMA)

    def test_every_action_status_is_a_result_status_of_the_schema(self) -> None:
        """`ActionStatus.UNKNOWN` (a lost PATCH answer) reached consumers as a `result` event the
        schema refused."""
        result = next(rule for rule in SCHEMA["allOf"] if rule["if"]["properties"]["type"]["const"] == "result")
        assert sorted(str(s) for s in ActionStatus) == sorted(result["then"]["properties"]["data"]["properties"]
                                                                 ["status"]["enum"])

    def test_schema_rejects_an_unknown_type(self) -> None:
        payload = mode_event(None, "observe", T0).payload() | {"type": "other"}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(payload, SCHEMA)


class RecordingSink:
    name = "events-test"
    publishes_state = False

    async def send(self, payload: Mapping[str, Any]) -> None:  # delivery is not under test here
        raise AssertionError("not delivering")

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None: ...

    async def close(self) -> None: ...


class TestEventStage:
    """Outbox entries per sink, deduplicated by event id; standing alerts not re-announced."""

    async def test_enqueue_dedup_and_restart(self, tmp_path: Path) -> None:
        settings = load_settings(None).events
        db = Database(tmp_path / "s.db")
        try:
            outbox = AsyncOutbox(OutboxStore(db))
            stage = EventStage(settings, VirtualClock(T0), outbox, sinks=[RecordingSink()], mode=lambda: "observe")
            await stage.open()
            # an intent: the entries the growth stage commits with its audit row
            entries = stage.decision_entries(grow(), mode="observe", now=T0)
            await outbox.enqueue(entries)
            stage.decisions_committed(entries)
            ctx = CycleContext(poll=PollResult(cluster="c1", t=T0), now=T0)
            ctx.actions.append(verified())
            assert await stage.on_cycle(ctx) is None
            # the mode is an event (first seen, at start); alerts are the alerting stage's to enqueue
            assert dict(stage.published) == {"mode": 1, "intent": 1, "result": 1}
            # the same decisions again (a replayed cycle): same ids, the outbox ignores them
            await stage.publish_now(T0, decision_events([grow()], [verified()], mode="observe"))
            rows = db.query("SELECT dedup_key, status FROM outbox WHERE sink = 'events-test' ORDER BY id")
            assert [r["status"] for r in rows] == ["mode", "intent", "result"]
            # an alert resolved: the entries the alerting stage commits with its states
            entries = stage.alert_entries(
                {"c1/raw/utilization": state("c1/raw/utilization", Phase.FIRING, Severity.WARNING, 1)},
                {"c1/raw/utilization": state("c1/raw/utilization", Phase.INACTIVE, None, 2)}, T0 + 60)
            await outbox.enqueue(entries)
            stage.alerts_committed(entries)
            last = db.query("SELECT dedup_key FROM outbox WHERE sink = 'events-test' ORDER BY id DESC LIMIT 1")
            assert (last[0]["dedup_key"], stage.published["alert"]) == ("c1/raw/utilization#2", 1)
        finally:
            db.close()

    async def test_a_standing_guard_is_one_blocked_event(self, tmp_path: Path) -> None:
        """A guard holding a growth cycle after cycle is one `blocked` event, committed by the growth
        stage with the audit row it writes once per episode; again when another guard takes over."""
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(T0)
            stage = EventStage(load_settings(None).events, clock, AsyncOutbox(OutboxStore(db)),
                               sinks=[RecordingSink()])
            guards = iter(("cluster_reserve", "cluster_reserve", "paused", "paused"))

            def planner(cycle: CycleInput) -> tuple[Decision, ...]:
                return (replace(blocked(), t=cycle.now, guard=next(guards)),)

            settings = load_settings(None, clusters=[{"name": "c1", "address": "vms", "token": "t"}])
            growth = GrowthStage(settings, db, lambda cluster: None, clock,  # type: ignore[arg-type,return-value]
                                 planner=planner, events=stage)  # (every decision is blocked: nothing written)
            for minute in range(4):
                now = T0 + 60 * minute
                observation = Observation(RAW, now, 8 * TIB, 10 * TIB, quota_id=1)
                await growth.on_cycle(CycleContext(poll=PollResult("c1", now, observations=(observation,)), now=now))
            rows = db.query("SELECT payload FROM outbox WHERE sink = 'events-test' ORDER BY id")
            assert [json.loads(r["payload"])["data"]["guard"] for r in rows] == ["cluster_reserve", "paused"]
            assert [r["status"] for r in db.query("SELECT status FROM actions ORDER BY id")] == ["blocked", "paused"]
            assert dict(stage.published) == {"blocked": 2}
        finally:
            db.close()

    async def test_a_filesystem_growth_commits_its_intent_with_the_audit_row(self, tmp_path: Path) -> None:
        """The filesystem growth stage audits a recommendation (`would_grow`) and its `intent` event
        in one transaction, as the quota growth stage does."""
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(T0)
            settings = load_settings(None, filesystems=[{"name": "nas", "path": str(tmp_path)}])
            stage = EventStage(settings.events, clock, AsyncOutbox(OutboxStore(db)), sinks=[RecordingSink()])
            growth = FilesystemGrowthStage(settings, clock, ActionStore(db), events=stage)
            nas = target_id(settings.filesystems[0])
            observation = Observation(nas, T0, 8 * TIB, 10 * TIB)  # 80 %: over grow_at
            await growth.on_cycle(CycleContext(poll=PollResult(FILESYSTEM_CLUSTER, T0, observations=(observation,)),
                                               now=T0))
            [row] = db.query("SELECT id, status FROM actions")
            [event] = [json.loads(r["payload"])
                       for r in db.query("SELECT payload FROM outbox WHERE sink = 'events-test'")]
            assert (row["status"], event["type"], event["id"]) == ("would_grow", "intent",
                                                                   f"filesystems/nas/bytes/intent@{T0:.3f}")
            assert (event["data"]["mode"], event["data"]["old_hard"]) == ("observe", 10 * TIB)
            assert dict(stage.published) == {"intent": 1}
        finally:
            db.close()


def results(db: Database) -> list[tuple[Any, str]]:
    """(action_id, status) of the `result` events in the outbox, in order."""
    payloads = [json.loads(r["payload"]) for r in
                db.query("SELECT payload FROM outbox WHERE sink = 'events-test' ORDER BY id")]
    return [(p["data"]["action_id"], p["data"]["status"]) for p in payloads if p["type"] == "result"]


def audit(db: Database) -> list[tuple[Any, str]]:
    return [(r["id"], r["status"]) for r in db.query("SELECT id, status FROM actions ORDER BY id")]


class TestResultEventsMatchTheAuditTrail:
    """One `result` event per audit row (README "Decision events"), whose status is the row's, with
    the id the replay at start makes of the row."""

    @staticmethod
    def growth(db: Database, clock: VirtualClock, stage: EventStage, planner: Planner) -> GrowthStage:
        settings = load_settings(None, clusters=[{"name": "c1", "address": "vms", "token": "t"}])
        return GrowthStage(settings, db, lambda cluster: None, clock,  # type: ignore[arg-type,return-value]
                           planner=planner, events=stage)  # (nothing is written: no writer needed)

    async def test_a_standing_guard_is_one_result_event_not_one_per_poll(self, tmp_path: Path) -> None:
        """A guard holding a growth for four polls is audited once (its episode's first poll); the
        holds of the later polls stay in the cycle's outcomes (alerts, snapshot) without an audit
        row, and were each a `result` event with a new id."""
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(T0)
            stage = EventStage(load_settings(None).events, clock, AsyncOutbox(OutboxStore(db)),
                               sinks=[RecordingSink()])
            growth = self.growth(db, clock, stage, lambda cycle: (replace(blocked(), t=cycle.now),))
            held = []
            for minute in range(4):
                now = T0 + 60 * minute
                ctx = CycleContext(poll=PollResult("c1", now, observations=(
                    Observation(RAW, now, 8 * TIB, 10 * TIB, quota_id=1),)), now=now)
                await growth.on_cycle(ctx)
                await stage.on_cycle(ctx)
                held.extend(str(action.status) for action in ctx.actions)
            assert (audit(db), held) == ([(1, "blocked")], ["blocked"] * 4)
            assert results(db) == [(1, "blocked")]
        finally:
            db.close()

    async def test_a_standing_filesystem_guard_is_one_result_event(self, tmp_path: Path) -> None:
        """The same for a filesystem a pause holds (`fs.growth.FilesystemGrowthStage._hold`)."""
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(T0)
            settings = load_settings(None, filesystems=[{"name": "nas", "path": str(tmp_path)}],
                                     policy={"kill_switch": True})
            stage = EventStage(settings.events, clock, AsyncOutbox(OutboxStore(db)), sinks=[RecordingSink()])
            growth = FilesystemGrowthStage(settings, clock, ActionStore(db), events=stage)
            nas = target_id(settings.filesystems[0])
            for minute in range(3):
                now = T0 + 60 * minute
                ctx = CycleContext(poll=PollResult(FILESYSTEM_CLUSTER, now, observations=(
                    Observation(nas, now, 8 * TIB, 10 * TIB),)), now=now)
                await growth.on_cycle(ctx)
                await stage.on_cycle(ctx)
            assert (audit(db), results(db)) == ([(1, "paused")], [(1, "paused")])
        finally:
            db.close()

    async def test_an_external_change_result_event_carries_the_audit_rows_status(self, tmp_path: Path) -> None:
        """A hard limit moved by someone else is audited `external_change`; its `result` event said
        `blocked` (the cycle's one-poll hold, under the row's id), and a restart replayed the row
        as a second event (`action-N/external_change`). Now it is committed with the row: one
        event, the one the replay makes."""
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(T0)
            outbox = AsyncOutbox(OutboxStore(db))
            stage = EventStage(load_settings(None).events, clock, outbox, sinks=[RecordingSink()])
            growth = self.growth(db, clock, stage, lambda cycle: ())
            for minute, hard in enumerate((10 * TIB, 10 * TIB, 12 * TIB)):
                now = T0 + 60 * minute
                ctx = CycleContext(poll=PollResult("c1", now, observations=(
                    Observation(RAW, now, 8 * TIB, hard, quota_id=1),)), now=now)
                await growth.on_cycle(ctx)
                await stage.on_cycle(ctx)
            [(row_id, status)] = audit(db)
            assert (status, [str(action.status) for action in ctx.actions]) == ("external_change", ["blocked"])
            live = results(db)
            # a restart (within the replay window) re-enqueues the audit rows' result events
            restarted = EventStage(load_settings(None).events, clock, outbox, sinks=[RecordingSink()],
                                   audit=ActionStore(db))
            await restarted.open()
            assert (live, results(db)) == ([(row_id, "external_change")], [(row_id, "external_change")])
            assert stage.published["result"] == 1
        finally:
            db.close()

    async def test_an_external_change_that_holds_a_growth_is_a_result_event(self, tmp_path: Path) -> None:
        """A growth the moved limit holds (guard `external_change`) is a `blocked` row of its own;
        the `external_change` row had no event at all, live."""
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(T0)
            stage = EventStage(load_settings(None).events, clock, AsyncOutbox(OutboxStore(db)),
                               sinks=[RecordingSink()])

            def planner(cycle: CycleInput) -> tuple[Decision, ...]:  # a growth once the limit moved
                return tuple(replace(grow(), t=cycle.now, current_hard=12 * TIB) for target in cycle.targets
                             if target.observation.hard_limit_bytes == 12 * TIB)

            growth = self.growth(db, clock, stage, planner)
            for minute, hard in enumerate((10 * TIB, 12 * TIB)):
                now = T0 + 60 * minute
                ctx = CycleContext(poll=PollResult("c1", now, observations=(
                    Observation(RAW, now, 8 * TIB, hard, quota_id=1),)), now=now)
                await growth.on_cycle(ctx)
                await stage.on_cycle(ctx)
            assert audit(db) == [(1, "external_change"), (2, "blocked")]
            assert results(db) == [(1, "external_change"), (2, "blocked")]
        finally:
            db.close()


class TestAGrowthDeposedBeforeThePatch:
    """Review r13: a growth whose lease is lost between the intent and the PATCH (ebf1c7a) leaves
    its intent row `intent` for the new leader, so its outcome has no `action_id` (no `result`
    event of ours). Its `intent` event was committed with the row all the same, and the growth
    stage took `action_id is None` for "nothing written": the event was never counted
    (`quotapilot_events_total{type="intent"}`) nor the dispatcher woken."""

    async def test_its_committed_intent_event_is_counted_and_no_result_published(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "s.db")
        try:
            clock = VirtualClock(actuator_tests.NOW)
            settings = load_settings(None, clusters=[{"name": "c1", "address": "vms", "token": "t"}],
                                     policy={"mode": "enforce"})
            events = EventStage(settings.events, clock, AsyncOutbox(OutboxStore(db)), sinks=[RecordingSink()])
            vms = actuator_tests.FakeVms()
            raw = actuator_tests.RAW
            vms.add(1, raw.name, raw.path, hard=100 * TIB, used=80 * TIB)
            growth = GrowthStage(settings, db, lambda cluster: vms, clock,  # type: ignore[arg-type,return-value]
                                 leadership=actuator_tests.DeposedBeforeThePatch(["c1"]), events=events)
            now = actuator_tests.NOW
            capacity = ClusterCapacity("c1", now, usable_bytes=10_000 * TIB, used_bytes=1000 * TIB,
                                       free_bytes=9000 * TIB)
            observation = Observation(raw, now, 80 * TIB, 100 * TIB, soft_limit_bytes=90 * TIB, quota_id=1)
            ctx = CycleContext(poll=PollResult("c1", now, observations=(observation,), capacity=capacity), now=now)
            await growth.on_cycle(ctx)
            await events.on_cycle(ctx)
            outcomes = [(a.status, a.action_id, a.intent_committed) for a in ctx.actions]
            assert outcomes == [(ActionStatus.FAILED, None, True)]
            assert audit(db) == [(1, "intent")]
            queued = [json.loads(r["payload"])["type"] for r in db.query("SELECT payload FROM outbox")]
            assert queued == ["intent"]  # with its row; the row's `result` is the new leader's
            assert dict(events.published) == {"intent": 1}  # was {}: committed, never counted
        finally:
            db.close()
