"""The growth stage: runs the planner on each cycle and, in enforce mode, grows quotas — guarded,
write-ahead, verified, audited.

Per GROW decision in enforce mode:

1. record the intent in the store (committed: the write-ahead);
2. re-read the quota from VMS; if its limit is no longer what the plan saw, someone else changed
   it: mark `replanned` and leave it to the next cycle's plan;
3. PATCH the hard and soft limit;
4. re-read and verify; record the outcome.

A SIGKILL anywhere leaves a row at `intent` or `patched`; on the next start `reconcile` reads each
such quota back from VMS and settles the row (`reconciled`: the new limit is there; `abandoned`:
it is not) — it never re-applies a PATCH blindly, so a crash causes no double growth. In observe
mode (the default) a GROW becomes a `would_grow` row. Guards that hold a growth (pause, kill
switch, cluster reserve, ...) are recorded once per episode, not every cycle.

The stage also keeps the managed views (`[[views]]`) in place, and its `GrowthMetrics` collector
exports what it did. It talks to VMS only through the collector's write calls (`QuotaWriter`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.leadership import Leadership, SoleLeadership  # FLEET (issue 15)
from quotapilot.daemon.settings import ManagedView, PolicyRules, Settings
from quotapilot.daemon.store.actions import ActionStore, FencedOut
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.daemon.store.reservations import ReservationStore
from quotapilot.forecasting.planner import CycleInput, GrowthPolicy, TargetInput, plan_cycle
from quotapilot.forecasting.types import (
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

if TYPE_CHECKING:
    from quotapilot.daemon.runtime.daemon import Daemon

log = get_logger(__name__)

Planner = Callable[[CycleInput], tuple[Decision, ...]]


class QuotaWriter(Protocol):
    """The collector's write side (one per cluster), as the actuator uses it."""

    async def get_quota(self, quota_id: int) -> dict[str, Any]: ...

    async def patch_quota(self, quota_id: int, *, hard_limit: int | None = None,
                          soft_limit: int | None = None, hard_limit_inodes: int | None = None,
                          soft_limit_inodes: int | None = None) -> dict[str, Any]: ...

    async def list_quotas(self, path: str | None = None) -> list[dict[str, Any]]: ...

    async def create_quota(self, name: str, path: str, hard_limit: int, soft_limit: int,
                           hard_limit_inodes: int | None = None) -> dict[str, Any]: ...

    async def list_views(self) -> list[dict[str, Any]]: ...

    async def create_view(self, path: str, name: str, policy_id: int,
                          protocols: list[str] | tuple[str, ...]) -> dict[str, Any]: ...

    async def find_view_policy(self, name: str) -> dict[str, Any] | None: ...


class Reserved(Protocol):
    @property
    def bytes(self) -> int: ...

    @property
    def inodes(self) -> int: ...


ReservedTotals = Callable[[float], Mapping[tuple[str, str], Reserved]]
"""now → {(cluster, target name): reserved capacity} (the pre-flight API's active reservations)."""

_LIMIT_FIELDS = {Dimension.BYTES: ("hard_limit", "soft_limit"),
                 Dimension.INODES: ("hard_limit_inodes", "soft_limit_inodes")}


def _limit(quota: Mapping[str, Any], dimension: Dimension) -> int | None:
    value = quota.get(_LIMIT_FIELDS[dimension][0])
    return int(value) if isinstance(value, int | float) else None


def view_name(view: ManagedView) -> str:
    """A managed view's quota/view name: explicit, or the path with '/' → '-' (names have no '/')."""
    return view.name or view.path.strip("/").replace("/", "-") or "root"


@dataclass(slots=True)
class _Window:
    """One target's samples over the window, with the running sums `UsageHistory` answers from.

    Each entry is (t, used_bytes, used_inodes, bytes_in, inodes_in): `*_in` is the increase since
    the previous entry. Samples closer than the resolution are merged into the last entry (its
    increases accumulate), so a 60 s poll keeps ~288 entries a day per target, not 1,440.
    """

    entries: deque[tuple[float, int, int | None, int, int]] = field(default_factory=deque)
    bytes_increase: int = 0
    inodes_increase: int = 0
    unknown_inodes: int = 0
    """Entries without an inode count: the inode rate is given only when every sample has one."""
    previous: tuple[float, int, int | None] | None = None
    """The sample before the latest (for `latest_rates`), whether or not it was merged."""


class UsageHistory:
    """The last day of samples per target: the observed rates the planner sizes with when there
    is no forecast yet (cold start), so a new quota is never left unprotected.

    O(1) per sample and per question (running sums), so a 10,000-quota cycle stays linear."""

    def __init__(self, window_seconds: float = 86400.0, resolution_seconds: float | None = None) -> None:
        self.window_seconds = window_seconds
        self.resolution_seconds = window_seconds / 288 if resolution_seconds is None else resolution_seconds
        self._windows: dict[TargetId, _Window] = {}

    def add(self, obs: Observation) -> None:
        window = self._windows.get(obs.target)
        if window is None:
            window = self._windows[obs.target] = _Window()
        entries = window.entries
        if entries and obs.t <= entries[-1][0]:
            return
        if not entries:
            entries.append((obs.t, obs.used_bytes, obs.used_inodes, 0, 0))
            window.unknown_inodes += obs.used_inodes is None
            return
        last_t, last_b, last_i, last_b_in, last_i_in = entries[-1]
        window.previous = (last_t, last_b, last_i)
        grew_b = max(0, obs.used_bytes - last_b)
        grew_i = max(0, obs.used_inodes - last_i) if obs.used_inodes is not None and last_i is not None else 0
        window.bytes_increase += grew_b
        window.inodes_increase += grew_i
        if len(entries) >= 2 and last_t - entries[-2][0] < self.resolution_seconds:
            entries.pop()  # merged: the new sample replaces the last entry, increases accumulate
            window.unknown_inodes -= last_i is None
            entries.append((obs.t, obs.used_bytes, obs.used_inodes, last_b_in + grew_b, last_i_in + grew_i))
        else:
            entries.append((obs.t, obs.used_bytes, obs.used_inodes, grew_b, grew_i))
        window.unknown_inodes += obs.used_inodes is None
        while entries[0][0] < obs.t - self.window_seconds:
            gone = entries.popleft()
            window.unknown_inodes -= gone[2] is None
            t, b, i, b_in, i_in = entries[0]  # now the first: its increase came from a sample gone
            window.bytes_increase -= b_in
            window.inodes_increase -= i_in
            entries[0] = (t, b, i, 0, 0)

    def write_rates(self, target: TargetId) -> dict[Dimension, float]:
        """Sum of the increases over the window, per second of the window (deletes ignored)."""
        window = self._windows.get(target)
        if window is None or len(window.entries) < 2:
            return {}
        span = window.entries[-1][0] - window.entries[0][0]
        rates = {Dimension.BYTES: window.bytes_increase / span}
        if window.unknown_inodes == 0:
            rates[Dimension.INODES] = window.inodes_increase / span
        return rates

    def latest_rates(self, target: TargetId) -> dict[Dimension, float]:
        """Increase per second between the last two samples."""
        window = self._windows.get(target)
        if window is None or window.previous is None or not window.entries:
            return {}
        (t0, b0, i0), (t1, b1, i1) = window.previous, window.entries[-1][:3]
        rates = {Dimension.BYTES: max(0.0, (b1 - b0) / (t1 - t0))}
        if i0 is not None and i1 is not None:
            rates[Dimension.INODES] = max(0.0, (i1 - i0) / (t1 - t0))
        return rates


@dataclass(slots=True)
class GrowthCounters:
    """What the stage has done since start (read by `GrowthMetrics`; no IO at scrape)."""

    decisions: dict[str, int] = field(default_factory=dict)
    bytes_grown: int = 0
    paused: dict[TargetId, bool] = field(default_factory=dict)
    kill_switch: bool = False
    views_would_create: list[str] = field(default_factory=list)

    def count(self, result: str) -> None:
        self.decisions[result] = self.decisions.get(result, 0) + 1


class GrowthStage:
    """The cycle stage `growth` (runs after the forecaster, before alerting)."""

    name = "growth"

    def __init__(self, settings: Settings, db: Backend, writers: Callable[[str], QuotaWriter], clock: Clock,
                 *, planner: Planner = plan_cycle, reserved_totals: ReservedTotals | None = None,
                 leadership: Leadership | None = None) -> None:
        self.settings = settings
        # FLEET (issue 15): only the leader of a cluster plans and writes; alone on SQLite, always us
        self.leadership = leadership or SoleLeadership(c.name for c in settings.clusters)
        self.actions = ActionStore(db)
        self.overrides = OverrideStore(db)
        self.writers = writers
        self.clock = clock
        self.planner = planner
        self.reserved_totals = reserved_totals
        self.counters = GrowthCounters()
        self.last_action: dict[TargetId, ActionOutcome] = {}
        self._reconciled: set[str] = set()
        self._views_done: set[tuple[str, str]] = set()
        self._history = UsageHistory()
        self._recorded_guard: dict[tuple[TargetId, Dimension], str] = {}
        self._last_prune: float | None = None

    @classmethod
    def for_daemon(cls, daemon: Daemon, *, planner: Planner = plan_cycle) -> GrowthStage:
        """The stage as `build_stages()` wires it: the daemon's store, collectors, clock, and the
        pre-flight API's active reservations as extra demand."""
        stage = cls(daemon.settings, daemon.db, lambda cluster: daemon.collectors[cluster], daemon.clock,
                    planner=planner, reserved_totals=ReservationStore(daemon.db).active_totals,
                    leadership=daemon.leadership)
        daemon.set_mode(stage.mode)
        return stage

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

    def checkpoint(self, point: str) -> None:
        """A named point of the write-ahead sequence (`intent`, `patched`); crash tests hook it."""

    # ------------------------------------------------------------------------------ cycle
    async def on_cycle(self, ctx: CycleContext) -> None:
        poll = ctx.poll
        if not poll.ok:
            return
        cluster = poll.cluster
        if not self.leadership.is_leader(cluster):  # FLEET: a standby polls and forecasts, never acts;
            self._reconciled.discard(cluster)       # on taking over it first settles the old leader's intents
            return
        writer = self.writers(cluster)
        if cluster not in self._reconciled:
            await self.reconcile(cluster, writer)
        await self._ensure_views(cluster, writer)

        for obs in poll.observations:
            self._history.add(obs)
        cycle = await asyncio.to_thread(self._cycle_input, ctx)
        decisions = self.planner(cycle)
        ctx.decisions.extend(decisions)
        observations = {o.target: o for o in poll.observations}
        for decision in decisions:
            outcome = await self._act(decision, observations.get(decision.target), ctx.now, writer)
            if outcome is not None:
                ctx.actions.append(outcome)
                self.last_action[decision.target] = outcome

    def _cycle_input(self, ctx: CycleContext) -> CycleInput:
        """Gather the planner's input (store reads: runs in a thread)."""
        poll, now, policy = ctx.poll, ctx.now, self.settings.policy
        if self._last_prune is None or now - self._last_prune >= 3600.0:
            self._last_prune = now
            self.actions.prune(now - self.settings.store.audit_retention_seconds)
            self.overrides.prune(now)
        # a would-grow starts a cooldown only for a target still observed: switching to enforce
        # acts at once
        last_growth = {mode: self.actions.last_growth_at(poll.cluster, mode=mode) for mode in ("observe", "enforce")}
        reserved = self.reserved_totals(now) if self.reserved_totals is not None else {}
        dropped = {d.target for d in poll.dropped}
        overrides = self.overrides.active(now)  # the kill switch and the pauses, in one read
        kill = next((o for o in overrides if o.is_kill_switch), None)
        kill_reason = "policy.kill_switch in config" if policy.kill_switch else (
            (kill.reason or "engaged") if kill is not None else None)
        self.counters.kill_switch = kill_reason is not None
        # Everything per target is grouped once per cycle: a scan of the cycle's forecasts (or
        # growths, pauses) per target made a 10,000-quota cycle quadratic.
        forecasts: dict[TargetId, dict[Dimension, SeriesForecast]] = {}
        for (tid, dim), sf in ctx.forecasts.items():
            forecasts.setdefault(tid, {})[dim] = sf
        growth_by_name: dict[str, dict[str, dict[Dimension, float]]] = {}
        for mode, growths in last_growth.items():
            by_name = growth_by_name[mode] = {}
            for (name, dim), t in growths.items():
                by_name.setdefault(name, {})[dim] = t
        pauses = [o for o in overrides if not o.is_kill_switch]
        rules_cache: dict[tuple[int, ...], tuple[PolicyRules, GrowthPolicy]] = {}
        targets: list[TargetInput] = []
        for obs in poll.observations:
            if obs.target.kind is not TargetKind.QUOTA:
                continue
            rules, growth_policy = self._rules_for(obs.target, rules_cache)
            # the kill switch is reported as itself, not as a pause
            pause = next((o for o in pauses if o.applies_to(obs.target)), None)
            self.counters.paused[obs.target] = pause is not None
            held = reserved.get((obs.target.cluster, obs.target.name))
            targets.append(TargetInput(
                observation=obs,
                policy=growth_policy,
                forecasts=forecasts.get(obs.target, {}),
                recent_rate_per_second=self._history.write_rates(obs.target),
                latest_rate_per_second=self._history.latest_rates(obs.target),
                reserved_bytes=held.bytes if held is not None else 0,
                reserved_inodes=held.inodes if held is not None else 0,
                last_growth_at=growth_by_name[rules.mode].get(obs.target.name, {}),
                paused_reason=None if pause is None else (pause.reason or "paused"),
                dropped=obs.target.name in dropped))
        return CycleInput(
            now=now, targets=tuple(targets), capacity=poll.capacity,
            cluster_reserve_ratio=policy.cluster_reserve_ratio,
            max_actions_per_hour=policy.max_actions_per_hour,
            actions_last_hour=self.actions.count_since(now - 3600.0, mode=self.mode),
            kill_switch_reason=kill_reason,
            stale_after_seconds=self.settings.poll.stale_after_intervals * self.settings.poll.interval_seconds)

    # ------------------------------------------------------------------------------- acting
    async def _act(self, decision: Decision, obs: Observation | None, now: float,
                   writer: QuotaWriter) -> ActionOutcome | None:
        key = (decision.target, decision.dimension)
        quota_id = obs.quota_id if obs is not None else None
        if decision.kind is DecisionKind.BLOCKED:
            self.counters.count("blocked")
            status = ActionStatus.PAUSED if decision.guard in ("paused", "kill_switch") else ActionStatus.BLOCKED
            outcome = ActionOutcome(decision.target, decision.dimension, status, now, decision.reason,
                                    old_hard=decision.current_hard, new_hard=decision.new_hard)
            guard = decision.guard or "blocked"
            if self._recorded_guard.get(key) != guard:  # once per episode
                self._recorded_guard[key] = guard
                outcome = replace(outcome, action_id=await asyncio.to_thread(
                    self.actions.record, decision, mode=self._mode_of(decision), status=status.value, now=now,
                    quota_id=quota_id))
                log.warning("growth.blocked", target=decision.target.key, dimension=decision.dimension.value,
                            guard=decision.guard, reason=decision.reason)
            return outcome
        self._recorded_guard.pop(key, None)
        if decision.kind is not DecisionKind.GROW:
            self.counters.count(decision.kind.value)
            return None
        if self._mode_of(decision) != "enforce":
            self.counters.count(ActionStatus.WOULD_GROW.value)
            action_id = await asyncio.to_thread(
                self.actions.record, decision, mode="observe", status="would_grow", now=now, quota_id=quota_id)
            log.info("quota.would_grow", target=decision.target.key, dimension=decision.dimension.value,
                     old_hard=decision.current_hard, new_hard=decision.new_hard, reason=decision.reason)
            return ActionOutcome(decision.target, decision.dimension, ActionStatus.WOULD_GROW, now,
                                 decision.reason, decision.current_hard, decision.new_hard, action_id)
        outcome = await self.grow(decision, quota_id, writer)
        self.counters.count(outcome.status.value)
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

    async def grow(self, decision: Decision, quota_id: int | None, writer: QuotaWriter) -> ActionOutcome:
        """Write-ahead, re-read, PATCH, verify, audit: one growth of one series."""
        assert decision.new_hard is not None
        dim, target = decision.dimension, decision.target

        def outcome(status: ActionStatus, reason: str, action_id: int | None) -> ActionOutcome:
            return ActionOutcome(target, dim, status, self.clock.now(), reason, decision.current_hard,
                                 decision.new_hard, action_id)

        if quota_id is None:
            return outcome(ActionStatus.FAILED, "no quota id in the observation", None)
        try:  # FLEET: recorded only under our current lease epoch (same transaction)
            action_id = await asyncio.to_thread(
                self.actions.record, decision, mode="enforce", status="intent", now=self.clock.now(),
                quota_id=quota_id, fence=self.leadership.fence(target.cluster))
        except FencedOut as exc:
            log.warning("quota.grow_fenced", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, f"not the leader: {exc}", None)
        self.checkpoint("intent")
        hard_field, soft_field = _LIMIT_FIELDS[dim]
        try:
            live = await writer.get_quota(quota_id)
            live_hard = _limit(live, dim)
            if live_hard != decision.current_hard:
                reason = f"changed by someone else: hard limit {live_hard}, planned on {decision.current_hard}"
                await self._mark(action_id, "replanned", reason, live_hard=live_hard)
                log.warning("quota.changed", target=target.key, dimension=dim.value, live_hard=live_hard,
                            planned_hard=decision.current_hard)
                return outcome(ActionStatus.REPLANNED, reason, action_id)
            changes: dict[str, int] = {hard_field: decision.new_hard}
            if decision.new_soft is not None:
                changes[soft_field] = decision.new_soft
            if not await self.leadership.epoch_is_current(target.cluster):  # FLEET: re-check right before
                # deposed since the intent: the new leader settles the row (reconcile); we leave it be
                log.warning("quota.grow_fenced", target=target.key, dimension=dim.value, action_id=action_id)
                return outcome(ActionStatus.FAILED, "lease lost before the PATCH", action_id)
            await writer.patch_quota(quota_id, **changes)
        except (TemporaryError, PermanentError) as exc:
            await self._mark(action_id, "failed", f"{type(exc).__name__}: {exc}")
            log.error("quota.grow_failed", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, str(exc), action_id)
        await self._mark(action_id, "patched", None)
        self.checkpoint("patched")
        try:
            verified = _limit(await writer.get_quota(quota_id), dim)
        except (TemporaryError, PermanentError) as exc:
            await self._mark(action_id, "verify_failed", f"re-read failed: {exc}")
            return outcome(ActionStatus.VERIFY_FAILED, str(exc), action_id)
        if verified != decision.new_hard:
            reason = f"read back {verified}, expected {decision.new_hard}"
            await self._mark(action_id, "verify_failed", reason)
            log.error("quota.verify_failed", target=target.key, dimension=dim.value, read_back=verified)
            return outcome(ActionStatus.VERIFY_FAILED, reason, action_id)
        await self._mark(action_id, "verified", None)
        if dim is Dimension.BYTES:
            self.counters.bytes_grown += decision.growth
        log.info("quota.grown", target=target.key, dimension=dim.value, old_hard=decision.current_hard,
                 new_hard=decision.new_hard, new_soft=decision.new_soft, action_id=action_id)
        return outcome(ActionStatus.VERIFIED, decision.reason, action_id)

    async def _mark(self, action_id: int, status: str, reason: str | None, **detail: Any) -> None:
        await asyncio.to_thread(self.actions.mark, action_id, status, self.clock.now(), reason, **detail)

    # ------------------------------------------------------------------------- reconcile
    async def reconcile(self, cluster: str, writer: QuotaWriter | None = None) -> int:
        """Settle the rows a crash left at `intent`/`patched` by reading VMS; never re-PATCH.

        Returns how many rows were settled. A VMS error leaves the rest for the next cycle.
        """
        writer = writer or self.writers(cluster)
        settled = 0
        for record in await asyncio.to_thread(self.actions.unfinished, cluster):
            dim = Dimension(record.dimension)
            if record.quota_id is None:
                await self._mark(record.id, "abandoned", "no quota id")
                continue
            try:
                live_hard = _limit(await writer.get_quota(record.quota_id), dim)
            except TemporaryError as exc:
                log.warning("growth.reconcile_deferred", cluster=cluster, action_id=record.id, error=str(exc))
                return settled
            except PermanentError as exc:
                await self._mark(record.id, "abandoned", f"quota unreadable: {exc}")
                continue
            if live_hard == record.new_hard:
                status, reason = "reconciled", "found applied after a restart"
            elif live_hard == record.old_hard:
                status, reason = "abandoned", "interrupted before the PATCH took effect; not re-applied"
            else:
                status, reason = "abandoned", f"limit is now {live_hard}: changed by someone else"
            await self._mark(record.id, status, reason, live_hard=live_hard)
            log.warning("growth.reconciled", cluster=cluster, action_id=record.id, status=status,
                        live_hard=live_hard, new_hard=record.new_hard)
            settled += 1
        self._reconciled.add(cluster)
        return settled

    # --------------------------------------------------------------------- managed views
    async def _ensure_views(self, cluster: str, writer: QuotaWriter) -> None:
        wanted = [v for v in self.settings.views
                  if (v.cluster or (self.settings.clusters[0].name if self.settings.clusters else cluster)) == cluster
                  and (cluster, v.path) not in self._views_done]
        if not wanted:
            return
        try:
            for view in wanted:
                await self.ensure_view(cluster, view, writer)
        except (TemporaryError, PermanentError) as exc:
            log.warning("view.ensure_failed", cluster=cluster, error=str(exc))

    async def ensure_view(self, cluster: str, view: ManagedView, writer: QuotaWriter) -> str:
        """Make sure `view` and its quota exist (idempotent). Returns what was done:
        `exists`, `created`, `would_create`, or `no_policy`."""
        name = view_name(view)
        existing_views = {v.get("path") for v in await writer.list_views()}
        quotas = await writer.list_quotas(path=view.path)
        missing = [what for what, present in (("view", view.path in existing_views), ("quota", bool(quotas)))
                   if not present]
        if not missing:
            self._views_done.add((cluster, view.path))
            return "exists"
        if self.mode != "enforce":
            note = f"{cluster}:{view.path} ({' and '.join(missing)})"
            if note not in self.counters.views_would_create:
                self.counters.views_would_create.append(note)
                log.info("view.would_create", cluster=cluster, path=view.path, missing=missing)
            return "would_create"
        if "view" in missing:
            policy = await writer.find_view_policy(view.policy)
            if policy is None:
                log.error("view.policy_missing", cluster=cluster, path=view.path, policy=view.policy)
                return "no_policy"
            await writer.create_view(view.path, name, int(policy["id"]), view.protocols)
            log.info("view.created", cluster=cluster, path=view.path, name=name)
        if "quota" in missing:
            soft = view.soft_limit_bytes if view.soft_limit_bytes is not None else int(view.hard_limit_bytes * 0.9)
            await writer.create_quota(name, view.path, view.hard_limit_bytes, soft, view.hard_limit_inodes)
            log.info("quota.created", cluster=cluster, path=view.path, name=name, hard_limit=view.hard_limit_bytes)
        self._views_done.add((cluster, view.path))
        return "created"

    # --------------------------------------------------------------------------- metrics
    def metrics(self) -> GrowthMetrics:
        return GrowthMetrics(self)


class GrowthMetrics(Collector):
    """`quotapilot_growth_*`, `quotapilot_target_paused`, `quotapilot_mode` from the stage's counters."""

    def __init__(self, stage: GrowthStage) -> None:
        self.stage = stage

    def collect(self) -> list[Metric]:
        counters = self.stage.counters
        decisions = CounterMetricFamily(
            "quotapilot_growth_decisions", "Growth decisions by result (none, grow outcomes, blocked, ...).",
            labels=["result"])
        for result, n in sorted(counters.decisions.items()):
            decisions.add_metric([result], n)
        grown = CounterMetricFamily("quotapilot_growth_bytes", "Bytes added to hard limits by verified growths.")
        grown.add_metric([], counters.bytes_grown)
        paused = GaugeMetricFamily("quotapilot_target_paused", "1 when growth on the target is paused by hand.",
                                   labels=["cluster", "target", "path"])
        for target, is_paused in sorted(counters.paused.items(), key=lambda kv: kv[0].key):
            paused.add_metric([target.cluster, target.name, target.path], 1.0 if is_paused else 0.0)
        mode = GaugeMetricFamily("quotapilot_mode", "1 for the growth mode in force.", labels=["mode"])
        for name in ("observe", "enforce"):
            mode.add_metric([name], 1.0 if self.stage.mode == name else 0.0)
        kill = GaugeMetricFamily("quotapilot_kill_switch", "1 when the global kill switch holds every growth.")
        kill.add_metric([], 1.0 if counters.kill_switch else 0.0)
        return [decisions, grown, paused, mode, kill]
