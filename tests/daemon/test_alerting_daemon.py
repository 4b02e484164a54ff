"""Alerting inside the real daemon: simulator (HTTPS, vastpy) → poll → stages → outbox → a real
HTTP receiver, on a virtual clock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

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
from quotapilot.forecasting.types import POOL_TARGET

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


async def operator_sets_processed(sim: SimulatorServer, hard_limit: int, *, dimension: str = "") -> None:
    """An operator sets cosmos7-processed's hard limit in VMS (soft at 90 %) with vastpy: it stays
    (`dimension="_inodes"`: the inode limits)."""
    quota = sim.engine.quota_by_name("cosmos7-processed")
    assert quota is not None
    client = vastpy.VASTClient(address=sim.address, token=sim.token, cert_file=str(sim.ca_file))
    limits = {f"hard_limit{dimension}": hard_limit, f"soft_limit{dimension}": hard_limit * 9 // 10}
    await asyncio.to_thread(client[f"quotas/{quota.id}"].patch, **limits)


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


def webhook(make_settings: SettingsFactory, receiver: Receiver, **groups: Any) -> Settings:
    """Settings whose alerts go to `receiver` (named "oncall"), with `groups` as given."""
    return make_settings(alerts={"webhooks": [{"url": receiver.url, "name": "oncall"}]}, **groups)


class TestALimitThatKeepsMoving:
    """A limit that moves at every poll (an operator's script stepping it, another tool managing
    the quota, a pool whose usable capacity phases in while an expansion comes online) is held
    one poll in two, not for good: held at every poll, a quota at 91 % never paged critical, its
    growth was held with no audit row and no alert, and the external change was never audited
    (`_external_changes` judges only believed samples)."""

    async def test_a_quota_whose_limit_moves_every_poll_still_pages_and_is_audited(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        settings = webhook(make_settings, receiver)
        utilization = f"{PROCESSED}utilization"
        async with oncall(settings, clock) as polls:
            await polls(3)
            # about 5 TB used: a script keeps the limit just above usage, 10 GB more at every poll
            for step in range(10):
                await operator_sets_processed(sim, 5_500 * 10**9 + step * 10 * 10**9)
                await polls(1)
        assert (utilization, "firing") in pages(receiver, utilization)
        # every other move is believed (steps 1, 3, 5, 7, 9), each audited against the last believed
        assert audit_statuses(settings, "cosmos7-processed").count("external_change") == 5

    async def test_the_pool_filling_while_capacity_phases_in_pages(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        """An expansion's capacity comes online a few TB per poll while ingest fills the pool
        faster: it crosses 90 % (critical), and on-call is paged."""
        settings = webhook(make_settings, receiver)
        critical = f"sim/{POOL_TARGET}/utilization"

        def pool(usable_tb: float, used_tb: float) -> None:
            sim.faults.add("rewrite", method="GET", path="clusters", count=1,
                           values={"usable_capacity_bytes": int(usable_tb * TB),
                                   "free_usable_capacity": int((usable_tb - used_tb) * TB)})

        async with oncall(settings, clock) as polls:
            for _ in range(3):  # 85 % of 1000 TB, steady
                pool(1000, 850)
                await polls(1)
            for step in range(1, 11):  # +1 TB usable and +8 TB used per poll: 86 % ... 93 %
                pool(1000 + step, 850 + 8 * step)
                await polls(1)
        assert [p for p in receiver.bodies() if p["id"] == critical and p["severity"] == "critical"] != []


# --------------------------------------------------------------------- a change across a restart
class TestAChangeSeenOnceBeforeARestart:
    """The growth stage's baseline of hard limits (`_last_hard`) lives in memory, and a changed
    limit is judged only on a believed poll. Rebuilt from the polls after a restart, an operator's
    lasting change seen by one poll before it (held, so not yet audited) was never audited nor
    paged: the first sample after the restart is unconfirmed, the second became the new baseline.
    The baseline is now recovered from the samples stored before the restart, replaying the
    poller's hold (`validation.last_believed_limits`): the last limit *believed*, not the last read."""

    async def test_the_change_is_audited_and_paged_after_the_restart(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        settings = webhook(make_settings, receiver)
        blocked = f"{PROCESSED}growth_blocked"
        async with oncall(settings, clock) as polls:
            await polls(3)
            await operator_sets_processed(sim, 12 * TB)
            await polls(1)  # seen once: held
        async with oncall(settings, clock) as polls:  # e.g. the operator restarts quotapilot too
            await polls(3)
        assert audit_statuses(settings, "cosmos7-processed").count("external_change") == 1
        assert (blocked, "firing") in pages(receiver, blocked)

    async def test_a_glitch_seen_once_before_the_restart_is_not_audited(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        """The last limit read before the restart was a glitch (held): the old limit after it is
        no change, and nothing is audited nor paged."""
        settings = webhook(make_settings, receiver)
        async with oncall(settings, clock) as polls:
            await polls(3)
            glitch_processed(sim, 4 * TB)
            await polls(1)  # seen once: held
        async with oncall(settings, clock) as polls:  # 10 TB again
            await polls(3)
        assert audit_statuses(settings, "cosmos7-processed") == []
        assert [p for p in pages(receiver) if p[0] in SAMPLE_ALERTS] == []

    async def test_a_change_audited_before_the_restart_is_not_audited_again(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        settings = webhook(make_settings, receiver)
        blocked = f"{PROCESSED}growth_blocked"
        async with oncall(settings, clock) as polls:
            await polls(3)
            await operator_sets_processed(sim, 12 * TB)
            await polls(2)  # held, then believed: audited and paged
        async with oncall(settings, clock) as polls:
            await polls(3)
        assert audit_statuses(settings, "cosmos7-processed").count("external_change") == 1
        assert pages(receiver, blocked).count((blocked, "firing")) == 1

    async def test_our_growth_read_first_after_the_restart_is_no_external_change(
            self, make_settings: SettingsFactory, clock: VirtualClock, receiver: Receiver) -> None:
        """Grown just before the restart, never read back before it: the grown limit is a write of
        ours (the audit says so), not an operator's change."""
        policy = {"mode": "enforce", "overrides": [
            {"match": "cosmos7-raw", "grow_at": 0.5, "target_utilization": 0.2}]}
        settings = webhook(make_settings, receiver, policy=policy)
        async with oncall(settings, clock) as polls:
            await polls(2)  # a first sample; confirmed: grown
        assert audit_statuses(settings, "cosmos7-raw") == ["verified"]
        async with oncall(settings, clock) as polls:
            await polls(3)
        assert audit_statuses(settings, "cosmos7-raw") == ["verified"]


class TestAPoolSampleVmsSaidOnce:
    """The pool's usable capacity is its hard limit: a one-poll change leaves the pool unconfirmed
    (`test_collector.TestLimitChanges.test_the_pools_usable_capacity_too`), and the pool's own
    alerts wait. But the growth stage holds only the decisions of unconfirmed *quotas*
    (`_hold_if_unconfirmed`): the cluster-reserve guard reads the unconfirmed pool
    (`poll.capacity`) at once. A glitch of one poll reporting a far larger pool lets a growth the
    reserve was holding be written. (Failed before 0198d09 too: a gap the commit's "kept ...,
    never written on" leaves open.)"""

    async def test_no_growth_is_written_past_the_reserve_on_a_pool_vms_said_once(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        # cosmos7-raw (60 %) wants to grow; the pool (2 PB, ~83 % free) cannot keep a 90 % reserve
        policy = {"mode": "enforce", "cluster_reserve_ratio": 0.9, "overrides": [
            {"match": "cosmos7-raw", "grow_at": 0.5, "target_utilization": 0.2}]}
        settings = webhook(make_settings, receiver, policy=policy)
        raw = sim.engine.quota_by_name("cosmos7-raw")
        assert raw is not None
        before = raw.hard_limit
        async with oncall(settings, clock) as polls:
            await polls(3)
            assert (raw.hard_limit, audit_statuses(settings, "cosmos7-raw")) == (before, ["blocked"])
            # one listing says the pool is 20 PB, 98 % free
            sim.faults.add("rewrite", method="GET", path="clusters", count=1,
                           values={"usable_capacity_bytes": 20_000 * TB, "free_usable_capacity": 19_600 * TB})
            await polls(1)
        assert raw.hard_limit == before
        assert "verified" not in audit_statuses(settings, "cosmos7-raw")


class TestAnOperatorsInodeLimitChange:
    """The collector holds a sample whose *inode* hard limit moved (README: "A hard limit (bytes or
    inodes, ...) that moved without a write of ours is likewise kept but unconfirmed"), but the
    growth stage audits and holds only bytes (`_external_changes` reads `hard_limit_bytes`,
    `_hold_if_changed` lets every non-bytes decision through). An operator who lowers an inode
    limit (to stop a job creating millions of files) sees it grown back on the poll that confirms
    it, with no `external_change` row and no `growth_blocked` page — the design's "recorded,
    alerted, never silently overwritten". (Failed before 0198d09 too: the audit was always
    bytes-only; the commit's docs claim inode limits are covered.)"""

    async def test_it_is_audited_and_not_grown_over_on_the_confirming_poll(
            self, make_settings: SettingsFactory, clock: VirtualClock, sim: SimulatorServer,
            receiver: Receiver) -> None:
        settings = webhook(make_settings, receiver, policy={"mode": "enforce"})
        quota = sim.engine.quota_by_name("cosmos7-processed")
        assert quota is not None
        async with oncall(settings, clock) as polls:
            await polls(3)
            await operator_sets_processed(sim, 12_000, dimension="_inodes")  # ~10,000 files used: 83 %
            await polls(2)  # the new limit (held), again (believed)
            after_confirming_poll = quota.hard_limit_inodes
            await polls(1)
        assert "external_change" in audit_statuses(settings, "cosmos7-processed")
        assert after_confirming_poll == 12_000
