"""The poll loop: ticks on the clock with an offset, overruns skipped (never stacked), coordinator
state that logs on transitions only."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from structlog.testing import capture_logs

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.poller import Poller, PollerState


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


class TestSchedule:
    """Ticks are `interval` apart after a random offset; a long cycle skips the ticks it missed."""

    async def test_ticks_and_offset(self) -> None:
        clock = VirtualClock(start=1000.0)
        started: list[float] = []

        async def cycle() -> None:
            started.append(clock.now())

        poller = Poller(PollerState("c"), cycle, clock, interval_seconds=60, jitter_ratio=0.1,
                        rng=random.Random(1))
        assert 0 <= poller.offset_seconds <= 6
        stopping = asyncio.Event()
        task = asyncio.create_task(poller.run(stopping))
        for _ in range(4):
            await settle()
            clock.set(clock.next_deadline or clock.now())
        await settle()
        stopping.set()
        await task
        first = 1000.0 + poller.offset_seconds
        assert [first, first + 60, first + 120, first + 180] == started[:4]

    async def test_overrun_is_measured_and_skipped_not_stacked(self) -> None:
        clock = VirtualClock(start=0.0)
        started: list[float] = []

        async def slow_cycle() -> None:
            started.append(clock.now())
            if len(started) == 2:
                clock.advance(150)  # this poll takes 2.5 intervals

        state = PollerState("c")
        poller = Poller(state, slow_cycle, clock, interval_seconds=60, jitter_ratio=0.0)
        stopping = asyncio.Event()
        task = asyncio.create_task(poller.run(stopping))
        with capture_logs() as logs:
            for _ in range(4):
                await settle()
                clock.set(clock.next_deadline or clock.now())
            await settle()
        stopping.set()
        await task
        # tick 60 ran until 210; ticks 120 and 180 were skipped, the next poll is at 240
        assert started[:4] == [0.0, 60.0, 240.0, 300.0]
        assert state.skipped_ticks == 2
        overran = [e for e in logs if e["event"] == "poll.overran"]
        assert len(overran) == 1 and overran[0]["skipped_ticks"] == 2

    async def test_stop_cuts_the_wait_short(self) -> None:
        clock = VirtualClock()
        calls = 0

        async def cycle() -> None:
            nonlocal calls
            calls += 1

        poller = Poller(PollerState("c"), cycle, clock, interval_seconds=3600, jitter_ratio=0.0)
        stopping = asyncio.Event()
        task = asyncio.create_task(poller.run(stopping))
        await settle()
        stopping.set()
        await asyncio.wait_for(task, 1)  # no clock movement needed
        assert calls == 1


class TestWallClockSteps:
    """Ticks are scheduled on monotonic time: a wall-clock step (NTP, `date -s`) neither stalls the
    poller nor makes it fire early; wall time only stamps what a cycle sees."""

    async def run_ticks(self, clock: VirtualClock, poller: Poller, step_after_first: float,
                        ticks: int) -> list[tuple[float, float]]:
        """Run `ticks` cycles, stepping the wall clock by `step_after_first` after the first; each
        advance moves to the poller's next deadline (as real time would)."""
        started: list[tuple[float, float]] = []
        poller._cycle = self.recorder(clock, started)
        stopping = asyncio.Event()
        task = asyncio.create_task(poller.run(stopping))
        await settle()
        clock.step_wall(step_after_first)
        for _ in range(ticks - 1):
            deadline = clock.next_deadline
            assert deadline is not None
            clock.set(deadline)
            await settle()
        stopping.set()
        await task
        return started

    @staticmethod
    def recorder(clock: VirtualClock, started: list[tuple[float, float]]) -> Callable[[], Awaitable[None]]:
        async def cycle() -> None:
            started.append((clock.monotonic(), clock.now()))
        return cycle

    async def test_a_step_back_does_not_stall_the_poller(self) -> None:
        clock = VirtualClock(start=10_000.0)
        poller = Poller(PollerState("c"), noop, clock, interval_seconds=60, jitter_ratio=0.0)
        mono = clock.monotonic()
        started = await self.run_ticks(clock, poller, -3600, ticks=3)
        # every tick one interval after the last in monotonic time; the wall stamps stepped back
        assert [mono, mono + 60, mono + 120] == [m for m, _ in started]
        assert [w for _, w in started] == [10_000.0, 10_000.0 - 3600 + 60, 10_000.0 - 3600 + 120]
        assert poller.state.skipped_ticks == 0

    async def test_a_step_forward_neither_skips_nor_compresses_ticks(self) -> None:
        clock = VirtualClock(start=10_000.0)
        poller = Poller(PollerState("c"), noop, clock, interval_seconds=60, jitter_ratio=0.0)
        mono = clock.monotonic()
        with capture_logs() as logs:
            started = await self.run_ticks(clock, poller, +86_400, ticks=3)
        assert [mono, mono + 60, mono + 120] == [m for m, _ in started]
        assert poller.state.skipped_ticks == 0
        assert [e for e in logs if e["event"] == "poll.overran"] == []


async def noop() -> None:
    return None


class TestRequestedCycles:
    """`wakeup` runs a cycle now; requests coalesce, never stack, and the tick schedule stays."""

    async def test_wakeup_runs_a_cycle_now_and_keeps_the_schedule(self) -> None:
        clock = VirtualClock(start=0.0)
        started: list[float] = []

        async def cycle() -> None:
            started.append(clock.now())

        poller = Poller(PollerState("c"), cycle, clock, interval_seconds=60, jitter_ratio=0.0)
        stopping = asyncio.Event()
        task = asyncio.create_task(poller.run(stopping))
        await settle()
        clock.advance(20)  # no tick is due
        await settle()
        poller.wakeup.set()
        await settle()
        assert started == [0.0, 20.0]
        for _ in range(2):
            clock.set(clock.next_deadline or clock.now())
            await settle()
        stopping.set()
        await task
        assert started == [0.0, 20.0, 60.0, 120.0]
        assert poller.requested_cycles == 1 and poller.state.skipped_ticks == 0

    async def test_requests_during_a_cycle_coalesce_into_one(self) -> None:
        clock = VirtualClock(start=0.0)
        started: list[float] = []
        poller: Poller

        async def cycle() -> None:
            started.append(clock.now())
            if len(started) == 1:
                for _ in range(3):  # three reservations granted while this cycle runs
                    poller.wakeup.set()
                    await asyncio.sleep(0)

        poller = Poller(PollerState("c"), cycle, clock, interval_seconds=60, jitter_ratio=0.0)
        stopping = asyncio.Event()
        task = asyncio.create_task(poller.run(stopping))
        await settle()
        assert started == [0.0, 0.0]  # one extra cycle, after the one in flight
        clock.set(clock.next_deadline or clock.now())
        await settle()
        stopping.set()
        await task
        assert started == [0.0, 0.0, 60.0]


class TestCoordinatorState:
    """One log line when polling starts failing, one when it recovers."""

    def test_transitions_logged_once(self) -> None:
        state = PollerState("c")
        with capture_logs() as logs:
            state.record_success(100, 0.1)
            state.record_failure(160, "connection: refused", 0.1)
            state.record_failure(220, "connection: refused", 0.1)
            state.record_failure(280, "timeout", 0.1)
            state.record_success(340, 0.1)
            state.record_success(400, 0.1)
        assert [e["event"] for e in logs] == ["poll.succeeded", "poll.failed", "poll.recovered"]
        assert logs[2]["failures"] == 3 and logs[2]["outage_seconds"] == 240
        assert state.consecutive_failures == 0 and state.last_error == "timeout"
        assert state.age_seconds(440) == 40.0
