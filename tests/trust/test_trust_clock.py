"""Issue 13, defects 5 and 7: scheduling on a monotonic clock whatever the wall clock does, and
retries that do not hang the demo's virtual time."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import pytest
from trust_helpers import MonotonicView, TrustClock, settings_for, wait_until

from quotapilot.daemon.commands.demo import DemoOptions, run_demo
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer


async def run_polls(daemon: Daemon, clock: TrustClock, ticks: int, *, cluster: str = "sim") -> int:
    """Advance monotonic time one interval at a time, letting each due cycle finish; returns the
    cycles that ran (stops early when a tick brings no cycle within a few real seconds)."""
    state = daemon.poll_state[cluster]
    start = state.polls
    for _ in range(ticks):
        before = state.polls
        clock.advance(60)
        if not await wait_until(lambda: state.polls > before, within_seconds=3):  # noqa: B023 (awaited here)
            break
    return state.polls - start


async def running(daemon: Daemon) -> asyncio.Task[None]:
    task = asyncio.create_task(daemon.run(), name="daemon")
    assert await wait_until(lambda: daemon.poll_state["sim"].polls >= 1, within_seconds=10)  # first cycle at once
    return task


@pytest.mark.xfail(strict=True, reason="issue 13 defect 5: the poller schedules on wall time; an NTP step "
                                       "back by D stalls polling for D")
async def test_a_wall_clock_step_back_does_not_stall_polling(tmp_path: Path) -> None:
    clock = TrustClock()
    async with SimulatorServer("cosmos7", clock=MonotonicView(clock), state_dir=tmp_path / "sim") as sim:
        settings = settings_for(sim, store=tmp_path / "state.db", policy={"mode": "observe"})
        async with Daemon(settings, clock) as daemon:
            task = await running(daemon)
            try:
                assert await run_polls(daemon, clock, 3) == 3
                clock.step_wall(-3600)  # NTP steps the wall clock back an hour
                ran = await run_polls(daemon, clock, 10)
            finally:
                daemon.stop()
                await task
    assert ran == 10


@pytest.mark.xfail(strict=True, reason="issue 13 defect 5: the poller schedules on wall time; an NTP step "
                                       "forward counts an hour of ticks as missed")
async def test_a_wall_clock_step_forward_skips_no_ticks(tmp_path: Path) -> None:
    clock = TrustClock()
    async with SimulatorServer("cosmos7", clock=MonotonicView(clock), state_dir=tmp_path / "sim") as sim:
        settings = settings_for(sim, store=tmp_path / "state.db", policy={"mode": "observe"})
        async with Daemon(settings, clock) as daemon:
            task = await running(daemon)
            try:
                await run_polls(daemon, clock, 2)
                clock.step_wall(3600)
                ran = await run_polls(daemon, clock, 5)
            finally:
                daemon.stop()
                await task
            skipped = daemon.poll_state["sim"].skipped_ticks
    assert (skipped, ran) == (0, 5)  # one cycle per interval of monotonic time, none "missed"


@pytest.mark.xfail(strict=True, reason="issue 13 defect 7: a VMS retry sleeps on the demo's virtual clock, "
                                       "which only moves between polls: one 5xx hangs the demo")
async def test_the_demo_survives_a_transient_5xx(tmp_path: Path) -> None:
    cosmos7 = resources.files("quotapilot.daemon.simulator").joinpath("scenarios/cosmos7.toml").read_text()
    scenario = tmp_path / "cosmos7-glitch.toml"
    scenario.write_text(cosmos7 + '\n[[faults]]\nkind = "error"\nstatus = 503\ncount = 1\n')
    try:
        report = await asyncio.wait_for(run_demo(DemoOptions(days=0.05, scenario=str(scenario))), timeout=12)
    except TimeoutError:
        pytest.fail("the demo hung on one 503")
    assert report["days"] == pytest.approx(0.05, abs=0.011)
