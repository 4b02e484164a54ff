"""Issue 18's done-when for decision events: a demo run (`run_demo`, the code `quotapilot demo`
runs) with MQTT configured delivers one event per audited decision and alert transition, counted
against the audit trail the demo leaves in its store, none lost across a restart of the (real,
Mosquitto) broker in the middle of the run.

The suite runs a 3-day demo; `QP_DEMO_EVENTS_DAYS=30` runs the issue's 30 days (a few minutes)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
from alert_receivers import Broker
from paho.mqtt.enums import CallbackAPIVersion

from quotapilot.daemon.commands.demo import DemoOptions, Frame, run_demo
from quotapilot.daemon.events import EVENT_SINK_PREFIX
from quotapilot.daemon.store.db import Database

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "events.schema.json").read_text())
DAYS = float(os.environ.get("QP_DEMO_EVENTS_DAYS", "3"))
DAY = 86400.0


class ThreadSubscriber:
    """A paho-mqtt subscriber in a thread of its own, so a synchronous demo hook can wait for it:
    it reconnects by itself after a broker restart and re-subscribes (QoS 1)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.listening = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-events-{port}-{time.monotonic_ns()}")
        client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda _c, _u, _mid, _rcs, _p: self.listening.set()
        client.on_disconnect = lambda _c, _u, _f, _rc, _p: self.listening.clear()
        client.on_message = lambda _c, _u, msg: self.messages.append((msg.topic, msg.payload))
        client.reconnect_delay_set(min_delay=1, max_delay=1)
        client.connect("127.0.0.1", port)
        client.loop_start()
        self.client = client

    def wait(self, listening: bool, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.listening.is_set() != listening:
            assert time.monotonic() < deadline, f"subscriber never {'listened' if listening else 'dropped'}"
            time.sleep(0.01)

    def events(self) -> dict[str, dict[str, Any]]:
        """Every event received, by id (QoS 1 is at least once: a redelivery has the same id)."""
        events = (json.loads(payload) for topic, payload in list(self.messages) if topic != "qp/events/status")
        return {event["id"]: event for event in events}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class BrokerOutage:
    """The demo's frame hook: stops the broker at `down_at` days and starts it again once at
    least `hours` have passed and the daemon has grown a quota meanwhile (so the outage holds
    events back for sure), waiting in the hook until the subscriber listens again: what the
    daemon re-sends after the outage must find it there."""

    def __init__(self, broker: Broker, subscriber: ThreadSubscriber, down_at: float, hours: float) -> None:
        self.broker, self.subscriber = broker, subscriber
        self.down_at, self.hours = down_at, hours
        self.down_t: float | None = None
        self.up_t: float | None = None
        self.grown_t: float | None = None
        self.actions_at_down = 0

    def __call__(self, frame: Frame) -> None:
        if self.down_t is None and frame.elapsed_days >= self.down_at:
            self.broker.stop()
            self.subscriber.wait(listening=False)
            self.down_t, self.actions_at_down = frame.t, frame.growth_actions
        elif self.down_t is not None and self.up_t is None and frame.t - self.down_t >= self.hours * 3600:
            if self.grown_t is None and frame.growth_actions > self.actions_at_down:
                self.grown_t = frame.t  # its events carry this frame's time: up at a later frame
            elif self.grown_t is not None and frame.t > self.grown_t:
                self.broker.start()
                self.subscriber.wait(listening=True)
                self.up_t = frame.t


class TestDemoEvents:
    async def test_one_event_per_audited_decision_and_transition_none_lost_across_a_broker_restart(
            self, tmp_path: Path, broker: Broker) -> None:
        config = tmp_path / "events.toml"
        config.write_text(f'[events]\nretry_backoffs_seconds = [60, 300]\n'
                          f'[events.mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                          f'topic_prefix = "qp"\ntimeout_seconds = 2\n')
        state = tmp_path / "demo"
        subscriber = ThreadSubscriber(broker.port, "qp/events/#")
        try:
            subscriber.wait(listening=True)
            outage = BrokerOutage(broker, subscriber, down_at=0.4 * DAYS, hours=12)
            report = await run_demo(DemoOptions(days=DAYS, config=config, state_dir=state), on_frame=outage)
            db = Database(state / "state.db")
            audit = db.query("SELECT id FROM actions ORDER BY id")
            rows = db.query("SELECT sink, dedup_key, status, payload, created_at, delivered_at FROM outbox")
            db.close()
            mqtt_rows = {r["dedup_key"]: r for r in rows if r["sink"] == f"{EVENT_SINK_PREFIX}mqtt"}
            for _ in range(200):   # the last deliveries, in flight on the wire (real time)
                if set(subscriber.events()) == set(mqtt_rows):
                    break
                await asyncio.sleep(0.05)
            received = subscriber.events()
            duplicates = sum(1 for topic, _ in subscriber.messages if topic != "qp/events/status") - len(received)
        finally:
            subscriber.close()
        assert outage.down_t is not None and outage.up_t is not None
        # none lost: every event the demo enqueued for MQTT was delivered and received
        assert set(received) == set(mqtt_rows)
        assert all(r["delivered_at"] is not None for r in mqtt_rows.values())
        during = [r for r in mqtt_rows.values() if outage.down_t <= r["created_at"] < outage.up_t]
        assert during and all(r["delivered_at"] >= outage.up_t for r in during)  # waited out the outage
        for event in received.values():
            jsonschema.validate(event, SCHEMA)
        by_type = Counter(event["type"] for event in received.values())
        # one `result` event per audited action, carrying its audit id
        results = sorted(e["data"]["action_id"] for e in received.values() if e["type"] == "result")
        assert results == [row["id"] for row in audit] and results
        # one `alert` event per alert transition (a notification that is not a re-notification)
        transitions = {r["dedup_key"] for r in rows if r["sink"] == "log" and not json.loads(r["payload"])["renotify"]}
        assert {e["id"] for e in received.values() if e["type"] == "alert"} == transitions and transitions
        assert report["growth_actions"] > 0
        print(f"\ndemo {DAYS:g} days: {len(received)} events received ({dict(sorted(by_type.items()))}), "
              f"{duplicates} redelivered; audit {len(audit)} actions, {len(transitions)} alert transitions; "
              f"{len(during)} enqueued during the {(outage.up_t - outage.down_t) / 3600:g} h broker outage")
