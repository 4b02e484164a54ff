"""VMS retries in virtual time: a retry's backoff inside a poll that the caller drives (the demo:
poll, then advance the clock) must not wait for an `advance()` that only that caller would make.

Real vastpy over HTTPS against the built-in simulator, its fault injection for the transient
5xx; the real-time bound (`asyncio.wait_for`) is only a hang detector — nothing here sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from quotapilot.daemon import simulator
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.commands.demo import DemoOptions, run_demo
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.simulator.faults import FaultRule
from quotapilot.daemon.simulator.server import SimulatorServer

HANG_SECONDS = 60.0
"""Real seconds after which a run counts as hung (the runs below take a few seconds)."""


@pytest.fixture
async def virtual_sim() -> AsyncIterator[tuple[VirtualClock, SimulatorServer]]:
    """The simulator on a plain `VirtualClock` (time moves only when advanced), as in the demo."""
    clock = VirtualClock()
    async with SimulatorServer("cosmos7", clock=clock, seed=0) as server:
        yield clock, server


def demo_like_settings(sim: SimulatorServer, tmp_path: Path) -> Any:
    return load_settings(None, **{
        "clusters": [{"name": "sim", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}],
        "store": {"path": str(tmp_path / "state.db")},
        "http": {"listen": "127.0.0.1:0"},
        "vast": {"max_retries": 2, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2},
        "poll": {"interval_seconds": 900, "jitter_ratio": 0.0},
        "forecast": {"workers": 0},
    })


class TestDrivenPoll:
    """`VirtualClock.run(poll)`: the driver's own poll advances the clock through its retries."""

    async def test_a_transient_5xx_is_retried_and_the_poll_succeeds(
            self, virtual_sim: tuple[VirtualClock, SimulatorServer], tmp_path: Path) -> None:
        clock, sim = virtual_sim
        rule = sim.faults.add("error", status=503, count=1, path="quotas")
        async with Daemon(demo_like_settings(sim, tmp_path), clock) as daemon:
            before = clock.now()
            ctx = await asyncio.wait_for(clock.run(daemon.poll_once("sim")), HANG_SECONDS)
        assert rule.fired == 1
        assert ctx.poll.ok and ctx.poll.observations
        # the backoff passed in virtual time (jittered, at most backoff_max_seconds)
        assert 0 < clock.now() - before <= 0.2

    async def test_sleepers_outside_the_driven_poll_still_wait_for_advance(
            self, virtual_sim: tuple[VirtualClock, SimulatorServer], tmp_path: Path) -> None:
        """Only the driven awaitable's sleeps advance the clock: a background task (alert delivery,
        the poll loop) sleeping on the same clock is woken only when its deadline is passed."""
        clock, sim = virtual_sim
        sim.faults.add("error", status=503, count=1, path="quotas")
        woke: list[float] = []

        async def background() -> None:
            await clock.sleep(3600)
            woke.append(clock.now())

        task = asyncio.create_task(background())
        await asyncio.sleep(0)
        async with Daemon(demo_like_settings(sim, tmp_path), clock) as daemon:
            await asyncio.wait_for(clock.run(daemon.poll_once("sim")), HANG_SECONDS)
        assert woke == []
        await clock.advance_and_settle(3600)
        assert len(woke) == 1
        await task


class TestDemo:
    """`quotapilot demo` with one transient 5xx from VMS finishes (it used to hang forever)."""

    async def test_demo_survives_a_transient_5xx(self, monkeypatch: pytest.MonkeyPatch) -> None:
        rules: list[FaultRule] = []

        class FaultySimulator(SimulatorServer):
            """The demo's simulator with one 503 on the quota listing (our boundary: its faults)."""

            async def __aenter__(self) -> SimulatorServer:
                server = await super().__aenter__()
                rules.append(self.faults.add("error", status=503, count=1, path="quotas", method="GET"))
                return server

        monkeypatch.setattr(simulator, "SimulatorServer", FaultySimulator)
        report = await asyncio.wait_for(run_demo(DemoOptions(days=0.25)), HANG_SECONDS)
        assert [rule.fired for rule in rules] == [1]  # the demo met the 5xx, and got past it
        assert report["days"] == pytest.approx(0.25, abs=0.01)
        assert report["write_failures"] == 0
