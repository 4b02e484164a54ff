"""Suite-wide fixtures: no test may leave asyncio tasks behind, nor change logging for the next."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from alert_receivers import Broker, Receiver, run_receiver


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Code under test may call `configure_logging` (the demo, `run`); a later test's
    `capture_logs()` must still see every level."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (kopf's habit)."""
    yield
    current = asyncio.current_task()
    for _ in range(10):  # let tasks that are finishing their cancellation finish
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not leftover:
            return
        await asyncio.sleep(0)
    names = sorted(t.get_name() for t in leftover)
    for task in leftover:
        task.cancel()
    pytest.fail(f"test left asyncio tasks behind: {names}")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker of this test's own, on a free port (never the shared 1883), stopped after it."""
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real aiohttp HTTP receiver on a free loopback port (webhooks are posted to it)."""
    async for r in run_receiver():
        yield r
