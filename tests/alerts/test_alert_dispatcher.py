"""The dispatcher over the real SQLite outbox, with in-process sinks, in virtual time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from quotapilot.alerts.dispatcher import Dispatcher, OutboxEntry
from quotapilot.alerts.errors import SinkRejected, SinkUnavailable
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.retry import RetryPolicy
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.outbox import AsyncOutbox, OutboxStore

T0 = 1_767_225_600.0


class MemorySink:
    """Records payloads; `down` makes it fail temporarily, `reject` refuses given keys."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.received: list[dict[str, Any]] = []
        self.states: list[tuple[str, str, dict[str, Any]]] = []
        self.cleared: list[tuple[str, str]] = []
        self.down = False
        self.reject: set[str] = set()
        self.attempts = 0
        self.closed = False
        self.retry_after: float | None = None
        """The Retry-After (seconds) a `down` sink answers with."""

    async def send(self, payload: Mapping[str, Any]) -> None:
        self.attempts += 1
        if self.down:
            raise SinkUnavailable(self.name, "down", retry_after=self.retry_after)
        if payload["dedup_key"] in self.reject:
            raise SinkRejected(self.name, "HTTP 400")
        self.received.append(dict(payload))

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        if self.down:
            raise SinkUnavailable(self.name, "down")
        self.states.append((cluster, target, dict(state)))

    async def clear_state(self, cluster: str, target: str) -> None:
        if self.down:
            raise SinkUnavailable(self.name, "down")
        self.cleared.append((cluster, target))

    async def close(self) -> None:
        self.closed = True


def entry(alert: str, seq: int, status: str = "firing", *, sink: str = "memory", t: float = T0,
          not_before: float | None = None) -> OutboxEntry:
    key = f"{alert}#{seq}"
    return OutboxEntry(sink=sink, alert_id=alert, dedup_key=key, status=status,
                       payload={"id": alert, "dedup_key": key, "status": status, "sequence": seq,
                                "evaluated_at_epoch": t},
                       created_at=t, next_attempt_at=t if not_before is None else not_before)


@pytest.fixture
def store(tmp_path: Path) -> OutboxStore:
    return AsyncOutbox(OutboxStore(Database(tmp_path / "state.db")))


class Running:
    def __init__(self, dispatcher: Dispatcher, clock: VirtualClock) -> None:
        self.dispatcher = dispatcher
        self.clock = clock

    async def settle(self) -> None:
        for _ in range(30):
            await asyncio.sleep(0.005)
            if not await self.dispatcher._anything_due():
                # one more turn so marks land
                await asyncio.sleep(0.005)
                return

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()


@pytest.fixture
async def clock() -> VirtualClock:
    return VirtualClock(T0)


async def start(store: AsyncOutbox, clock: VirtualClock, *sinks: MemorySink, **kwargs: Any) -> AsyncIterator[Running]:
    dispatcher = Dispatcher(store, list(sinks), now=clock.now, sleep=clock.sleep,
                            backoff=RetryPolicy.schedule((1, 2, 5, 10)).backoff(random.Random(1)), **kwargs)
    task = asyncio.create_task(dispatcher.run(), name="dispatcher")
    try:
        yield Running(dispatcher, clock)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class TestDelivery:
    async def test_delivers_in_order_and_marks(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        await store.enqueue([entry("c/a/utilization", 1), entry("c/b/utilization", 1)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            assert [p["dedup_key"] for p in sink.received] == ["c/a/utilization#1", "c/b/utilization#1"]
            assert await store.pending_counts() == {}
            assert run.dispatcher.stats.results[("memory", "delivered")] == 2
        assert sink.closed

    async def test_purge_forgets_only_finished_rows(self, store: AsyncOutbox) -> None:
        await store.enqueue([entry("c/a/x", 1), entry("c/b/x", 1)])
        [done, _] = await store.pending("memory", 10)
        await store.mark_delivered([done.row_id], T0)
        assert await store.purge(T0 + 1) == 1
        assert await store.pending_counts() == {"memory": 1}

    async def test_same_key_is_enqueued_once(self, store: AsyncOutbox) -> None:
        assert await store.enqueue([entry("c/a/x", 1)]) == 1
        assert await store.enqueue([entry("c/a/x", 1)]) == 0

    async def test_resolve_supersedes_fire_in_the_backlog(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        async for run in start(store, clock, sink):
            await store.enqueue([entry("c/a/utilization", 1)])
            run.dispatcher.wake()
            await run.settle()
            await store.enqueue([entry("c/a/utilization", 2, "resolved"), entry("c/b/utilization", 1)])
            run.dispatcher.wake()
            await run.settle()
            assert sink.received == []
            sink.down = False
            await run.advance(30)
            assert [(p["dedup_key"], p["status"]) for p in sink.received] == \
                [("c/a/utilization#2", "resolved"), ("c/b/utilization#1", "firing")]
            assert run.dispatcher.stats.results[("memory", "superseded")] == 1

    async def test_latest_wins_across_a_backlog_larger_than_a_batch(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        await store.enqueue([entry("c/a/x", 1), entry("c/b/x", 1), entry("c/c/x", 1),
                             entry("c/a/x", 2), entry("c/a/x", 3, "resolved")])
        async for run in start(store, clock, sink, batch_size=2):
            run.dispatcher.wake()
            await run.settle()
            await run.advance(1)
            assert [p["dedup_key"] for p in sink.received] == ["c/b/x#1", "c/c/x#1", "c/a/x#3"]
            assert run.dispatcher.stats.results[("memory", "superseded")] == 2

    async def test_backoff_grows_and_is_jittered(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        await store.enqueue([entry("c/a/x", 1)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            assert sink.attempts == 1
            await run.advance(0.5)
            assert sink.attempts == 1  # first backoff ≈ 1 s (0.8–1.2)
            await run.advance(0.8)
            assert sink.attempts == 2
            await run.advance(1.0)
            assert sink.attempts == 2  # second backoff ≈ 2 s
            await run.advance(1.5)
            assert sink.attempts == 3
            sink.down = False
            await run.advance(6.0)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]

    async def test_retry_after_is_waited_at_least(self, store: OutboxStore, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down, sink.retry_after = True, 30.0
        await store.enqueue([entry("c/a/x", 1)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            await run.advance(29.0)
            assert sink.attempts == 1  # the backoff alone would have retried after ~1 s
            sink.down = False
            await run.advance(1.5)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]

    async def test_a_huge_retry_after_is_capped_at_an_hour(self, store: OutboxStore, clock: VirtualClock) -> None:
        """A buggy or hostile Retry-After must not park a sink until its rows expire (it used to
        be honoured whatever its size)."""
        sink = MemorySink()
        sink.down, sink.retry_after = True, 1e9
        await store.enqueue([entry("c/a/x", 1)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            await run.advance(3599.0)
            assert sink.attempts == 1
            sink.down = False
            await run.advance(2.0)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]

    async def test_a_pass_with_nothing_due_is_not_a_recovery(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        """Between retries a pass finds no row due; that proved nothing about the sink, so the
        backoff keeps growing and the outage is logged once, its recovery once (a refused port
        used to log 9 `unavailable` and 8 `recovered` in 25 s, always retrying after ~1 s)."""
        sink = MemorySink()
        sink.down = True
        await store.enqueue([entry("c/a/x", 1)])
        with capture_logs() as logs:
            async for run in start(store, clock, sink):
                run.dispatcher.wake()
                await run.settle()
                for _ in range(100):  # 25 s in quarter seconds, each step settled
                    await run.advance(0.25)
                assert sink.attempts == 5  # at ~0, 1, 3, 8, 18 s: backoffs 1, 2, 5, 10
                sink.down = False
                await run.advance(12.0)
                assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]
        events = [e["event"] for e in logs if e["event"].startswith("alert_sink.")]
        assert events == ["alert_sink.unavailable", "alert_sink.recovered"]
        recovered = next(e for e in logs if e["event"] == "alert_sink.recovered")
        assert recovered["after_failures"] == 5

    async def test_rejected_is_dropped_others_delivered(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.reject = {"c/a/x#1"}
        await store.enqueue([entry("c/a/x", 1), entry("c/b/x", 1)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            assert [p["dedup_key"] for p in sink.received] == ["c/b/x#1"]
            assert await store.pending_counts() == {}
            assert run.dispatcher.stats.results[("memory", "rejected")] == 1

    async def test_old_rows_expire(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        await store.enqueue([entry("c/a/x", 1, t=T0 - 8 * 86400)])
        async for run in start(store, clock, sink, max_age_seconds=7 * 86400):
            run.dispatcher.wake()
            await run.settle()
            assert sink.received == []
            assert run.dispatcher.stats.results[("memory", "expired")] == 1

    async def test_held_rows_wait_for_their_time(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        await store.enqueue([entry("c/a/x", 1, not_before=T0 + 3600)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            assert sink.received == []
            await run.advance(3600)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]

    async def test_one_sink_down_does_not_hold_the_other(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        up, down = MemorySink("up"), MemorySink("down")
        down.down = True
        await store.enqueue([entry("c/a/x", 1, sink="up"), entry("c/a/x", 1, sink="down")])
        async for run in start(store, clock, up, down):
            run.dispatcher.wake()
            await run.settle()
            assert len(up.received) == 1 and len(down.received) == 0
            assert await store.pending_counts() == {"down": 1}

    async def test_state_is_published_latest_only(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        async for run in start(store, clock, sink):
            run.dispatcher.set_state("c", "a", {"v": 1})
            run.dispatcher.set_state("c", "a", {"v": 2})
            run.dispatcher.wake()
            await run.settle()
            assert sink.states == [("c", "a", {"v": 2})]

    async def test_a_removed_targets_state_is_cleared_then_forgotten(self, store: AsyncOutbox,
                                                                    clock: VirtualClock) -> None:
        """Review round 7: the dispatcher kept one state per target ever seen, and a removed
        target's retained state stayed on the broker. `clear_state` deletes it in each sink that
        publishes state, then forgets the target."""
        sink, events_only = MemorySink(), MemorySink("events")
        events_only.publishes_state = False  # type: ignore[attr-defined]
        async for run in start(store, clock, sink, events_only):
            run.dispatcher.set_state("c", "a", {"v": 1})
            run.dispatcher.set_state("c", "b", {"v": 1})
            run.dispatcher.wake()
            await run.settle()
            run.dispatcher.clear_state("c", "a")
            run.dispatcher.wake()
            await run.settle()
            assert (sink.cleared, events_only.cleared) == ([("c", "a")], [])
            assert list(run.dispatcher._states) == [("c", "b")]  # nothing of "a" is kept
            assert sink.states == [("c", "a", {"v": 1}), ("c", "b", {"v": 1})]

    async def test_a_clear_waits_out_an_outage_and_replaces_an_unsent_state(self, store: AsyncOutbox,
                                                                             clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        async for run in start(store, clock, sink):
            run.dispatcher.set_state("c", "a", {"v": 1})
            run.dispatcher.wake()
            await run.settle()
            run.dispatcher.clear_state("c", "a")
            sink.down = False
            await run.advance(10)  # past the backoff
            assert (sink.states, sink.cleared) == ([], [("c", "a")])  # the stale picture never went out
            assert not run.dispatcher._states

    async def test_a_state_set_while_a_clear_is_in_flight_is_still_sent(self, store: AsyncOutbox,
                                                                         clock: VirtualClock) -> None:
        """The quota comes back (re-created under its name) while its clear is on its way: its new
        state is published after the clear, not dropped with it."""
        sink = MemorySink()
        arrived, release = asyncio.Event(), asyncio.Event()
        clear = sink.clear_state

        async def slow_clear(cluster: str, target: str) -> None:
            arrived.set()
            await release.wait()
            await clear(cluster, target)

        sink.clear_state = slow_clear  # type: ignore[method-assign]
        async for run in start(store, clock, sink):
            run.dispatcher.clear_state("c", "a")
            run.dispatcher.wake()
            await asyncio.wait_for(arrived.wait(), 5)
            run.dispatcher.set_state("c", "a", {"v": 2})
            release.set()
            run.dispatcher.wake()
            await run.settle()
            assert (sink.cleared, sink.states) == ([("c", "a")], [("c", "a", {"v": 2})])
            assert run.dispatcher._states == {("c", "a"): {"v": 2}}

    async def test_latency_is_observed(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        await store.enqueue([entry("c/a/x", 1, t=T0 - 2)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            assert run.dispatcher.stats.latency_count["memory"] == 1
            assert pytest.approx(run.dispatcher.stats.latency_sum["memory"]) == 2.0


class TestWallClockSteps:
    """The outbox's schedule is wall time (durable across restarts), but a wall-clock step back
    neither holds an alert nor stretches a backoff: the dispatcher's schedule never runs backwards,
    it goes on at the pace of the monotonic clock until the wall catches up."""

    async def test_an_alert_enqueued_before_a_step_back_goes_out_at_once(
            self, store: OutboxStore, clock: VirtualClock) -> None:
        sink = MemorySink()
        async for run in start(store, clock, sink, monotonic=clock.monotonic):
            await run.advance(1)  # the dispatcher has read the clock once
            await store.enqueue([entry("c/a/utilization", 1, t=clock.now())])
            clock.step_wall(-3600)
            run.dispatcher.wake()
            await run.settle()
            assert [p["dedup_key"] for p in sink.received] == ["c/a/utilization#1"]

    async def test_a_step_back_during_a_backoff_does_not_stretch_it(
            self, store: OutboxStore, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        async for run in start(store, clock, sink, monotonic=clock.monotonic):
            await store.enqueue([entry("c/a/utilization", 1)])
            run.dispatcher.wake()
            await run.settle()
            assert sink.attempts == 1
            sink.down = False
            clock.step_wall(-3600)
            await run.advance(2)  # the first backoff is 1 s, jittered ±20 %
            assert [p["dedup_key"] for p in sink.received] == ["c/a/utilization#1"]


class TestDrain:
    async def test_drain_reports_leftovers(self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        await store.enqueue([entry("c/a/x", 1)])
        async for run in start(store, clock, sink):
            assert not await run.dispatcher.drain(0.1)
            sink.down = False
            clock.advance(5)
            assert await run.dispatcher.drain(2.0)
            assert len(sink.received) == 1


class CountingOutbox:
    """The real outbox, counting `pending()` calls (a worker that spins calls it without end)."""

    def __init__(self, inner: AsyncOutbox) -> None:
        self.inner = inner
        self.pending_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def pending(self, *args: Any, **kwargs: Any) -> Any:
        self.pending_calls += 1
        return await self.inner.pending(*args, **kwargs)


class TestHeldRowsDoNotStarveDueOnes:
    """A full batch of rows held for a quiet window used to hide a due critical alert queued behind
    it (the oldest `batch_size` rows by id were fetched, due or not), and the worker spun: a full
    batch meant "more to do at once" although nothing in it was due."""

    async def test_a_due_critical_behind_a_full_batch_of_held_rows_is_sent(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        held = [entry(f"c/q{i}/x", 1, not_before=T0 + 3600) for i in range(5)]
        await store.enqueue([*held, entry("c/big/x", 1)])
        async for run in start(store, clock, sink, batch_size=5):
            run.dispatcher.wake()
            await run.settle()
            assert [p["dedup_key"] for p in sink.received] == ["c/big/x#1"]
            await run.advance(3600)
            assert len(sink.received) == 6

    async def test_a_batch_of_held_rows_does_not_spin_the_worker(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        counting = CountingOutbox(store)
        await store.enqueue([entry(f"c/q{i}/x", 1, not_before=T0 + 3600) for i in range(5)])
        async for run in start(counting, clock, sink, batch_size=5):  # type: ignore[arg-type]
            run.dispatcher.wake()
            for _ in range(20):
                await asyncio.sleep(0.005)
            assert sink.received == []
            assert counting.pending_calls <= 2

    async def test_a_held_older_row_is_superseded_by_a_due_newer_one(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        """A warning held for the night, then the same alert escalates to critical (due now): the
        critical goes out and the held warning never does — latest state wins, per alert order holds."""
        sink = MemorySink()
        await store.enqueue([entry("c/a/x", 1, not_before=T0 + 3600), entry("c/a/x", 2)])
        async for run in start(store, clock, sink):
            run.dispatcher.wake()
            await run.settle()
            await run.advance(3600)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#2"]
            assert await store.pending_counts() == {}


class TestExpiry:
    """`max_age_seconds` counts the time a notification was due and undelivered: not the time a
    quiet window held it, and not a wall-clock step back (the age runs on the monotonic clock)."""

    async def test_a_row_created_after_a_step_back_longer_than_max_age_is_sent(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        async for run in start(store, clock, sink, monotonic=clock.monotonic, max_age_seconds=3600):
            await run.advance(1)  # the dispatcher has read the clock
            clock.step_wall(-7200)
            await store.enqueue([entry("c/a/x", 1, t=clock.now())])
            run.dispatcher.wake()
            await run.settle()
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]
            assert run.dispatcher.stats.results[("memory", "expired")] == 0

    async def test_a_row_still_expires_after_max_age_across_a_step_back(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        async for run in start(store, clock, sink, monotonic=clock.monotonic, max_age_seconds=3600):
            await store.enqueue([entry("c/a/x", 1, t=clock.now())])
            run.dispatcher.wake()
            await run.settle()
            clock.step_wall(-7200)
            for _ in range(40):
                await run.advance(100)
            assert run.dispatcher.stats.results[("memory", "expired")] == 1
            assert await store.pending_counts() == {}

    async def test_time_held_in_a_quiet_window_does_not_count(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        """max_age 1 h, a warning held 8 h for the night: delivered when the window ends."""
        sink = MemorySink()
        await store.enqueue([entry("c/a/x", 1, not_before=T0 + 8 * 3600)])
        async for run in start(store, clock, sink, monotonic=clock.monotonic, max_age_seconds=3600):
            run.dispatcher.wake()
            await run.settle()
            await run.advance(8 * 3600)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]
            assert run.dispatcher.stats.results[("memory", "expired")] == 0

    async def test_a_held_row_retried_after_its_window_expires_only_after_max_age(
            self, store: AsyncOutbox, clock: VirtualClock) -> None:
        sink = MemorySink()
        sink.down = True
        await store.enqueue([entry("c/a/x", 1, not_before=T0 + 8 * 3600)])
        async for run in start(store, clock, sink, monotonic=clock.monotonic, max_age_seconds=3600):
            run.dispatcher.wake()
            await run.settle()
            await run.advance(8 * 3600)
            assert sink.attempts == 1  # the window ended: tried, failed
            await run.advance(20 * 60)
            sink.down = False
            await run.advance(20 * 60)
            assert [p["dedup_key"] for p in sink.received] == ["c/a/x#1"]
            assert run.dispatcher.stats.results[("memory", "expired")] == 0
