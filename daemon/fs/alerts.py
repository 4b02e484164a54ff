"""Tier-aware alerting of filesystem targets.

- utilization thresholds per tier (`[filesystem] tier_thresholds`, default 80 % / 90 % for each),
  overridden per filesystem by its `warning_at` / `critical_at`: the alerting stage reads them
  through `thresholds_for` for every `kind="filesystem"` target (the alert carries a `tier`
  label, so a route can page a hot tier and mail a cold one);
- `filesystem_unreachable` (critical): the mount did not answer statvfs in time or failed, is not
  mounted any more, or another filesystem answers at its path (see `poller`); one
  condition per poll from `FilesystemAlertStage`, through the alerting stage's state machine;
  resolved by the next successful read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from quotapilot.alerts.model import Condition, Severity, alert_id
from quotapilot.daemon.fs.collector import UNREACHABLE
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.settings import Settings
from quotapilot.forecasting.types import TargetId

RaiseAlerts = Callable[[Sequence[Condition]], Awaitable[int]]


def thresholds_for(settings: Settings, target: TargetId) -> tuple[float, float]:
    """(warning_at, critical_at) of a filesystem target: its own, else its tier's."""
    configured = next((f for f in settings.filesystems if f.name == target.name), None)
    if configured is None:
        return settings.filesystem.thresholds(target.tier or "warm")
    return settings.filesystem.thresholds(configured.tier, configured.warning_at, configured.critical_at)


def unreachable_conditions(ctx: CycleContext, tiers: Mapping[str, str],
                           paths: Mapping[str, str] | None = None) -> list[Condition]:
    """One condition per filesystem of this poll: critical when unreachable, clear when read.
    `paths`: each filesystem's mount point, the alert's `path` as its other alerts and its metrics
    carry it (it was "/", pointing the on-call at the root filesystem)."""
    failed = {d.target: d.detail for d in ctx.poll.dropped if d.reason == UNREACHABLE}
    names = sorted({o.target.name for o in ctx.poll.observations} | set(failed))
    return [Condition(
        alert_id=alert_id(FILESYSTEM_CLUSTER, name, "filesystem_unreachable"), kind="filesystem_unreachable",
        cluster=FILESYSTEM_CLUSTER, target=name, path=(paths or {}).get(name, "/"),
        severity=Severity.CRITICAL if name in failed else None,
        summary=(f"filesystem {name} ({tiers.get(name, '?')} tier) is unreachable: {failed[name]}" if name in failed
                 else f"filesystem {name} answers again"),
        labels=(("tier", tiers.get(name, "")),), for_seconds=0.0) for name in names]


class FilesystemAlertStage:
    """Raises `filesystem_unreachable` for the filesystem pseudo-cluster's cycles (after alerting)."""

    name = "filesystem_alerts"

    def __init__(self, settings: Settings, raise_alerts: RaiseAlerts) -> None:
        self.tiers = {f.name: f.tier for f in settings.filesystems}
        self.paths = {f.name: str(f.path) for f in settings.filesystems}
        self.raise_alerts = raise_alerts

    async def on_cycle(self, ctx: CycleContext) -> None:
        if ctx.poll.cluster != FILESYSTEM_CLUSTER:
            return
        await self.raise_alerts(unreachable_conditions(ctx, self.tiers, self.paths))
