"""Decision events end to end: the daemon against the simulator (enforce mode, so it grows quotas
and raises alerts), events delivered to a real Mosquitto started here on a free port and to a
real HTTP receiver, validated against `deploy/events.schema.json`, counted against the audit
trail and the alert notifications, none lost across a broker restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
from alert_receivers import Broker, Receiver, Subscriber, subscribe

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.commands.demo import DEMO_POLICY
from quotapilot.daemon.events import EventStage
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.simulator.server import SimulatorServer

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "events.schema.json").read_text())
HOUR = 3600.0
POLL = 900.0


@contextlib.asynccontextmanager
async def subscribed(port: int) -> AsyncIterator[Subscriber]:
    async for sub in subscribe(port, "qp/events/#"):
        yield sub


def events_of(sub: Subscriber) -> list[dict[str, Any]]:
    return [payload for topic, payload, _ in sub.messages if topic != "qp/events/status"]


async def run_cycles(daemon: Daemon, clock: VirtualClock, cluster: str, n: int) -> None:
    for _ in range(n):
        await daemon.poll_once(cluster)
        await clock.advance_and_settle(POLL)


class TestEventsLive:
    async def test_one_event_per_audited_decision_and_alert_transition_across_a_broker_restart(
            self, tmp_path: Path, broker: Broker, receiver: Receiver) -> None:
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, seed=0) as sim:
            cluster = sim.scenario.cluster.name
            settings = load_settings(None, **{
                "clusters": [{"name": cluster, "address": sim.address, "token": sim.token,
                              "ca_file": str(sim.ca_file)}],
                "store": {"path": str(tmp_path / "state.db")},
                "http": {"listen": "127.0.0.1:0"},
                "vast": {"backoff_base_seconds": 0.05, "max_retries": 2, "request_timeout_seconds": 5},
                "poll": {"interval_seconds": POLL, "jitter_ratio": 0.0},
                "forecast": {"workers": 0},
                "policy": dict(DEMO_POLICY),
                "events": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "qp",
                                    "timeout_seconds": 2},
                           "webhooks": [{"url": receiver.url}],
                           "retry_backoffs_seconds": [60, 120]},
            })
            async with Daemon(settings, clock) as daemon:
                stage = next(s for s in daemon.stages if isinstance(s, EventStage))
                supervisor = asyncio.create_task(daemon.supervisor.run(), name="test:supervisor")
                try:
                    async with subscribed(broker.port) as before:
                        await run_cycles(daemon, clock, cluster, 2 * 96)   # two days
                        assert await stage.drain(10.0)
                        await before.wait_for(lambda: len({e["id"] for e in events_of(before)})
                                              == sum(stage.published.values()))
                    enqueued_before = sum(stage.published.values())
                    broker.stop()                                          # the outage
                    # at least six hours, and until an event waits in the outbox (when the next
                    # growth or alert comes depends on the forecast, not on a fixed window)
                    await run_cycles(daemon, clock, cluster, 24)
                    for _ in range(2 * 96):
                        if sum(stage.published.values()) > enqueued_before:
                            break
                        await run_cycles(daemon, clock, cluster, 1)
                    assert sum(stage.published.values()) > enqueued_before
                    broker.start()
                    async with subscribed(broker.port) as after:
                        await run_cycles(daemon, clock, cluster, 16)       # back-offs expire, the backlog drains
                        assert await stage.drain(10.0)
                        await after.wait_for(lambda: len({e["id"] for e in events_of(before) + events_of(after)})
                                             == sum(stage.published.values()))
                        await receiver.wait_for(lambda: len({b["id"] for b in receiver.bodies()})
                                                == sum(stage.published.values()))
                finally:
                    daemon.stop()
                    await supervisor
                audit = daemon.db.query("SELECT id, status FROM actions ORDER BY id")
                log_rows = daemon.db.query("SELECT dedup_key, payload FROM outbox WHERE sink = 'log'")
        mqtt_events = {e["id"]: e for e in events_of(before) + events_of(after)}
        hook_events = {b["id"]: b for b in receiver.bodies()}
        assert mqtt_events.keys() == hook_events.keys()
        for event in mqtt_events.values():
            jsonschema.validate(event, SCHEMA)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in mqtt_events.values():
            by_type.setdefault(event["type"], []).append(event)
        # every audited action: exactly one result event carrying its audit id
        assert sorted(e["data"]["action_id"] for e in by_type["result"]) == [row["id"] for row in audit]
        assert len(audit) > 0
        # every alert transition (a notification that is not a re-notification): one event, same key
        transitions = {row["dedup_key"] for row in log_rows if not json.loads(row["payload"])["renotify"]}
        assert {e["id"] for e in by_type["alert"]} == transitions
        assert transitions
        assert [e["data"] for e in by_type["mode"]] == [{"from": None, "to": "enforce"}]
        assert by_type.get("intent")


GROW_NOW = {"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4, "max_growth_bytes": "2TiB",
            "min_growth_bytes": "1TiB", "step_bytes": "1TiB", "cooldown_seconds": 6 * 3600}
"""cosmos7-raw (12 of 20 TB) grows on the first poll."""


def grow_now_settings(sim: SimulatorServer, tmp_path: Path, receiver: Receiver) -> Any:
    return load_settings(None, **{
        "clusters": [{"name": "sim", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}],
        "store": {"path": str(tmp_path / "state.db")},
        "http": {"listen": "127.0.0.1:0"},
        "vast": {"backoff_base_seconds": 0.05, "max_retries": 0, "request_timeout_seconds": 5},
        "poll": {"interval_seconds": POLL, "jitter_ratio": 0.0},
        "forecast": {"workers": 0},
        "policy": GROW_NOW,
        "events": {"webhooks": [{"url": receiver.url}]},
    })


class TestEventsOfAnUnknownOutcome:
    """A growth whose PATCH answer is lost and whose re-read does not show it (the actuator's
    `unknown`, target frozen until a read settles it) is a `result` event a consumer can validate,
    and the read that settles it later is one too: the consumer learns the final outcome."""

    async def run(self, tmp_path: Path, receiver: Receiver, *, settle: bool) -> list[dict[str, Any]]:
        """cosmos7-raw's growth PATCH is held and dropped and lands an hour (simulated) later; with
        `settle`, a poll two hours later settles the audit row. Returns the audit rows of raw."""
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, seed=0) as sim:
            raw = next(q for q in sim.engine.quotas.values() if q.path == "/cosmos7/raw")
            sim.faults.add("delayed_apply", method="PATCH", path=f"/quotas/{raw.id}/", count=1, apply_after=3600)
            async with Daemon(grow_now_settings(sim, tmp_path, receiver), clock) as daemon:
                stage = next(s for s in daemon.stages if isinstance(s, EventStage))
                supervisor = asyncio.create_task(daemon.supervisor.run(), name="test:supervisor")
                try:
                    await daemon.poll_once("sim")  # first samples: growth waits for the next to confirm them
                    await daemon.poll_once("sim")
                    if settle:
                        await clock.advance_and_settle(2 * HOUR)
                        await daemon.poll_once("sim")
                    assert await stage.drain(10.0)
                    await receiver.wait_for(lambda: len(receiver.bodies()) == sum(stage.published.values()))
                finally:
                    daemon.stop()
                    await supervisor
                rows: list[dict[str, Any]] = daemon.db.query(
                    "SELECT id, status, new_hard FROM actions WHERE target = 'cosmos7-raw' ORDER BY id")
        for body in receiver.bodies():
            jsonschema.validate(body, SCHEMA)
        return rows

    def raw_results(self, receiver: Receiver) -> list[tuple[int, str]]:
        return [(b["data"]["action_id"], b["data"]["status"]) for b in receiver.bodies()
                if b["type"] == "result" and b["target"] == "cosmos7-raw"]

    async def test_unknown_result_is_a_valid_event(self, tmp_path: Path, receiver: Receiver) -> None:
        audit = await self.run(tmp_path, receiver, settle=False)
        assert [row["status"] for row in audit] == ["unknown"]
        assert self.raw_results(receiver) == [(audit[0]["id"], "unknown")]

    async def test_the_read_that_settles_an_unknown_outcome_is_a_result_event(self, tmp_path: Path,
                                                                            receiver: Receiver) -> None:
        audit = await self.run(tmp_path, receiver, settle=True)
        first = audit[0]
        assert first["status"] == "reconciled"  # the late PATCH landed; a re-read found it applied
        assert self.raw_results(receiver)[:2] == [(first["id"], "unknown"), (first["id"], "reconciled")]
        settled = next(b for b in receiver.bodies() if b["id"] == f"action-{first['id']}/reconciled")
        assert settled["data"]["new_hard"] == first["new_hard"]
