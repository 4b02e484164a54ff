"""The virtual clock: sleepers wake in deadline order only when time is advanced."""

from __future__ import annotations

import asyncio

import pytest

from quotapilot.daemon.clock import VirtualClock


class TestVirtualClock:
    async def test_sleepers_wake_in_order_when_advanced(self) -> None:
        clock = VirtualClock(start=1000.0)
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        tasks = [asyncio.create_task(sleeper("late", 60)), asyncio.create_task(sleeper("early", 10))]
        await asyncio.sleep(0)
        assert clock.next_deadline == 1010.0
        await clock.advance_and_settle(30)
        assert woke == [("early", 1030.0)]
        await clock.advance_and_settle(30)
        assert woke == [("early", 1030.0), ("late", 1060.0)]
        await asyncio.gather(*tasks)

    async def test_cancelled_sleeper_is_forgotten(self) -> None:
        clock = VirtualClock(start=0.0)
        task = asyncio.create_task(clock.sleep(5))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.next_deadline is None

    def test_time_never_goes_backwards(self) -> None:
        clock = VirtualClock(start=100.0)
        with pytest.raises(ValueError):
            clock.set(99.0)
