"""Decision events: every growth decision (intent, blocked with its reason, result), every alert
transition and every mode change, as one JSON event each (schema `deploy/events.schema.json`),
delivered at least once to MQTT (`{prefix}/events/<type>`, QoS 1) and webhooks through the durable
outbox.

    intent      the planner wants to grow a quota (a GROW decision, audited before any write)
    blocked     a guard said no (a BLOCKED decision: `data.guard`, `data.reason`) — when it starts
                blocking a series (or the guard changes), not again every poll it holds: the
                growth stage audits a guard's episode once, and the event with it
    result      the audited outcome of an action (`data.action_id` is the audit row; `data.status`
                verified, would_grow, failed, blocked, paused, …); an outcome left open (`unknown`,
                or an intent a crash left) has a second `result` when a re-read settles it
                (`reconciled`, `abandoned`, `external_change`)
    alert       an alert fired, escalated, de-escalated or resolved (not a re-notification)
    mode        the growth mode the daemon runs in changed (observe / enforce), or was first seen
    leadership  a cluster got a new leader (a fleet on PostgreSQL): enqueued by the new leader,
                id `leadership/<cluster>@<epoch>` — the same on every instance, so sent once

Event ids are deterministic (the audit row, the alert's notification sequence, the decision's
time), so an event enqueued twice after a crash has one id and a receiver dedups on it; the
outbox itself ignores a second insert of the same id. `EventStage` runs after the alerting stage
and is built with explicit collaborators: its settings group, the clock, the outbox store, the
sinks, the audit trail and a reader of the mode; the alerting and growth stages get it as their
`AlertTransitions` and `DecisionEvents`, to commit their events with their own writes. Its `run`
is the supervised delivery task (a `Dispatcher` of its own over the same outbox table, with its
own sink names).

What a crash may not lose (README: "one `result` event per audit row", "one `alert` event per
alert notification", every intent and every block, at least once):

- `alert` events are enqueued by the alerting stage, in the same transaction as the alert states
  they describe (`EventStage.alert_entries`, the alerting stage's `AlertTransitions`): both are on
  disk or neither.
- `intent` and `blocked` events are enqueued by the stage that audits the decision, in the same
  transaction as its audit row (`EventStage.decision_entries`, the growth stages'
  `DecisionEvents`): the write-ahead `intent` row (or `would_grow`, `running`) with the intent, the
  `blocked`/`paused` row a guard's episode starts with the block. So there is one `blocked` event
  per audited block (once per episode, as the audit), and a growth fenced out of a lost lease
  leaves neither row nor event.
- `result` events of the audit rows: one per row and status, whose id is the row's. An outcome
  in the cycle without an audit row (a guard holding at every poll after its episode's audited
  first one) is no `result`. A row that is an outcome when it is written (`external_change`, the
  growth stage's) has its `result` committed with it (`EventStage.result_entries`); the others
  are enqueued by this stage from the cycle's outcomes. At start (`open`), every audit row changed since shortly
  before this sink's newest outbox row is turned into its `result` event again. Its id
  (`action-<row>/<status>`) is the one the live event had, so what was enqueued already is
  ignored by the outbox; what a SIGKILL between the audit and the events stage lost is enqueued.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from quotapilot.alerts.dispatcher import Dispatcher, OutboxEntry, Sink
from quotapilot.alerts.model import AlertState, Phase
from quotapilot.alerts.sinks.mqtt import MqttConfig, MqttSink, topic_level
from quotapilot.alerts.words import iso8601
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.leadership import LeadershipChange
from quotapilot.daemon.runtime.retry import RetryPolicy
from quotapilot.daemon.runtime.supervisor import TaskFactory
from quotapilot.daemon.settings import EventSettings
from quotapilot.daemon.store.actions import ActionRecord, ActionStore
from quotapilot.daemon.store.outbox import AsyncOutbox
from quotapilot.forecasting.types import ActionOutcome, ActionStatus, Decision, DecisionKind

log = get_logger(__name__)

SCHEMA = "quotapilot.event/v1"
SCHEMA_VERSION = 1
EVENT_TYPES: tuple[str, ...] = ("intent", "blocked", "result", "alert", "mode", "leadership")
EVENT_SINK_PREFIX = "events-"
"""Event sinks are named `events-mqtt`, `events-webhook-<i>` (or `events-<name>`): the outbox
table is shared with the alerts, the sink name keeps the two deliveries apart."""
REPLAY_OVERLAP_SECONDS = 3600.0
"""At start, audit rows changed since this long before a sink's newest outbox row are replayed
(a margin for a wall clock that stepped; replaying what is queued already costs nothing)."""
REPLAY_MAX_SECONDS = 7 * 86400.0
"""…but never rows older than this: the outbox forgets finished rows after 30 days
(`OUTBOX_KEEP_SECONDS`), and a replay must find an event already sent still there."""


@dataclass(frozen=True, slots=True)
class Event:
    """One decision event. `data` is type-specific (see `deploy/events.schema.json`)."""

    id: str
    type: str
    t: float
    cluster: str | None = None
    target: str | None = None
    path: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "id": self.id, "type": self.type,
                "time": iso8601(self.t), "time_epoch": self.t, "cluster": self.cluster,
                "target": self.target, "path": self.path, "data": dict(self.data)}


# ------------------------------------------------------------------------------ pure builders
def decision_event(decision: Decision, *, mode: str | None) -> Event | None:
    """The `intent` of a GROW decision, the `blocked` of a BLOCKED one (None for any other)."""
    common = {"dimension": str(decision.dimension), "mode": mode}
    if decision.kind is DecisionKind.GROW:
        kind, data = "intent", {**common, "reason": decision.reason, "used": decision.current_used,
                                "old_hard": decision.current_hard, "new_hard": decision.new_hard,
                                "urgency_seconds": decision.urgency_seconds}
    elif decision.kind is DecisionKind.BLOCKED:
        kind, data = "blocked", {**common, "guard": decision.guard, "reason": decision.reason,
                                 "used": decision.current_used, "old_hard": decision.current_hard,
                                 "wanted_hard": decision.new_hard}
    else:
        return None
    target = decision.target
    return Event(id=f"{target.cluster}/{target.name}/{decision.dimension}/{kind}@{decision.t:.3f}", type=kind,
                 t=decision.t, cluster=target.cluster, target=target.name, path=target.path, data=data)


def result_event(action: ActionOutcome, *, mode: str | None) -> Event | None:
    """The `result` event of an audited action outcome (id `action-<row>/<status>`), or None for an
    outcome no audit row records: a guard's hold at every poll after the one its episode was
    audited at, a one-cycle hold, a growth refused before its intent row. Those still reach the
    alerting stage and the snapshot (`ctx.actions`), but a `result` is one per audit row."""
    if action.action_id is None:
        return None
    target = action.target
    return Event(
        id=f"action-{action.action_id}/{action.status}", type="result", t=action.t, cluster=target.cluster,
        target=target.name, path=target.path,
        data={"dimension": str(action.dimension), "mode": mode, "status": str(action.status),
              "reason": action.reason, "action_id": action.action_id, "old_hard": action.old_hard,
              "new_hard": action.new_hard})


_RESULT_STATUSES = frozenset(str(s) for s in ActionStatus)


def audit_result_event(record: ActionRecord) -> Event | None:
    """The `result` event of one audit row as it stands (the one `result_event` made of its
    outcome: the same id), or None for a row still open (`intent`, `patched`: the reconcile that
    settles it makes its result) or a status that is no action outcome."""
    if record.status not in _RESULT_STATUSES:  # `intent`, `patched` are no outcome
        return None
    return Event(
        id=f"action-{record.id}/{record.status}", type="result", t=record.updated_at, cluster=record.cluster,
        target=record.target, path=record.path,
        data={"dimension": record.dimension, "mode": record.mode, "status": record.status, "reason": record.reason,
              "action_id": record.id, "old_hard": record.old_hard, "new_hard": record.new_hard})


AlertView = Mapping[str, tuple[str, str | None, int, str, str]]
"""alert id → (phase, severity, sequence, summary, kind): what the alert transitions are read from."""


def alert_view(states: Mapping[str, AlertState]) -> AlertView:
    return {alert_id: (str(s.phase), None if s.severity is None else str(s.severity), s.sequence, s.summary, s.kind)
            for alert_id, s in states.items()}


def alert_events(before: AlertView, after: AlertView, now: float) -> list[Event]:
    """An event per alert that notified since `before`, except plain re-notifications (firing
    before and after, same severity): fired, escalated, de-escalated, resolved, one-shot."""
    events: list[Event] = []
    for alert_id, (phase, severity, sequence, summary, kind) in sorted(after.items()):
        old_phase, old_severity, old_sequence, _, _ = before.get(alert_id, (str(Phase.INACTIVE), None, 0, "", kind))
        if sequence <= old_sequence:
            continue
        firing = phase == Phase.FIRING
        if firing and old_phase == Phase.FIRING and severity == old_severity:
            continue
        if firing:
            transition = "fired" if old_phase != Phase.FIRING else "severity_changed"
        else:
            transition = "resolved" if old_phase == Phase.FIRING else "notified"
        cluster, target, _ = [*alert_id.split("/", 2), "", ""][:3]
        events.append(Event(
            id=f"{alert_id}#{sequence}", type="alert", t=now, cluster=cluster, target=target,
            data={"alert_id": alert_id, "kind": kind, "transition": transition,
                  "from": {"phase": old_phase, "severity": old_severity},
                  "to": {"phase": phase, "severity": severity}, "summary": summary, "sequence": sequence}))
    return events


def mode_event(before: str | None, after: str, now: float) -> Event:
    return Event(id=f"mode/{after}@{now:.3f}", type="mode", t=now, data={"from": before, "to": after})


def leadership_event(change: LeadershipChange) -> Event:
    return Event(id=change.dedup_key, type="leadership", t=change.t, cluster=change.cluster,
                 data={"holder": change.holder, "epoch": change.epoch, "previous_holder": change.previous_holder,
                       "transition": change.transition})


# ------------------------------------------------------------------------------------- sinks
def build_event_sinks(settings: EventSettings) -> list[Sink]:
    """`events-mqtt` for `[events.mqtt]`, one `events-webhook-<i>` per `[[events.webhooks]]`."""
    sinks: list[Sink] = []
    if settings.mqtt is not None:
        m = settings.mqtt
        sinks.append(MqttEventSink(MqttConfig(
            host=m.host, port=m.port, topic_prefix=m.topic_prefix, username=m.username,
            password=m.resolved_password(), tls=m.tls, ca_file=m.resolved_ca_file(),
            client_id=None if m.client_id is None else f"{m.client_id}-events",
            keepalive_seconds=m.keepalive_seconds, timeout_seconds=m.timeout_seconds,
            name=f"{EVENT_SINK_PREFIX}mqtt")))
    if settings.webhooks:
        from quotapilot.alerts.sinks.webhook import WebhookConfig, WebhookSink

        for i, w in enumerate(settings.webhooks):
            sinks.append(WebhookSink(WebhookConfig(
                name=f"{EVENT_SINK_PREFIX}{w.name or f'webhook-{i}'}", url=w.url, format="json",
                token=w.resolved_token(), headers=dict(w.headers), timeout_seconds=w.timeout_seconds,
                verify_tls=w.verify_tls, ca_file=w.resolved_ca_file())))
    return sinks


class MqttEventSink(MqttSink):
    """The MQTT sink, publishing each event to `{prefix}/events/<type>` (QoS 1, not retained);
    its own connection says `online`/`offline` on `{prefix}/events/status`."""

    publishes_state = False

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/events/status"

    def event_topic(self, event_type: str) -> str:
        return f"{self.prefix}/events/{topic_level(event_type)}"

    async def send(self, payload: Mapping[str, Any]) -> None:
        await self._publish(self.event_topic(str(payload["type"])), payload, retain=False)

    async def _drop_client(self) -> None:
        # A broker that went away leaves the lost connection's error in the client's
        # disconnected-future; read it, or asyncio reports "exception was never retrieved".
        client = self._client
        disconnected: asyncio.Future[None] | None = getattr(client, "_disconnected", None)
        if disconnected is not None and disconnected.done() and not disconnected.cancelled():
            disconnected.exception()
        await super()._drop_client()


# ------------------------------------------------------------------------------------- stage
ModeReader = Callable[[], str | None]


class EventStage:
    """The `events` stage: turns the cycle's action outcomes into `result` entries for the event
    sinks (after the alerting stage, which enqueues the alert transitions with its states; the
    growth stages enqueue the `intent`/`blocked` events with their audit rows)."""

    name = "events"

    def __init__(self, settings: EventSettings, clock: Clock, outbox: AsyncOutbox, *,
                 sinks: Sequence[Sink] | None = None, audit: ActionStore | None = None,
                 mode: ModeReader | None = None, rng: random.Random | None = None) -> None:
        """`audit`: the audit trail, whose rows a crash left without their `result` event are
        enqueued at start (None: no replay)."""
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.sinks = list(build_event_sinks(settings) if sinks is None else sinks)
        self.audit = audit
        self.mode = mode
        self.dispatcher = Dispatcher(
            outbox, self.sinks, now=clock.now, sleep=clock.sleep, monotonic=clock.monotonic,
            backoff=RetryPolicy.schedule(settings.retry_backoffs_seconds).backoff(rng or random.Random()),
            max_age_seconds=settings.max_age_seconds, owns_sink=lambda sink: sink.startswith(EVENT_SINK_PREFIX))
        self.published: Counter[str] = Counter()
        """Events enqueued since start, by type."""
        self._mode: str | None = None
        self._lock = asyncio.Lock()
        self._ran = False

    async def open(self) -> None:
        """At start: the `result` events of audit rows changed since this life's predecessor last
        enqueued (see the module docstring), then the mode — also this life's first outbox row,
        which the next start replays from."""
        if not self.sinks:
            return
        await self._replay_audit()
        await self.publish_now(self.clock.now())

    async def _replay_audit(self) -> None:
        if self.audit is None:
            return
        now = self.clock.now()
        last = await self.outbox.last_created_at([sink.name for sink in self.sinks])
        # a sink with no row yet is new: it gets what happens from now on, not a backfill
        since = {sink: max(t - REPLAY_OVERLAP_SECONDS, now - REPLAY_MAX_SECONDS) for sink, t in last.items()}
        if not since:
            return
        records = await asyncio.to_thread(self.audit.changed_since, min(since.values()))
        replayed = [(record.updated_at, event) for record in records
                    if (event := audit_result_event(record)) is not None]
        entries = [entry for t, event in replayed for entry in self._entries([event], now)
                   if t >= since.get(entry.sink, math.inf)]
        if not entries:
            return
        async with self._lock:
            inserted = await self.outbox.enqueue(entries)
        if inserted:
            log.info("events.replayed", audit_rows=len(replayed), rows=inserted)
            self._committed(entries)

    async def close(self) -> None:
        if not self._ran:
            for sink in self.sinks:
                await sink.close()

    async def on_cycle(self, ctx: CycleContext) -> None:
        if not self.sinks:
            return
        mode = self._current_mode()
        await self.publish_now(ctx.now, [event for action in [*ctx.actions, *ctx.settled]
                                         if (event := result_event(action, mode=mode)) is not None])

    async def publish_now(self, now: float, events: Sequence[Event] = ()) -> int:
        """Enqueue `events` plus the mode change since the last call."""
        async with self._lock:
            pending = list(events)
            mode = self._current_mode()
            if mode is not None and mode != self._mode:
                pending.append(mode_event(self._mode, mode, now))
                self._mode = mode
            if not pending or not self.sinks:
                return 0
            inserted = await self.outbox.enqueue(self._entries(pending, now))
            self.published.update(event.type for event in pending)
        log.debug("events.enqueued", events=len(pending), rows=inserted)
        self.dispatcher.wake()
        return len(pending)

    # ---------------------------------------------------- alert transitions (`AlertTransitions`)
    def alert_entries(self, before: Mapping[str, AlertState], after: Mapping[str, AlertState],
                      now: float) -> list[OutboxEntry]:
        """The `alert` events of an evaluation (`before` → `after`, the alerts it changed), as
        outbox entries the alerting stage commits with the states."""
        if not self.sinks:
            return []
        return self._entries(alert_events(alert_view(before), alert_view(after), now), now)

    def alerts_committed(self, entries: Sequence[OutboxEntry]) -> None:
        """The entries of `alert_entries` are on disk: count them and deliver."""
        self._committed(entries)

    # ------------------------------------------ audited decisions (the growth stages' `DecisionEvents`)
    def decision_entries(self, decision: Decision, *, mode: str, now: float) -> list[OutboxEntry]:
        """The `intent` (a GROW) or `blocked` (a BLOCKED) event of a decision being audited under
        `mode`, as outbox entries the auditing stage commits with the audit row."""
        if not self.sinks:
            return []
        event = decision_event(decision, mode=mode)
        return [] if event is None else self._entries([event], now)

    def result_entries(self, record: ActionRecord) -> list[OutboxEntry]:
        """The `result` event of an audit row that is an outcome as written (`external_change`: the
        growth stage found a limit someone else moved), as outbox entries the auditing stage
        commits with the row (`ActionStore.record(..., result_events=)`). Made from the row, as
        the replay at start makes it (`audit_result_event`): the same id and data, live or replayed."""
        if not self.sinks:
            return []
        event = audit_result_event(record)
        return [] if event is None else self._entries([event], record.updated_at)

    def decisions_committed(self, entries: Sequence[OutboxEntry]) -> None:
        """The entries of `decision_entries` (or `result_entries`) are on disk: count them and deliver."""
        self._committed(entries)

    def _committed(self, entries: Sequence[OutboxEntry]) -> None:
        """Entries another stage committed: each event once by type (an entry per sink), then deliver."""
        if entries:
            self.published.update(status for _, status in {(entry.dedup_key, entry.status) for entry in entries})
            self.dispatcher.wake()

    def _entries(self, events: Sequence[Event], now: float) -> list[OutboxEntry]:
        return [OutboxEntry(sink=sink.name, alert_id=f"event:{event.id}", dedup_key=event.id,
                            status=event.type, payload=event.payload(), created_at=now, next_attempt_at=now)
                for event in events for sink in self.sinks]

    def _current_mode(self) -> str | None:
        return None if self.mode is None else self.mode()

    def tasks(self) -> Mapping[str, TaskFactory]:
        """The supervised delivery task (see `run`)."""
        return {"events": self.run}

    async def run(self, stopping: asyncio.Event) -> None:
        """The supervised delivery task: deliver until `stopping`, then flush within a bound."""
        self._ran = True
        await self.dispatcher.drop_removed_sinks()  # rows queued for an event sink no longer configured
        if not self.sinks:
            await stopping.wait()
            return
        delivery = asyncio.ensure_future(self.dispatcher.run())
        try:
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({delivery, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if delivery.done():
                delivery.result()  # a crash of the dispatcher is this task's crash
                return
            flushed = await self.drain(5.0)
            log.info("events.flushed", complete=flushed)
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 (the demo's contract: drain(timeout))
        if not self.sinks:
            return True
        return await self.dispatcher.drain(timeout)

    def collector(self) -> EventMetrics:
        return EventMetrics(lambda: dict(self.published), lambda: dict(self.dispatcher.stats.results))


class EventMetrics:
    """`quotapilot_events_total{type}` (enqueued) and `quotapilot_event_deliveries_total{sink,result}`."""

    def __init__(self, published: Callable[[], Mapping[str, int]],
                 deliveries: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._published = published
        self._deliveries = deliveries

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        published = CounterMetricFamily("quotapilot_events", "Decision events enqueued for delivery, by type.",
                                        labels=["type"])
        counts = {kind: 0 for kind in EVENT_TYPES} | dict(self._published())
        for kind, count in sorted(counts.items()):
            published.add_metric([kind], float(count))
        yield published
        deliveries = GaugeMetricFamily("quotapilot_event_deliveries",
                                       "Event deliveries by sink and result since start.", labels=["sink", "result"])
        for (sink, result), count in sorted(self._deliveries().items()):
            deliveries.add_metric([sink, result], float(count))
        yield deliveries
