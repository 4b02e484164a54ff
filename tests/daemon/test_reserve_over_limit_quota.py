"""24c7573: the reserve guard counts "the quotas' unused promises" as taken, computed from VMS's
two totals, `quotas_allocated_capacity − quotas_used_capacity`. A quota over its hard limit makes
that difference smaller than the promises still open: its overage is netted against the other
quotas' unused limits, so the guard sees room the quotas have already promised."""

from __future__ import annotations

from pathlib import Path

from test_actuator import NOW, make_settings

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.stages.growth import GrowthStage
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.planner import TIB, unused_promises
from quotapilot.forecasting.types import (
    ActionStatus,
    ClusterCapacity,
    Observation,
    TargetId,
)

A = TargetId("c1", "a", "/a")  # 80 of 100: wants to grow
B = TargetId("c1", "b", "/b")  # 300 of 100: over its limit (a limit lowered below usage); paused
C = TargetId("c1", "c", "/c")  # 0 of 400: an unused promise of 400


class NoVms:
    async def list_views(self, path: str | None = None) -> list:  # pragma: no cover - no views
        return []


def the_poll(t: float) -> PollResult:
    quotas = [(A, 1, 100, 80), (B, 2, 100, 300), (C, 3, 400, 0)]
    observations = tuple(Observation(target=target, t=t, used_bytes=used * TIB, hard_limit_bytes=hard * TIB,
                                     soft_limit_bytes=int(hard * TIB * 0.9), quota_id=quota_id)
                         for target, quota_id, hard, used in quotas)
    # the pool: 800 TiB usable, 380 used (all of it the quotas'), 420 free; what VMS totals say
    capacity = ClusterCapacity("c1", t, usable_bytes=800 * TIB, used_bytes=380 * TIB, free_bytes=420 * TIB,
                               quotas_allocated_bytes=600 * TIB, quotas_used_bytes=380 * TIB,
                               listed_unused_bytes=unused_promises(observations))  # as the collector fills it
    return PollResult(cluster="c1", t=t, observations=observations, capacity=capacity)


async def test_a_quota_over_its_limit_does_not_free_another_quotas_promise(tmp_path: Path) -> None:
    """Open promises: a's 20 + c's 400 = 420 TiB, all of the 420 free; the reserve (10 %, 80 TiB)
    is already spent. VMS's totals say 600 − 380 = 220 (b's 200 over its limit netted against c's
    400), so the guard saw 420 − 220 − 80 = 120 TiB of room and a would-grow of a went through."""
    db = Database(tmp_path / "state.db")
    OverrideStore(db).pause(B.name, now=NOW, cluster="c1", reason="over its limit, left alone")
    stage = GrowthStage(make_settings("observe"), db, lambda cluster: NoVms(), VirtualClock(NOW))
    ctx = CycleContext(poll=the_poll(NOW), now=NOW)
    await stage.on_cycle(ctx)
    outcomes = {(a.target.name, a.status, a.guard) for a in ctx.actions}
    assert (A.name, ActionStatus.WOULD_GROW, None) not in outcomes, outcomes
    decision = next(d for d in ctx.decisions if d.target == A)
    assert decision.guard == "cluster_reserve", decision
