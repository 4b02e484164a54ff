"""ad6fede: a blocked outcome keeps its guard episode's first time (`GrowthStage._recorded_guard`,
(guard, since)). The episode memory is not forgotten when the instance loses the cluster's lead
(`_forget_baseline` drops the baseline, the rename names, ... but not `_recorded_guard`): back in
the lead, a cooldown begun under the other leader is reported as the episode this instance saw
before it lost the lead — its outcome time predates the other leader's growth that started it."""

from __future__ import annotations

from pathlib import Path

from test_actuator import NOW, RAW, TIB, FakeVms, Replica

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.store.db import Database
from quotapilot.forecasting.types import ActionStatus

HOUR = 3600.0


async def test_a_cooldown_episode_of_the_other_leaders_term_is_not_dated_from_the_previous_term(
        tmp_path: Path) -> None:
    db, vms, clock = Database(tmp_path / "state.db"), FakeVms(), VirtualClock(NOW)
    vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)  # 80 %: wants to grow
    first, second = Replica(db, vms, clock, leads=True), Replica(db, vms, clock, leads=False)

    async def cycle() -> CycleContext:
        await second.cycle()
        return await first.cycle()

    ctx = await cycle()
    assert [a.status for a in ctx.actions] == [ActionStatus.WOULD_GROW]
    clock.advance(60)
    ctx = await cycle()
    (blocked,) = ctx.actions
    assert blocked.status is ActionStatus.BLOCKED and blocked.guard == "cooldown"
    episode_before = blocked.t

    first.leadership.leads, second.leadership.leads = False, True  # the lease passes to instance 2
    clock.advance(7 * HOUR)  # the cooldown ends under instance 2, which would-grows again
    second_ctx = await second.cycle()
    await first.cycle()
    assert [a.status for a in second_ctx.actions] == [ActionStatus.WOULD_GROW]
    grown_at = second_ctx.actions[0].t
    clock.advance(60)
    await second.cycle()
    await first.cycle()

    first.leadership.leads, second.leadership.leads = True, False  # handed back, in the new cooldown
    clock.advance(60)
    await second.cycle()
    ctx = await first.cycle()
    (again,) = ctx.actions
    assert again.status is ActionStatus.BLOCKED and again.guard == "cooldown"
    # observed: again.t == episode_before (instance 1's first term), 7 h before the growth that
    # began this cooldown; the API's last_action.at and the MQTT state's last_action.t say so
    assert again.t >= grown_at, (
        f"blocked since {again.t - NOW:.0f}s (the previous term's episode, {episode_before - NOW:.0f}s), "
        f"before the growth at {grown_at - NOW:.0f}s that started this cooldown")
