"""The supervisor: named tasks, crashes kept (not restarted), bounded drain, teardown shielded."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.supervisor import Supervisor, sleep_unless


class TestSupervisor:
    """Crash → logged and kept; stop → drain within the grace period, then cancel; teardown runs."""

    async def test_crash_is_kept_and_others_keep_running(self) -> None:
        supervisor = Supervisor(shutdown_timeout_seconds=1)
        ticks = 0

        async def crashes(stopping: asyncio.Event) -> None:
            raise RuntimeError("boom")

        async def keeps_going(stopping: asyncio.Event) -> None:
            nonlocal ticks
            while not stopping.is_set():
                ticks += 1
                await asyncio.sleep(0)

        supervisor.add("crasher", crashes)
        supervisor.add("worker", keeps_going)
        with capture_logs() as logs:
            run = asyncio.create_task(supervisor.run())
            for _ in range(20):
                await asyncio.sleep(0)
            assert list(supervisor.crashes) == ["crasher"]
            assert supervisor.crashes["crasher"].error == "RuntimeError: boom"
            assert supervisor.running() == ("worker",)
            supervisor.stop()
            await run
        assert ticks > 5
        assert [e["event"] for e in logs if e["log_level"] == "error"] == ["task.crashed"]

    async def test_stragglers_are_cancelled_after_the_grace_period(self) -> None:
        supervisor = Supervisor(shutdown_timeout_seconds=0.05)
        cancelled = asyncio.Event()
        torn_down = []

        async def ignores_stop(stopping: asyncio.Event) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async def teardown() -> None:
            torn_down.append(True)

        supervisor.add("stubborn", ignores_stop)
        run = asyncio.create_task(supervisor.run(teardown))
        await asyncio.sleep(0)
        supervisor.stop()
        await asyncio.wait_for(run, 2)
        assert cancelled.is_set()
        assert torn_down == [True]
        assert supervisor.crashes == {}

    async def test_task_added_while_running_starts(self) -> None:
        supervisor = Supervisor(shutdown_timeout_seconds=1)
        seen = asyncio.Event()

        async def late(stopping: asyncio.Event) -> None:
            seen.set()
            await stopping.wait()

        run = asyncio.create_task(supervisor.run())
        await asyncio.sleep(0)
        supervisor.add("late", late)
        await asyncio.wait_for(seen.wait(), 1)
        supervisor.stop()
        await run


class TestTaskStatus:
    """A task that outlives its own failures (the fleet's lease loop) reports them through
    `status(name)`, into the same `crashes` that /healthz, the `daemon` alert and
    `quotapilot_task_crashed` read."""

    async def test_a_running_task_that_keeps_failing_is_kept_until_it_reports_a_success(self) -> None:
        """Guards the streak: kept as still running, since its first failure, with the latest
        error; cleared by `ok()`."""
        supervisor = Supervisor(shutdown_timeout_seconds=1)
        status = supervisor.status("leases")
        status.failing("c2: RuntimeError: first")
        since = supervisor.crashes["leases"].t
        status.failing("c2: RuntimeError: second")
        crash = supervisor.crashes["leases"]
        assert (crash.name, crash.error, crash.t, crash.still_running) == (
            "leases", "c2: RuntimeError: second", since, True)
        status.ok()
        assert supervisor.crashes == {}

    async def test_a_task_that_reports_late_says_when_its_streak_began(self) -> None:
        """Guards `since`: a task that reports only once its failures have lasted (the lease loop,
        after a lease) gives the streak's first failure, on its own clock; later reports keep it."""
        supervisor = Supervisor(shutdown_timeout_seconds=1)
        status = supervisor.status("leases")
        status.failing("c2: RuntimeError: first", since=1000.0)
        status.failing("c2: RuntimeError: second", since=1005.0)
        crash = supervisor.crashes["leases"]
        assert (crash.error, crash.t, crash.still_running) == ("c2: RuntimeError: second", 1000.0, True)

    async def test_a_crash_is_never_cleared_nor_hidden_by_a_status(self) -> None:
        """Guards the crash: a task that ended stays crashed whatever a status handle reports,
        and a crash replaces a failing streak."""
        supervisor = Supervisor(shutdown_timeout_seconds=1)
        status = supervisor.status("leases")

        async def fails_then_crashes(stopping: asyncio.Event) -> None:
            status.failing("c2: RuntimeError: first")
            raise RuntimeError("boom")

        supervisor.add("leases", fails_then_crashes)
        with capture_logs():
            run = asyncio.create_task(supervisor.run())
            for _ in range(20):
                await asyncio.sleep(0)
            supervisor.stop()
            await run
        assert (supervisor.crashes["leases"].error, supervisor.crashes["leases"].still_running) == (
            "RuntimeError: boom", False)
        status.failing("c2: RuntimeError: later")
        status.ok()
        assert (supervisor.crashes["leases"].error, supervisor.crashes["leases"].still_running) == (
            "RuntimeError: boom", False)


class TestSleepUnless:
    async def test_completes_or_stops(self) -> None:
        clock = VirtualClock()
        stopping = asyncio.Event()
        sleeper = asyncio.create_task(sleep_unless(clock, 10, stopping))
        for _ in range(10):  # sleep_unless starts its sleeper task
            await asyncio.sleep(0)
        assert clock.next_deadline is not None
        clock.advance(10)
        assert await sleeper is True
        sleeper = asyncio.create_task(sleep_unless(clock, 10, stopping))
        await asyncio.sleep(0)
        stopping.set()
        assert await sleeper is False

    async def test_the_deadline_is_taken_when_called_not_when_the_sleeper_task_starts(self) -> None:
        """`sleep_unless(clock, s)` ends `s` after the call, even when the clock moves before its
        inner sleeper task first runs (another task moved it in between: the poller's tick then
        slipped a whole interval, and a test driving the clock waited for a cycle that never came)."""
        clock = VirtualClock()
        stopping = asyncio.Event()
        start = clock.monotonic()
        sleeper = asyncio.create_task(sleep_unless(clock, 10, stopping))
        await asyncio.sleep(0)      # sleep_unless has run up to its wait; its sleeper task has not
        clock.set(clock.now() + 10)  # the moment it asked to wake
        for _ in range(10):
            await asyncio.sleep(0)
        assert sleeper.done(), f"still asleep at +{clock.monotonic() - start:.0f} s, deadline {clock.next_deadline}"
        assert sleeper.result() is True
