"""The per-cluster poll loop and its coordinator state.

`PollerState` is the health of one cluster's polling (Home Assistant's DataUpdateCoordinator
habit): last success, last failure, last error, failures in a row. It logs once when polling
starts failing (`poll.failed`) and once when it recovers (`poll.recovered`) — never a line per
failed poll (`logs.TransitionLog`, one line per outage).

`Poller.run()` calls one cycle per tick. Ticks are `interval` apart on the daemon's clock, the
first one after a small random offset so several pollers do not fire together. A cycle that
overruns its interval is measured and the ticks it missed are skipped, never stacked.

`Poller.wakeup` cuts the wait short: the next cycle runs now (a granted reservation should grow
its quota at once, not at the next tick). Requests coalesce — one set while a cycle runs gives
exactly one more cycle after it — and an extra cycle leaves the tick schedule where it was.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import TransitionLog, get_logger
from quotapilot.daemon.runtime.snapshot import PollHealth
from quotapilot.daemon.runtime.supervisor import sleep_unless

log = get_logger(__name__)


@dataclass(slots=True)
class PollerState:
    """Health of one cluster's polling; updated by the daemon after every poll."""

    cluster: str
    last_success_t: float | None = None
    last_failure_t: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    polls: int = 0
    skipped_ticks: int = 0
    last_duration_seconds: float | None = None
    _transitions: TransitionLog = field(
        default_factory=lambda: TransitionLog(log, "poll", once_per_outage=True), repr=False, compare=False)

    def record_success(self, t: float, duration_seconds: float) -> None:
        recovered = self._transitions.ok(self.cluster, cluster=self.cluster,
                                         outage_seconds=round(t - (self.last_success_t or t), 3))
        if not recovered and self.last_success_t is None:
            log.info("poll.succeeded", cluster=self.cluster, first=True)
        self.last_success_t = t
        self.consecutive_failures = 0
        self.polls += 1
        self.last_duration_seconds = duration_seconds

    def record_failure(self, t: float, error: str, duration_seconds: float) -> None:
        self._transitions.failed(self.cluster, error, cluster=self.cluster)
        self.last_failure_t = t
        self.last_error = error
        self.consecutive_failures += 1
        self.polls += 1
        self.last_duration_seconds = duration_seconds

    def age_seconds(self, now: float) -> float | None:
        """How old the last good data is (None: never polled successfully)."""
        return None if self.last_success_t is None else max(0.0, now - self.last_success_t)

    def frozen(self) -> PollHealth:
        """An immutable copy for the snapshot."""
        return PollHealth(self.last_success_t, self.last_failure_t, self.last_error,
                          self.consecutive_failures, self.polls, self.skipped_ticks,
                          self.last_duration_seconds)


class Poller:
    """Runs `cycle()` every `interval_seconds` of `clock` time until `stopping` is set."""

    def __init__(self, state: PollerState, cycle: Callable[[], Awaitable[object]], clock: Clock, *,
                 interval_seconds: float, jitter_ratio: float, rng: random.Random | None = None) -> None:
        self.state = state
        self._cycle = cycle
        self._clock = clock
        self.interval_seconds = interval_seconds
        self.offset_seconds = (rng or random.Random()).uniform(0, jitter_ratio * interval_seconds)
        self.wakeup = asyncio.Event()
        """Set it (`Daemon.request_cycle`) to run a cycle now instead of at the next tick."""
        self.requested_cycles = 0

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until `stopping` is set; a cycle in flight is finished, a wait is cut short.

        Ticks are scheduled on `clock.monotonic()`: a wall-clock step neither stalls the loop (a
        step back) nor makes it skip or bunch ticks (a step forward). Wall time (`clock.now()`)
        stamps the samples, in the cycle."""
        interval = self.interval_seconds
        clock = self._clock
        if not await sleep_unless(clock, self.offset_seconds, stopping, wake=self.wakeup):
            return
        next_tick = clock.monotonic()
        tick_due = True  # the first cycle is the first tick, even when a request woke it early
        while not stopping.is_set():
            started = clock.monotonic()
            self.wakeup.clear()  # a request made before this cycle starts is served by it
            await self._cycle()
            now = clock.monotonic()
            if tick_due or now >= next_tick:  # a requested cycle that ran into the tick covers it
                next_tick += interval
            if now > next_tick:
                missed = math.floor((now - next_tick) / interval) + 1
                next_tick += missed * interval
                self.state.skipped_ticks += missed
                log.warning("poll.overran", cluster=self.state.cluster,
                            cycle_seconds=round(now - started, 3), interval_seconds=interval,
                            skipped_ticks=missed)
            if not await sleep_unless(clock, next_tick - now, stopping, wake=self.wakeup):
                return
            tick_due = not (self.wakeup.is_set() and clock.monotonic() < next_tick)
            if not tick_due:
                self.requested_cycles += 1
                log.debug("poll.requested", cluster=self.state.cluster,
                          seconds_before_tick=round(next_tick - clock.monotonic(), 3))
