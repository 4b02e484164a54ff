"""Growth of filesystem targets: a recommendation by default, a configured command in enforce mode.

A filesystem cannot be PATCHed. When the quota rule says a filesystem should grow
(`quotapilot.forecasting.capacity.filesystem_growth`, with the target's growth policy:
`grow_at`, `target_utilization`, `lead_time`, `horizon`, `step_bytes`, `min_growth_bytes`,
`cooldown` — `[[policy.overrides]]` match a filesystem's name or path too):

- without a `command`, or in observe mode: a recommendation, audited as `would_grow` (the same
  audit trail as quotas, `GET /api/v1/actions`), nothing run (dry-run: the command line it would
  have run is in the audit's detail);
- in enforce mode with a `command`: the command runs with the placeholders filled in
  ({name} {path} {grow_bytes} {new_size_bytes}), as an argument vector — no shell — bounded by
  `command_timeout` (killed after it); the filesystem is re-read with statvfs and the action is
  `verified` when it grew, else `verify_failed`; a non-zero exit, a timeout or a missing
  program is `failed` (with the exit code or the error). Every outcome is audited and goes into
  the cycle's actions, so alerts (`growth_*`) and events see it as they see a quota's.

The audit row is written before the command runs, with status `running` (not one the quota
actuator reconciles: a crash mid-command leaves it for a human to read). The growth's `intent`
event is committed with the audit row (`DecisionEvents`), as the quota growth stage does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER, observation_of, target_id
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.settings import FilesystemTarget, Settings
from quotapilot.daemon.stages.growth import DecisionEvents, NoDecisionEvents
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.forecasting.capacity import GrowthRecommendation, filesystem_growth
from quotapilot.forecasting.types import (
    ActionOutcome,
    ActionStatus,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
)

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
                 statvfs: StatVfs = os.statvfs, events: DecisionEvents | None = None) -> None:
        """`events`: the `intent` events, committed with the audit rows (None: no event sinks)."""
        self.settings = settings
        self.clock = clock
        self.actions = actions
        self.statvfs = statvfs
        self.events = events or NoDecisionEvents()
        self.targets = {t.name: t for t in settings.filesystems}

    async def on_cycle(self, ctx: CycleContext) -> None:
        if ctx.poll.cluster != FILESYSTEM_CLUSTER or not ctx.poll.ok:
            return
        last = await asyncio.to_thread(self.actions.last_growth_at, FILESYSTEM_CLUSTER)
        for obs in ctx.poll.observations:
            configured = self.targets.get(obs.target.name)
            if configured is None or not obs.hard_limit_bytes:
                continue
            rules = self.settings.policy.rules_for(obs.target.name, obs.target.path)
            grown_at = last.get((obs.target.name, Dimension.BYTES))
            if grown_at is not None and ctx.now - grown_at < rules.cooldown_seconds:
                continue
            series = ctx.forecasts.get((obs.target, Dimension.BYTES))
            recommendation = filesystem_growth(
                used_bytes=obs.used_bytes, size_bytes=obs.hard_limit_bytes,
                forecast=None if series is None else series.forecast, now=ctx.now, grow_at=rules.grow_at,
                target_utilization=rules.target_utilization, lead_time_seconds=rules.lead_time_seconds,
                horizon_seconds=rules.horizon_seconds, step_bytes=rules.step_bytes,
                min_growth_bytes=rules.min_growth_bytes)
            if recommendation is None:
                continue
            decision = Decision(target=obs.target, dimension=Dimension.BYTES, kind=DecisionKind.GROW,
                                reason=recommendation.reason, t=ctx.now, current_used=obs.used_bytes,
                                current_hard=obs.hard_limit_bytes, new_hard=recommendation.new_size_bytes)
            ctx.decisions.append(decision)
            outcome = await self._act(configured, obs, decision, recommendation, rules.mode)
            ctx.actions.append(outcome)

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
        action_id = await asyncio.to_thread(self.actions.record, decision, mode=mode, status="running", now=now,
                                            quota_id=None, events=entries)
        self.events.decisions_committed(entries)
        status, reason, after = await self._run(target, argv)
        end = self.clock.now()
        await asyncio.to_thread(self.actions.mark, action_id, str(status), end, reason, command=argv)
        log.info("filesystem.grown" if status is ActionStatus.VERIFIED else "filesystem.growth_failed",
                 target=target.name, status=str(status), reason=reason)
        return ActionOutcome(obs.target, Dimension.BYTES, status, end, reason, old_hard=obs.hard_limit_bytes,
                             new_hard=after if after is not None else recommendation.new_size_bytes,
                             action_id=action_id)

    async def _run(self, target: FilesystemTarget, argv: Sequence[str]) -> tuple[ActionStatus, str, int | None]:
        """(status, reason, size after) of running `argv` and re-reading the filesystem."""
        before = await self._size(target)
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
            return ActionStatus.FAILED, f"{argv[0]} killed after {target.command_timeout:g} s", None
        text = output.decode(errors="replace").strip()[-300:]
        if proc.returncode != 0:
            return ActionStatus.FAILED, f"{argv[0]} exited {proc.returncode}: {text}", None
        after = await self._size(target)
        if after is None or before is None or after <= before:
            return ActionStatus.VERIFY_FAILED, f"{argv[0]} succeeded but the size is {after} (was {before})", after
        return ActionStatus.VERIFIED, f"grown from {before} to {after} bytes", after

    async def _size(self, target: FilesystemTarget) -> int | None:
        try:
            st = await asyncio.wait_for(asyncio.to_thread(self.statvfs, str(target.path)),
                                        timeout=self.settings.filesystem.statvfs_timeout_seconds)
        except (TimeoutError, OSError):
            return None
        return observation_of(target_id(target), self.clock.now(), st).hard_limit_bytes
