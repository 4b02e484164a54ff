"""Helpers for the daemon-core tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.settings import Settings


class InstantClock(VirtualClock):
    """A virtual clock whose `sleep()` returns at once, moving time forward: for code under test
    that sleeps inline (retry backoff) while the test drives it directly. Records every sleep."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        super().__init__(start)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)


SettingsFactory = Callable[..., Settings]
