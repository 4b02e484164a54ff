"""The growth stage's write path: every change quotapilot makes to VMS goes through `Actuator`.

Per growth in enforce mode (`grow`):

1. record the intent in the store (committed: the write-ahead), with its `intent` event;
2. re-read the quota from VMS; if it is not the quota the plan saw (another path or name under
   its id) or its limit is no longer what the plan saw, it is not ours to write: mark `replanned`
   and leave it to the next cycle's plan;
3. PATCH the hard and soft limit;
4. re-read and verify (the same quota, the new limit); record the outcome.

Any error from the PATCH ends in a re-read, never in a verdict on the error alone: the transport
retries, so a refusal (`PermanentError`, e.g. a 401 once the token expired) can answer the retry of
an attempt that was applied and whose answer was lost. The new limit there → `verified` (applied);
after a refusal at the first attempt, the old limit → `failed`; anything else (no answer, or a
refusal after an attempt whose answer was lost (`after_lost_answer`), with the old limit: that
attempt can still land) → `unknown`, left open.

A SIGKILL anywhere leaves a row at `intent` or `patched`. Open rows (`intent`, `patched`,
`unknown`) are settled by `reconcile`, at start and at every cycle while any is open, by reading
the quota back from VMS — never by re-applying a PATCH, so neither a crash nor a lost answer
causes a double growth:

- the new limit is there → `reconciled` (applied);
- a request of ours can still land (the landing window, `landing_window_seconds`: the request
  timeout × attempts plus the retries' backoff, measured from the PATCH on the monotonic clock —
  a row an earlier process left has only its intent's wall time) → left open, and the target stays
  frozen for growth (`Actuator.unsettled`);
- past the window, the old limit → `abandoned` (not applied);
- past the window, any other limit → `external_change` (someone else moved it; alerted by the
  growth stage, never overwritten blindly).

It also keeps the managed views (`[[views]]`) in place (`ensure_views`). It talks to VMS only
through the collector's write calls (`QuotaWriter`), handed in per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.leadership import Leadership
from quotapilot.daemon.settings import ManagedView, Settings
from quotapilot.daemon.store.actions import UNFINISHED, ActionRecord, ActionStore, FencedOut
from quotapilot.daemon.vms.validation import TENANT_SEPARATOR
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

    async def list_views(self, path: str | None = None) -> list[dict[str, Any]]: ...

    async def create_view(self, path: str, name: str, policy_id: int,
                          protocols: list[str] | tuple[str, ...]) -> dict[str, Any]: ...

    async def find_view_policy(self, name: str) -> dict[str, Any] | None: ...


_LIMIT_FIELDS = {Dimension.BYTES: ("hard_limit", "soft_limit"),
                 Dimension.INODES: ("hard_limit_inodes", "soft_limit_inodes")}


def _limit(quota: Mapping[str, Any], dimension: Dimension) -> int | None:
    value = quota.get(_LIMIT_FIELDS[dimension][0])
    return int(value) if isinstance(value, int | float) else None


def _same_path(a: str, b: str) -> bool:
    return (a.rstrip("/") or "/") == (b.rstrip("/") or "/")


def _not_the_quota(quota: Mapping[str, Any], target: TargetId, *, by_name: bool = True) -> str | None:
    """Why `quota` (a `GET /quotas/{id}/` answer) is not the quota `target` was planned for — another
    path, or (`by_name`) another name where the answer has one —; None when it is. An id VMS (or a
    proxy) listed for two quotas would otherwise have the growth of one written to the other."""
    path = quota.get("path")
    if not isinstance(path, str) or not _same_path(path, target.path):
        return f"reads as path {path!r}, not {target.path!r}"
    if not by_name:
        return None
    name = quota.get("name")
    # another tenant's target is named `<tenant>:<name>` (`validation.QuotaNaming`); VMS says `<name>`
    if isinstance(name, str) and name and name not in (target.name, target.name.partition(TENANT_SEPARATOR)[2]):
        return f"reads as quota {name!r}, not {target.name!r}"
    return None


class _Send(NamedTuple):
    """When a request of ours went out (its intent's time, until the PATCH), and where to."""

    cluster: str
    monotonic_at: float


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
        self.external_changes: list[tuple[str, int, Dimension, str]] = []
        """(cluster, quota id, dimension, reason) of limits (of that dimension only) found moved by
        someone else while settling a row, since the growth stage last took them
        (`take_external_changes`)."""
        self.settled: list[ActionOutcome] = []
        """Open rows settled by `reconcile` (at start or in a cycle), until the growth stage takes
        them (`take_settled`) for the cycle's `result` events."""
        self.views_would_create: list[str] = []
        """In observe mode, the managed views (and quotas) that enforce mode would create."""
        self._views_done: set[tuple[str, str]] = set()
        self._sent_at: dict[int, _Send] = {}
        """Action id → the monotonic time its PATCH went out (its intent's, until then), for the
        rows of this process still open: their landing window is measured on it, so a wall-clock
        step cannot end it early. A row an earlier process left has only its wall-clock
        `created_at`. Dropped when this process finishes the row, and at `reconcile` for a row
        finished elsewhere (a new leader settled it)."""

    def checkpoint(self, point: str) -> None:
        """A named point of the write-ahead sequence (`intent`, `patched`); crash tests hook it."""

    async def grow(self, decision: Decision, quota_id: int | None, writer: QuotaWriter, *,
                   events: Sequence[OutboxEntry] = ()) -> ActionOutcome:
        """Write-ahead, re-read, PATCH, verify, audit: one growth of one series. `events`: the
        outbox entries of the decision's `intent` event, committed with the intent row (the
        outcome's `intent_committed`; its `action_id` only while the row is ours to settle)."""
        assert decision.new_hard is not None
        dim, target = decision.dimension, decision.target

        def outcome(status: ActionStatus, reason: str, action_id: int | None, *,
                    intent_committed: bool = True) -> ActionOutcome:
            return ActionOutcome(target, dim, status, self.clock.now(), reason, decision.current_hard,
                                 decision.new_hard, action_id, intent_committed=intent_committed)

        if quota_id is None:
            return outcome(ActionStatus.FAILED, "no quota id in the observation", None, intent_committed=False)
        intent_at = self.clock.monotonic()
        try:  # FLEET: recorded only under our current lease epoch (same transaction)
            action_id = await asyncio.to_thread(
                self.actions.record, decision, mode="enforce", status="intent", now=self.clock.now(),
                quota_id=quota_id, fence=self.leadership.fence(target.cluster), events=events)
        except FencedOut as exc:
            log.warning("quota.grow_fenced", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, f"not the leader: {exc}", None, intent_committed=False)
        self._sent_at[action_id] = _Send(target.cluster, intent_at)
        self.checkpoint("intent")
        hard_field, soft_field = _LIMIT_FIELDS[dim]
        changes: dict[str, int] = {hard_field: decision.new_hard}
        if decision.new_soft is not None:
            changes[soft_field] = decision.new_soft
        try:
            live = await writer.get_quota(quota_id)
        except (TemporaryError, PermanentError) as exc:  # nothing was sent: a known failure
            await self._mark(action_id, "failed", f"{type(exc).__name__}: {exc}")
            log.error("quota.grow_failed", target=target.key, dimension=dim.value, error=str(exc))
            return outcome(ActionStatus.FAILED, str(exc), action_id)
        mismatch = _not_the_quota(live, target)
        if mismatch is not None:  # not the quota planned for: nothing of it is ours to write
            reason = f"quota id {quota_id} {mismatch}: not the quota planned for; not written"
            await self._mark(action_id, "replanned", reason)
            log.warning("quota.mismatched", target=target.key, dimension=dim.value, quota_id=quota_id,
                        live_path=live.get("path"), live_name=live.get("name"))
            return outcome(ActionStatus.REPLANNED, reason, action_id)
        live_hard = _limit(live, dim)
        if live_hard != decision.current_hard:
            reason = f"changed by someone else: hard limit {live_hard}, planned on {decision.current_hard}"
            await self._mark(action_id, "replanned", reason, live_hard=live_hard)
            log.warning("quota.changed", target=target.key, dimension=dim.value, live_hard=live_hard,
                        planned_hard=decision.current_hard)
            return outcome(ActionStatus.REPLANNED, reason, action_id)
        if not await self.leadership.epoch_is_current(target.cluster):  # FLEET: re-check right before the PATCH
            # deposed since the intent: the new leader settles the row (reconcile); we leave it be
            self._sent_at.pop(action_id, None)  # nothing was sent
            log.warning("quota.grow_fenced", target=target.key, dimension=dim.value, action_id=action_id)
            # the row (and its committed `intent` event) stays; its `result` is the new leader's
            return outcome(ActionStatus.FAILED, "lease lost before the PATCH", None)
        self._sent_at[action_id] = _Send(target.cluster, self.clock.monotonic())  # it can land from now on
        try:
            await writer.patch_quota(quota_id, **changes)
        except (TemporaryError, PermanentError) as exc:  # what VMS holds is for a read to say
            return await self._settle_patch_error(decision, quota_id, writer, action_id, exc, outcome)
        await self._mark(action_id, "patched", None)
        self.checkpoint("patched")
        try:
            reread = await writer.get_quota(quota_id)
        except (TemporaryError, PermanentError) as exc:
            await self._mark(action_id, "verify_failed", f"re-read failed: {exc}")
            return outcome(ActionStatus.VERIFY_FAILED, str(exc), action_id)
        mismatch = _not_the_quota(reread, target)
        verified = _limit(reread, dim) if mismatch is None else None
        if mismatch is not None or verified != decision.new_hard:
            reason = (f"read back {verified}, expected {decision.new_hard}" if mismatch is None
                      else f"re-read of quota id {quota_id} {mismatch}")
            await self._mark(action_id, "verify_failed", reason)
            log.error("quota.verify_failed", target=target.key, dimension=dim.value, read_back=verified)
            return outcome(ActionStatus.VERIFY_FAILED, reason, action_id)
        await self._mark(action_id, "verified", None)
        log.info("quota.grown", target=target.key, dimension=dim.value, old_hard=decision.current_hard,
                 new_hard=decision.new_hard, new_soft=decision.new_soft, action_id=action_id)
        return outcome(ActionStatus.VERIFIED, decision.reason, action_id)

    async def _settle_patch_error(self, decision: Decision, quota_id: int, writer: QuotaWriter, action_id: int,
                                  error: TemporaryError | PermanentError,
                                  outcome: Callable[[ActionStatus, str, int | None], ActionOutcome]) -> ActionOutcome:
        """The PATCH raised: re-read, whatever the error. A lost answer (`TemporaryError`) leaves
        the outcome unknown; so can a refusal (`PermanentError`), which may answer the transport's
        retry of an attempt that was applied, its answer lost. The new limit there → applied
        (`verified`, starting the cooldown); after a refusal at the first attempt, the old limit →
        `failed`; anything else (no answer, another quota, the old limit after a lost answer —
        the error's own or an earlier attempt's, `after_lost_answer` —: the request can still land)
        → `unknown`, left open for `reconcile` (the target frozen for growth until a read settles
        it)."""
        dim, target = decision.dimension, decision.target
        answer_lost = isinstance(error, TemporaryError) or error.after_lost_answer
        patch_error = f"{type(error).__name__}: {error}"
        live_hard: int | None = None
        answered = False
        try:
            live = await writer.get_quota(quota_id)
        except (TemporaryError, PermanentError) as exc:
            reread = f"re-read failed: {exc}"
        else:
            mismatch = _not_the_quota(live, target)
            if mismatch is None:
                answered, live_hard = True, _limit(live, dim)
                reread = f"re-read shows hard limit {live_hard}"
            else:
                reread = f"re-read of quota id {quota_id} {mismatch}"
        if isinstance(error, TemporaryError):
            what = f"answer lost ({error})"
        elif answer_lost:
            what = f"refused ({patch_error}) after an attempt whose answer was lost"
        else:
            what = f"refused ({patch_error})"
        if answered and live_hard == decision.new_hard:
            reason = f"{what}; {reread}: applied"
            await self._mark(action_id, "verified", reason, answer_lost=answer_lost, patch_error=patch_error)
            log.info("quota.grown", target=target.key, dimension=dim.value, old_hard=decision.current_hard,
                     new_hard=decision.new_hard, new_soft=decision.new_soft, action_id=action_id,
                     answer_lost=answer_lost, patch_error=patch_error)
            return outcome(ActionStatus.VERIFIED, decision.reason, action_id)
        if answered and not answer_lost and live_hard == decision.current_hard:
            await self._mark(action_id, "failed", f"{what}; {reread}: not applied", live_hard=live_hard)
            log.error("quota.grow_failed", target=target.key, dimension=dim.value, error=str(error))
            return outcome(ActionStatus.FAILED, str(error), action_id)
        reason = f"outcome unknown: {what}; {reread}; growth of this quota frozen until a read settles it"
        await self._mark(action_id, "unknown", reason, answer_lost=answer_lost, patch_error=patch_error,
                         live_hard=live_hard)
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

    def take_external_changes(self, cluster: str) -> list[tuple[int, Dimension, str]]:
        """The external changes found on `cluster` while settling, once each: (quota id, the
        dimension whose hard limit moved, reason)."""
        mine = [(quota_id, dim, reason) for c, quota_id, dim, reason in self.external_changes if c == cluster]
        self.external_changes = [e for e in self.external_changes if e[0] != cluster]
        return mine

    async def _mark(self, action_id: int, status: str, reason: str | None, **detail: Any) -> None:
        try:
            await asyncio.to_thread(self.actions.mark, action_id, status, self.clock.now(), reason, **detail)
        except BaseException:
            send = self._sent_at.get(action_id)
            if send is not None:  # the row may still read as open: settled by a read at the next cycle
                self.reconciled.discard(send.cluster)
            raise
        if status not in UNFINISHED:
            self._sent_at.pop(action_id, None)

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
        `landing_window_seconds` of its PATCH, on the monotonic clock; of its intent's wall time
        for a row an earlier process left) and is not yet visible stays open, its quota frozen.
        A read that answers for another path (`_not_the_quota`) settles nothing: as unreadable (by
        path only: a quota renamed since, same id and path, is the same quota, as for the cooldown).

        Returns how many rows were settled. A VMS error leaves the rest for the next cycle.
        """
        settled = 0
        now, monotonic_now = self.clock.now(), self.clock.monotonic()
        window = self.landing_window_seconds()
        still_open: set[int] = set()
        # taken before the read, so a row recorded meanwhile (its send time set after the commit)
        # is not mistaken for one finished elsewhere
        sends = [action_id for action_id, send in self._sent_at.items() if send.cluster == cluster]
        records = await asyncio.to_thread(self.actions.unfinished, cluster)
        open_rows = {record.id for record in records}
        for action_id in sends:
            if action_id not in open_rows:  # finished elsewhere (a new leader settled it)
                self._sent_at.pop(action_id, None)
        for index, record in enumerate(records):
            dim = Dimension(record.dimension)
            if record.quota_id is None:
                await self._settle(record, ActionStatus.ABANDONED, "no quota id", now)
                continue
            send = self._sent_at.get(record.id)
            # schedules run on the monotonic clock; only a row an earlier process left has none
            can_land = (monotonic_now < send.monotonic_at + window if send is not None
                        else now < record.created_at + window)
            live: dict[str, Any] = {}
            try:
                live = await writer.get_quota(record.quota_id)
            except TemporaryError as exc:
                log.warning("growth.reconcile_deferred", cluster=cluster, action_id=record.id, error=str(exc))
                still_open.update(r.quota_id for r in records[index:] if r.quota_id is not None)
                self.unsettled[cluster] = frozenset(still_open)
                return settled
            except PermanentError as exc:
                unreadable: str | None = f"quota unreadable: {exc}"
            else:
                mismatch = _not_the_quota(live, TargetId(record.cluster, record.target, record.path), by_name=False)
                unreadable = None if mismatch is None else f"quota id {record.quota_id} {mismatch}"
            if unreadable is not None:
                if can_land:
                    still_open.add(record.quota_id)
                    continue
                await self._settle(record, ActionStatus.ABANDONED, unreadable, now)
                settled += 1
                continue
            live_hard = _limit(live, dim)
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
                what = "limit" if dim is Dimension.BYTES else "inode limit"
                reason = f"{what} is now {live_hard}: changed by someone else; not overwritten"
                self.external_changes.append((cluster, record.quota_id, dim, reason))
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
        `exists`, `created`, `would_create`, or `no_policy`. What is missing is created, so both
        are looked up by path in listings the VMS did not change while they were paged (the
        writer's; `truncated` otherwise, and tried again next cycle): a view a page shift hid from
        an unfiltered listing of a busy cluster was created a second time."""
        name = view_name(view)
        existing_views = {v.get("path") for v in await writer.list_views(path=view.path)}
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
