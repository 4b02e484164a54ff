"""Alerting in the daemon: the `alerting` stage, the dispatcher task and their metrics.

Per poll cycle, `AlertingStage.on_cycle` reduces the `CycleContext` to plain `RuleInputs`, runs
the pure rules (`quotapilot.alerts.rules`) against the alerts' persisted states, routes the
notifications, and writes the new states and the outbox rows in one SQLite transaction — only
then wakes the dispatcher. A target whose sample the collector has not confirmed yet
(`PollResult.unconfirmed`: its first, or a hard limit that moved without a write of ours) keeps
its alerts and retained state as they were until a sample that is (`TargetInput.confirmed`): an
alert fires or resolves on what VMS said twice. `run(stopping)` is the supervised root task that
delivers; on stop it flushes what it can within the shutdown bound and leaves the rest on disk
for the next start.

Supervised task crashes (the `daemon` alert kind) are checked by the same task every
`task_check_seconds`, so they are reported even when no poll cycle runs any more.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from quotapilot.alerts.dispatcher import (
    DELIVERY_RESULTS,
    LATENCY_BUCKETS,
    DeliveryStats,
    Dispatcher,
    OutboxEntry,
    Sink,
    publishes_state,
)
from quotapilot.alerts.model import AlertState, Condition, Notification, Phase, Severity, Status, alert_id
from quotapilot.alerts.routing import QuietWindow, Route, route
from quotapilot.alerts.rules import (
    ALERT_KINDS,
    COLLECTOR_TARGET,
    GrowthInput,
    RuleConfig,
    RuleInputs,
    SeriesInput,
    TargetInput,
    TaskHealth,
    cycle_conditions,
    evaluate,
    expiry_seconds,
    task_conditions,
)
from quotapilot.alerts.words import iso8601
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.events import EVENT_SINK_PREFIX
from quotapilot.daemon.fs.alerts import thresholds_for as filesystem_thresholds
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.leadership import Leadership, LeadershipChange, acts_on
from quotapilot.daemon.runtime.retry import RetryPolicy
from quotapilot.daemon.runtime.supervisor import TaskFactory, sleep_unless
from quotapilot.daemon.settings import LOG_SINK_NAME, AlertRuleSettings, AlertSettings, PolicyRules, Settings
from quotapilot.daemon.stages.presence import TargetPresence
from quotapilot.daemon.store.backend import Backend, StoreError
from quotapilot.daemon.store.outbox import AsyncOutbox, OutboxStore
from quotapilot.forecasting.types import (
    POOL_TARGET,
    ActionOutcome,
    ActionStatus,
    DecisionKind,
    Dimension,
    SeriesForecast,
    TargetId,
    TargetKind,
)

log = get_logger(__name__)

OUTBOX_KEEP_SECONDS = 30 * 86400.0
"""Delivered, superseded and dropped outbox rows are kept this long (for `status` and audits)."""

ALERTING_GUARDS = frozenset({"cluster_reserve", "max_hard_limit", "rate_limit", "unsettled", "external_change"})
"""Guards whose block is worth an alert; cooldown, pause, kill switch and stale data are either
intended or covered by the collector alert."""


# ------------------------------------------------------------------------- settings → plain data
def rule_config(rules: AlertRuleSettings) -> RuleConfig:
    return RuleConfig(
        runway_warning_seconds=rules.runway_warning_seconds,
        runway_critical_seconds=rules.runway_critical_seconds,
        pool_runway_warning_seconds=rules.pool_runway_warning_seconds,
        pool_runway_critical_seconds=rules.pool_runway_critical_seconds,
        hysteresis_ratio=rules.hysteresis_ratio,
        runway_hysteresis_ratio=rules.runway_hysteresis_ratio,
        for_seconds=rules.for_seconds,
        renotify_seconds=rules.renotify_seconds,
        renotify_warning_seconds=rules.renotify_warning_seconds,
        pool_renotify_seconds=rules.pool_renotify_seconds,
        anomaly_margin_ratio=rules.anomaly_margin_ratio,
        anomaly_floor_bytes_per_second=rules.anomaly_floor_bytes_per_second,
        anomaly_samples=rules.anomaly_samples,
        collector_failed_intervals=rules.collector_failed_intervals,
        runway_beyond_horizon_resolve_seconds=rules.runway_beyond_horizon_resolve_seconds,
    )


def routes_from(alerts: AlertSettings) -> tuple[Route, ...]:
    return tuple(
        Route(match=r.match, min_severity=Severity(r.min_severity), sinks=tuple(r.sinks),
              quiet=tuple(QuietWindow.parse(q.start, q.end) for q in r.quiet))
        for r in alerts.routes)


def build_sinks(alerts: AlertSettings) -> list[Sink]:
    """The configured sinks: the built-in `log` (unless `log_sink = false`), `mqtt`, and one
    `webhook-<i>` (or its `name`) per `[[alerts.webhooks]]`."""
    sinks: list[Sink] = []
    if alerts.log_sink:
        from quotapilot.alerts.sinks.log import LogSink

        sinks.append(LogSink(LOG_SINK_NAME))
    if alerts.mqtt is not None:
        from quotapilot.alerts.sinks.mqtt import MqttConfig, MqttSink

        m = alerts.mqtt
        sinks.append(MqttSink(MqttConfig(
            host=m.host, port=m.port, topic_prefix=m.topic_prefix, username=m.username,
            password=m.resolved_password(), tls=m.tls, ca_file=m.resolved_ca_file(), client_id=m.client_id,
            keepalive_seconds=m.keepalive_seconds, timeout_seconds=m.timeout_seconds)))
    if alerts.webhooks:
        from quotapilot.alerts.sinks.webhook import WebhookConfig, WebhookSink

        for i, w in enumerate(alerts.webhooks):
            sinks.append(WebhookSink(WebhookConfig(
                name=w.name or f"webhook-{i}", url=w.url, format=w.format, token=w.resolved_token(),
                headers=dict(w.headers), timeout_seconds=w.timeout_seconds, verify_tls=w.verify_tls,
                ca_file=w.resolved_ca_file())))
    return sinks


# ------------------------------------------------------------------------------ cycle → inputs
def _runway_seconds(forecast: SeriesForecast | None,
                    now: float) -> tuple[bool, float | None, float | None, float | None]:
    """(known, p50, p90, horizon) seconds until 100 % of the limit, from the forecaster's runways
    (horizon: how far ahead it looked)."""
    if forecast is None or forecast.forecast is None:
        return False, None, None, None
    runway = forecast.runway(1.0)
    if runway is None:
        return False, None, None, None
    p50 = None if runway.p50 is None else max(0.0, runway.p50 - now)
    p90 = None if runway.p90 is None else max(0.0, runway.p90 - now)
    return True, p50, p90, max(0.0, runway.horizon_end - now)


def _expected(forecast: SeriesForecast | None, used: float, t: float,
              window_seconds: float) -> tuple[float, float, float] | None:
    """(t_end, p10, p90): the usage the forecast expects `window_seconds` after `t`, interpolated
    from the current usage to the forecast's first point when the window ends before it."""
    f = forecast.forecast if forecast is not None else None
    if f is None or not f.times or window_seconds <= 0 or f.fallback is not None:
        return None  # no forecast, or a stopgap model: not a band to judge ingest by
    end = t + window_seconds
    if end > f.times[-1]:
        return None
    if end < f.times[0]:
        share = (end - f.t0) / (f.times[0] - f.t0) if f.times[0] > f.t0 else 1.0
        base = used if abs(f.t0 - t) < window_seconds else f.p50[0]
        return end, base + (f.p10[0] - base) * share, base + (f.p90[0] - base) * share
    low, high = f.at(end, "p10"), f.at(end, "p90")
    if low is None or high is None:
        return None
    return end, low, high


def _series(used: float, limit: float | None, forecast: SeriesForecast | None, now: float, *,
            t: float | None = None, window_seconds: float = 0.0) -> SeriesInput:
    known, p50, p90, horizon = _runway_seconds(forecast, now)
    if limit and used >= limit:
        known, p50, p90 = True, 0.0, 0.0
    return SeriesInput(used=float(used), limit=float(limit) if limit else None, forecast_known=known,
                       runway_p50_seconds=p50, runway_p90_seconds=p90, horizon_seconds=horizon,
                       expected=_expected(forecast, float(used), now if t is None else t, window_seconds))


_ACTION_STATUS = {
    ActionStatus.VERIFIED: "grown",
    ActionStatus.WOULD_GROW: "would_grow",
    ActionStatus.BLOCKED: "blocked",
    ActionStatus.VERIFY_FAILED: "failed",
    ActionStatus.FAILED: "failed",
    # outcome unknown (answer lost): not a failure — the growth is held until a read settles it,
    # and the alert (`growth_blocked`, warning) says exactly that (the outcome's reason)
    ActionStatus.UNKNOWN: "blocked",
}


def _alerts(guard: str | None) -> bool:
    """Whether a growth held by `guard` is alerted (`growth_blocked`); a hold without one is."""
    return guard is None or guard in ALERTING_GUARDS


def _growth_inputs(ctx: CycleContext, mode_of: Callable[[TargetId], str]) -> dict[TargetId, list[GrowthInput]]:
    """Per target: what the actuator did (its outcomes win) or, lacking an outcome, what the
    planner decided. A decision of NONE still yields an input, so would-grow/blocked resolve."""
    out: dict[TargetId, list[GrowthInput]] = {}
    acted: set[tuple[TargetId, Dimension]] = set()
    for action in ctx.actions:
        acted.add((action.target, action.dimension))
        status = _ACTION_STATUS.get(action.status, "none")
        if action.status is ActionStatus.BLOCKED and not _alerts(action.guard):
            status = "none"  # a cooldown: intended, as its decision below
        out.setdefault(action.target, []).append(GrowthInput(
            dimension=str(action.dimension), status=status, reason=action.reason,
            old_hard=action.old_hard, new_hard=action.new_hard))
    for decision in ctx.decisions:
        if (decision.target, decision.dimension) in acted:
            continue
        if decision.kind is DecisionKind.GROW:
            status = "would_grow" if mode_of(decision.target) == "observe" else "none"
        elif decision.kind is DecisionKind.BLOCKED and _alerts(decision.guard):
            status = "blocked"
        else:
            status = "none"
        reason = f"{decision.guard}: {decision.reason}" if decision.guard else decision.reason
        out.setdefault(decision.target, []).append(GrowthInput(
            dimension=str(decision.dimension), status=status, reason=reason,
            old_hard=decision.current_hard, new_hard=decision.new_hard))
    return out


def inputs_from_cycle(ctx: CycleContext, settings: Settings,
                      policy_cache: dict[tuple[str, str], PolicyRules] | None = None) -> RuleInputs:
    """Reduce one cycle to the plain data the rules read. `policy_cache` keeps each target's
    resolved policy between cycles (settings are immutable)."""
    poll = ctx.poll
    now = ctx.now
    policy = settings.policy
    cache = {} if policy_cache is None else policy_cache

    def rules_of(target: TargetId) -> PolicyRules:
        if not policy.overrides:
            return policy
        key = (target.name, target.path)
        rules = cache.get(key)
        if rules is None:
            rules = cache[key] = policy.rules_for(target.name, target.path)
        return rules

    def mode_of(target: TargetId) -> str:
        return rules_of(target).mode

    growth = _growth_inputs(ctx, mode_of)
    window = settings.alerts.rules.anomaly_samples * settings.poll.interval_seconds
    held = {d.target for d in ctx.decisions if d.kind is DecisionKind.BLOCKED and d.guard != "cooldown"}

    def managed(target: TargetId) -> bool:
        """quotapilot itself grows this quota (see TargetInput.growth_managed)."""
        return mode_of(target) == "enforce" and not policy.kill_switch and target not in held
    targets: list[TargetInput] = []
    seen_pool = False
    for obs in poll.observations:
        target = obs.target
        is_pool = target.kind is TargetKind.POOL
        seen_pool = seen_pool or is_pool
        rules = policy if is_pool else rules_of(target)
        warning_at, critical_at = rules.warning_at, rules.critical_at
        if target.kind is TargetKind.FILESYSTEM:  # FILESYSTEMS (issue 18): the tier's thresholds
            warning_at, critical_at = filesystem_thresholds(settings, target)
        inodes = None
        if obs.hard_limit_inodes and obs.used_inodes is not None:
            inodes = _series(obs.used_inodes, obs.hard_limit_inodes,
                             ctx.forecasts.get((target, Dimension.INODES)), now)
        targets.append(TargetInput(
            cluster=target.cluster, target=target.name, path=target.path, is_pool=is_pool, t=obs.t,
            state=obs.state, warning_at=warning_at, critical_at=critical_at,
            bytes=_series(obs.used_bytes, obs.hard_limit_bytes,
                          ctx.forecasts.get((target, Dimension.BYTES)), now, t=obs.t, window_seconds=window),
            inodes=inodes, growth=tuple(growth.get(target, ())),
            growth_managed=target.kind is TargetKind.QUOTA and managed(target),
            confirmed=target.name not in poll.unconfirmed))
    if poll.capacity is not None and not seen_pool:
        capacity = poll.capacity
        pool_forecast = next((f for (t, d), f in ctx.forecasts.items()
                              if t.kind is TargetKind.POOL and d is Dimension.BYTES), None)
        targets.append(TargetInput(
            cluster=poll.cluster, target=POOL_TARGET, path="/", is_pool=True, t=capacity.t,
            state=capacity.state, warning_at=policy.warning_at, critical_at=policy.critical_at,
            bytes=_series(capacity.used_bytes, capacity.usable_bytes, pool_forecast, now, t=capacity.t,
                          window_seconds=window), confirmed=POOL_TARGET not in poll.unconfirmed))
    return RuleInputs(cluster=poll.cluster, now=now, poll_ok=poll.ok, poll_error=poll.error,
                      invalid_samples=len(poll.dropped), targets=tuple(targets))


def _hard_limit_now(target: TargetInput, last_action: ActionOutcome | None) -> float | None:
    """The bytes hard limit as it is now: a verified growth made after the sample was taken
    already counts (else the state is published twice: with the old limit, then the new)."""
    limit = target.bytes.limit if target.bytes is not None else None
    if (last_action is not None and last_action.status is ActionStatus.VERIFIED
            and last_action.dimension is Dimension.BYTES and last_action.new_hard
            and last_action.t >= target.t):
        return float(last_action.new_hard)
    return limit


def target_state_payload(target: TargetInput, last_action: ActionOutcome | None,
                         firing: Sequence[str]) -> dict[str, Any]:
    """The retained MQTT state of one target (README, "Alerts"); compact, since it is re-sent
    whenever the picture changes (cluster and target are in the topic)."""
    series = target.bytes
    runway = series.runway_seconds if series is not None and series.forecast_known else None
    limit = _hard_limit_now(target, last_action)

    def ratio(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "path": target.path,
        "t": iso8601(target.t)[:19] + "Z",
        "used_bytes": int(series.used) if series else None,
        "hard_limit_bytes": int(limit) if series and limit else None,
        "utilization_ratio": ratio(series.used / limit) if series and limit else None,
        "inode_utilization_ratio": ratio(target.inodes.utilization_ratio) if target.inodes else None,
        "runway_seconds": None if runway is None else int(runway),
        "quota_state": target.state,
        "last_action": None if last_action is None else {
            "status": str(last_action.status), "t": iso8601(last_action.t)[:19] + "Z",
            "new_hard": last_action.new_hard,
        },
        "firing": sorted(firing),
    }


# --------------------------------------------------------------------------------------- stage
class AlertTransitions(Protocol):
    """Who describes alert state changes in the outbox (the decision events' `alert` events,
    `quotapilot.daemon.events.EventStage`): its entries are committed in the same transaction as
    the states, so a crash loses neither without the other."""

    def alert_entries(self, before: Mapping[str, AlertState], after: Mapping[str, AlertState],
                      now: float) -> list[OutboxEntry]:
        """Entries for the change of the alerts in `after` (`before`: those of them known before)."""
        ...

    def alerts_committed(self, entries: Sequence[OutboxEntry]) -> None:
        """`entries` are on disk."""
        ...


class AlertingStage:
    """The last stage of every cycle, and (via `run`) the delivery task."""

    name = "alerting"

    def __init__(self, settings: Settings, db: Backend, clock: Clock, *,
                 sinks: Sequence[Sink] | None = None, rng: random.Random | None = None,
                 task_check_seconds: float = 15.0,
                 task_health: Callable[[], Sequence[TaskHealth]] = tuple,
                 leadership: Leadership | None = None, transitions: AlertTransitions | None = None) -> None:
        """`sinks`: None for the configured ones; `task_health`: the supervised tasks and whether
        each crashed (the wiring reads the daemon's supervisor), checked every `task_check_seconds`;
        `leadership`: in a fleet, only a cluster's leader evaluates its alerts (None: always);
        `transitions`: the `alert` events, committed with the states."""
        self.settings = settings
        self.leadership = leadership  # FLEET (issue 15): only a cluster's leader evaluates its alerts
        self.clock = clock
        self.config = rule_config(settings.alerts.rules)
        self.routes = routes_from(settings.alerts)
        self.store = AsyncOutbox(OutboxStore(db))
        self.sinks = list(build_sinks(settings.alerts) if sinks is None else sinks)
        self.transitions = transitions
        self._publishes_state = any(publishes_state(sink) for sink in self.sinks)
        self.dispatcher = Dispatcher(
            self.store, self.sinks, now=clock.now, sleep=clock.sleep, monotonic=clock.monotonic,
            backoff=RetryPolicy.schedule(settings.alerts.retry_backoffs_seconds).backoff(rng),
            max_age_seconds=settings.alerts.max_age_seconds,
            owns_sink=lambda sink: not sink.startswith(EVENT_SINK_PREFIX))  # the events' rows share the table
        self.task_check_seconds = task_check_seconds
        self.alerts_raised = 0
        """Firing notifications raised since start (first fires and escalations; not re-notifies)."""
        self.raised_by_kind: Counter[str] = Counter()
        self._states: dict[str, AlertState] | None = None
        self._lock = asyncio.Lock()
        self._last_action: dict[tuple[str, str], ActionOutcome] = {}
        # where the numbers behind an alert are; not known up front for an ephemeral port (the demo)
        self._generator_url = None if settings.http.port == 0 else f"http://{settings.http.listen}/metrics"
        self.task_health = task_health
        self._state_sent: dict[tuple[str, str], tuple[float, Any]] = {}
        self._ran = False
        self._term: dict[str, int | None] = {}
        """Per VMS cluster, the lease epoch of the term the cached states were used under."""
        self._store_down = False
        """The store failed the delivery task's last periodic work (logged once per outage)."""
        self._last_purge: float | None = None
        self._firing_keys: set[tuple[str, str]] = set()
        self._policy_cache: dict[tuple[str, str], PolicyRules] = {}
        self._presence = TargetPresence()
        """Vanished targets: their alerts resolve ("target removed") after the grace period."""
        self._evaluated = EvaluationView(firing=_firing_counts({}, frozenset()), sinks=tuple(self.sink_names))

    def tasks(self) -> Mapping[str, TaskFactory]:
        """The supervised delivery task (see `run`)."""
        return {"alerts": self.run}

    async def close(self) -> None:
        """Daemon exit: the sinks are closed by the delivery task; close them here if it never ran."""
        if not self._ran:
            for sink in self.sinks:
                await sink.close()

    @property
    def sink_names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def states(self) -> dict[str, AlertState]:
        if self._states is None:
            self._states = await self.store.load_states()
        return self._states

    # ------------------------------------------------------------------------------ evaluation
    async def on_cycle(self, ctx: CycleContext) -> None:
        cluster = ctx.poll.cluster
        if not acts_on(self.leadership, cluster):  # FLEET: a standby leaves it to the leader
            self._states = None  # the leader moves the shared states on: reload them when we lead
            return
        if self.leadership is not None and cluster != FILESYSTEM_CLUSTER:
            epoch = self.leadership.epoch(cluster)
            if self._term.get(cluster) != epoch:
                # a new term (lost and won back without a standby cycle in between): another leader
                # may have moved the shared states meanwhile; the cached ones would re-number an
                # alert with a dedup key the outbox already holds, and drop it
                self._term[cluster] = epoch
                self._states = None
                for key in [k for k in self._state_sent if k[0] == cluster]:
                    del self._state_sent[key]
        inputs = inputs_from_cycle(ctx, self.settings, self._policy_cache)
        for target, action in ctx.recovered.items():  # read back after a restart: the retained state keeps it
            self._last_action.setdefault((target.cluster, target.name), action)
        for action in ctx.actions:
            self._last_action[(action.target.cluster, action.target.name)] = action
        async with self._lock:
            states = await self.states()
            conditions = cycle_conditions(inputs, states, self.config)
            removed = self._removed_targets(ctx, states)
            conditions.extend(_removed_conditions(ctx.poll.cluster, removed, states))
            await self._apply(states, conditions, ctx.now)
            self._evict(ctx.poll.cluster, removed, states)
        if self._publishes_state:
            self._publish_states(inputs, states)
        if self.sinks:
            self.dispatcher.wake()

    def _removed_targets(self, ctx: CycleContext, states: Mapping[str, AlertState]) -> list[tuple[str, str]]:
        """(name, path) of the cycle's cluster's targets gone past the grace period (`stages/presence.py`)."""
        cluster = ctx.poll.cluster
        known = {(target, "") for target in _alert_targets(cluster, states)}
        return self._presence.removed(ctx.poll, ctx.now, known=known)

    def _evict(self, cluster: str, removed: Sequence[tuple[str, str]], states: dict[str, AlertState]) -> None:
        """Forget a removed target's alert states (resolved just now) and last action, and delete
        its retained state from the sinks that publish one (a late subscriber must not see a
        deleted quota as it last was)."""
        for name, path in removed:
            prefix = f"{cluster}/{name}/"
            for alert in [a for a, st in states.items() if a.startswith(prefix) and st.phase is Phase.INACTIVE]:
                del states[alert]
            self._last_action.pop((cluster, name), None)
            self._state_sent.pop((cluster, name), None)
            self.dispatcher.clear_state(cluster, name)  # a no-op without a sink that publishes state
            log.info("target.removed", cluster=cluster, target=name, path=path)

    def _publish_states(self, inputs: RuleInputs, states: Mapping[str, AlertState]) -> None:
        """Retained per-target state, re-published when what it says changes: at once for the
        last action or the quota state; for utilization once it moved `state_min_change_ratio`.
        (`firing` lists what fired when it was published; the alert topic is the live record.)
        A late subscriber gets the latest from the broker."""
        firing_by_target: dict[tuple[str, str], list[str]] = {}
        for state in states.values():
            if state.phase is Phase.FIRING:
                cluster_name, target_name, _ = state.alert_id.split("/", 2)
                firing_by_target.setdefault((cluster_name, target_name), []).append(state.kind)
        step = self.settings.alerts.mqtt.state_min_change_ratio if self.settings.alerts.mqtt else 0.0
        for target in inputs.targets:
            if not target.confirmed:  # VMS said it once: the retained state waits, as the alerts do
                continue
            key = (target.cluster, target.target)
            last_action = self._last_action.get(key)
            firing = sorted(firing_by_target.get(key, []))
            action_key = None if last_action is None else (last_action.t, str(last_action.status))
            limit = _hard_limit_now(target, last_action)
            essence = (action_key, target.state, limit)
            utilization = target.bytes.used / limit if target.bytes and limit else 0.0
            sent = self._state_sent.get(key)
            if sent is not None and sent[1] == essence and abs(utilization - sent[0]) < step:
                continue
            self._state_sent[key] = (utilization, essence)
            self.dispatcher.set_state(target.cluster, target.target,
                                      target_state_payload(target, last_action, firing))

    async def check_tasks(self, tasks: Sequence[TaskHealth] | None = None) -> int:
        """Evaluate the `daemon` alerts (a supervised task crashed); returns notifications made."""
        tasks = self.task_health() if tasks is None else tasks
        if not tasks:
            return 0
        async with self._lock:
            states = await self.states()
            # in a fleet each instance's task alerts are its own (`LeaseLeadership.instance`)
            instance = getattr(self.leadership, "instance", None)
            made = await self._apply(states, task_conditions(tasks, instance), self.clock.now())
        if made:
            self.dispatcher.wake()
        return made

    async def raise_conditions(self, conditions: Sequence[Any]) -> int:
        """Evaluate conditions another stage concluded (capacity planning's "order capacity by …")
        through the same state machine, outbox and sinks; returns notifications made."""
        if not conditions:
            return 0
        async with self._lock:
            states = await self.states()
            made = await self._apply(states, conditions, self.clock.now())
        if made and self.sinks:
            self.dispatcher.wake()
        return made

    async def announce(self, change: LeadershipChange) -> int:
        """An info notification that `change.holder` now leads a cluster (kind `leadership`),
        routed and queued like every alert. One-shot, outside the rules' state: its dedup key
        `leadership/<cluster>@<epoch>` is the same whichever instance enqueues it, and the outbox
        keeps one row per (sink, key). Returns the outbox rows added."""
        note = leadership_notification(change)
        entries = self._entries(note, change.t)
        added = await self.store.enqueue(entries) if entries else 0
        log.info("alert.raised", alert_id=note.alert_id, severity=str(note.severity), summary=note.summary,
                 dedup_key=note.dedup_key, sinks=len(entries))
        if added:
            self.dispatcher.wake()
        return added

    async def _apply(self, states: dict[str, AlertState], conditions: Sequence[Any], now: float) -> int:
        result = evaluate(states, conditions, self.config, now)
        per_note = [self._entries(note, now) for note in result.notifications]
        described = [] if self.transitions is None else self.transitions.alert_entries(
            {alert: states[alert] for alert in result.states if alert in states}, result.states, now)
        await self.store.commit_evaluation(result.states, [*(e for batch in per_note for e in batch), *described],
                                           now)
        if self.transitions is not None:
            self.transitions.alerts_committed(described)
        states.update(result.states)
        self._firing_keys.update((s.kind, str(s.severity)) for s in result.states.values()
                                 if s.phase is Phase.FIRING and s.severity is not None)
        for note, entries in zip(result.notifications, per_note, strict=True):
            if note.status is Status.FIRING and not note.renotify:
                self.alerts_raised += 1
                self.raised_by_kind[note.kind] += 1
            log.info("alert.raised" if note.status is Status.FIRING else "alert.resolved",
                     alert_id=note.alert_id, severity=str(note.severity), summary=note.summary,
                     dedup_key=note.dedup_key, sinks=len(entries))
        self._evaluated = EvaluationView(
            firing=_firing_counts(states, frozenset(self._firing_keys)), sinks=tuple(self.sink_names),
            raised=self.alerts_raised, raised_by_kind=MappingProxyType(dict(self.raised_by_kind)))
        return len(result.notifications)

    def _entries(self, note: Notification, now: float) -> list[OutboxEntry]:
        if not self.sinks:
            return []
        payload = note.payload(generator_url=self._generator_url, expires_after_seconds=expiry_seconds(
            note, self.config, evaluated_every_seconds=self.settings.poll.interval_seconds))
        due = route(note, self.routes, self.sink_names, now)
        if LOG_SINK_NAME in self.sink_names:
            due[LOG_SINK_NAME] = now  # the journal gets everything at once: routes and quiet windows page people
        return [OutboxEntry(sink=sink, alert_id=note.alert_id, dedup_key=note.dedup_key,
                            status=str(note.status), payload=payload, created_at=now, next_attempt_at=at)
                for sink, at in due.items()]

    # -------------------------------------------------------------------------------- delivery
    async def run(self, stopping: asyncio.Event) -> None:
        """The supervised delivery task: deliver until `stopping`, then flush within the bound."""
        self._ran = True
        await self.dispatcher.drop_removed_sinks()
        if not self.sinks:
            while not stopping.is_set():
                await sleep_unless(self.clock, self.task_check_seconds, stopping)
                await self._housekeep()
            return
        delivery = asyncio.ensure_future(self.dispatcher.run())
        delivery_ended = asyncio.Event()  # wakes the check loop's sleep when the dispatcher stops
        delivery.add_done_callback(lambda _: delivery_ended.set())
        try:
            while not stopping.is_set() and not delivery.done():
                await sleep_unless(self.clock, self.task_check_seconds, stopping, wake=delivery_ended)
                await self._housekeep()
            if delivery.done():
                delivery.result()  # a crash of the dispatcher is this task's crash
                return
            flushed = await self.drain(self.settings.daemon.shutdown_timeout_seconds * 0.8)
            pending = await self.store.pending_counts()
            log.info("alerts.flushed", complete=flushed, left_on_disk=sum(pending.values()))
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)

    async def _housekeep(self) -> None:
        """The delivery task's periodic work: the daemon's task alerts, then the outbox purge. A
        store that cannot be reached (PostgreSQL down) is logged once per outage and tried again
        at the next tick: before, a 15 s outage ended this task — and with it the delivery of
        every alert, on every instance — for good (the supervisor restarts no task)."""
        try:
            await self.check_tasks()
            await self._purge()
        except StoreError as exc:
            if not self._store_down:
                self._store_down = True
                log.warning("alerts.store_unavailable", error=str(exc))
            return
        if self._store_down:
            self._store_down = False
            log.info("alerts.store_restored")

    async def _purge(self) -> None:
        """Forget finished outbox rows after `OUTBOX_KEEP_SECONDS`, once per hour of the clock."""
        now = self.clock.now()
        if self._last_purge is not None and now - self._last_purge < 3600.0:
            return
        self._last_purge = now
        removed = await self.store.purge(now - OUTBOX_KEEP_SECONDS)
        if removed:
            log.debug("outbox.purged", rows=removed)

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 (the demo's contract: drain(timeout))
        """Wait up to `timeout` real seconds until every due notification is delivered."""
        if not self.sinks:
            return True
        return await self.dispatcher.drain(timeout)

    @property
    def view(self) -> AlertView:
        """What the alerting stage published at its last evaluation, with the dispatcher's delivery
        counters copied as of now (deliveries complete between cycles, so those are copied on read)."""
        return AlertView(self._evaluated, DeliveryView.of(self.dispatcher.stats))

    def collector(self) -> AlertMetrics:
        return AlertMetrics(lambda: self.view)


def leadership_notification(change: LeadershipChange) -> Notification:
    """The info notification of a leadership change (alert id `<cluster>/fleet/leadership`)."""
    return Notification(
        alert_id=alert_id(change.cluster, "fleet", "leadership"), dedup_key=change.dedup_key,
        sequence=change.epoch, episode=change.epoch, status=Status.FIRING, severity=Severity.INFO,
        kind="leadership", cluster=change.cluster, target="fleet", path="", summary=change.summary(),
        evaluated_at=change.t, started_at=change.t, event=True,
        labels=(("holder", change.holder), ("previous_holder", change.previous_holder or ""),
                ("transition", change.transition)))


# ------------------------------------------------------------------------------------- metrics
@dataclass(frozen=True, slots=True)
class EvaluationView:
    """The alert states as of the last evaluation, reduced to what the metrics show."""

    firing: Mapping[tuple[str, str], int]
    """(kind, severity) → alerts firing; every kind × severity from the start (0 when none fires)."""
    sinks: tuple[str, ...] = ()
    raised: int = 0
    raised_by_kind: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """An immutable copy of the dispatcher's delivery counters (`DeliveryStats`)."""

    results: Mapping[tuple[str, str], int]
    pending: Mapping[str, int]
    latency_buckets: Mapping[str, tuple[int, ...]]
    latency_sum: Mapping[str, float]
    latency_count: Mapping[str, int]

    @classmethod
    def of(cls, stats: DeliveryStats) -> DeliveryView:
        return cls(results=MappingProxyType(dict(stats.results)), pending=MappingProxyType(dict(stats.pending)),
                   latency_buckets=MappingProxyType({k: tuple(v) for k, v in stats.latency_buckets.items()}),
                   latency_sum=MappingProxyType(dict(stats.latency_sum)),
                   latency_count=MappingProxyType(dict(stats.latency_count)))


@dataclass(frozen=True, slots=True)
class AlertView:
    """What `AlertMetrics` reads."""

    evaluated: EvaluationView
    delivery: DeliveryView


def _alert_targets(cluster: str, states: Mapping[str, AlertState]) -> set[str]:
    """The target names of `cluster` with an alert that is not inactive (not the collector's, not the pool's)."""
    names: set[str] = set()
    for alert, state in states.items():
        parts = alert.split("/", 2)
        if len(parts) == 3 and parts[0] == cluster and parts[1] not in (COLLECTOR_TARGET, POOL_TARGET) \
                and state.phase is not Phase.INACTIVE:
            names.add(parts[1])
    return names


def _removed_conditions(cluster: str, removed: Sequence[tuple[str, str]],
                        states: Mapping[str, AlertState]) -> list[Condition]:
    """A resolving condition for every pending or firing alert of a removed target."""
    conditions: list[Condition] = []
    for name, path in removed:
        prefix = f"{cluster}/{name}/"
        for alert, state in states.items():
            if alert.startswith(prefix) and state.phase is not Phase.INACTIVE:
                conditions.append(Condition(
                    alert_id=alert, kind=state.kind, cluster=cluster, target=name, path=path or "/",
                    severity=None, summary=f"{name}: target removed (no longer listed by VMS)", for_seconds=0.0))
    return conditions


def _firing_counts(states: Mapping[str, AlertState], seen: frozenset[tuple[str, str]]) -> Mapping[tuple[str, str], int]:
    counts: Counter[tuple[str, str]] = Counter()
    for state in states.values():
        if state.phase is Phase.FIRING and state.severity is not None:
            counts[(state.kind, str(state.severity))] += 1
    # every kind × severity from the first scrape (0 when none fires), so dashboards and
    # rules see a series, not "no data"; the kinds are a fixed list, cardinality is bounded
    return MappingProxyType({key: counts.get(key, 0) for key in sorted(_FIRING_SERIES | seen | set(counts))})


class AlertMetrics(Collector):
    """quotapilot_alerts_firing{kind,severity}, quotapilot_notifications_total{sink,result},
    quotapilot_outbox_pending{sink}, quotapilot_notification_latency_seconds{sink}, from the
    stage's `AlertView`; no IO at scrape time."""

    def __init__(self, view: Callable[[], AlertView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        evaluated, stats = view.evaluated, view.delivery
        firing = GaugeMetricFamily("quotapilot_alerts_firing", "Alerts firing now.",
                                   labels=["kind", "severity"])
        for (kind, severity), count in evaluated.firing.items():
            firing.add_metric([kind, severity], count)
        yield firing

        total = CounterMetricFamily("quotapilot_notifications", "Notification delivery outcomes per sink.",
                                    labels=["sink", "result"])
        results = {(sink, result) for sink in evaluated.sinks for result in DELIVERY_RESULTS}
        for sink, result in sorted(results | set(stats.results)):
            total.add_metric([sink, result], stats.results.get((sink, result), 0))
        yield total

        pending = GaugeMetricFamily("quotapilot_outbox_pending", "Notifications waiting in the outbox.",
                                    labels=["sink"])
        for sink in evaluated.sinks:
            pending.add_metric([sink], stats.pending.get(sink, 0))
        yield pending

        latency = HistogramMetricFamily(
            "quotapilot_notification_latency_seconds",
            "From rule evaluation to confirmed delivery.", labels=["sink"])
        for sink in evaluated.sinks:
            buckets = stats.latency_buckets.get(sink, (0,) * len(LATENCY_BUCKETS))
            latency.add_metric(
                [sink],
                [*((repr(float(b)), n) for b, n in zip(LATENCY_BUCKETS, buckets, strict=True)),
                 ("+Inf", stats.latency_count.get(sink, 0))],
                sum_value=stats.latency_sum.get(sink, 0.0))
        yield latency


_FIRING_SERIES = frozenset((kind, str(severity)) for kind in ALERT_KINDS for severity in Severity)
