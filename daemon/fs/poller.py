"""Filesystem targets: bytes and inodes of mounted filesystems from `statvfs`, never blocking the loop.

Each `[[filesystems]]` entry is read with `os.statvfs`, then `os.path.ismount`, in a worker
thread, both bounded by `statvfs_timeout_seconds` (a hung NFS mount blocks the lstat of its mount
point as it blocks statvfs). A read that does not return in time makes that target *unreachable*
for this poll while the others go on; the stuck thread is left to finish on its own (a thread
cannot be killed), and no second read is started on that mount until it has — so one hung mount
holds at most one thread, never the pool. An error (no such path, permission, `ESTALE`) is
unreachable too, with the error. Each read runs in a daemon thread of its own, so a hung one
never holds the process's exit either.

A sample is not taken as truth just because statvfs answered (the actuator's trust rules): an NFS
mount that goes away leaves the bare directory on the filesystem under it, and statvfs then
answers *that* filesystem's numbers. Each mount keeps the filesystem id (`f_fsid`), size and usage
of its last believed sample:

- a path that was a mount point when its filesystem was first believed (the first successful
  read, or a new filesystem confirmed as below) and is not one now is unreachable (reason
  `not_mounted`) for every poll that lasts — whatever statvfs answers there is the filesystem
  under it, and no number of answers from it is believed — and is read again once the path is a
  mount point again (then the `f_fsid` rule below applies). A path that never was a mount point
  (a directory on the root filesystem, or on a mount further up) has the `f_fsid` rule alone: a
  mount further up that goes away is believed at the second answer, as a re-mount is;
- another `f_fsid` makes the target unreachable for that poll (reason `changed`: "filesystem
  changed or not mounted"); a second answer from the same new filesystem confirms it (a volume
  re-mounted on purpose is the new truth after one poll) and starts its history afresh;
- a size that moved (beyond the noise a thin-provisioned export shows) without a growth of ours
  (`grown_since`: the audit says a command of ours was started on it since the last believed
  sample), or usage that moved beyond what its recent rate makes plausible
  (`vms.validation.plausible_rise`, the quota samples' rule), is held one poll: kept and forecast,
  but named in `FilesystemPoll.unconfirmed`, so neither the growth stage nor an alert acts on it.
  The next sample is believed whatever it says (never two polls held in a row, as a quota's
  limit): a one-poll glitch is held and the return from it believed, a lasting change believed
  on the poll that repeats it.

`FilesystemPoller.poll()` returns a `FilesystemPoll`: one `Observation` per reachable target
(`TargetKind.FILESYSTEM`, `tier` set, `cluster` = `FILESYSTEM_CLUSTER`), the same type the VMS
collector produces, so the forecaster, the runway arithmetic and the alert rules apply as they
are; the unreachable ones with their reason; and the names of the held ones. Logs fire on
transitions only (`filesystem.unreachable`, `filesystem.recovered`), and once per held sample
(`filesystem.sample_held`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.settings import FilesystemTarget
from quotapilot.daemon.vms.validation import RATE_WINDOW, plausible_rise, robust_rate
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

log = get_logger(__name__)

FILESYSTEM_CLUSTER = "filesystems"
"""The `cluster` of every filesystem target (alert ids `filesystems/<name>/<kind>`)."""

StatVfs = Callable[[str], os.statvfs_result]

IsMount = Callable[[str], bool]
"""`os.path.ismount`: whether the path is a mount point (False on an error it cannot lstat)."""

GrownSince = Callable[[str, float], bool]
"""(target name, since) → whether a growth command of ours was started on it at or after `since`
(`ActionStore.growth_started_since`; a blocking store read, called in a thread)."""


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A filesystem that could not be read this poll, and why."""

    target: TargetId
    reason: str
    """"timeout" (statvfs or ismount did not return in time, or a previous read still hangs),
    "error", "not_mounted" (the path was a mount point and is not one now), or "changed" (another
    filesystem answered at the path: not mounted, or re-mounted)."""
    detail: str


@dataclass(frozen=True, slots=True)
class FilesystemPoll:
    t: float
    observations: tuple[Observation, ...] = ()
    unreachable: tuple[Unreachable, ...] = ()
    duration_seconds: float = 0.0
    unconfirmed: frozenset[str] = frozenset()
    """Names of the targets whose sample is held this poll (size or usage moved implausibly)."""


def target_id(target: FilesystemTarget) -> TargetId:
    return TargetId(FILESYSTEM_CLUSTER, target.name, str(target.path), TargetKind.FILESYSTEM, tier=target.tier)


def observation_of(target: TargetId, t: float, st: os.statvfs_result) -> Observation:
    """Bytes as `df` counts them: used = (blocks - free) × fragment size; the limit is what an
    unprivileged writer can reach (used + available), so 100 % means "writes fail"."""
    frsize = st.f_frsize or st.f_bsize
    used = (st.f_blocks - st.f_bfree) * frsize
    available = st.f_bavail * frsize
    inodes_used = st.f_files - st.f_ffree if st.f_files else None
    inode_limit = (st.f_files - st.f_ffree + st.f_favail) if st.f_files else None
    return Observation(target=target, t=t, used_bytes=used, hard_limit_bytes=used + available or None,
                       used_inodes=inodes_used, hard_limit_inodes=inode_limit or None)


def size_of(st: os.statvfs_result) -> int:
    """The filesystem's total size in bytes (what a growth changes)."""
    return st.f_blocks * (st.f_frsize or st.f_bsize)


@dataclass(frozen=True, slots=True)
class _Reading:
    """One read of a path, in one thread: its statvfs and whether it is a mount point."""

    st: os.statvfs_result
    is_mount_point: bool


@dataclass(frozen=True, slots=True)
class _Believed:
    """What a mount's next sample is judged against: its last believed one."""

    t: float
    fsid: int
    size_bytes: int
    used_bytes: int


@dataclass(slots=True)
class _Mount:
    target: TargetId
    path: Path
    inflight: Future[_Reading] | None = None
    failing: str | None = None
    last_ok: float | None = None
    believed: _Believed | None = None
    held: bool = False
    """The last sample was held: the next one is believed, whatever it says."""
    other_fsid: int | None = None
    """Another filesystem answered at the path at the last poll: a second answer from it confirms it."""
    was_mount_point: bool = False
    """The path was a mount point when its believed filesystem was first read: not being one any
    more is "not mounted". Set when a filesystem becomes the truth (the first read, or a new one
    confirmed — which `not_mounted` keeps from happening while it holds), so never unset."""
    rates: deque[float] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW))
    """Usage rates (bytes/s) between its recent believed samples (`plausible_rise`)."""


class FilesystemPoller:
    """Reads every configured filesystem concurrently, each within `timeout_seconds`."""

    def __init__(self, targets: Sequence[FilesystemTarget], clock: Clock, *, timeout_seconds: float,
                 statvfs: StatVfs = os.statvfs, ismount: IsMount = os.path.ismount,
                 grown_since: GrownSince | None = None) -> None:
        """`grown_since`: whether a growth of ours may explain a size that moved (None: none ever does)."""
        self.clock = clock
        self.timeout_seconds = timeout_seconds
        self.statvfs = statvfs
        self.ismount = ismount
        self.grown_since = grown_since
        self._mounts = [_Mount(target_id(t), t.path) for t in targets]

    @property
    def targets(self) -> list[TargetId]:
        return [m.target for m in self._mounts]

    def close(self) -> None:
        """Nothing to join: a call still hung in the kernel is a daemon thread, which never holds
        the process's exit (a thread pool's workers would)."""

    async def poll(self) -> FilesystemPoll:
        started = self.clock.now()
        results = await asyncio.gather(*(self._read(mount) for mount in self._mounts))
        observations = tuple(r for r, _ in results if isinstance(r, Observation))
        unreachable = tuple(r for r, _ in results if isinstance(r, Unreachable))
        held = frozenset(r.target.name for r, is_held in results if is_held)
        return FilesystemPoll(t=started, observations=observations, unreachable=unreachable,
                              duration_seconds=max(0.0, self.clock.now() - started), unconfirmed=held)

    async def _read(self, mount: _Mount) -> tuple[Observation | Unreachable, bool]:
        """This poll's sample of `mount` (or why there is none), and whether it is held."""
        reading = await self._bounded_read(mount)
        if isinstance(reading, Unreachable):
            return reading, False
        st = reading.st
        now = self.clock.now()
        observation = observation_of(mount.target, now, st)
        sample = _Believed(now, st.f_fsid, size_of(st), observation.used_bytes)
        before = mount.believed
        if mount.was_mount_point and not reading.is_mount_point:
            mount.other_fsid = None  # the filesystem under it: never a first answer of a new one
            return self._failed(mount, "not_mounted", (
                f"no longer mounted: {mount.path} was a mount point and is not one now; statvfs answers the "
                f"filesystem under it (f_fsid {sample.fsid:#x} of {sample.size_bytes} bytes)")), False
        if before is not None and sample.fsid != before.fsid and sample.fsid != mount.other_fsid:
            mount.other_fsid = sample.fsid  # another filesystem, once: not truth (yet)
            return self._failed(mount, "changed", (
                f"filesystem changed or not mounted: statvfs({mount.path}) answers f_fsid {sample.fsid:#x} of "
                f"{sample.size_bytes} bytes, not f_fsid {before.fsid:#x} of {before.size_bytes} bytes")), False
        if mount.failing is not None:
            log.info("filesystem.recovered", target=mount.target.name, path=str(mount.path))
            mount.failing = None
        mount.other_fsid = None
        if before is None or sample.fsid != before.fsid:  # the first, or a new filesystem said twice: truth
            mount.believed, mount.held = sample, False
            mount.was_mount_point = reading.is_mount_point
            mount.rates.clear()
            return observation, False
        why = None if mount.held else await self._implausible(mount, before, sample)
        if why is not None:
            mount.held = True
            log.info("filesystem.sample_held", target=mount.target.name, path=str(mount.path), reason=why)
            return observation, True
        if sample.t > before.t:
            mount.rates.append((sample.used_bytes - before.used_bytes) / (sample.t - before.t))
        mount.believed, mount.held = sample, False
        return observation, False

    async def _implausible(self, mount: _Mount, before: _Believed, sample: _Believed) -> str | None:
        """Why `sample` of the same filesystem cannot be believed before a second one (None: it can)."""
        noise = plausible_rise(0.0, 0.0, before.size_bytes)  # the floors: 2 % of the size, at least 1 GiB
        if abs(sample.size_bytes - before.size_bytes) > noise and not (
                self.grown_since is not None
                and await asyncio.to_thread(self.grown_since, mount.target.name, before.t)):
            return f"size moved from {before.size_bytes} to {sample.size_bytes} bytes without a growth of ours"
        allowed = plausible_rise(robust_rate(list(mount.rates)), sample.t - before.t, before.size_bytes)
        if abs(sample.used_bytes - before.used_bytes) > allowed:
            return (f"usage moved from {before.used_bytes} to {sample.used_bytes} bytes in "
                    f"{sample.t - before.t:g} s (more than {allowed:.0f} is implausible)")
        return None

    async def _bounded_read(self, mount: _Mount) -> _Reading | Unreachable:
        if mount.inflight is not None and not mount.inflight.done():
            return self._failed(mount, "timeout", f"statvfs/ismount({mount.path}) still has not returned")
        future = self._start(mount)
        mount.inflight = future
        try:
            # real time, not the daemon's clock: a hung kernel call does not care about virtual time
            reading = await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_seconds)
        except TimeoutError:
            return self._failed(mount, "timeout",
                                f"statvfs/ismount({mount.path}) took over {self.timeout_seconds:g} s")
        except OSError as exc:
            return self._failed(mount, "error", f"{type(exc).__name__}: {exc}")
        mount.inflight = None
        mount.last_ok = self.clock.now()
        return reading

    def _start(self, mount: _Mount) -> Future[_Reading]:
        """statvfs, then ismount, in one daemon thread of its own (see `close`): one bound and one
        hung thread at most for both, since either blocks on a hung NFS mount."""
        future: Future[_Reading] = Future()
        future.set_running_or_notify_cancel()

        def work() -> None:
            try:
                st = self.statvfs(str(mount.path))
                future.set_result(_Reading(st, self.ismount(str(mount.path))))
            except BaseException as exc:  # handed to the awaiting side, which decides
                future.set_exception(exc)

        threading.Thread(target=work, name=f"statvfs:{mount.target.name}", daemon=True).start()
        return future

    def _failed(self, mount: _Mount, reason: str, detail: str) -> Unreachable:
        if mount.failing != reason:
            log.warning("filesystem.unreachable", target=mount.target.name, path=str(mount.path),
                        reason=reason, detail=detail)
            mount.failing = reason
        return Unreachable(mount.target, reason, detail)
