"""Supervised root tasks (kopf's reactor habit).

The supervisor starts named tasks (the only place quotapilot calls `create_task`), logs a crash
with its traceback and keeps it for `/healthz` — nothing is restarted silently. A task that
outlives its own failures (it retries, as the lease loop does) reports them through
`status(name)`: kept the same way, as a task still running but failing, until it reports a
success. `stop()` asks every task to finish (they watch `stopping`); after a bounded grace period
the stragglers are cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import get_logger

log = get_logger(__name__)

TaskFactory = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A root task: an async function taking the `stopping` event; it should return soon after the
event is set (it is cancelled after the grace period otherwise)."""


@dataclass(frozen=True, slots=True)
class TaskCrash:
    """A supervised task that ended with an exception."""

    name: str
    error: str
    t: float
    still_running: bool = False
    """The task did not end: it goes on retrying, but reported that its work keeps failing
    (`TaskStatus.failing`); cleared when it reports a success."""


class TaskStatus:
    """How a running task reports its own health to the supervisor, for `/healthz`, the `daemon`
    alert and `quotapilot_task_crashed` (the readers of `Supervisor.crashes`): `failing(error)`
    while its work keeps failing, `ok()` once it works again. The task logs its transitions, and
    decides how long a failure must last to be reported (a blip is not a task that keeps
    failing)."""

    def __init__(self, supervisor: Supervisor, name: str) -> None:
        self._supervisor = supervisor
        self.name = name

    def failing(self, error: str, *, since: float | None = None) -> None:
        """`since`: when the streak began, on the task's clock (default: now)."""
        self._supervisor.failing(self.name, error, since=since)

    def ok(self) -> None:
        self._supervisor.recovered(self.name)


async def _sleep_until(clock: Clock, deadline: float) -> None:
    """Sleep until `deadline` on `clock.monotonic()`, measured when this task first runs: the clock
    may have moved since the deadline was taken (another task ran first)."""
    await clock.sleep(deadline - clock.monotonic())


async def sleep_unless(clock: Clock, seconds: float, stopping: asyncio.Event, *,
                       wake: asyncio.Event | None = None) -> bool:
    """Sleep `seconds` on `clock` unless `stopping` (or `wake`, when given) is set first.
    False when `stopping` is set; the caller tells a wake-up by `wake.is_set()`."""
    if stopping.is_set():
        return False
    if seconds <= 0 or (wake is not None and wake.is_set()):
        await asyncio.sleep(0)
        return not stopping.is_set()
    deadline = clock.monotonic() + seconds
    tasks = {asyncio.create_task(_sleep_until(clock, deadline), name="sleep"),
             asyncio.create_task(stopping.wait(), name="sleep-stopper")}
    if wake is not None:
        tasks.add(asyncio.create_task(wake.wait(), name="sleep-waker"))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return not stopping.is_set()


class Supervisor:
    """Runs named root tasks until `stop()`; crashes are kept in `crashes`."""

    def __init__(self, *, shutdown_timeout_seconds: float) -> None:
        self.shutdown_timeout_seconds = shutdown_timeout_seconds
        self.stopping = asyncio.Event()
        self.crashes: dict[str, TaskCrash] = {}
        self._factories: dict[str, TaskFactory] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running = False

    def add(self, name: str, factory: TaskFactory) -> None:
        """Register a root task; started by `run()` (or at once if already running)."""
        if name in self._factories:
            raise ValueError(f"duplicate task name {name!r}")
        self._factories[name] = factory
        if self._running:
            self._start(name, factory)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self._factories)

    def running(self) -> tuple[str, ...]:
        return tuple(name for name, task in self._tasks.items() if not task.done())

    def status(self, name: str) -> TaskStatus:
        """The handle through which task `name` reports that it keeps failing, and recovers."""
        return TaskStatus(self, name)

    def failing(self, name: str, error: str, *, since: float | None = None) -> None:
        """Task `name` still runs but its work keeps failing: kept in `crashes` (since the first
        failure of the streak — `since` when the task tells, else the first report — with the
        latest error) until `recovered(name)`."""
        known = self.crashes.get(name)
        if known is not None and not known.still_running:
            return  # it has ended: the crash says more
        if known is not None:
            since = known.t
        elif since is None:
            since = time.time()
        self.crashes[name] = TaskCrash(name, error, since, still_running=True)

    def recovered(self, name: str) -> None:
        """Task `name` works again (a crash of a task that ended is kept)."""
        known = self.crashes.get(name)
        if known is not None and known.still_running:
            del self.crashes[name]

    def stop(self) -> None:
        """Ask every task to finish (idempotent; safe from a signal handler)."""
        if not self.stopping.is_set():
            log.info("supervisor.stopping", tasks=list(self.running()))
        self.stopping.set()

    def _start(self, name: str, factory: TaskFactory) -> None:
        task = asyncio.create_task(self._guard(name, factory), name=name)
        self._tasks[name] = task

    async def _guard(self, name: str, factory: TaskFactory) -> None:
        try:
            await factory(self.stopping)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.crashes[name] = TaskCrash(name, f"{type(exc).__name__}: {exc}", time.time())
            log.error("task.crashed", task=name, error=str(exc), exc_info=True)
        else:
            if not self.stopping.is_set():
                log.warning("task.exited", task=name)

    async def run(self, teardown: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start every task, wait for `stop()`, drain within the grace period, then cancel the
        rest; `teardown` runs last, shielded from cancellation."""
        self._running = True
        try:
            for name, factory in self._factories.items():
                self._start(name, factory)
            await self.stopping.wait()
            await self._drain()
        finally:
            self._running = False
            await self._cancel_all()
            if teardown is not None:
                await asyncio.shield(teardown())

    async def _drain(self) -> None:
        pending = [t for t in self._tasks.values() if not t.done()]
        if not pending:
            return
        started = time.monotonic()
        _, still = await asyncio.wait(pending, timeout=self.shutdown_timeout_seconds)
        if still:
            log.warning("supervisor.grace_expired", tasks=sorted(t.get_name() for t in still),
                        waited_seconds=round(time.monotonic() - started, 3))

    async def _cancel_all(self) -> None:
        pending = [t for t in self._tasks.values() if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

