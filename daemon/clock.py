"""Injected time.

Everything in quotapilot that reads the time or waits takes a `Clock`. The daemon runs on
`SystemClock`; tests, the demo and the simulator's fast-forward run on `VirtualClock`, which only
moves when its owner calls `advance()`/`set()`, so "30 days later" takes no real time and no test
sleeps for real.

A clock has two readings: `now()`, wall time (epoch seconds), for timestamps, and `monotonic()`,
for measuring intervals and scheduling. `sleep()` waits on monotonic time. A wall-clock step (NTP,
an operator's `date -s`, a VM resumed) moves `now()` and nothing else: a schedule computed from
`now()` would stall for D after a step back by D, or fire its skipped ticks at once after a step
forward. `VirtualClock.step_wall()` makes such a step in a test.

`Clock` is quotapilot's one clock protocol. Code that must not import the daemon (the alert
dispatcher in `quotapilot.alerts`) takes a clock's bound methods instead — `now=clock.now`,
`sleep=clock.sleep`, `monotonic=clock.monotonic` — rather than declaring a second protocol of its
own.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """A source of wall time (epoch seconds) and monotonic time that can also wait."""

    def now(self) -> float:
        """Current wall time as POSIX epoch seconds: for timestamps, never for intervals."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never jump: for intervals and schedules."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until `seconds` of this clock's monotonic time have passed."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

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
        return self._origin + self.monotonic()

    def monotonic(self) -> float:
        return (time.monotonic() - self._origin_real) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


_AUTO_ADVANCING: contextvars.ContextVar[VirtualClock | None] = contextvars.ContextVar(
    "quotapilot_auto_advancing_clock", default=None)
"""The `VirtualClock` whose sleeps advance it at once in this context (see `VirtualClock.run`)."""


class VirtualClock:
    """Time that moves only when told to.

    `sleep()` parks the caller until the clock is advanced past its deadline; `advance()` wakes
    every sleeper whose deadline has been reached, in deadline order. Must be used from one
    event loop.

    Deadlines are kept on the monotonic reading; the wall reading is the monotonic one plus an
    offset that only `step_wall()` changes, so a test can step the wall clock (back or forward)
    without waking or delaying anybody. The monotonic reading starts at 0 (not at `start`), so
    code that mixes the two up is caught by the tests that use this clock.

    `run(awaitable)` is for a driver that advances the clock between awaits of its own (the demo:
    one poll, then `advance_and_settle`): inside it, a sleep advances the clock by its seconds at
    once instead of parking, because nothing else would ever advance it while the driver waits.
    """

    MONOTONIC_START = 0.0
    """The monotonic reading of a new clock: seconds since it was made (any origin would do; this
    one keeps `now()` exactly `start + elapsed`, so tests can compare times with `==`)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._monotonic = self.MONOTONIC_START
        self._wall_offset = float(start) - self.MONOTONIC_START
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._monotonic + self._wall_offset

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if _AUTO_ADVANCING.get() is self:
            self.advance(seconds)  # wakes, in order, every other sleeper due by then
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._seq), fut))
        await fut

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` with its sleeps (and those of the tasks it starts) advancing this clock
        at once: a retry's backoff inside a poll the caller is driving takes no real time instead
        of waiting forever for an `advance()` that only the caller would make."""
        token = _AUTO_ADVANCING.set(self)
        try:
            return await awaitable
        finally:
            _AUTO_ADVANCING.reset(token)

    @property
    def next_deadline(self) -> float | None:
        """The wall time the earliest sleeper wakes at (if the wall clock is not stepped
        meanwhile), or None when nobody sleeps: `set(next_deadline)` wakes it."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleepers
        return self._sleepers[0][0] + self._wall_offset if self._sleepers else None

    def set(self, t: float) -> None:
        """Move to wall time `t` (never backwards: that is `step_wall`) by letting monotonic time
        pass, and wake the sleepers that are due."""
        now = self.now()
        if t < now:
            raise ValueError(f"virtual time cannot go backwards ({t} < {now})")
        self._monotonic += t - now
        # due on either reading: `set(next_deadline)` must wake that sleeper despite float rounding
        while self._sleepers and (self._sleepers[0][0] <= self._monotonic
                                  or self._sleepers[0][0] + self._wall_offset <= t):
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        """Move forward by `seconds` (both readings) and wake the sleepers that are due."""
        self.set(self.now() + seconds)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (negative: back), as NTP or an operator would: `now()`
        jumps, `monotonic()` and every sleeper's deadline stay."""
        self._wall_offset += seconds

    async def advance_and_settle(self, seconds: float) -> None:
        """Advance, then yield to the loop so the woken tasks run until they wait again."""
        self.advance(seconds)
        for _ in range(5):
            await asyncio.sleep(0)
