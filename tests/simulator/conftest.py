"""Fixtures for the simulator tests: a SimulatorServer on a virtual clock and a real vastpy client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import vastpy
from sim_helpers import client_for

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import SimulatorServer


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
async def sim(clock: VirtualClock, tmp_path: Path) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("cosmos7", clock=clock, seed=0, state_dir=tmp_path / "sim") as server:
        yield server


@pytest.fixture
def client(sim: SimulatorServer) -> vastpy.VASTClient:
    return client_for(sim)
