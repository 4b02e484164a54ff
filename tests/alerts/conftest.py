"""Fixtures of the alert tests: a Mosquitto broker started per test on a free port (never the
shared 1883), a subscriber on it, and an aiohttp HTTP receiver; all cleaned up after the test."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alert_receivers import Broker, Receiver, Subscriber, run_receiver, subscribe


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def subscriber(broker: Broker) -> AsyncIterator[Subscriber]:
    async for sub in subscribe(broker.port, "qp/#"):
        yield sub


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async for r in run_receiver():
        yield r
