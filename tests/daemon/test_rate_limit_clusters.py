"""Review r14: the per-mode rate-limit budgets, with two clusters' cycles running at once (one
stage serves every cluster's poller)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from test_actuator import NOW, TIB, FakeVms

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.stages.growth import GrowthStage
from quotapilot.daemon.store.db import Database
from quotapilot.forecasting.types import ActionStatus, ClusterCapacity, Observation, TargetId


def _poll(cluster: str, vms: FakeVms, t: float) -> PollResult:
    observations = tuple(
        Observation(target=TargetId(cluster, q["name"], q["path"]), t=t, used_bytes=q["used_effective_capacity"],
                    hard_limit_bytes=q["hard_limit"], soft_limit_bytes=q["soft_limit"], quota_id=q["id"])
        for q in vms.quotas.values())
    capacity = ClusterCapacity(cluster, t, usable_bytes=10_000 * TIB, used_bytes=1000 * TIB, free_bytes=9000 * TIB)
    return PollResult(cluster=cluster, t=t, observations=observations, capacity=capacity)


async def test_a_would_grow_in_flight_on_another_cluster_does_not_hold_a_real_write(tmp_path: Path) -> None:
    """Global enforce, one action per hour, cluster c2's quotas observed. While c2's cycle records
    its would-grow, c1's cycle reaches its enforced quota's growth: a would-grow never holds a real
    write (the planner's enforce budget and `rate_limit_count_since(mode="enforce")` say so), so c1's
    quota is grown."""
    settings = Settings(clusters=({"name": "c1", "address": "vms1", "token": "t"},  # type: ignore[arg-type]
                                  {"name": "c2", "address": "vms2", "token": "t"}),
                        policy={"mode": "enforce", "max_actions_per_hour": 1,  # type: ignore[arg-type]
                                "overrides": [{"match": "/c2/*", "mode": "observe"}]})
    vms1, vms2 = FakeVms(), FakeVms()
    vms1.add(1, "raw", "/c1/raw", hard=100 * TIB, used=80 * TIB)  # enforced
    vms2.add(1, "data", "/c2/data", hard=100 * TIB, used=80 * TIB)  # observed
    clock = VirtualClock(NOW)
    stage = GrowthStage(settings, Database(tmp_path / "state.db"), lambda c: vms1 if c == "c1" else vms2, clock)

    entered, gate = threading.Event(), threading.Event()
    record = stage.actions.record

    def held_would_grow(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("status") == "would_grow":  # c2's would-grow: in flight until the gate opens
            entered.set()
            assert gate.wait(10)
        return record(*args, **kwargs)

    stage.actions.record = held_would_grow  # type: ignore[method-assign]
    observed = CycleContext(poll=_poll("c2", vms2, NOW), now=NOW)
    c2_cycle = asyncio.create_task(stage.on_cycle(observed))
    assert await asyncio.to_thread(entered.wait, 10)
    enforced = CycleContext(poll=_poll("c1", vms1, NOW), now=NOW)
    try:
        await stage.on_cycle(enforced)
    finally:
        gate.set()
        await c2_cycle
    assert [a.status for a in observed.actions] == [ActionStatus.WOULD_GROW]
    assert [a.status for a in enforced.actions] == [ActionStatus.VERIFIED], [a.reason for a in enforced.actions]
    assert len(vms1.patches) == 1
