"""Issue 13, wrong write 2: one bad sample must not become a growth."""

from __future__ import annotations

from pathlib import Path

from trust_helpers import TB, TrustClock, audit, daemon_writes, settings_for

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer


async def test_one_glitched_sample_is_not_acted_on(trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
    settings = settings_for(trust, store=store, poll={"interval_seconds": 900})
    async with Daemon(settings, clock) as daemon:
        for _ in range(8):  # two hours of true samples: t-data at 70 %, growing 0.2 TB/day
            await daemon.poll_once("sim")
            clock.advance(900)
        # one poll reports t-data 99 % full; the next ones are true again
        trust.faults.add("rewrite", method="GET", path="quotas", match="t-data",
                         values={"used_capacity": 99 * TB}, count=1)
        for _ in range(4):
            await daemon.poll_once("sim")
            clock.advance(900)
    assert [w.changes for w in daemon_writes(trust) if w.name == "t-data"] == []
    assert [r["status"] for r in audit(store, "t-data")] == []


def glitch_t_data(trust: SimulatorServer, **values: object) -> None:
    """The next quota listing reports t-data 99 % full (truth: 70 %), once."""
    trust.faults.add("rewrite", method="GET", path="quotas", match="t-data",
                     values={"used_capacity": 99 * TB, **values}, count=1)


async def polls(daemon: Daemon, clock: TrustClock, count: int) -> None:
    for _ in range(count):
        await daemon.poll_once("sim")
        clock.advance(900)


def no_growth_of_t_data(trust: SimulatorServer, store: Path) -> None:
    assert [w.changes for w in daemon_writes(trust) if w.name == "t-data"] == []
    assert [r["status"] for r in audit(store, "t-data") if r["status"] != "external_change"] == []


class TestAGlitchWithoutHistory:
    """The jump rule judges a sample against the target's previous one; where there is none — the
    daemon's first poll, the first after a restart, after an empty listing made it forget the
    quota, after the record's identity changed — a 99 % glitch was grown on at once (100 →
    141.8 TB; 649.8 TB after an empty listing). Such a first sample is kept but unconfirmed: growth
    waits for the next sample to agree with it."""

    async def test_on_the_first_poll(self, trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
        glitch_t_data(trust)
        async with Daemon(settings_for(trust, store=store, poll={"interval_seconds": 900}), clock) as daemon:
            await polls(daemon, clock, 4)
        no_growth_of_t_data(trust, store)

    async def test_after_a_restart(self, trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
        settings = settings_for(trust, store=store, poll={"interval_seconds": 900})
        async with Daemon(settings, clock) as daemon:
            await polls(daemon, clock, 8)
        glitch_t_data(trust)
        async with Daemon(settings, clock) as daemon:
            await polls(daemon, clock, 3)
        no_growth_of_t_data(trust, store)

    async def test_after_an_empty_listing(self, trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
        async with Daemon(settings_for(trust, store=store, poll={"interval_seconds": 900}), clock) as daemon:
            await polls(daemon, clock, 8)
            trust.faults.add("empty", path="quotas", count=1)
            await polls(daemon, clock, 1)
            glitch_t_data(trust)
            await polls(daemon, clock, 3)
        no_growth_of_t_data(trust, store)

    async def test_with_its_path_changed(self, trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
        async with Daemon(settings_for(trust, store=store, poll={"interval_seconds": 900}), clock) as daemon:
            await polls(daemon, clock, 8)
            glitch_t_data(trust, path="/t/data/")
            await polls(daemon, clock, 3)
        no_growth_of_t_data(trust, store)
        assert [r["status"] for r in audit(store)] == []

    async def test_a_quota_really_near_full_is_grown_at_the_second_poll(
            self, trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
        """(the price: one poll) t-data really at 99 %, from the first poll on."""
        trust.faults.add("rewrite", method="GET", path="quotas", match="t-data",
                         values={"used_capacity": 99 * TB}, count=10)
        async with Daemon(settings_for(trust, store=store, poll={"interval_seconds": 900}), clock) as daemon:
            await polls(daemon, clock, 1)
            assert [w for w in daemon_writes(trust) if w.name == "t-data"] == []
            await polls(daemon, clock, 1)
        assert [w for w in daemon_writes(trust) if w.name == "t-data"] != []
