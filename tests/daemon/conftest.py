"""Fixtures for the daemon tests: the built-in simulator on a virtual clock, settings pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from core_helpers import InstantClock, SettingsFactory

from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.simulator.server import SimulatorServer


@pytest.fixture
def clock() -> InstantClock:
    return InstantClock()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture
async def sim(clock: InstantClock) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer("cosmos7", clock=clock, seed=0) as server:
        yield server


@pytest.fixture
def make_settings(sim: SimulatorServer, tmp_path: Path) -> SettingsFactory:
    """Settings for one cluster "sim" (verified TLS with the simulator's CA), loopback HTTP on a
    free port, the store under tmp_path; keyword groups override (e.g. `poll={...}`)."""

    def factory(**groups: Any) -> Settings:
        cluster: dict[str, Any] = {"name": "sim", "address": sim.address, "token": sim.token,
                                   "ca_file": str(sim.ca_file)}
        cluster.update(groups.pop("cluster", {}))
        data: dict[str, Any] = {
            "clusters": [cluster],
            "store": {"path": str(tmp_path / "state.db")},
            "http": {"listen": "127.0.0.1:0"},
            "vast": {"backoff_base_seconds": 1, "max_retries": 3, "request_timeout_seconds": 5},
            "poll": {"interval_seconds": 60, "jitter_ratio": 0.0},
        }
        for key, value in groups.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        return load_settings(None, **data)

    return factory
