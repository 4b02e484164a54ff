"""Alerting inside the real daemon: simulator (HTTPS, vastpy) → poll → stages → outbox → a real
HTTP receiver, on a virtual clock."""

from __future__ import annotations

import asyncio

import pytest
from alert_receivers import Receiver
from core_helpers import SettingsFactory
from prometheus_client import CollectorRegistry

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.wiring import StageWiring


@pytest.fixture
def clock() -> VirtualClock:  # the delivery task sleeps on it; nothing here needs time to pass
    return VirtualClock()


async def test_a_poll_raises_alerts_that_reach_the_webhook(
        make_settings: SettingsFactory, clock: VirtualClock,
        receiver: Receiver) -> None:
    url = receiver.url
    # every quota above 30 % warns, so cosmos7's quotas fire on the first poll
    settings = make_settings(alerts={"webhooks": [{"url": url, "name": "oncall"}]},
                             policy={"overrides": [{"match": "*", "warning_at": 0.3}]})
    wiring = StageWiring()
    async with Daemon(settings, clock, stages=wiring) as daemon:
        stage = wiring.built.alerting
        assert "alerts" in daemon.supervisor.task_names
        registry = CollectorRegistry()
        registry.register(stage.collector())
        supervisor = asyncio.create_task(daemon.supervisor.run(), name="supervisor")
        try:
            await daemon.poll_once("sim")
            assert await stage.drain(10)
        finally:
            daemon.supervisor.stop()
            await supervisor
    posts = receiver.bodies()
    ids = {p["id"] for p in posts}
    assert "sim/cosmos7-raw/utilization" in ids
    raw = next(p for p in posts if p["id"] == "sim/cosmos7-raw/utilization")
    assert (raw["severity"], raw["path"], raw["status"]) == ("warning", "/cosmos7/raw", "firing")
    assert stage.alerts_raised == len(posts)
    assert registry.get_sample_value("quotapilot_notifications_total",
                                     {"sink": "oncall", "result": "delivered"}) == len(posts)
    assert registry.get_sample_value("quotapilot_alerts_firing",
                                     {"kind": "utilization", "severity": "warning"}) >= 1
