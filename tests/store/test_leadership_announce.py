"""A change of leader is announced once across the fleet: two real daemons on one PostgreSQL
store, against the simulator, each delivering from the shared outbox — the info alert to a real
HTTP receiver, the `leadership` event to a real Mosquitto broker (both started here, on free
ports). The new leader enqueues both, keyed `leadership/<cluster>@<epoch>`; the deposed leader
says nothing; an instance that enqueues the same change again adds nothing."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
from alert_receivers import Broker, Receiver, Subscriber, subscribe

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.events import EventStage
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.leadership import LeadershipChange, LeaseLeadership
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.stages.alerting import AlertingStage

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "events.schema.json").read_text())
LEASE, RENEW = 15.0, 5.0


def settings_data(sim: SimulatorServer, tmp_path: Path, url: str, name: str, hook: str,
                  broker: Broker) -> dict[str, Any]:
    return {
        "clusters": [{"name": "sim", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}],
        "store": {"url": url, "instance_name": name, "path": str(tmp_path / f"{name}.db"),
                  "lease_seconds": LEASE, "lease_renew_seconds": RENEW},
        "alerts": {"webhooks": [{"name": "hook", "url": hook}]},
        "events": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "qp",
                            "client_id": f"qp-{name}"}},
    }


class Instance:
    """One daemon of the fleet with its two delivery loops (alerts, events) running."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.alerting = next(s for s in daemon.stages if isinstance(s, AlertingStage))
        self.events = next(s for s in daemon.stages if isinstance(s, EventStage))
        self.tasks = [asyncio.create_task(self.alerting.dispatcher.run(), name="test:alerts"),
                      asyncio.create_task(self.events.dispatcher.run(), name="test:events")]

    @property
    def leadership(self) -> LeaseLeadership:
        assert isinstance(self.daemon.leadership, LeaseLeadership)
        return self.daemon.leadership

    async def drain(self) -> None:
        assert await self.alerting.drain(10.0)
        assert await self.events.drain(10.0)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@asynccontextmanager
async def fleet(tmp_path: Path, url: str, hook: str, broker: Broker) -> AsyncIterator[
        tuple[VirtualClock, Instance, Instance]]:
    clock = VirtualClock()
    async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim, \
            Daemon(load_settings(None, **settings_data(sim, tmp_path, url, "a", hook, broker)), clock) as a, \
            Daemon(load_settings(None, **settings_data(sim, tmp_path, url, "b", hook, broker)), clock) as b:
        first, second = Instance(a), Instance(b)
        try:
            yield clock, first, second
        finally:
            await first.stop()
            await second.stop()


@asynccontextmanager
async def subscribed(port: int) -> AsyncIterator[Subscriber]:
    async for sub in subscribe(port, "qp/events/#"):
        yield sub


def leadership_alerts(receiver: Receiver) -> list[dict[str, Any]]:
    return [body for body in receiver.bodies() if body.get("kind") == "leadership"]


def leadership_events(sub: Subscriber) -> list[dict[str, Any]]:
    return [payload for topic, payload, _ in sub.messages if topic == "qp/events/leadership"]


class TestLeadershipAnnounced:
    async def test_each_change_alerted_and_published_once_by_the_new_leader(
            self, tmp_path: Path, pg_url: str, broker: Broker, receiver: Receiver) -> None:
        async with subscribed(broker.port) as sub, \
                fleet(tmp_path, pg_url, receiver.url, broker) as (clock, a, b):
            await a.leadership.step()
            await b.leadership.step()
            await a.drain()
            await b.drain()
            await sub.wait_for(lambda: len(leadership_events(sub)) == 1)
            # a dies (never renews again); b takes over once the lease has run out
            while not b.leadership.is_leader("sim"):
                clock.advance(RENEW)
                await b.leadership.step()
            # an instance enqueueing the same change again (a retry, a second announcer) adds nothing
            change = LeadershipChange("sim", b.leadership.holder, 2, clock.now(), a.leadership.holder,
                                      "takeover")
            assert await a.alerting.announce(change) == 0
            await a.drain()
            await b.drain()
            await sub.wait_for(lambda: len(leadership_events(sub)) == 2)
            await asyncio.sleep(0.2)  # a late duplicate would arrive now
        alerts = leadership_alerts(receiver)
        assert Counter(body["dedup_key"] for body in alerts) == {"leadership/sim@1": 1, "leadership/sim@2": 1}
        assert {(body["severity"], body["id"], body["event"]) for body in alerts} == {
            ("info", "sim/fleet/leadership", True)}
        takeover = next(body for body in alerts if body["dedup_key"] == "leadership/sim@2")
        assert takeover["labels"] == {"holder": b.leadership.holder, "previous_holder": a.leadership.holder,
                                      "transition": "takeover"}
        events = leadership_events(sub)
        for event in events:
            jsonschema.validate(event, SCHEMA)
        assert [(e["id"], e["data"]["transition"], e["data"]["previous_holder"]) for e in events] == [
            ("leadership/sim@1", "first", None), ("leadership/sim@2", "takeover", a.leadership.holder)]
