"""The clocks: sleepers wake in deadline order only when virtual time is advanced; waits run on
monotonic time, which a wall-clock step does not move."""

from __future__ import annotations

import asyncio
import time

import pytest

from quotapilot.daemon.clock import SystemClock, VirtualClock


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


class TestWallAndMonotonic:
    """Wall time (`now()`) is for timestamps; waits and schedules run on `monotonic()`, which a
    wall-clock step (NTP, an operator's `date -s`) does not move."""

    def test_system_clock_reads_both_clocks(self) -> None:
        clock = SystemClock()
        assert abs(clock.now() - time.time()) < 5
        assert abs(clock.monotonic() - time.monotonic()) < 5

    def test_step_wall_moves_now_but_not_monotonic(self) -> None:
        clock = VirtualClock(start=1000.0)
        mono = clock.monotonic()
        clock.step_wall(-600)
        assert (400.0, mono) == (clock.now(), clock.monotonic())
        clock.step_wall(+3600)
        assert (4000.0, mono) == (clock.now(), clock.monotonic())

    def test_advance_moves_both(self) -> None:
        clock = VirtualClock(start=1000.0)
        mono = clock.monotonic()
        clock.step_wall(-600)
        clock.advance(30)
        assert (430.0, mono + 30) == (clock.now(), clock.monotonic())

    async def test_sleep_is_on_monotonic_time(self) -> None:
        """A sleeper wakes after its seconds of monotonic time, whatever the wall clock did."""
        clock = VirtualClock(start=1000.0)
        woke: list[float] = []

        async def sleeper() -> None:
            await clock.sleep(60)
            woke.append(clock.now())

        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        clock.step_wall(-3600)  # would park a wall-time sleeper for another hour
        assert clock.next_deadline == 1000.0 - 3600 + 60  # in wall terms: set(next_deadline) wakes it
        await clock.advance_and_settle(60)
        assert woke == [1000.0 - 3600 + 60]
        clock.step_wall(+86400)  # a step forward wakes nobody early
        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0)
        await clock.advance_and_settle(59)
        assert len(woke) == 1
        await clock.advance_and_settle(1)
        assert len(woke) == 2
        await task

    def test_monotonic_is_not_the_wall_clock(self) -> None:
        """Distinct readings, so code that mixes the two is caught by the tests that use this clock."""
        clock = VirtualClock(start=1000.0)
        assert clock.monotonic() != clock.now()


class TestRun:
    """`VirtualClock.run(awaitable)`: sleeps inside it (and in the tasks it starts) advance the
    clock at once; sleepers elsewhere still wait for `advance()`."""

    async def test_sleeps_inside_advance_the_clock(self) -> None:
        clock = VirtualClock(start=1000.0)

        async def retrying() -> float:
            await clock.sleep(0.5)
            await asyncio.create_task(clock.sleep(1.5))  # a task it starts inherits the mode
            return clock.now()

        assert await asyncio.wait_for(clock.run(retrying()), 5) == 1002.0  # a hang detector only
        assert clock.monotonic() == 2.0

    async def test_other_sleepers_wait_and_wake_in_order(self) -> None:
        clock = VirtualClock(start=0.0)
        woke: list[tuple[str, float]] = []

        async def background(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.now()))

        tasks = [asyncio.create_task(background("due", 1.0)), asyncio.create_task(background("later", 60.0))]
        await asyncio.sleep(0)
        await clock.run(clock.sleep(2.0))  # passes the first background deadline: it wakes
        await asyncio.sleep(0)
        assert woke == [("due", 2.0)]
        await clock.advance_and_settle(58.0)
        assert woke == [("due", 2.0), ("later", 60.0)]
        await asyncio.gather(*tasks)
