"""Growth of filesystem targets: a recommendation by default, a configured command in enforce mode.

A filesystem cannot be PATCHed. When the quota rule says a filesystem should grow
(`quotapilot.forecasting.capacity.filesystem_growth`, with the target's growth policy:
`grow_at`, `target_utilization`, `lead_time`, `horizon`, `step_bytes`, `min_growth_bytes`,
`max_growth_bytes`, `max_hard_limit_bytes`, `cooldown` — `[[policy.overrides]]` match a
filesystem's name or path too):

- without a `command`, or in observe mode: a recommendation, audited as `would_grow` (the same
  audit trail as quotas, `GET /api/v1/actions`), nothing run (dry-run: the command line it would
  have run is in the audit's detail);
- in enforce mode with a `command`: the command runs with the placeholders filled in
  ({name} {path} {grow_bytes} {new_size_bytes}), as an argument vector — no shell — bounded by
  `command_timeout` (killed after it); the filesystem is re-read with statvfs and the action is
  `verified` when it grew, else `verify_failed`; a non-zero exit or a missing program is `failed`
  (with the exit code or the error). A command killed after its timeout (or cancelled), or one
  whose filesystem cannot be re-read, may have done its work (`lvextend -r` extends the volume,
  then its resize is killed): `unknown`, which counts as a growth for the cooldown and the rate
  limit, as a quota PATCH whose answer was lost — so a relative `-L +{grow_bytes}B` is not run
  again at the next poll. A `failed` command starts the cooldown too (not counted as a growth):
  a non-zero exit may follow part of the work (`lvextend` extended the volume, then `-r`'s
  resize failed), and a program that cannot run will not be found at the next poll either; it
  runs again once the cooldown is over, its critical `growth_failed` firing meanwhile. Every
  outcome is audited and goes into the cycle's actions, so alerts
  (`growth_*`) and events see it as they see a quota's.

The guards a quota's growth passes hold a filesystem's too, with the same names, audit rows
(once per episode, not every poll) and `blocked` events: the kill switch (`policy.kill_switch`,
or the stored one) and a pause of the filesystem (by name or path) hold it as `paused` (guards
`kill_switch`, `paused`), checked before the cooldown; a size at `max_hard_limit_bytes` is
`blocked` (guard `max_hard_limit`). A growth on a sample the collector has not confirmed
(`PollResult.unconfirmed`: another filesystem answered at the path, its size moved without a
growth of ours, its usage jumped) waits for the next poll, unaudited.

The audit row is written before the command runs, with status `running` (not one the quota
actuator reconciles); a row a crash left `running` is settled as `unknown` when the stage opens.
The growth's `intent` event is committed with the audit row (`DecisionEvents`), as the quota
growth stage does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER, observation_of, target_id
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.settings import FilesystemTarget, Settings
from quotapilot.daemon.stages.growth import DecisionEvents, NoDecisionEvents, kill_switch_reason
from quotapilot.daemon.store.actions import RUNNING, ActionStore
from quotapilot.daemon.store.overrides import Override, OverrideStore
from quotapilot.forecasting.capacity import GrowthRecommendation, filesystem_growth
from quotapilot.forecasting.types import (
    ActionOutcome,
    ActionStatus,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    TargetId,
)
from quotapilot.forecasting.words import format_bytes

log = get_logger(__name__)

StatVfs = Callable[[str], os.statvfs_result]


def command_line(target: FilesystemTarget, recommendation: GrowthRecommendation) -> list[str]:
    """The configured command with its placeholders filled (each argument on its own: no shell);
    the settings refuse any placeholder but `settings.COMMAND_PLACEHOLDERS`, the keys here."""
    values = {"name": target.name, "path": str(target.path), "grow_bytes": str(recommendation.grow_bytes),
              "new_size_bytes": str(recommendation.new_size_bytes)}
    return [part.format(**values) for part in target.command]


class FilesystemGrowthStage:
    """Recommends or runs the growth of filesystem targets (before the alerting stage)."""

    name = "filesystem_growth"

    def __init__(self, settings: Settings, clock: Clock, actions: ActionStore, *,
                 overrides: OverrideStore | None = None, statvfs: StatVfs = os.statvfs,
                 events: DecisionEvents | None = None) -> None:
        """`overrides`: the pauses and the stored kill switch (None: those of the audit's store);
        `events`: the `intent`/`blocked` events, committed with the audit rows (None: no event sinks)."""
        self.settings = settings
        self.clock = clock
        self.actions = actions
        self.overrides = overrides or OverrideStore(actions.db)
        self.statvfs = statvfs
        self.events = events or NoDecisionEvents()
        self.targets = {t.name: t for t in settings.filesystems}
        self._recorded_guard: dict[TargetId, str] = {}
        """The guard whose hold was last audited per filesystem (once per episode, as for quotas)."""
        self._settled: list[ActionOutcome] = []
        """Rows a crash left `running`, settled as `unknown` at open: the next cycle's `result` events."""
        self._last_prune: float | None = None

    async def open(self) -> None:
        """Settle what a crash left behind before any new command: a row still `running` may have
        grown the filesystem (its command was under way), so it becomes `unknown` — counted, as
        a quota intent a crash left open is frozen until a read settles it."""
        now = self.clock.now()
        for record in await asyncio.to_thread(self.actions.with_status, RUNNING, FILESYSTEM_CLUSTER):
            configured = self.targets.get(record.target)
            if configured is None or str(configured.path) != record.path:
                continue  # another host's filesystem (a fleet shares the store): its command may be running now
            reason = "the daemon stopped while the command ran: outcome unknown"
            await asyncio.to_thread(self.actions.mark, record.id, str(ActionStatus.UNKNOWN), now, reason)
            log.warning("filesystem.growth_unknown", target=record.target, action_id=record.id, reason=reason)
            self._settled.append(ActionOutcome(
                TargetId(record.cluster, record.target, record.path), Dimension(record.dimension),
                ActionStatus.UNKNOWN, now, reason, record.old_hard, record.new_hard, record.id))

    async def on_cycle(self, ctx: CycleContext) -> None:
        if ctx.poll.cluster != FILESYSTEM_CLUSTER or not ctx.poll.ok:
            return
        ctx.settled.extend(self._settled)
        self._settled = []
        prune = self._last_prune is None or ctx.now - self._last_prune >= 3600.0
        if prune:
            self._last_prune = ctx.now
        last, overrides = await asyncio.to_thread(self._cycle_input, ctx.now, prune)
        kill_reason = kill_switch_reason(self.settings.policy.kill_switch, overrides)
        pauses = [o for o in overrides if not o.is_kill_switch]
        for obs in ctx.poll.observations:
            configured = self.targets.get(obs.target.name)
            if configured is None or not obs.hard_limit_bytes:
                continue
            rules = self.settings.policy.rules_for(obs.target.name, obs.target.path)
            series = ctx.forecasts.get((obs.target, Dimension.BYTES))
            recommendation = filesystem_growth(
                used_bytes=obs.used_bytes, size_bytes=obs.hard_limit_bytes,
                forecast=None if series is None else series.forecast, now=ctx.now, grow_at=rules.grow_at,
                target_utilization=rules.target_utilization, lead_time_seconds=rules.lead_time_seconds,
                horizon_seconds=rules.horizon_seconds, step_bytes=rules.step_bytes,
                min_growth_bytes=rules.min_growth_bytes, max_growth_bytes=rules.max_growth_bytes,
                max_hard_limit_bytes=rules.max_hard_limit_bytes)
            if recommendation is None:  # a decision all the same (as a quota's): its growth alerts resolve
                self._recorded_guard.pop(obs.target, None)
                ctx.decisions.append(Decision(
                    target=obs.target, dimension=Dimension.BYTES, kind=DecisionKind.NONE, t=ctx.now,
                    reason=f"stays under grow_at {rules.grow_at:.2f} within lead time",
                    current_used=obs.used_bytes, current_hard=obs.hard_limit_bytes))
                continue
            decision = Decision(target=obs.target, dimension=Dimension.BYTES, kind=DecisionKind.GROW,
                                reason=recommendation.reason, t=ctx.now, current_used=obs.used_bytes,
                                current_hard=obs.hard_limit_bytes, new_hard=recommendation.new_size_bytes,
                                numbers=(("wanted_hard", float(recommendation.wanted_size_bytes)),))
            pause = next((o for o in pauses if o.applies_to(obs.target)), None)
            # the guards in the planner's order (`plan_cycle`), with its names and reasons
            if recommendation.guard is not None:
                decision = replace(decision, kind=DecisionKind.BLOCKED, guard=recommendation.guard, new_hard=None)
            elif kill_reason is not None:
                decision = _blocked(decision, "kill_switch", f"kill switch: {kill_reason}")
            elif pause is not None:
                decision = _blocked(decision, "paused", f"paused: {pause.reason or 'paused'}")
            else:
                grown_at = last.get((obs.target.name, Dimension.BYTES))
                if grown_at is not None and ctx.now - grown_at < rules.cooldown_seconds:
                    self._recorded_guard.pop(obs.target, None)  # a held episode ends (as a quota's at its cooldown)
                    continue
            if decision.kind is DecisionKind.BLOCKED:
                ctx.decisions.append(decision)
                ctx.actions.append(await self._hold(decision, rules.mode))
                continue
            self._recorded_guard.pop(obs.target, None)
            if obs.target.name in ctx.poll.unconfirmed:  # as `stages.growth._hold_if_unconfirmed`: a hold of one poll
                ctx.decisions.append(replace(
                    decision, kind=DecisionKind.NONE, guard="unconfirmed",
                    reason="sample not confirmed yet (another filesystem answered at the path, its size moved "
                           "without a growth of ours, or its usage jumped): growth waits for the next sample"))
                continue
            ctx.decisions.append(decision)
            outcome = await self._act(configured, obs, decision, recommendation, rules.mode)
            ctx.actions.append(outcome)

    def _cycle_input(self, now: float, prune: bool) -> tuple[dict[tuple[str, Dimension], float], list[Override]]:
        """The last growth or failed command of each filesystem (the cooldown's start) and the overrides in force (the
        kill switch and the pauses), read once per cycle (store reads: runs in a thread). With
        `prune`, the audit retention of the filesystems' rows first: their `unknown` rows are never
        settled (the quota growth stage's pruning keeps open rows, and runs only with a cluster)."""
        if prune:
            self.actions.prune(now - self.settings.store.audit_retention_seconds, cluster=FILESYSTEM_CLUSTER,
                               open_rows=True)
        return (self.actions.last_growth_at(FILESYSTEM_CLUSTER, also=(str(ActionStatus.FAILED),)),
                self.overrides.active(now))

    async def _hold(self, decision: Decision, mode: str) -> ActionOutcome:
        """A growth a guard holds: `paused` (kill switch, pause) or `blocked`, audited with its
        `blocked` event once per episode (as `stages.growth.GrowthStage._act`); nothing runs. The
        outcome goes into the cycle at every poll it holds (the alerts and the snapshot read it),
        with an `action_id` only at the audited first: the one `result` event of the episode."""
        status = ActionStatus.PAUSED if decision.guard in ("paused", "kill_switch") else ActionStatus.BLOCKED
        outcome = ActionOutcome(decision.target, decision.dimension, status, decision.t, decision.reason,
                                old_hard=decision.current_hard, new_hard=decision.new_hard)
        guard = decision.guard or "blocked"
        if self._recorded_guard.get(decision.target) == guard:
            return outcome
        self._recorded_guard[decision.target] = guard
        entries = self.events.decision_entries(decision, mode=mode, now=decision.t)
        action_id = await asyncio.to_thread(self.actions.record, decision, mode=mode, status=status.value,
                                            now=decision.t, quota_id=None, events=entries)
        self.events.decisions_committed(entries)
        log.warning("filesystem.growth_blocked", target=decision.target.name, guard=decision.guard,
                    reason=decision.reason)
        return replace(outcome, action_id=action_id)

    async def _act(self, target: FilesystemTarget, obs: Observation, decision: Decision,
                   recommendation: GrowthRecommendation, mode: str) -> ActionOutcome:
        argv = command_line(target, recommendation) if target.command else []
        now = self.clock.now()
        entries = self.events.decision_entries(decision, mode=mode, now=now)
        if mode != "enforce" or not argv:
            why = "observe mode (dry run)" if argv else "recommendation only (no command configured)"
            action_id = await asyncio.to_thread(self.actions.record, decision, mode=mode, status="would_grow",
                                                now=now, quota_id=None, reason=f"{decision.reason}; {why}",
                                                events=entries)
            self.events.decisions_committed(entries)
            if argv:
                await asyncio.to_thread(self.actions.mark, action_id, "would_grow", now, command=argv)
            log.info("filesystem.would_grow", target=target.name, grow_bytes=recommendation.grow_bytes,
                     command=argv or None)
            return ActionOutcome(obs.target, Dimension.BYTES, ActionStatus.WOULD_GROW, now, why,
                                 old_hard=obs.hard_limit_bytes, new_hard=recommendation.new_size_bytes,
                                 action_id=action_id)
        action_id = await asyncio.to_thread(self.actions.record, decision, mode=mode, status=RUNNING, now=now,
                                            quota_id=None, events=entries)
        self.events.decisions_committed(entries)
        try:
            status, reason, after = await self._run(target, argv, obs.hard_limit_bytes)
        except BaseException as exc:  # cancelled (or broke) mid-command: it may have grown the filesystem
            why = "cancelled" if isinstance(exc, asyncio.CancelledError) else f"{type(exc).__name__}: {exc}"
            await asyncio.shield(asyncio.to_thread(
                self.actions.mark, action_id, str(ActionStatus.UNKNOWN), self.clock.now(),
                f"{why} while {argv[0]} ran: outcome unknown", command=argv))
            raise
        end = self.clock.now()
        await asyncio.to_thread(self.actions.mark, action_id, str(status), end, reason, command=argv)
        if status is ActionStatus.VERIFIED:
            log.info("filesystem.grown", target=target.name, status=str(status), reason=reason)
        else:
            event = "filesystem.growth_unknown" if status is ActionStatus.UNKNOWN else "filesystem.growth_failed"
            log.warning(event, target=target.name, status=str(status), reason=reason)
        return ActionOutcome(obs.target, Dimension.BYTES, status, end, reason, old_hard=obs.hard_limit_bytes,
                             new_hard=after if after is not None else recommendation.new_size_bytes,
                             action_id=action_id)

    async def _run(self, target: FilesystemTarget, argv: Sequence[str],
                   observed: int | None) -> tuple[ActionStatus, str, int | None]:
        """(status, reason, size after) of running `argv` and re-reading the filesystem (`observed`:
        the size of the cycle's sample, when statvfs cannot re-read it first)."""
        before = await self._size(target)
        if before is None:
            before = observed
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            return ActionStatus.FAILED, f"cannot run {argv[0]}: {exc}", None
        try:
            # the command's own time bound is real time, whatever the daemon's clock
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=target.command_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            after = await self._size(target)
            return (ActionStatus.UNKNOWN, f"{argv[0]} killed after {target.command_timeout:g} s: outcome unknown "
                    f"(size {after}, was {before}); counts as a growth for the cooldown", after)
        except asyncio.CancelledError:  # the command must not go on unwatched
            if proc.returncode is None:
                proc.kill()
            raise
        text = output.decode(errors="replace").strip()[-300:]
        if proc.returncode != 0:
            return ActionStatus.FAILED, f"{argv[0]} exited {proc.returncode}: {text}", None
        after = await self._size(target)
        if after is None or before is None:
            return (ActionStatus.UNKNOWN, f"{argv[0]} succeeded but the size cannot be read (now {after}, was "
                    f"{before}): outcome unknown", after)
        if after <= before:
            return ActionStatus.VERIFY_FAILED, f"{argv[0]} succeeded but the size is {after} (was {before})", after
        return ActionStatus.VERIFIED, f"grown from {format_bytes(before)} to {format_bytes(after)}", after

    async def _size(self, target: FilesystemTarget) -> int | None:
        try:
            st = await asyncio.wait_for(asyncio.to_thread(self.statvfs, str(target.path)),
                                        timeout=self.settings.filesystem.statvfs_timeout_seconds)
        except (TimeoutError, OSError):
            return None
        return observation_of(target_id(target), self.clock.now(), st).hard_limit_bytes


def _blocked(decision: Decision, guard: str, reason: str) -> Decision:
    """`decision` held by `guard` (as the planner's `_blocked`: "would grow to …, but" stays readable)."""
    return replace(decision, kind=DecisionKind.BLOCKED, guard=guard, reason=f"{reason}; {decision.reason}")
