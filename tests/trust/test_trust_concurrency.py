"""Issue 13, defect 8: the global hourly rate limit holds across clusters polled concurrently."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trust_helpers import MonotonicView, TrustClock, daemon_writes, settings_for

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer


async def test_the_global_rate_limit_holds_across_concurrent_clusters(tmp_path: Path) -> None:
    clock = TrustClock(instant=True)
    view = MonotonicView(clock)
    async with SimulatorServer("cosmos7", clock=view, state_dir=tmp_path / "a") as a, \
            SimulatorServer("cosmos7", clock=view, state_dir=tmp_path / "b") as b:
        for sim in (a, b):  # each re-read before a PATCH takes a moment, as over a real network
            sim.faults.add("latency", method="GET", path="/quotas/1/", seconds=0.3)
        policy = {"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4, "max_actions_per_hour": 1}
        async with Daemon(settings_for(a, b, store=tmp_path / "state.db", policy=policy), clock) as daemon:
            await asyncio.gather(daemon.poll_once("sim"), daemon.poll_once("sim2"))
        growths = len(daemon_writes(a)) + len(daemon_writes(b))
    assert growths <= 1
