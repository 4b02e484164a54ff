"""Alerting inside the real daemon: simulator (HTTPS, vastpy) → poll → stages → outbox → a real
HTTP receiver, on a virtual clock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import vastpy
from alert_receivers import Receiver
from core_helpers import SettingsFactory
from prometheus_client import CollectorRegistry

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.wiring import StageWiring
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator import SimulatorServer

TB = 10**12


@pytest.fixture
def clock() -> VirtualClock:  # the delivery task sleeps on it; nothing here needs time to pass
    return VirtualClock()


async def test_a_poll_raises_alerts_that_reach_the_webhook(
        make_settings: SettingsFactory, clock: VirtualClock,
        receiver: Receiver) -> None:
    url = receiver.url
    # every quota above 30 % warns, so cosmos7's quotas fire on the second poll (the first, which
    # nothing confirms yet, pages nobody)
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
            assert receiver.bodies() == []
            clock.advance(60)
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


# --------------------------------------------------------------------- samples VMS said once
PROCESSED = "sim/cosmos7-processed/"
"""cosmos7-processed: 10 TB hard limit, about 5 TB used (50 %): quiet unless a test says otherwise."""
SAMPLE_ALERTS = {f"{PROCESSED}{kind}" for kind in ("utilization", "runway", "growth_blocked")}


@asynccontextmanager
async def oncall(settings: Settings, clock: VirtualClock) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """The daemon with its supervised tasks running (alert delivery included); yields `polls(n)`:
    n polls of "sim", a minute apart, each one's alerts delivered before the next."""
    wiring = StageWiring()
    async with Daemon(settings, clock, stages=wiring) as daemon:
        stage = wiring.built.alerting
        supervisor = asyncio.create_task(daemon.supervisor.run(), name="supervisor")

        async def polls(count: int) -> None:
            for _ in range(count):
                await daemon.poll_once("sim")
                assert await stage.drain(10)
                clock.advance(60)
        try:
            yield polls
        finally:
            daemon.supervisor.stop()
            await supervisor


def glitch_processed(sim: SimulatorServer, hard_limit: int, *, polls: int = 1) -> None:
    """The next `polls` quota listings report cosmos7-processed's hard limit as `hard_limit` (soft at 90 %)."""
    sim.faults.add("rewrite", method="GET", path="quotas", match="cosmos7-processed", count=polls,
                   values={"hard_limit": hard_limit, "soft_limit": hard_limit * 9 // 10})


async def operator_sets_processed(sim: SimulatorServer, hard_limit: int) -> None:
    """An operator sets cosmos7-processed's hard limit in VMS (soft at 90 %) with vastpy: it stays."""
    quota = sim.engine.quota_by_name("cosmos7-processed")
    assert quota is not None
    client = vastpy.VASTClient(address=sim.address, token=sim.token, cert_file=str(sim.ca_file))
    await asyncio.to_thread(client[f"quotas/{quota.id}"].patch, hard_limit=hard_limit,
                            soft_limit=hard_limit * 9 // 10)


def pages(receiver: Receiver, prefix: str = PROCESSED) -> list[tuple[str, str]]:
    """(alert id, status) of what reached on-call for alerts starting with `prefix`, in order."""
    return [(p["id"], p["status"]) for p in receiver.bodies() if p["id"].startswith(prefix)]


def audit_statuses(settings: Settings, target: str) -> list[str]:
    """The statuses of `target`'s audit rows (the store's `actions` table), oldest first."""
    with sqlite3.connect(settings.store.path) as conn:
        return [r[0] for r in conn.execute("SELECT status FROM actions WHERE target = ? ORDER BY id", (target,))]


class TestSamplesVmsSaidOnce:
    """An alert fires or resolves on what VMS said twice, not once: a sample the collector has not
    confirmed (a target's first, or a hard limit that moved without a write of ours) holds its
    target's alerts as they were. A glitch of one poll in a quota's hard limit (4 TB for 10 TB,
    about 5 TB used: 125 %) paged utilization, runway and growth_blocked at once, and resolved
    them on the next poll."""

    async def test_a_one_poll_limit_glitch_pages_nobody(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        settings = make_settings(alerts={"webhooks": [{"url": receiver.url, "name": "oncall"}]})
        async with oncall(settings, clock) as polls:
            await polls(3)
            glitch_processed(sim, 4 * TB)
            await polls(4)
        assert [p for p in pages(receiver) if p[0] in SAMPLE_ALERTS] == []
        # nor audited: no external change (to 4 TB, and back) was ever confirmed by a second poll
        assert audit_statuses(settings, "cosmos7-processed") == []

    async def test_a_limit_two_polls_agree_on_pages(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        settings = make_settings(alerts={"webhooks": [{"url": receiver.url, "name": "oncall"}]})
        seen: list[list[tuple[str, str]]] = []
        async with oncall(settings, clock) as polls:
            await polls(3)
            glitch_processed(sim, 4 * TB, polls=2)
            for _ in range(4):  # 4 TB, 4 TB (confirmed), 10 TB, 10 TB (confirmed)
                await polls(1)
                seen.append([p for p in pages(receiver) if p[0] in SAMPLE_ALERTS])
        utilization, runway, blocked = (f"{PROCESSED}{kind}" for kind in ("utilization", "runway", "growth_blocked"))
        # two polls agree on 4 TB: an external change, paged as one (and so is the way back)
        fired = [(utilization, "firing"), (runway, "firing"), (blocked, "firing")]
        # (the runway, 0 while used is above the limit, waits for a forecast to say it is longer)
        assert seen == [[], fired, fired, [*fired, (utilization, "resolved")]]
        assert audit_statuses(settings, "cosmos7-processed").count("external_change") == 2

    @pytest.mark.parametrize("hard_limit", [8 * TB, 12 * TB], ids=["lowered", "raised"])
    async def test_an_operators_lasting_limit_change_pages_on_the_confirming_poll(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver, hard_limit: int) -> None:
        """A limit someone else moved, and that stays, is an external change: audited once and
        paged (`growth_blocked`) on the poll that confirms it — not lost on the unconfirmed one
        before it, whose alerts are held."""
        settings = make_settings(alerts={"webhooks": [{"url": receiver.url, "name": "oncall"}]})
        blocked = f"{PROCESSED}growth_blocked"
        seen = []
        async with oncall(settings, clock) as polls:
            await polls(3)
            await operator_sets_processed(sim, hard_limit)
            for _ in range(3):  # the new limit (unconfirmed), again (confirmed: the change), again
                await polls(1)
                seen.append(pages(receiver, blocked))
        assert seen == [[], [(blocked, "firing")], [(blocked, "firing"), (blocked, "resolved")]]
        assert audit_statuses(settings, "cosmos7-processed").count("external_change") == 1

    async def test_our_growth_resolves_its_alert_on_the_first_read(
            self, make_settings: SettingsFactory, clock: VirtualClock, receiver: Receiver) -> None:
        """A hard limit we wrote is no glitch: the read that shows it is believed at once."""
        # cosmos7-raw (12 TB of 20: 60 %) warns above 55 % and is grown at once, to about 20 %
        policy = {"mode": "enforce", "overrides": [
            {"match": "cosmos7-raw", "warning_at": 0.55, "grow_at": 0.5, "target_utilization": 0.2}]}
        settings = make_settings(alerts={"webhooks": [{"url": receiver.url, "name": "oncall"}]}, policy=policy)
        raw = "sim/cosmos7-raw/utilization"
        seen = []
        async with oncall(settings, clock) as polls:
            for _ in range(3):  # a first sample; confirmed (fires, grown); the grown limit read back
                await polls(1)
                seen.append(pages(receiver, raw))
        assert audit_statuses(settings, "cosmos7-raw") == ["verified"]
        assert seen == [[], [(raw, "firing")], [(raw, "firing"), (raw, "resolved")]]

    async def test_a_glitch_on_the_first_poll_after_a_restart_pages_nobody(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        """Nothing confirmed to judge it against: the first sample after a restart waits too."""
        settings = make_settings(alerts={"webhooks": [{"url": receiver.url, "name": "oncall"}]})
        async with oncall(settings, clock) as polls:
            await polls(3)
        glitch_processed(sim, 4 * TB)
        async with oncall(settings, clock) as polls:
            await polls(3)
        assert [p for p in pages(receiver) if p[0] in SAMPLE_ALERTS] == []
