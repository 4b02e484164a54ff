"""Injected time.

Everything in quotapilot that reads the time or waits takes a `Clock`. The daemon runs on
`SystemClock`; tests, the demo and the simulator's fast-forward run on `VirtualClock`, which only
moves when its owner calls `advance()`/`set()`, so "30 days later" takes no real time and no test
sleeps for real.

`Clock` is quotapilot's one clock protocol. Code that must not import the daemon (the alert
dispatcher in `quotapilot.alerts`) takes a clock's bound methods instead — `now=clock.now`,
`sleep=clock.sleep` — rather than declaring a second protocol of its own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall time (epoch seconds) that can also wait."""

    def now(self) -> float:
        """Current time as POSIX epoch seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` of this clock's time have passed."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Real time running `speed` times faster from `start` (the simulator's `--speed X`)."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._origin_real = time.monotonic()
        self._origin = time.time() if start is None else start

    def now(self) -> float:
        return self._origin + (time.monotonic() - self._origin_real) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class VirtualClock:
    """Time that moves only when told to.

    `sleep()` parks the caller until the clock is advanced past its deadline; `advance()` wakes
    every sleeper whose deadline has been reached, in deadline order. Must be used from one
    event loop.
    """

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def next_deadline(self) -> float | None:
        """The earliest time a sleeper waits for, or None when nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] if self._sleepers else None

    def set(self, t: float) -> None:
        """Move to absolute time `t` (never backwards) and wake the sleepers that are due."""
        if t < self._now:
            raise ValueError(f"virtual time cannot go backwards ({t} < {self._now})")
        self._now = t
        while self._sleepers and self._sleepers[0][0] <= t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move forward by `seconds` and wake the sleepers that are due."""
        self.set(self._now + seconds)

    async def advance_and_settle(self, seconds: float) -> None:
        """Advance, then yield to the loop so the woken tasks run until they wait again."""
        self.advance(seconds)
        for _ in range(5):
            await asyncio.sleep(0)
