"""The growth stage: runs the planner on each cycle and, in enforce mode, grows quotas through the
actuator (`stages/actuator.py`: write-ahead, re-read, PATCH, verify, reconcile, managed views).

Per cycle: the poll's samples feed the observed rates (`forecasting.observed_rate`); the planner
(`forecasting.planner.plan_cycle`, or another `Planner` the wiring hands in) gets one
`CycleInput` — forecasts, rates, reservations, pauses, the kill switch, cooldowns — and returns
decisions. In observe mode (the default) a GROW becomes a `would_grow` row; in enforce mode the
actuator applies it. Guards that hold a growth (pause, kill switch, cluster reserve, ...) are
recorded once per episode, not every cycle.

Each audited decision's event (a GROW's `intent`, a guard's `blocked`, the `result` of an
`external_change` row: `DecisionEvents`, the events stage) is committed with its audit row, in one
transaction: a crash after the audit cannot lose the event (nor enqueue an event of a row that was
never written). The outcomes the stage adds to the cycle (`ctx.actions`) include unaudited ones —
a guard still holding after its episode's audited first poll, the one-cycle hold of an external
change — which the alerting stage and the snapshot read; the events stage makes a `result` only
of an audited one.

After each cycle the stage publishes an immutable `GrowthView` (`stage.view`); `GrowthMetrics`
exports it and reads nothing else.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from functools import partial
from types import MappingProxyType
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.http.metrics import TARGET_LABELS, extra_target_labels
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.leadership import Leadership, SoleLeadership  # FLEET (issue 15)
from quotapilot.daemon.settings import ManagedView, PolicyRules, Settings
from quotapilot.daemon.stages.actuator import Actuator, QuotaWriter
from quotapilot.daemon.stages.bare_names import BareNameUpgrade
from quotapilot.daemon.stages.presence import TargetPresence
from quotapilot.daemon.stages.renames import RenamedPauses
from quotapilot.daemon.store.actions import ActionRecord, ActionStore
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.overrides import Override, OverrideStore
from quotapilot.daemon.vms.validation import HardLimits, last_believed_limits
from quotapilot.forecasting.observed_rate import UsageHistory
from quotapilot.forecasting.planner import CycleInput, GrowthPolicy, TargetInput, net_of_overcommit, plan_cycle
from quotapilot.forecasting.types import (
    POOL_TARGET,
    ActionOutcome,
    ActionStatus,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
    TargetKind,
)

log = get_logger(__name__)

BASELINE_REPLAY_SAMPLES = 16
"""How many of a quota's stored samples before a restart are replayed to recover the hard limits
last believed (`validation.last_believed_limits`): enough for any limit but one that moved at
every one of these polls (whose replay may then start on a held sample)."""

LimitKey = tuple[str, int | None, str, Dimension]
"""(cluster, VMS quota id, path, dimension): whose hard limit the growth stage keeps as a baseline."""

Planner = Callable[[CycleInput], tuple[Decision, ...]]
"""A cycle's input → its decisions: `plan_cycle` (quotapilot) or `plan_reactive_cycle` (the baseline)."""


class Reserved(Protocol):
    @property
    def bytes(self) -> int: ...

    @property
    def inodes(self) -> int: ...


ReservedTotals = Callable[[float], Mapping[tuple[str, str], Reserved]]
"""now → {(cluster, target name): reserved capacity} (the pre-flight API's active reservations)."""


class DecisionEvents(Protocol):
    """Who describes audited decisions in the outbox (the decision events' `intent` and `blocked`,
    and the `result` of an `external_change` row, `quotapilot.daemon.events.EventStage`): its
    entries are committed in the same transaction as the decision's audit row, so a crash loses
    neither without the other."""

    def decision_entries(self, decision: Decision, *, mode: str, now: float) -> list[OutboxEntry]:
        """Entries for the event of `decision` (none for a decision that is no event)."""
        ...

    def result_entries(self, record: ActionRecord) -> list[OutboxEntry]:
        """Entries for the `result` event of `record`, a row that is an outcome as written."""
        ...

    def decisions_committed(self, entries: Sequence[OutboxEntry]) -> None:
        """`entries` are on disk."""
        ...


class NoDecisionEvents:
    """No event sinks: nothing to commit with the audit rows."""

    def decision_entries(self, decision: Decision, *, mode: str, now: float) -> list[OutboxEntry]:
        return []

    def result_entries(self, record: ActionRecord) -> list[OutboxEntry]:
        return []

    def decisions_committed(self, entries: Sequence[OutboxEntry]) -> None:
        pass


@dataclass(slots=True)
class GrowthCounters:
    """What the stage has done since start (mutable, private to the stage; published as `GrowthView`)."""

    decisions: dict[str, int] = field(default_factory=dict)
    bytes_grown: int = 0
    paused: dict[TargetId, bool] = field(default_factory=dict)
    kill_switch: bool = False

    def count(self, result: str) -> None:
        self.decisions[result] = self.decisions.get(result, 0) + 1


@dataclass(frozen=True, slots=True)
class GrowthView:
    """What the growth stage has done, as of its last cycle: immutable, replaced as a whole."""

    mode: str
    decisions: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Decisions by result since start (none, grow outcomes, blocked, ...)."""
    bytes_grown: int = 0
    paused: Mapping[TargetId, bool] = field(default_factory=lambda: MappingProxyType({}))
    kill_switch: bool = False
    views_would_create: tuple[str, ...] = ()


class GrowthStage:
    """The cycle stage `growth` (runs after the forecaster, before alerting)."""

    name = "growth"

    def __init__(self, settings: Settings, db: Backend, writers: Callable[[str], QuotaWriter], clock: Clock,
                 *, planner: Planner = plan_cycle, reserved_totals: ReservedTotals | None = None,
                 expire_reservations: Callable[[float], int] | None = None,
                 leadership: Leadership | None = None, events: DecisionEvents | None = None) -> None:
        """`writers`: cluster name → its VMS writer; `reserved_totals`: the pre-flight API's active
        reservations, counted as extra demand (None: none); `expire_reservations`: now → marks
        the reservations past their TTL `expired` (called once per cycle, in the store thread);
        `leadership`: which clusters this instance leads (None: alone, all of them); `events`: the
        `intent`/`blocked` events, committed with the audit rows (None: no event sinks)."""
        self.settings = settings
        self.events = events or NoDecisionEvents()
        # FLEET (issue 15): only the leader of a cluster plans and writes; alone on SQLite, always us
        self.leadership = leadership or SoleLeadership(c.name for c in settings.clusters)
        self.actions = ActionStore(db)
        self.overrides = OverrideStore(db)
        self.observations = ObservationStore(db, raw_retention_seconds=settings.store.raw_retention_seconds,
                                             hourly_retention_seconds=settings.store.hourly_retention_seconds)
        sole_cluster = len(settings.clusters) == 1
        self.bare_names = BareNameUpgrade(self.overrides, settings.policy.overrides, sole_cluster=sole_cluster)
        """Pauses made by the bare name of another tenant's quota, moved before the pauses are read."""
        self.renamed_pauses = RenamedPauses(
            self.overrides, lambda cluster, before: self.observations.latest(cluster, before=before),
            sole_cluster=sole_cluster)
        """Pauses of a quota VMS renamed (same id and path), moved to its new name before the pauses are read."""
        self.actuator = Actuator(settings, self.actions, clock, self.leadership)
        self.writers = writers
        self._vms_clusters = frozenset(c.name for c in settings.clusters)
        self.clock = clock
        self.planner = planner
        self.reserved_totals = reserved_totals
        self.expire_reservations = expire_reservations
        self.counters = GrowthCounters()
        """Mutated on the event loop only (never from the store thread): `/metrics` reads `view`."""
        self._rate_lock = asyncio.Lock()
        """One stage serves every cluster's poller: the global hourly rate limit's check and the
        reservation of a slot happen under this lock, so concurrent cycles cannot exceed it."""
        self._in_flight: Counter[str] = Counter()
        """Growths past the rate-limit check whose audit row is not yet counted, by mode."""
        self._history = UsageHistory()
        self._presence = TargetPresence()
        """Vanished targets (see `stages/presence.py`): their counters, pause series and usage
        window are evicted after the grace period; their audit rows stay."""
        self._last_hard: dict[LimitKey, int] = {}
        """(cluster, quota id, path, dimension) → the hard limit (bytes or inodes) last read in a
        confirmed sample: a move without a write of ours is an external change. At a cluster's
        first cycle (of each term as its leader), recovered from the store (`_recover_baseline`)."""
        self._baseline_before: dict[str, float] = {}
        """Per cluster, the time of its first cycle here (of this term as its leader), set before
        anything of the cycle can fail: the baseline is recovered from the samples stored before it
        (not from the ones after, which this run's polls wrote)."""
        self._baseline_recovered: set[str] = set()
        """Clusters whose baseline was recovered (once a term: later cycles keep it in `_last_hard`)."""
        self._actions_recovered: set[str] = set()
        """Clusters whose targets' last actions were read back (`CycleContext.recovered`) this term."""
        self._settled_changes: dict[str, dict[tuple[int, Dimension], str]] = {}
        """Per cluster, (quota id, dimension) → reason: external changes (of that dimension's hard
        limit) the actuator found (and audited) while settling a row of a target whose sample is
        not confirmed yet, said at its confirmed one."""
        self._recorded_guard: dict[tuple[TargetId, Dimension], tuple[str, float]] = {}
        self._last_prune: float | None = None
        self.view = GrowthView(mode=self.mode)

    async def open(self) -> None:
        """On start: settle what a crash left behind, before any new action (best effort: a VMS
        that cannot be reached now is reconciled at the cluster's first successful cycle)."""
        for cluster in self.settings.clusters:
            if not self.leadership.is_leader(cluster.name):  # FLEET: a standby never settles the leader's rows
                continue
            try:
                await self.reconcile(cluster.name)
            except (TemporaryError, PermanentError, OSError) as exc:
                log.warning("growth.reconcile_deferred", cluster=cluster.name, error=str(exc))

    @property
    def mode(self) -> str:
        return self.settings.policy.mode

    async def reconcile(self, cluster: str) -> int:
        """Settle the rows a crash left unfinished on `cluster` (see `Actuator.reconcile`)."""
        return await self.actuator.reconcile(cluster, self.writers(cluster))

    async def ensure_view(self, cluster: str, view: ManagedView, writer: QuotaWriter) -> str:
        """See `Actuator.ensure_view`."""
        return await self.actuator.ensure_view(cluster, view, writer)

    # ------------------------------------------------------------------------------ cycle
    async def on_cycle(self, ctx: CycleContext) -> None:
        try:
            await self._cycle(ctx)
        finally:
            self._publish()

    async def _cycle(self, ctx: CycleContext) -> None:
        poll = ctx.poll
        if not poll.ok:
            return
        cluster = poll.cluster
        if cluster not in self._vms_clusters:
            return  # the `filesystems` pseudo-cluster: its growth is `fs.growth.FilesystemGrowthStage`
        if not self.leadership.is_leader(cluster):  # FLEET: a standby polls and forecasts, never acts;
            self.actuator.reconciled.discard(cluster)  # on taking over it first settles the old leader's intents
            self._forget_baseline(cluster)  # and recovers the baseline the old leader left in the store
            return
        # before anything that can raise: a failed first cycle must not move the recovery's cut-off
        # past this run's first sample, which the store stage has written already
        self._baseline_before.setdefault(cluster, poll.t)
        writer = self.writers(cluster)
        if cluster not in self.actuator.reconciled:  # at the first cycle, and while any row is open
            await self.actuator.reconcile(cluster, writer)
        ctx.settled.extend(self.actuator.take_settled(cluster))  # also those settled at start
        await self.actuator.ensure_views(cluster, writer)
        await self.bare_names.on_poll(poll, ctx.now)
        await self.renamed_pauses.on_poll(poll, ctx.now, stored_before=self._baseline_before[cluster])

        for obs in poll.observations:
            self._history.add(obs)
        self._evict(cluster, self._presence.removed(poll, ctx.now))
        prune = self._last_prune is None or ctx.now - self._last_prune >= 3600.0
        if prune:
            self._last_prune = ctx.now
        cycle, paused, kill_switch = await asyncio.to_thread(self._cycle_input, ctx, prune)
        self._replace_paused(paused)
        self.counters.kill_switch = kill_switch
        observations = {o.target: o for o in poll.observations}
        await self._recover_baseline(cluster, poll.observations)
        if cluster not in self._actions_recovered:
            ctx.recovered.update(await asyncio.to_thread(self._last_actions, cluster, poll.observations))
            self._actions_recovered.add(cluster)
        changed = await self._external_changes(cluster, poll.observations, poll.unconfirmed, ctx.now)
        frozen = self.actuator.unsettled.get(cluster, frozenset())
        decisions = tuple(_hold_if_unconfirmed(
            _hold_if_changed(_hold_if_unsettled(d, observations.get(d.target), frozen), changed), poll.unconfirmed)
            for d in self.planner(cycle))
        ctx.decisions.extend(decisions)
        for decision in decisions:
            outcome = await self._act(decision, observations.get(decision.target), ctx.now, writer)
            if outcome is not None:
                ctx.actions.append(outcome)
        held = {(d.target, d.dimension) for d in decisions if d.guard == "external_change"}
        for (target, dimension), reason in changed.items():
            if (target, dimension) not in held:  # nothing to grow: still alerted (as a one-cycle hold);
                # not the audit row's outcome: the `external_change` row's `result` went with the row
                ctx.actions.append(ActionOutcome(target, dimension, ActionStatus.BLOCKED, ctx.now, reason))

    async def _recover_baseline(self, cluster: str, observations: Sequence[Observation]) -> None:
        """At the cluster's first cycle since start (or since this instance last took its lead), the hard
        limits of its quotas last believed before it: a restart loses the in-memory baseline, and
        rebuilt from this run's polls, a change held once just before the restart became the
        baseline unaudited (the first sample after a restart is unconfirmed, the second believed).
        A target not in this poll keeps the old way: its first believed sample is its baseline."""
        if cluster in self._baseline_recovered:
            return
        before = self._baseline_before[cluster]  # set by `_cycle`, first; kept if this read fails
        self._last_hard.update(await asyncio.to_thread(self._believed_limits, cluster, observations, before))
        self._baseline_recovered.add(cluster)

    def _forget_baseline(self, cluster: str) -> None:
        """No longer `cluster`'s leader: another instance judges its limits (and audits their
        changes) until this one leads it again, when the baseline is recovered anew from the store."""
        if self._baseline_before.pop(cluster, None) is None:
            return  # not led since the last term ended (every led cycle sets it first): nothing kept
        self._baseline_recovered.discard(cluster)
        self._actions_recovered.discard(cluster)
        self.renamed_pauses.names.forget(cluster)  # the next term reads them anew: renamed meanwhile
        for episode in [k for k in self._recorded_guard if k[0].cluster == cluster]:
            del self._recorded_guard[episode]  # an episode of the next term starts anew (and is audited)
        self._settled_changes.pop(cluster, None)  # not yet said: the next leader judges that change
        for key in [k for k in self._last_hard if k[0] == cluster]:
            del self._last_hard[key]

    def _last_actions(self, cluster: str, observations: Sequence[Observation]) -> dict[TargetId, ActionOutcome]:
        """The last settled audit row of each listed target, as an outcome (a row still open — an
        intent, a write in flight — is the reconciliation's to settle: none)."""
        listed = {(o.target.name, o.target.path): o.target for o in observations}
        out: dict[TargetId, ActionOutcome] = {}
        for row in self.actions.last_of_each_target(cluster):
            target = listed.get((row.target, row.path))
            if target is None or row.status not in _OUTCOMES:
                continue
            guard = row.detail.get("guard")
            out[target] = ActionOutcome(target, Dimension(row.dimension), ActionStatus(row.status), row.updated_at,
                                        row.reason, old_hard=row.old_hard, new_hard=row.new_hard, action_id=row.id,
                                        guard=guard if isinstance(guard, str) else None)
        return out

    def _believed_limits(self, cluster: str, observations: Sequence[Observation], before: float) -> dict[LimitKey, int]:
        """The hard limits of the quotas among `observations` last believed before `before`, replayed
        from their stored samples, a limit a write of ours asked for counting as ours, as the
        poller's did, and so does the external change last audited: judged (and said) on a sample
        the replay holds — by the actuator, or a leader that lost its lead before the confirming
        poll — it is no new change (store reads: runs in a thread, so it mutates no state of the stage)."""
        found: dict[LimitKey, int] = {}
        # one read each, not one per limit that moved
        known = self.actions.written_limits(cluster) | self.actions.audited_external_limits(cluster)
        for obs in observations:
            if obs.target.kind is not TargetKind.QUOTA:
                continue
            history = self.observations.recent_hard_limits(obs.target, obs.quota_id, before=before,
                                                           count=BASELINE_REPLAY_SAMPLES)
            believed = last_believed_limits(history, partial(_ours, known, obs.quota_id))
            for dimension, hard in zip((Dimension.BYTES, Dimension.INODES), believed or (None, None), strict=True):
                if hard is not None:
                    found[(cluster, obs.quota_id, obs.target.path, dimension)] = hard
        return found

    async def _external_changes(self, cluster: str, observations: Sequence[Observation], unconfirmed: frozenset[str],
                                now: float) -> dict[tuple[TargetId, Dimension], str]:
        """Targets whose hard limit (of bytes or of inodes) moved since the last confirmed read
        without a write of ours: each is audited (`external_change`) and its growth held this cycle
        (sizing starts from the new limit at the next read). Also those found changed while
        settling an open row.

        Only a confirmed sample is judged (`unconfirmed`: the collector's, which holds the target's
        alerts): a moved limit is VMS's word alone for one poll (`validation.limit_held`). Judged
        at once, a one-poll glitch was audited twice (there and back), and a lasting change was
        never paged — its `growth_blocked` fell on the held poll, and the confirming one saw no
        move."""
        settled = {**self._settled_changes.pop(cluster, {}),
                   **{(quota_id, dimension): reason
                      for quota_id, dimension, reason in self.actuator.take_external_changes(cluster)}}
        waiting: dict[tuple[int, Dimension], str] = {}
        found: dict[tuple[TargetId, Dimension], str] = {}
        for obs in observations:
            if obs.target.kind is not TargetKind.QUOTA:
                continue
            if obs.target.name in unconfirmed:  # neither a change nor the new baseline, yet
                waiting.update({key: reason for key, reason in settled.items() if key[0] == obs.quota_id})
                continue
            for dimension, hard, used, soft in (
                    (Dimension.BYTES, obs.hard_limit_bytes, obs.used_bytes, obs.soft_limit_bytes),
                    (Dimension.INODES, obs.hard_limit_inodes, obs.used_inodes, obs.soft_limit_inodes)):
                if hard is None:
                    continue
                audited = None if obs.quota_id is None else settled.get((obs.quota_id, dimension))
                if audited is not None:  # audited by the actuator: said (and held) for that limit only
                    self._last_hard[(cluster, obs.quota_id, obs.target.path, dimension)] = hard
                    found[(obs.target, dimension)] = audited
                else:
                    change = await self._limit_moved(cluster, obs, dimension, hard, used, soft, now)
                    if change is not None:
                        found[(obs.target, dimension)] = change
        if waiting:
            self._settled_changes[cluster] = waiting
        return found

    async def _limit_moved(self, cluster: str, obs: Observation, dimension: Dimension, hard: int, used: int | None,
                           soft: int | None, now: float) -> str | None:
        """The reason when `obs`'s confirmed hard limit of `dimension` moved from the last one read
        without a write of ours, audited as `external_change` with its `result` event (the row is
        the outcome: committed together, the one the replay at start makes of the row); None
        otherwise. Remembers `hard` as the last one read."""
        key = (cluster, obs.quota_id, obs.target.path, dimension)
        previous = self._last_hard.get(key)
        self._last_hard[key] = hard
        if previous is None or previous == hard or await asyncio.to_thread(
                self.actions.audited_write, cluster, obs.quota_id, hard, dimension):
            return None  # unchanged, or a write of ours (even one that landed late, after a restart)
        what = "hard limit" if dimension is Dimension.BYTES else "inode hard limit"
        reason = (f"external change: {what} moved from {previous} to {hard} without a write of ours; "
                  f"not overwritten, growth waits for the next read")
        change = Decision(obs.target, dimension, DecisionKind.NONE, reason, now,
                          current_used=used or 0, current_hard=previous, new_hard=hard, new_soft=soft)
        entries: list[OutboxEntry] = []

        def result_entries(record: ActionRecord) -> list[OutboxEntry]:
            entries.extend(self.events.result_entries(record))
            return entries

        action_id = await asyncio.to_thread(self.actions.record, change, mode=self._mode_of(change),
                                            status="external_change", now=now, quota_id=obs.quota_id,
                                            result_events=result_entries)
        self.events.decisions_committed(entries)
        log.warning("quota.changed_externally", target=obs.target.key, dimension=dimension.value,
                    old_hard=previous, new_hard=hard, action_id=action_id)
        return reason

    def _replace_paused(self, paused: Mapping[TargetId, bool]) -> None:
        """This cycle's pause flags; a name now at another path (a quota re-created elsewhere)
        drops the old path's series, so a moved quota never leaves a series behind."""
        current = self.counters.paused
        by_name = {(t.cluster, t.name): t for t in current}
        for target in paused:
            old = by_name.get((target.cluster, target.name))
            if old is not None and old != target:
                del current[old]
        current.update(paused)

    def _evict(self, cluster: str, removed: list[tuple[str, str]]) -> None:
        if not removed:
            return
        gone = {(cluster, name, path) for name, path in removed}
        for target in [t for t in self.counters.paused if (t.cluster, t.name, t.path) in gone]:
            del self.counters.paused[target]
            self._history.forget(target)
        for key in [k for k in self._recorded_guard if (k[0].cluster, k[0].name, k[0].path) in gone]:
            del self._recorded_guard[key]
        paths = {path for _, path in removed}
        for limit_key in [k for k in self._last_hard if k[0] == cluster and k[2] in paths]:
            del self._last_hard[limit_key]
        for name, path in removed:
            self._history.forget(TargetId(cluster, name, path))
            log.info("target.evicted", cluster=cluster, target=name, path=path)

    def _publish(self) -> None:
        counters = self.counters
        self.view = GrowthView(
            mode=self.mode, decisions=MappingProxyType(dict(counters.decisions)), bytes_grown=counters.bytes_grown,
            paused=MappingProxyType(dict(counters.paused)), kill_switch=counters.kill_switch,
            views_would_create=tuple(self.actuator.views_would_create))

    def _cycle_input(self, ctx: CycleContext, prune: bool) -> tuple[CycleInput, dict[TargetId, bool], bool]:
        """Gather the planner's input, the targets' pauses and the kill switch (store reads: runs
        in a thread, so it mutates no state of the stage — the caller applies what it returns)."""
        poll, now, policy = ctx.poll, ctx.now, self.settings.policy
        if prune:
            self.actions.prune(now - self.settings.store.audit_retention_seconds)
            self.overrides.prune(now)
        if self.expire_reservations is not None:
            self.expire_reservations(now)
        # a would-grow starts a cooldown only for a target still observed: switching to enforce
        # acts at once
        last_growth = {mode: self.actions.last_growth_by_quota(poll.cluster, mode=mode)
                       for mode in ("observe", "enforce")}
        reserved = self.reserved_totals(now) if self.reserved_totals is not None else {}
        dropped = {d.target for d in poll.dropped}
        overrides = self.overrides.active(now)  # the kill switch and the pauses, in one read
        kill_reason = kill_switch_reason(policy.kill_switch, overrides)
        # Everything per target is grouped once per cycle: a scan of the cycle's forecasts (or
        # growths, pauses) per target made a 10,000-quota cycle quadratic.
        forecasts: dict[TargetId, dict[Dimension, SeriesForecast]] = {}
        for (tid, dim), sf in ctx.forecasts.items():
            forecasts.setdefault(tid, {})[dim] = sf
        # a target is its VMS id + path: a quota re-created under the same name (another id or
        # path) inherits no cooldown; a renamed one (same id and path) keeps it
        growth_by_quota: dict[str, dict[tuple[int | None, str], dict[Dimension, float]]] = {}
        for mode, growths in last_growth.items():
            by_quota = growth_by_quota[mode] = {}
            for (quota_id, path, dim), t in growths.items():
                by_quota.setdefault((quota_id, path), {})[dim] = t
        pauses = [o for o in overrides if not o.is_kill_switch]
        rules_cache: dict[tuple[int, ...], tuple[PolicyRules, GrowthPolicy]] = {}
        targets: list[TargetInput] = []
        paused: dict[TargetId, bool] = {}
        for obs in poll.observations:
            if obs.target.kind is not TargetKind.QUOTA:
                continue
            rules, growth_policy = self._rules_for(obs.target, rules_cache)
            # the kill switch is reported as itself, not as a pause
            pause = next((o for o in pauses if o.applies_to(obs.target)), None)
            paused[obs.target] = pause is not None
            held = reserved.get((obs.target.cluster, obs.target.name))
            targets.append(TargetInput(
                observation=obs,
                policy=growth_policy,
                forecasts=forecasts.get(obs.target, {}),
                recent_rate_per_second=self._history.write_rates(obs.target),
                latest_rate_per_second=self._history.latest_rates(obs.target),
                reserved_bytes=held.bytes if held is not None else 0,
                reserved_inodes=held.inodes if held is not None else 0,
                last_growth_at=growth_by_quota[rules.mode].get((obs.quota_id, obs.target.path), {}),
                paused_reason=None if pause is None else (pause.reason or "paused"),
                dropped=obs.target.name in dropped,
                enforced=rules.mode == "enforce"))
        cycle = CycleInput(
            now=now, targets=tuple(targets), capacity=net_of_overcommit(poll.capacity),
            cluster_reserve_ratio=policy.cluster_reserve_ratio,
            max_actions_per_hour=policy.max_actions_per_hour,
            # a budget per mode: an enforced target's growth is not held by would-grows, this
            # cycle's or the hour's; each growth is checked again by its target's mode when it acts (`_act`)
            actions_last_hour=self.actions.rate_limit_count_since(now - 3600.0, mode="enforce"),
            all_actions_last_hour=self.actions.rate_limit_count_since(now - 3600.0, mode="observe"),
            kill_switch_reason=kill_reason,
            stale_after_seconds=self.settings.poll.stale_after_intervals * self.settings.poll.interval_seconds)
        return cycle, paused, kill_reason is not None

    # ------------------------------------------------------------------------------- acting
    async def _act(self, decision: Decision, obs: Observation | None, now: float,
                   writer: QuotaWriter) -> ActionOutcome | None:
        key = (decision.target, decision.dimension)
        quota_id = obs.quota_id if obs is not None else None
        if decision.kind is DecisionKind.BLOCKED:
            self.counters.count("blocked")
            status = ActionStatus.PAUSED if decision.guard in ("paused", "kill_switch") else ActionStatus.BLOCKED
            guard = decision.guard or "blocked"
            recorded = self._recorded_guard.get(key)
            new_episode = recorded is None or recorded[0] != guard
            # one action per episode: its time is the episode's (not a new last action every cycle)
            since = now if recorded is None or new_episode else recorded[1]
            outcome = ActionOutcome(decision.target, decision.dimension, status, since, decision.reason,
                                    old_hard=decision.current_hard, new_hard=decision.new_hard, guard=decision.guard)
            if new_episode:  # once per episode, and its `blocked` event with it
                self._recorded_guard[key] = (guard, now)
                mode = self._mode_of(decision)
                entries = self.events.decision_entries(decision, mode=mode, now=now)
                outcome = replace(outcome, action_id=await asyncio.to_thread(
                    self.actions.record, decision, mode=mode, status=status.value, now=now,
                    quota_id=quota_id, events=entries))
                self.events.decisions_committed(entries)
                log.warning("growth.blocked", target=decision.target.key, dimension=decision.dimension.value,
                            guard=decision.guard, reason=decision.reason)
            return outcome
        if decision.kind is not DecisionKind.GROW:
            self._recorded_guard.pop(key, None)
            self.counters.count(decision.kind.value)
            return None
        limit = self.settings.policy.max_actions_per_hour
        mode = self._mode_of(decision)
        async with self._rate_lock:  # check and reserve a slot of the global rate limit atomically
            done = await asyncio.to_thread(self.actions.rate_limit_count_since, now - 3600.0, mode=mode)
            # as the store counts: a real write is held by real writes alone, a would-grow by both
            in_flight = self._in_flight["enforce"] if mode == "enforce" else self._in_flight.total()
            reserved = done + in_flight < limit
            if reserved:
                self._in_flight[mode] += 1
        if not reserved:  # another cluster's cycle took the last slot since the planner counted
            held = replace(decision, kind=DecisionKind.BLOCKED, guard="rate_limit",
                           reason=f"rate limit: {limit} actions per hour (across clusters)")
            return await self._act(held, obs, now, writer)
        self._recorded_guard.pop(key, None)
        try:
            return await self._grow(decision, quota_id, now, writer)
        finally:
            self._in_flight[mode] -= 1  # its audit row now counts (or it failed and does not)

    async def _grow(self, decision: Decision, quota_id: int | None, now: float,
                    writer: QuotaWriter) -> ActionOutcome:
        if self._mode_of(decision) != "enforce":
            self.counters.count(ActionStatus.WOULD_GROW.value)
            entries = self.events.decision_entries(decision, mode="observe", now=now)
            action_id = await asyncio.to_thread(
                self.actions.record, decision, mode="observe", status="would_grow", now=now, quota_id=quota_id,
                events=entries)
            self.events.decisions_committed(entries)
            log.info("quota.would_grow", target=decision.target.key, dimension=decision.dimension.value,
                     old_hard=decision.current_hard, new_hard=decision.new_hard, reason=decision.reason)
            return ActionOutcome(decision.target, decision.dimension, ActionStatus.WOULD_GROW, now,
                                 decision.reason, decision.current_hard, decision.new_hard, action_id)
        entries = self.events.decision_entries(decision, mode="enforce", now=now)
        outcome = await self.actuator.grow(decision, quota_id, writer, events=entries)
        if outcome.intent_committed:  # the intent row was written, and its event with it (ours to settle or not)
            self.events.decisions_committed(entries)
        self.counters.count(outcome.status.value)
        if outcome.status is ActionStatus.VERIFIED and decision.dimension is Dimension.BYTES:
            self.counters.bytes_grown += decision.growth
        return outcome

    def _rules_for(self, target: TargetId,
                   cache: dict[tuple[int, ...], tuple[PolicyRules, GrowthPolicy]]) -> tuple[PolicyRules, GrowthPolicy]:
        """The target's rules, built once per set of matching overrides (most targets share one)."""
        policy = self.settings.policy
        matching = tuple(i for i, o in enumerate(policy.overrides) if o.matches(target.name, target.path))
        found = cache.get(matching)
        if found is None:
            rules = policy.rules_for(target.name, target.path)
            found = cache[matching] = (rules, GrowthPolicy.from_fields(rules))
        return found

    def _mode_of(self, decision: Decision) -> str:
        return self.settings.policy.rules_for(decision.target.name, decision.target.path).mode

    # --------------------------------------------------------------------------- metrics
    def collector(self) -> GrowthMetrics:
        return GrowthMetrics(lambda: self.view)


_OUTCOMES = frozenset(ActionStatus)
"""The statuses of a settled row (an open one — `intent`, `patched`, `running` — is none of them)."""


def kill_switch_reason(configured: bool, overrides: Sequence[Override]) -> str | None:
    """Why every growth is held (None: it is not): the config's `policy.kill_switch` (`configured`),
    else the stored kill switch among `overrides` (`OverrideStore.active`). Read once per cycle
    by the quota growth stage and the filesystem growth stage alike."""
    if configured:
        return "policy.kill_switch in config"
    kill = next((o for o in overrides if o.is_kill_switch), None)
    return None if kill is None else (kill.reason or "engaged")


def _hold_if_unsettled(decision: Decision, obs: Observation | None, frozen: frozenset[int]) -> Decision:
    """A growth of a quota with an open write of ours (outcome unknown, or a request that can
    still land) is held until a read settles it."""
    wants_growth = decision.kind is DecisionKind.GROW or (
        decision.kind is DecisionKind.BLOCKED and decision.guard == "cooldown")  # (an `unknown` row counts)
    if not wants_growth or obs is None or obs.quota_id not in frozen:
        return decision
    return replace(decision, kind=DecisionKind.BLOCKED, guard="unsettled",
                   reason="a write of ours is unsettled (outcome unknown, or a request that can still land): "
                          "growth frozen until a read settles it")


def _hold_if_unconfirmed(decision: Decision, unconfirmed: frozenset[str]) -> Decision:
    """A growth on a sample nothing confirmed yet (a target's first since start, since it was
    forgotten or changed identity; one whose hard limit moved without a write of ours) waits for
    the next sample: one glitch must not be written on. So does every growth of a poll whose pool
    sample is unconfirmed (the cluster-reserve guard reads it: one answer claiming a pool ten times
    larger let a growth the reserve was holding through). Not a block (no audit row, no
    `growth_blocked` alert): a hold of one poll, which would otherwise page on the glitch it holds
    back."""
    if decision.kind is not DecisionKind.GROW:
        return decision
    if decision.target.name in unconfirmed:
        why = ("sample not confirmed yet (the first of this target since start, or since it was forgotten or "
               "changed identity; or a hard limit moved without a write of ours)")
    elif POOL_TARGET in unconfirmed:
        why = "the cluster pool's sample is not confirmed yet (its first since start, or its usable capacity moved)"
    else:
        return decision
    return replace(decision, kind=DecisionKind.NONE, guard="unconfirmed",
                   reason=f"{why}: growth waits for the next sample to confirm it")


def _hold_if_changed(decision: Decision, changed: Mapping[tuple[TargetId, Dimension], str]) -> Decision:
    """A growth of a quota whose limit (of that dimension) someone else just moved waits for the
    next read."""
    found = changed.get((decision.target, decision.dimension))
    wants_growth = decision.kind is DecisionKind.GROW or (
        decision.kind is DecisionKind.BLOCKED and decision.guard == "cooldown")
    if found is None or not wants_growth:
        return decision
    return replace(decision, kind=DecisionKind.BLOCKED, guard="external_change", reason=found)


def _ours(known: Set[tuple[int | None, Dimension, int]], quota_id: int | None, limits: HardLimits) -> HardLimits:
    """Those of `limits` (bytes, inodes) `known` for `quota_id` — a write of ours asked for them
    (`ActionStore.written_limits`), or they are the external change last audited
    (`ActionStore.audited_external_limits`); None where not."""
    bytes_limit, inodes_limit = limits
    return (bytes_limit if (quota_id, Dimension.BYTES, bytes_limit) in known else None,
            inodes_limit if (quota_id, Dimension.INODES, inodes_limit) in known else None)


class GrowthMetrics(Collector):
    """`quotapilot_growth_*`, `quotapilot_target_paused`, `quotapilot_mode` from the published `GrowthView`."""

    def __init__(self, view: Callable[[], GrowthView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        decisions = CounterMetricFamily(
            "quotapilot_growth_decisions", "Growth decisions by result (none, grow outcomes, blocked, ...).",
            labels=["result"])
        for result, n in sorted(view.decisions.items()):
            decisions.add_metric([result], n)
        yield decisions
        grown = CounterMetricFamily("quotapilot_growth_bytes", "Bytes added to hard limits by verified growths.")
        grown.add_metric([], view.bytes_grown)
        yield grown
        paused = GaugeMetricFamily("quotapilot_target_paused", "1 when growth on the target is paused by hand.",
                                   labels=TARGET_LABELS)
        for target, is_paused in sorted(view.paused.items(), key=lambda kv: kv[0].key):
            paused.add_metric([target.cluster, target.name, target.path, *extra_target_labels(target).values()],
                              1.0 if is_paused else 0.0)
        yield paused
        mode = GaugeMetricFamily("quotapilot_mode", "1 for the growth mode in force.", labels=["mode"])
        for name in ("observe", "enforce"):
            mode.add_metric([name], 1.0 if view.mode == name else 0.0)
        yield mode
        kill = GaugeMetricFamily("quotapilot_kill_switch", "1 when the global kill switch holds every growth.")
        kill.add_metric([], 1.0 if view.kill_switch else 0.0)
        yield kill
