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
