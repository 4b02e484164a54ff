"""The filesystem targets as a pseudo-cluster of the daemon (`FILESYSTEM_CLUSTER`): a collector
with the VMS collector's contract (`poll()` → `PollResult`), so the daemon's cycle — store,
forecaster, alert rules, snapshot, `/metrics`, `/api/v1/targets` — treats a filesystem as a target
like a quota. A poll never fails as a whole: an unreachable mount is a dropped sample with reason
`unreachable` (its detail says timeout, error, not_mounted: the path was a mount point and is not
one now, or changed: another filesystem answered at the path), and the other targets go on. A
sample the poller holds (its size moved without a growth of ours, its usage jumped) is in
`PollResult.unconfirmed`, as a quota's: kept and forecast, never acted or alerted on.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.fs.poller import (
    FILESYSTEM_CLUSTER,
    FilesystemPoller,
    GrownSince,
    IsMount,
    StatVfs,
    Unreachable,
)
from quotapilot.daemon.runtime.cycle import DroppedSample, PollResult
from quotapilot.daemon.settings import FilesystemSettings, FilesystemTarget

UNREACHABLE = "unreachable"


class FilesystemCollector:
    """`poll()` reads every `[[filesystems]]` entry (see `FilesystemPoller`)."""

    def __init__(self, targets: Sequence[FilesystemTarget], settings: FilesystemSettings, clock: Clock, *,
                 statvfs: StatVfs | None = None, ismount: IsMount | None = None,
                 grown_since: GrownSince | None = None) -> None:
        """`grown_since`: the audit's word on whether a growth of ours explains a size that moved
        (`ActionStore.growth_started_since` of `FILESYSTEM_CLUSTER`; None: nothing does)."""
        self.name = FILESYSTEM_CLUSTER
        self.poller = FilesystemPoller(targets, clock, timeout_seconds=settings.statvfs_timeout_seconds,
                                       statvfs=statvfs or os.statvfs, ismount=ismount or os.path.ismount,
                                       grown_since=grown_since)
        self.requests_made = 0
        self.listings_unsettled = 0  # nothing is listed (the VMS collector's contract)
        self.dropped_total: Counter[str] = Counter()
        self.poll_errors_total: Counter[str] = Counter()
        self.last_unreachable: tuple[Unreachable, ...] = ()
        self._configured = tuple((t.name, str(t.path), t.tier) for t in targets)

    def log_tls_mode(self) -> None:
        """No TLS: local system calls (the VMS collector's contract)."""

    def close(self) -> None:
        self.poller.close()

    async def poll(self) -> PollResult:
        result = await self.poller.poll()
        self.requests_made += len(self.poller.targets)
        self.last_unreachable = result.unreachable
        dropped = tuple(DroppedSample(FILESYSTEM_CLUSTER, u.target.name, UNREACHABLE, f"{u.reason}: {u.detail}")
                        for u in result.unreachable)
        self.dropped_total.update(d.reason for d in dropped)
        return PollResult(cluster=FILESYSTEM_CLUSTER, t=result.t, observations=result.observations,
                          dropped=dropped, requests=len(self.poller.targets),
                          duration_seconds=result.duration_seconds, unconfirmed=result.unconfirmed)

    def metrics(self) -> FilesystemMetrics:
        return FilesystemMetrics(self._configured, lambda: self.last_unreachable)


class FilesystemMetrics:
    """`quotapilot_filesystem_info{target,path,tier}` (1: join it to the `quotapilot_target_*`
    series of `cluster="filesystems"` for the tier) and `quotapilot_filesystem_reachable{target,tier}`
    (0 while statvfs times out or fails). Reads the last poll's result (immutable), no IO."""

    def __init__(self, configured: Sequence[tuple[str, str, str]],
                 unreachable: Callable[[], Sequence[Unreachable]]) -> None:
        self._configured = configured
        self._unreachable = unreachable

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("quotapilot_filesystem_info", "A configured filesystem target and its tier "
                                 "(always 1).", labels=["cluster", "target", "path", "tier"])
        reachable = GaugeMetricFamily("quotapilot_filesystem_reachable", "1 when the last statvfs of the "
                                      "filesystem answered in time, 0 when it timed out or failed.",
                                      labels=["cluster", "target", "tier"])
        down = {u.target.name for u in self._unreachable()}
        for name, path, tier in self._configured:
            info.add_metric([FILESYSTEM_CLUSTER, name, path, tier], 1.0)
            reachable.add_metric([FILESYSTEM_CLUSTER, name, tier], 0.0 if name in down else 1.0)
        yield info
        yield reachable
