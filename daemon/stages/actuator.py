"""The growth stage's write path: every change quotapilot makes to VMS goes through `Actuator`.

Per growth in enforce mode (`grow`):

1. record the intent in the store (committed: the write-ahead), with its `intent` event;
2. re-read the quota from VMS; if its limit is no longer what the plan saw, someone else changed
   it: mark `replanned` and leave it to the next cycle's plan;
3. PATCH the hard and soft limit;
4. re-read and verify; record the outcome.

An error that leaves the PATCH's outcome unknown (a timeout, a connection dropped after the
request was sent: `TemporaryError`) ends in a re-read: the new limit there → `verified` (applied,
its answer lost); otherwise the row is `unknown` and stays open. A refusal (`PermanentError`) is
`failed`.

A SIGKILL anywhere leaves a row at `intent` or `patched`. Open rows (`intent`, `patched`,
`unknown`) are settled by `reconcile`, at start and at every cycle while any is open, by reading
the quota back from VMS — never by re-applying a PATCH, so neither a crash nor a lost answer
causes a double growth:

- the new limit is there → `reconciled` (applied);
- a request of ours can still land (the landing window, `landing_window_seconds`: the request
  timeout × attempts plus the retries' backoff, measured from the intent) → left open, and the
  target stays frozen for growth (`Actuator.unsettled`);
- past the window, the old limit → `abandoned` (not applied);
- past the window, any other limit → `external_change` (someone else moved it; alerted by the
  growth stage, never overwritten blindly).

It also keeps the managed views (`[[views]]`) in place (`ensure_views`). It talks to VMS only
through the collector's write calls (`QuotaWriter`), handed in per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.leadership import Leadership
from quotapilot.daemon.settings import ManagedView, Settings
from quotapilot.daemon.store.actions import ActionRecord, ActionStore, FencedOut
from quotapilot.forecasting.types import ActionOutcome, ActionStatus, Decision, Dimension, TargetId

log = get_logger(__name__)


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


_LIMIT_FIELDS = {Dimension.BYTES: ("hard_limit", "soft_limit"),
                 Dimension.INODES: ("hard_limit_inodes", "soft_limit_inodes")}


def _limit(quota: Mapping[str, Any], dimension: Dimension) -> int | None:
    value = quota.get(_LIMIT_FIELDS[dimension][0])
    return int(value) if isinstance(value, int | float) else None


def view_name(view: ManagedView) -> str:
    """A managed view's quota/view name: explicit, or the path with '/' → '-' (names have no '/')."""
    return view.name or view.path.strip("/").replace("/", "-") or "root"


class Actuator:
    """Writes to VMS for the growth stage: guarded by the audit trail, verified, reconciled."""

    def __init__(self, settings: Settings, actions: ActionStore, clock: Clock, leadership: Leadership) -> None:
        """`settings`: its `policy.mode`, `views` and `clusters` (which cluster a view belongs to);
        `leadership`: the lease epoch an intent is fenced with, re-checked right before the PATCH."""
        self.settings = settings
        self.leadership = leadership
        self.actions = actions
        self.clock = clock
        self.reconciled: set[str] = set()
        """Clusters with no open row left (settled since start); a cluster with open rows is
        reconciled again at each of its cycles."""
        self.unsettled: dict[str, frozenset[int]] = {}
        """Per cluster: the quota ids with an open row (a write of ours that may still land, or
        whose outcome is unknown) — frozen for growth until a read settles it."""
        self.external_changes: list[tuple[str, int, str]] = []
        """(cluster, quota id, reason) of limits found moved by someone else while settling a row,
        since the growth stage last took them (`take_external_changes`)."""
        self.settled: list[ActionOutcome] = []
        """Open rows settled by `reconcile` (at start or in a cycle), until the growth stage takes
        them (`take_settled`) for the cycle's `result` events."""
        self.views_would_create: list[str] = []
        """In observe mode, the managed views (and quotas) that enforce mode would create."""
        self._views_done: set[tuple[str, str]] = set()

    def checkpoint(self, point: str) -> None:
        """A named point of the write-ahead sequence (`intent`, `patched`); crash tests hook it."""

    async def grow(self, decision: Decision, quota_id: int | None, writer: QuotaWriter, *,
                   events: Sequence[OutboxEntry] = ()) -> ActionOutcome:
        """Write-ahead, re-read, PATCH, verify, audit: one growth of one series. `events`: the
        outbox entries of the decision's `intent` event, committed with the intent row (an
        outcome without `action_id` wrote neither)."""
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
                quota_id=quota_id, fence=self.leadership.fence(target.cluster), events=events)
        except FencedOut as exc:
            log.warning("quota.grow_fenced", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, f"not the leader: {exc}", None)
        self.checkpoint("intent")
        hard_field, soft_field = _LIMIT_FIELDS[dim]
        changes: dict[str, int] = {hard_field: decision.new_hard}
        if decision.new_soft is not None:
            changes[soft_field] = decision.new_soft
        try:
            live = await writer.get_quota(quota_id)
            live_hard = _limit(live, dim)
            if live_hard != decision.current_hard:
                reason = f"changed by someone else: hard limit {live_hard}, planned on {decision.current_hard}"
                await self._mark(action_id, "replanned", reason, live_hard=live_hard)
                log.warning("quota.changed", target=target.key, dimension=dim.value, live_hard=live_hard,
                            planned_hard=decision.current_hard)
                return outcome(ActionStatus.REPLANNED, reason, action_id)
        except (TemporaryError, PermanentError) as exc:  # nothing was sent: a known failure
            await self._mark(action_id, "failed", f"{type(exc).__name__}: {exc}")
            log.error("quota.grow_failed", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, str(exc), action_id)
        if not await self.leadership.epoch_is_current(target.cluster):  # FLEET: re-check right before the PATCH
            # deposed since the intent: the new leader settles the row (reconcile); we leave it be
            log.warning("quota.grow_fenced", target=target.key, dimension=dim.value, action_id=action_id)
            return outcome(ActionStatus.FAILED, "lease lost before the PATCH", action_id)
        try:
            await writer.patch_quota(quota_id, **changes)
        except PermanentError as exc:  # VMS answered: refused
            await self._mark(action_id, "failed", f"{type(exc).__name__}: {exc}")
            log.error("quota.grow_failed", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, str(exc), action_id)
        except TemporaryError as exc:  # sent, answer lost: the outcome is unknown until a read
            return await self._settle_lost_answer(decision, quota_id, writer, action_id, exc, outcome)
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
        log.info("quota.grown", target=target.key, dimension=dim.value, old_hard=decision.current_hard,
                 new_hard=decision.new_hard, new_soft=decision.new_soft, action_id=action_id)
        return outcome(ActionStatus.VERIFIED, decision.reason, action_id)

    async def _settle_lost_answer(self, decision: Decision, quota_id: int, writer: QuotaWriter, action_id: int,
                                  error: TemporaryError,
                                  outcome: Callable[[ActionStatus, str, int | None], ActionOutcome]) -> ActionOutcome:
        """The PATCH was sent but its answer is lost: re-read. The new limit there → applied
        (`verified`, starting the cooldown); anything else → `unknown`, left open for `reconcile`
        (the target frozen for growth until a read settles it)."""
        dim, target = decision.dimension, decision.target
        try:
            live_hard: int | None = _limit(await writer.get_quota(quota_id), dim)
        except (TemporaryError, PermanentError) as exc:
            live_hard, reread = None, f"re-read failed: {exc}"
        else:
            reread = f"re-read shows hard limit {live_hard}"
        if live_hard == decision.new_hard:
            reason = f"answer lost ({error}); {reread}: applied"
            await self._mark(action_id, "verified", reason, answer_lost=True)
            log.info("quota.grown", target=target.key, dimension=dim.value, old_hard=decision.current_hard,
                     new_hard=decision.new_hard, new_soft=decision.new_soft, action_id=action_id, answer_lost=True)
            return outcome(ActionStatus.VERIFIED, decision.reason, action_id)
        reason = (f"outcome unknown: answer lost ({error}); {reread}; growth of this quota frozen until a "
                  f"read settles it")
        await self._mark(action_id, "unknown", reason, answer_lost=True, live_hard=live_hard)
        self.unsettled[target.cluster] = self.unsettled.get(target.cluster, frozenset()) | {quota_id}
        self.reconciled.discard(target.cluster)
        log.warning("quota.grow_unknown", target=target.key, dimension=dim.value, error=str(error),
                    live_hard=live_hard, new_hard=decision.new_hard, action_id=action_id)
        return outcome(ActionStatus.UNKNOWN, reason, action_id)

    def landing_window_seconds(self) -> float:
        """How long after its intent a request of ours can still land at VMS: every attempt's
        timeout plus the backoff between them (the longest each can be)."""
        vast = self.settings.vast
        backoffs = sum(min(float(vast.backoff_base_seconds) * 2.0 ** i, float(vast.backoff_max_seconds))
                       for i in range(vast.max_retries))
        return float(vast.request_timeout_seconds) * (vast.max_retries + 1) + backoffs

    def take_external_changes(self, cluster: str) -> list[tuple[int, str]]:
        """The external changes found on `cluster` while settling, once each."""
        mine = [(quota_id, reason) for c, quota_id, reason in self.external_changes if c == cluster]
        self.external_changes = [e for e in self.external_changes if e[0] != cluster]
        return mine

    async def _mark(self, action_id: int, status: str, reason: str | None, **detail: Any) -> None:
        await asyncio.to_thread(self.actions.mark, action_id, status, self.clock.now(), reason, **detail)

    # ------------------------------------------------------------------------- reconcile
    async def _settle(self, record: ActionRecord, status: ActionStatus, reason: str, now: float,
                      **detail: Any) -> None:
        """Mark an open row settled, and keep its outcome for the cycle's `result` event."""
        await self._mark(record.id, status.value, reason, **detail)
        target = TargetId(record.cluster, record.target, record.path)
        self.settled.append(ActionOutcome(target, Dimension(record.dimension), status, now, reason,
                                          record.old_hard, record.new_hard, record.id))

    def take_settled(self, cluster: str) -> list[ActionOutcome]:
        """The rows of `cluster` settled since the last call, once each."""
        mine = [o for o in self.settled if o.target.cluster == cluster]
        self.settled = [o for o in self.settled if o.target.cluster != cluster]
        return mine

    async def reconcile(self, cluster: str, writer: QuotaWriter) -> int:
        """Settle the open rows of `cluster` (`intent`/`patched` left by a crash, `unknown` left by
        a lost answer) by reading VMS; never re-PATCH. A row whose request can still land (within
        `landing_window_seconds` of its intent) and is not yet visible stays open, its quota frozen.

        Returns how many rows were settled. A VMS error leaves the rest for the next cycle.
        """
        settled = 0
        now = self.clock.now()
        window = self.landing_window_seconds()
        still_open: set[int] = set()
        records = await asyncio.to_thread(self.actions.unfinished, cluster)
        for index, record in enumerate(records):
            dim = Dimension(record.dimension)
            if record.quota_id is None:
                await self._settle(record, ActionStatus.ABANDONED, "no quota id", now)
                continue
            can_land = now < record.created_at + window
            try:
                live_hard = _limit(await writer.get_quota(record.quota_id), dim)
            except TemporaryError as exc:
                log.warning("growth.reconcile_deferred", cluster=cluster, action_id=record.id, error=str(exc))
                still_open.update(r.quota_id for r in records[index:] if r.quota_id is not None)
                self.unsettled[cluster] = frozenset(still_open)
                return settled
            except PermanentError as exc:
                if can_land:
                    still_open.add(record.quota_id)
                    continue
                await self._settle(record, ActionStatus.ABANDONED, f"quota unreadable: {exc}", now)
                settled += 1
                continue
            if live_hard == record.new_hard:
                status, reason = ActionStatus.RECONCILED, "found applied by a re-read"
            elif can_land:
                still_open.add(record.quota_id)  # not settled while an in-flight request can still land
                continue
            elif live_hard == record.old_hard:
                status, reason = (ActionStatus.ABANDONED,
                                  "not applied (the old limit stands, no request can still land)")
            else:
                status = ActionStatus.EXTERNAL_CHANGE
                reason = f"limit is now {live_hard}: changed by someone else; not overwritten"
                self.external_changes.append((cluster, record.quota_id, reason))
            await self._settle(record, status, reason, now, live_hard=live_hard)
            log.warning("growth.reconciled", cluster=cluster, action_id=record.id, status=status,
                        live_hard=live_hard, new_hard=record.new_hard)
            settled += 1
        self.unsettled[cluster] = frozenset(still_open)
        if still_open:
            self.reconciled.discard(cluster)
        else:
            self.reconciled.add(cluster)
        return settled

    # --------------------------------------------------------------------- managed views
    async def ensure_views(self, cluster: str, writer: QuotaWriter) -> None:
        """Ensure every managed view of `cluster` not yet found in place (a VMS error: next cycle)."""
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
        if self.settings.policy.mode != "enforce":
            note = f"{cluster}:{view.path} ({' and '.join(missing)})"
            if note not in self.views_would_create:
                self.views_would_create.append(note)
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
