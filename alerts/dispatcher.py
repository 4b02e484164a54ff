"""Delivers what the outbox holds, per sink, in order, at least once; receivers dedup by key.

Every notification is in the outbox (durable) before any send. One worker per sink:

- fetches that sink's pending rows in outbox order — only of alerts with a row due, so rows held
  for a quiet window (however many) never crowd a due one out of a batch, and a batch full of
  them is no reason to pass again at once; of several pending rows of one alert id only
  the newest is sent (the older are marked superseded): after an outage the backlog drains with
  the latest state winning, e.g. a resolve supersedes the fire it ends;
- sends the due rows concurrently (at most one per alert id, so per-alert order holds), marks the
  delivered ones. An outbox shared by a fleet keeps that order across instances: it hands out the
  rows of an alert to one instance at a time (claims per alert), and supersedes a row whose send
  failed once its alert has a newer row; since a peer may have left an alert's newer row for us
  while ours was in flight, a pass that delivered something on a shared outbox looks again at once.
  A temporary failure backs the whole sink off (the injected `backoff`, at least the server's
  Retry-After) — the receiver is down, hammering it with the rest of the batch helps nobody; a
  permanent rejection drops that row;
- rows that have waited longer than `max_age_seconds` since they became due are dropped, counted
  as `expired`. The age is measured on the monotonic clock from the moment this process first
  fetched the row (plus the wall-clock age it had then, since it became due), so time held for a
  quiet window does not count (the README promises held notifications are delivered when the
  window ends, not dropped), and neither does a wall-clock step back (a row created after a step
  back of any length is as young as it is). One limit: after a restart, a row that was held and
  then retried is aged from its `created_at` (its original hold end is no longer on disk).

`alerts` never imports `quotapilot.daemon`, so the dispatcher is given plain collaborators rather
than the daemon's types:

- an `Outbox` (a protocol here; `quotapilot.daemon.store.outbox` implements it, on SQLite);
- time as callables, `now()`, `async sleep(seconds)` and `monotonic()` — the bound methods of the
  daemon's `Clock` (`clock.now`, `clock.sleep`, `clock.monotonic`). Callables rather than a second
  clock protocol: a protocol here would copy `quotapilot.daemon.clock.Clock` (the one `Clock`), and
  a callable says exactly what the dispatcher uses; tests pass a `VirtualClock`'s methods and run
  in virtual time. The outbox's schedule (`next_attempt_at`, `created_at`) is wall time, because
  it outlives the process; the dispatcher reads it on `schedule_now()`, wall time that never runs
  backwards — after a wall-clock step back it goes on at the monotonic clock's pace until the
  wall catches up — so a step back neither holds the alerts enqueued before it nor stretches a
  backoff (`sleep` itself waits on monotonic time);
- `backoff(attempt, retry_after) -> seconds`: the daemon's one `RetryPolicy`, bound to an rng
  (`RetryPolicy.schedule(retry_backoffs_seconds).backoff(rng)`); the dispatcher counts the
  failures (`attempt` 0 is the first retry) and the policy says how long.

The per-sink outage log (`alert_sink.unavailable` once, `alert_sink.recovered` once) is the
daemon's `TransitionLog` idea kept as one scoped copy here, for two reasons: `alerts` cannot import
`quotapilot.daemon.logs`, and the failure count it keeps is also the backoff's `attempt`, so the
count and the log belong together in the worker that backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import structlog

from quotapilot.alerts.errors import SinkError, SinkRejected, SinkUnavailable

log = structlog.get_logger(logger_name=__name__)

LATENCY_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                      300.0, 3600.0)

DELIVERY_RESULTS: tuple[str, ...] = ("delivered", "retry", "rejected", "superseded", "expired")
"""The `result` label of quotapilot_notifications_total: every outcome the dispatcher counts."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A notification bound for one sink, as enqueued."""

    sink: str
    alert_id: str
    dedup_key: str
    status: str
    payload: Mapping[str, Any]
    created_at: float
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class OutboxRow(OutboxEntry):
    """A pending outbox row, as fetched: the entry plus its row id and attempts so far."""

    row_id: int
    attempts: int = 0


class Outbox(Protocol):
    """Durable notification queue (SQLite in the daemon, a list in tests)."""

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        """Insert; an entry whose (sink, dedup_key) exists already is ignored. Returns inserted."""
        ...

    async def pending(self, sink: str, limit: int, due_by: float = math.inf, *,
                      retries: bool = False) -> list[OutboxRow]:
        """Undelivered, not superseded, not dropped rows of `sink`, oldest first — only those of
        alerts that have a row due (`next_attempt_at <= due_by`, or with `retries` any row tried
        before), with every pending row of such an alert (so the newest of them can win). Rows of
        alerts with nothing due (held for a quiet window, backing off) are not fetched: however
        many they are, they never crowd a due row out of the batch."""
        ...

    async def supersede_older(self, sink: str, now: float) -> int:
        """Mark superseded every pending row of `sink` with a newer pending row of the same alert
        (the whole backlog, not just one batch). Returns how many."""
        ...

    async def mark_delivered(self, row_ids: Sequence[int], now: float) -> None: ...

    async def mark_retry(self, row_ids: Sequence[int], error: str, next_attempt_at: float) -> None: ...

    async def mark_superseded(self, row_ids: Sequence[int], now: float) -> None: ...

    async def mark_dropped(self, row_ids: Sequence[int], now: float, error: str) -> None: ...

    async def pending_counts(self) -> dict[str, int]: ...

    async def drop_pending(self, sink: str, now: float, error: str, created_before: float = math.inf) -> int:
        """Drop the pending rows of `sink` made before `created_before`; returns how many."""
        ...

    async def schedule(self, sink: str) -> list[tuple[float, int]]:
        """(next_attempt_at, attempts) of every pending row of `sink` — cheap, no payloads."""
        ...


class Sink(Protocol):
    """A receiver of notifications. `send` raises only `SinkError`s."""

    name: str

    async def send(self, payload: Mapping[str, Any]) -> None: ...

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        """Publish a target's current picture (MQTT retained state); a no-op for webhooks."""
        ...

    async def clear_state(self, cluster: str, target: str) -> None:
        """The target is gone: delete its published picture (MQTT: an empty retained message)."""
        ...

    async def close(self) -> None: ...


_CLEARED: Mapping[str, Any] = MappingProxyType({})
"""The state of a removed target, until every sink has deleted it (compared by identity)."""


def publishes_state(sink: Sink) -> bool:
    """Whether `sink.send_state` does anything (a sink class says `publishes_state = False` when
    not): retained state is tracked only for those that do."""
    return bool(getattr(sink, "publishes_state", True))


@dataclass(slots=True)
class DeliveryStats:
    """What the metrics collector reads (no IO at scrape time)."""

    results: Counter[tuple[str, str]] = field(default_factory=Counter)
    pending: dict[str, int] = field(default_factory=dict)
    latency_buckets: dict[str, list[int]] = field(default_factory=dict)
    latency_sum: dict[str, float] = field(default_factory=dict)
    latency_count: dict[str, int] = field(default_factory=dict)

    def observe_latency(self, sink: str, seconds: float) -> None:
        buckets = self.latency_buckets.setdefault(sink, [0] * len(LATENCY_BUCKETS))
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        self.latency_sum[sink] = self.latency_sum.get(sink, 0.0) + seconds
        self.latency_count[sink] = self.latency_count.get(sink, 0) + 1


class Dispatcher:
    """Runs one delivery worker per sink until cancelled. `wake()` after enqueueing."""

    def __init__(
        self,
        outbox: Outbox,
        sinks: Sequence[Sink],
        *,
        now: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        backoff: Callable[[int, float | None], float],
        monotonic: Callable[[], float] | None = None,
        max_age_seconds: float = 7 * 86400.0,
        batch_size: int = 1000,
        concurrency: int = 256,
        idle_seconds: float = 60.0,
        owns_sink: Callable[[str], bool] | None = None,
    ) -> None:
        """`owns_sink`: which sink names of the (shared) outbox are this dispatcher's to deliver —
        for `drop_removed_sinks`; None: only the configured ones (nothing is ever removed)."""
        self.outbox = outbox
        self.sinks = {sink.name: sink for sink in sinks}
        self.now = now
        self.sleep = sleep
        self.monotonic = monotonic if monotonic is not None else now
        """Without it, `schedule_now()` is plain `now()` (a wall-clock step back then holds the
        schedule for as long as the step)."""
        self._last_schedule: tuple[float, float] | None = None
        self.backoff = backoff
        self.max_age_seconds = max_age_seconds
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.idle_seconds = idle_seconds
        self.owns_sink = owns_sink
        self.stats = DeliveryStats()
        self._wakeups = {name: asyncio.Event() for name in self.sinks}
        self._states: dict[tuple[str, str], Mapping[str, Any]] = {}
        """(cluster, target) → its latest state; `_CLEARED` once removed, until every sink has deleted it."""
        self._dirty_states: dict[str, set[tuple[str, str]]] = {name: set() for name in self.sinks}
        self._state_sinks = [name for name, sink in self.sinks.items() if publishes_state(sink)]
        self._failures: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self._retry_at: dict[str, float] = {}
        self._backlog: dict[str, bool] = dict.fromkeys(self.sinks, True)  # a backlog may be on disk at start
        self._flushing = False
        self._flush_requested = asyncio.Event()
        self._first_seen: dict[int, tuple[float, float]] = {}
        """row id → (monotonic time this process first fetched it, its age then): see `_age`."""

    @property
    def shared(self) -> bool:
        """Whether other instances (a fleet) deliver from the same outbox (its `shared`)."""
        return bool(getattr(self.outbox, "shared", False))

    # ------------------------------------------------------------------------------ feeding
    def wake(self) -> None:
        """New rows are in the outbox: let every idle worker look now."""
        for event in self._wakeups.values():
            event.set()

    def set_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        """Remember a target's latest state; workers of sinks that publish state send it."""
        self._states[(cluster, target)] = state
        for name in self._state_sinks:
            self._dirty_states[name].add((cluster, target))

    def clear_state(self, cluster: str, target: str) -> None:
        """The target was removed: workers of sinks that publish state delete it there (whether
        or not this process published one: a previous run may have), then it is forgotten here.
        Like a state, in memory: a sink that is down gets it when it is back, a restart loses it."""
        if not self._state_sinks:
            self._states.pop((cluster, target), None)
            return
        self.set_state(cluster, target, _CLEARED)

    def schedule_now(self) -> float:
        """Wall time for the outbox's schedule, never running backwards: at least the last reading
        plus the monotonic time since (a step forward is followed at once)."""
        wall, mono = self.now(), self.monotonic()
        if self._last_schedule is not None:
            last_wall, last_mono = self._last_schedule
            wall = max(wall, last_wall + (mono - last_mono))
        self._last_schedule = (wall, mono)
        return wall

    async def drop_removed_sinks(self) -> dict[str, int]:
        """Pending rows of a sink this dispatcher owns but no longer has (removed from the
        configuration, or renamed) would wait forever, unseen: drop them, counted as
        `sink_removed` under that sink's name, logged once per sink with the count. An outbox
        other instances share (a fleet) may hold rows of a sink only their newer configuration
        has (a rolling change): there only rows older than `max_age_seconds` — which no instance
        would deliver any more — are dropped, and the rest are logged. Returns sink → rows dropped.
        A store that fails here is logged and left: those rows wait for the next start, delivery
        goes on."""
        if self.owns_sink is None:
            return {}
        dropped: dict[str, int] = {}
        now = self.schedule_now()
        cutoff = self.now() - self.max_age_seconds if self.shared else math.inf
        try:
            for sink, count in sorted((await self.outbox.pending_counts()).items()):
                if sink in self.sinks or not count or not self.owns_sink(sink):
                    continue
                dropped[sink] = await self.outbox.drop_pending(sink, now, "sink_removed", cutoff)
                self.stats.results[(sink, "sink_removed")] += dropped[sink]
                log.warning("alert_sink.removed", sink=sink, dropped=dropped[sink], kept=count - dropped[sink])
        except Exception:
            log.exception("outbox.sweep_failed")
        return dropped

    # ------------------------------------------------------------------------------ running
    async def run(self) -> None:
        """Deliver until cancelled; sinks are closed on the way out."""
        try:
            async with asyncio.TaskGroup() as group:
                for name in self.sinks:
                    group.create_task(self._worker(name), name=f"alerts.dispatch.{name}")
        finally:
            await asyncio.shield(self._close_sinks())

    async def _close_sinks(self) -> None:
        for sink in self.sinks.values():
            try:
                await sink.close()
            except Exception as exc:  # closing is best effort; the outbox keeps what matters
                log.warning("alert_sink.close_failed", sink=sink.name, error=str(exc))

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 (the demo's contract: drain(timeout))
        """Flush: wait (real time, at most `timeout` s) until every row that is due or being
        retried is delivered; retries happen at once meanwhile (shutdown, end of the demo).
        Rows held for a quiet window stay. True if drained."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._flushing = True
        self._flush_requested.set()
        try:
            while True:
                self.wake()
                if not await self._anything_due():
                    return True
                if loop.time() >= deadline:
                    return False
                await asyncio.sleep(min(0.02, max(0.0, deadline - loop.time())))
        finally:
            self._flushing = False
            self._flush_requested.clear()

    def _is_due(self, next_attempt_at: float, attempts: int, now: float) -> bool:
        return next_attempt_at <= now or (self._flushing and attempts > 0)

    async def _anything_due(self) -> bool:
        now = self.schedule_now()
        for name in self.sinks:
            for next_attempt_at, attempts in await self.outbox.schedule(name):
                if self._is_due(next_attempt_at, attempts, now):
                    return True
            if self._dirty_states[name] and self._failures[name] == 0:
                return True
        return False

    async def _worker(self, name: str) -> None:
        sink = self.sinks[name]
        wakeup = self._wakeups[name]
        while True:
            wakeup.clear()
            try:
                wait_for = await self._pass(sink)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # e.g. the store is busy: log, back off, never stop delivering
                log.exception("alert_dispatch.pass_failed", sink=name)
                wait_for = await self._back_off(name, (), SinkUnavailable(name, f"{type(exc).__name__}: {exc}"))
            if self._failures[name] and self._flushing:
                await asyncio.sleep(0.05)  # flushing before exit: retry soon, in real time
            elif self._failures[name]:
                await self._wait(self._flush_requested, wait_for)  # backing off: new rows wait too
            else:
                await self._wait(wakeup, wait_for)

    async def _wait(self, wakeup: asyncio.Event, seconds: float) -> None:
        if wakeup.is_set():
            return
        sleeper = asyncio.ensure_future(self.sleep(max(seconds, 0.0)))
        waiter = asyncio.ensure_future(wakeup.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)

    # ------------------------------------------------------------------------------ one pass
    async def _pass(self, sink: Sink) -> float:
        """Send what is due; return how long to wait before the next pass."""
        name = sink.name
        now = self.schedule_now()
        if self._failures[name] or self._backlog[name]:  # after an outage: latest state wins
            swept = await self.outbox.supersede_older(name, now)
            if swept:
                self.stats.results[(name, "superseded")] += swept
        rows = await self.outbox.pending(name, self.batch_size, now, retries=self._flushing)
        self._backlog[name] = len(rows) >= self.batch_size
        latest: dict[str, OutboxRow] = {}
        superseded: list[int] = []
        for row in rows:
            older = latest.get(row.alert_id)
            if older is not None:
                superseded.append(older.row_id)
            latest[row.alert_id] = row
        if superseded:
            await self.outbox.mark_superseded(superseded, now)
            self.stats.results[(name, "superseded")] += len(superseded)
            self._forget(superseded)
        candidates = sorted(latest.values(), key=lambda r: r.row_id)
        expired = [r for r in candidates if self._is_due(r.next_attempt_at, r.attempts, now)
                   and self._age(r) > self.max_age_seconds]
        if expired:
            await self.outbox.mark_dropped([r.row_id for r in expired], now, "expired")
            self._forget(r.row_id for r in expired)
            self.stats.results[(name, "expired")] += len(expired)
            log.warning("alert.expired", sink=name, count=len(expired))
        dropped = {r.row_id for r in expired}
        due: list[OutboxRow] = []
        later: list[float] = []
        for r in candidates:
            if not self._is_due(r.next_attempt_at, r.attempts, now):
                later.append(r.next_attempt_at)
            elif r.row_id not in dropped:
                due.append(r)

        delivered_before = self.stats.results[(name, "delivered")]
        error, states_sent = (await self._send_rows(sink, due) if due else None), 0
        if error is None and self._dirty_states[name]:
            error, states_sent = await self._send_states(sink)
        if error is not None:
            return await self._back_off(name, due, error)
        self.stats.pending[name] = (await self.outbox.pending_counts()).get(name, 0)
        if self._failures[name]:
            # Recovered means the sink took something. A pass with nothing due (the rows wait
            # for their retry time) proves nothing: keep the count, so backoff keeps growing.
            if self.stats.results[(name, "delivered")] == delivered_before and not states_sent:
                if later:
                    return max(0.0, min(later) - now)
                return self._backoff_delay(name, None)
            log.info("alert_sink.recovered", sink=name, after_failures=self._failures[name])
            self._failures[name] = 0
        if self.shared and self.stats.results[(name, "delivered")] > delivered_before:
            # a peer skipped the newer rows of the alerts we had in flight (claims are per alert):
            # take them now, not an idle period later
            return 0.0
        if len(rows) >= self.batch_size and (due or superseded or expired):
            return 0.0  # more may be due beyond this batch; a batch that moved nothing is no reason to spin
        return min(later) - now if later else self.idle_seconds

    def _age(self, row: OutboxRow) -> float:
        """How long `row` has been due and undelivered: its wall-clock age when this process
        first fetched it (from `created_at`, or from the end of its quiet-window hold if it was
        never tried: `next_attempt_at` is then still the hold's end), then monotonic time. The
        wall clock is read raw, not `schedule_now()`: that runs ahead of the wall after a step
        back, while a row created since was stamped with the stepped wall."""
        seen = self._first_seen.get(row.row_id)
        mono = self.monotonic()
        if seen is None:
            due_since = max(row.created_at, row.next_attempt_at) if row.attempts == 0 else row.created_at
            seen = self._first_seen[row.row_id] = (mono, max(0.0, self.now() - due_since))
            if len(self._first_seen) > 20 * self.batch_size:  # rows finished elsewhere (a sweep, a peer)
                self._first_seen = dict(list(self._first_seen.items())[-10 * self.batch_size:])
        first_mono, age_then = seen
        return age_then + max(0.0, mono - first_mono)

    def _forget(self, row_ids: Iterable[int]) -> None:
        for row_id in row_ids:
            self._first_seen.pop(row_id, None)

    async def _send_rows(self, sink: Sink, rows: Sequence[OutboxRow]) -> SinkUnavailable | None:
        """Send `rows` in chunks of `concurrency`; stop at the first chunk with a temporary error."""
        name = sink.name
        for start in range(0, len(rows), self.concurrency):
            chunk = rows[start:start + self.concurrency]
            results = await asyncio.gather(*(self._send_one(sink, row) for row in chunk))
            delivered = [row for row, result in zip(chunk, results, strict=True) if result is None]
            rejected = [(row, result) for row, result in zip(chunk, results, strict=True)
                        if isinstance(result, SinkRejected)]
            unavailable = [result for result in results if isinstance(result, SinkUnavailable)]
            now = self.schedule_now()
            if delivered:
                await self.outbox.mark_delivered([row.row_id for row in delivered], now)
                self._forget(row.row_id for row in delivered)
                self.stats.results[(name, "delivered")] += len(delivered)
                for row in delivered:
                    evaluated = row.payload.get("evaluated_at_epoch")
                    if isinstance(evaluated, int | float):
                        self.stats.observe_latency(name, max(0.0, now - float(evaluated)))
                log.debug("alert.delivered", sink=name, count=len(delivered))
            for row, problem in rejected:
                await self.outbox.mark_dropped([row.row_id], now, str(problem))
                self._forget((row.row_id,))
                self.stats.results[(name, "rejected")] += 1
                log.error("alert.rejected", sink=name, alert_id=row.alert_id, dedup_key=row.dedup_key,
                          error=str(problem))
            if unavailable:
                failed = [row for row, result in zip(chunk, results, strict=True)
                          if isinstance(result, SinkUnavailable)]
                self.stats.results[(name, "retry")] += len(failed)
                retry_after = max((u.retry_after or 0.0) for u in unavailable)
                retry_at = self._retry_at[name] = now + self._backoff_delay(name, retry_after, peek=True)
                await self.outbox.mark_retry([row.row_id for row in failed], str(unavailable[0]), retry_at)
                return unavailable[0]
        return None

    async def _send_one(self, sink: Sink, row: OutboxRow) -> SinkError | None:
        try:
            await sink.send(row.payload)
        except SinkError as exc:
            return exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sink bug must not kill delivery to the others
            log.exception("alert_sink.unexpected_error", sink=sink.name)
            return SinkUnavailable(sink.name, f"unexpected {type(exc).__name__}: {exc}")
        return None

    async def _send_states(self, sink: Sink) -> tuple[SinkUnavailable | None, int]:
        """Publish the dirty states; (the first temporary error or None, how many were sent)."""
        dirty = self._dirty_states[sink.name]
        sent = 0
        for key in sorted(dirty):
            state = self._states[key]
            try:
                if state is _CLEARED:
                    await sink.clear_state(key[0], key[1])
                else:
                    await sink.send_state(key[0], key[1], state)
            except SinkUnavailable as exc:
                return exc, sent
            except SinkError as exc:
                log.warning("alert_state.rejected", sink=sink.name, target=key[1], error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink bug must not stop delivery
                log.exception("alert_sink.unexpected_error", sink=sink.name)
                return SinkUnavailable(sink.name, f"unexpected {type(exc).__name__}: {exc}"), sent
            else:
                sent += 1
            if self._states.get(key) is not state:
                continue  # a newer state came while this one was on its way: it is still to send
            dirty.discard(key)
            if state is _CLEARED and not any(key in self._dirty_states[name] for name in self._state_sinks):
                del self._states[key]
        return None, sent

    def _backoff_delay(self, name: str, retry_after: float | None, *, peek: bool = False) -> float:
        failures = self._failures[name] + (1 if peek else 0)
        return self.backoff(max(failures, 1) - 1, retry_after)

    async def _back_off(self, name: str, due: Sequence[OutboxRow], error: SinkUnavailable) -> float:
        self._failures[name] += 1
        # the rows just marked for retry say when: wait until exactly then (one jitter draw), measured
        # on the clock as it is now, after the awaits since the failure
        retry_at = self._retry_at.pop(name, None)
        if retry_at is None:
            retry_at = self.schedule_now() + self._backoff_delay(name, error.retry_after)
        if self._failures[name] == 1:  # log the transition, not every failed attempt
            log.warning("alert_sink.unavailable", sink=name, error=str(error), pending=len(due))
        with contextlib.suppress(Exception):
            self.stats.pending[name] = (await self.outbox.pending_counts()).get(name, 0)
        return max(0.0, retry_at - self.schedule_now())
