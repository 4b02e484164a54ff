"""Fixtures for the trust tests: a `TrustClock` (instant sleeps) and the simulator on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from trust_helpers import TRUST_SCENARIO, MonotonicView, TrustClock

from quotapilot.daemon.simulator import SimulatorServer


@pytest.fixture
def clock() -> TrustClock:
    return TrustClock(instant=True)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def cosmos(clock: TrustClock, tmp_path: Path) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("cosmos7", clock=MonotonicView(clock), seed=0, state_dir=tmp_path / "sim") as sim:
        yield sim


@pytest.fixture
async def trust(clock: TrustClock, tmp_path: Path) -> AsyncIterator[SimulatorServer]:
    path = tmp_path / "trust.toml"
    path.write_text(TRUST_SCENARIO)
    async with SimulatorServer(path, clock=MonotonicView(clock), seed=0, state_dir=tmp_path / "sim-trust") as sim:
        yield sim
