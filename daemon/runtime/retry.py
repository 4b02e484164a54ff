"""The one retry policy: jittered backoff that honours `Retry-After`, within attempts and a deadline.

Every caller that retries uses it: the VMS transport (`daemon/vms`, from `[vast]`), the pipeline
client (`daemon/pipeline_client.py`, its `retry=` argument) and the alert dispatcher
(`alerts/dispatcher.py`, from `[alerts] retry_backoffs_seconds`, injected as a plain
`backoff(attempt, retry_after)` callable because `alerts` never imports the daemon).

A policy is a value; it holds no state and no clock. Callers count their attempts, measure their
own elapsed time on their injected clock and pass their own `random.Random` (seeded in tests), so
the same policy serves a blocking client, an asyncio loop and a virtual-time test alike.

Stdlib only, on purpose: pipelines import the pipeline client without the daemon's dependencies.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Backoff = Callable[[int, "float | None"], float]
"""`backoff(attempt, retry_after)`: seconds to wait before retry `attempt + 1` (a policy bound to an rng)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try, and how long to wait in between.

    The nominal wait before retry `attempt + 1` (attempt 0 = the first retry) is either
    exponential, `base_seconds * 2**attempt`, or — when `schedule_seconds` is given — the
    schedule's entry for that attempt (the last entry repeats); either way at most `max_seconds`.
    The actual wait is drawn uniformly from `jitter` (low, high) times the nominal one, so many
    daemons retrying one server do not retry in step.

    A server's `Retry-After` is a lower bound: the wait is at least that (capped at
    `retry_after_max_seconds`, so a buggy header cannot park a caller for a day), and the
    jittered backoff still grows underneath it.

    `attempts` counts every try, the first included (None: no limit, e.g. the alert outbox, whose
    rows expire instead); nothing waits past `deadline_seconds` from the first try (None: no deadline).
    """

    attempts: int | None = 6
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    deadline_seconds: float | None = 120.0
    schedule_seconds: tuple[float, ...] = ()
    jitter: tuple[float, float] = (0.5, 1.0)
    retry_after_max_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")
        if self.base_seconds <= 0 or self.max_seconds <= 0:
            raise ValueError("base_seconds and max_seconds must be > 0")
        if any(step < 0 for step in self.schedule_seconds):
            raise ValueError(f"schedule_seconds must not be negative: {self.schedule_seconds}")
        low, high = self.jitter
        if not 0 <= low <= high:
            raise ValueError(f"jitter must be (low, high) with 0 <= low <= high, not {self.jitter}")

    @classmethod
    def schedule(cls, steps_seconds: Sequence[float], *, jitter: tuple[float, float] = (0.8, 1.2),
                 attempts: int | None = None, retry_after_max_seconds: float = 3600.0) -> RetryPolicy:
        """A policy that follows a fixed schedule of nominal waits (the last repeats): the alert
        dispatcher's `retry_backoffs_seconds`, jittered ±20 % by default, unbounded attempts."""
        steps = tuple(float(step) for step in steps_seconds) or (1.0,)
        return cls(attempts=attempts, base_seconds=max(steps[0], 1e-9), max_seconds=max(max(steps), 1e-9),
                   deadline_seconds=None, schedule_seconds=steps, jitter=jitter,
                   retry_after_max_seconds=retry_after_max_seconds)

    def nominal(self, attempt: int) -> float:
        """The un-jittered wait before retry `attempt + 1`."""
        if self.schedule_seconds:
            step = self.schedule_seconds[min(max(attempt, 0), len(self.schedule_seconds) - 1)]
        else:
            step = self.base_seconds * 2.0 ** min(max(attempt, 0), 64)
        return min(self.max_seconds, step)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry `attempt + 1`: the jittered nominal wait, at least the
        (capped) `retry_after`."""
        low, high = self.jitter
        wait = self.nominal(attempt) * rng.uniform(low, high)
        if retry_after is not None:
            wait = max(wait, min(max(0.0, retry_after), self.retry_after_max_seconds))
        return wait

    def exhausted(self, attempt: int) -> bool:
        """True when try number `attempt + 1` (0-based `attempt`) was the last one allowed."""
        return self.attempts is not None and attempt + 1 >= self.attempts

    def time_left(self, elapsed_seconds: float) -> float:
        """Seconds left before the deadline (infinite without one)."""
        if self.deadline_seconds is None:
            return float("inf")
        return self.deadline_seconds - elapsed_seconds

    def backoff(self, rng: random.Random | None = None) -> Backoff:
        """This policy bound to `rng`: the `backoff(attempt, retry_after)` callable that
        collaborators which cannot import the daemon (the alert dispatcher) are given."""
        bound = rng if rng is not None else random.Random()

        def backoff(attempt: int, retry_after: float | None) -> float:
            return self.delay(attempt, retry_after, bound)

        return backoff


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (epoch seconds): a number of seconds or an HTTP date.
    None when absent or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is not a delay
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)
