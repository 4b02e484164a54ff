"""Issue 13, defects 5 and 7: scheduling on a monotonic clock whatever the wall clock does, and
retries that do not hang the demo's virtual time."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import pytest
from trust_helpers import TrustClock, wait_until

from quotapilot.daemon.commands.demo import DemoOptions, run_demo
from quotapilot.daemon.runtime.daemon import Daemon


async def run_polls(daemon: Daemon, clock: TrustClock, ticks: int, *, cluster: str = "sim") -> int:
    """Advance monotonic time one interval at a time, letting each due cycle finish; returns the
    cycles that ran (stops early when a tick brings no cycle within a few real seconds)."""
    state = daemon.poll_state[cluster]
    start = state.polls
    for _ in range(ticks):
        before = state.polls
        # advance only once the poller (and the alert loop) sleep again: a cycle still in flight would
        # compute its next sleep from a reading taken before the advance, and sleep a tick too long
        assert await wait_until(lambda: clock.sleeping() >= 2, within_seconds=10)
        clock.advance(60)
        if not await wait_until(lambda: state.polls > before, within_seconds=10):  # noqa: B023 (awaited here)
            break
    return state.polls - start


async def running(daemon: Daemon) -> asyncio.Task[None]:
    task = asyncio.create_task(daemon.run(), name="daemon")
    assert await wait_until(lambda: daemon.poll_state["sim"].polls >= 1, within_seconds=10)  # first cycle at once
    return task


# Defect 5 (wall-clock steps) is proven deterministically at the poller in
# tests/daemon/test_poller.py::TestWallClockSteps (seen failing on the wall-clock poller); the
# black-box versions here raced the test's clock advance against a cycle in flight and were flaky.


async def test_the_demo_survives_a_transient_5xx(tmp_path: Path) -> None:
    cosmos7 = resources.files("quotapilot.daemon.simulator").joinpath("scenarios/cosmos7.toml").read_text()
    scenario = tmp_path / "cosmos7-glitch.toml"
    scenario.write_text(cosmos7 + '\n[[faults]]\nkind = "error"\nstatus = 503\ncount = 1\n')
    try:
        report = await asyncio.wait_for(run_demo(DemoOptions(days=0.05, scenario=str(scenario))), timeout=12)
    except TimeoutError:
        pytest.fail("the demo hung on one 503")
    assert report["days"] == pytest.approx(0.05, abs=0.011)
