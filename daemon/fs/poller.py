"""Filesystem targets: bytes and inodes of mounted filesystems from `statvfs`, never blocking the loop.

Each `[[filesystems]]` entry is read with `os.statvfs` in a worker thread, bounded by
`statvfs_timeout_seconds`. A call that does not return in time (a hung NFS mount) makes that
target *unreachable* for this poll while the others go on; the stuck thread is left to finish on
its own (a thread cannot be killed), and no second call is started on that mount until it has —
so one hung mount holds at most one thread, never the pool. An error (no such path, permission,
`ESTALE`) is unreachable too, with the error. Each call runs in a daemon thread of its own, so a
hung one never holds the process's exit either.

`FilesystemPoller.poll()` returns a `FilesystemPoll`: one `Observation` per reachable target
(`TargetKind.FILESYSTEM`, `tier` set, `cluster` = `FILESYSTEM_CLUSTER`), the same type the VMS
collector produces, so the forecaster, the runway arithmetic and the alert rules apply as they
are; and the unreachable ones with their reason. Logs fire on transitions only
(`filesystem.unreachable`, `filesystem.recovered`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.settings import FilesystemTarget
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

log = get_logger(__name__)

FILESYSTEM_CLUSTER = "filesystems"
"""The `cluster` of every filesystem target (alert ids `filesystems/<name>/<kind>`)."""

StatVfs = Callable[[str], os.statvfs_result]


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A filesystem that could not be read this poll, and why."""

    target: TargetId
    reason: str
    """"timeout" (statvfs did not return in time, or a previous call still hangs) or "error"."""
    detail: str


@dataclass(frozen=True, slots=True)
class FilesystemPoll:
    t: float
    observations: tuple[Observation, ...] = ()
    unreachable: tuple[Unreachable, ...] = ()
    duration_seconds: float = 0.0


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


@dataclass(slots=True)
class _Mount:
    target: TargetId
    path: Path
    inflight: Future[os.statvfs_result] | None = None
    failing: str | None = None
    last_ok: float | None = None


class FilesystemPoller:
    """Reads every configured filesystem concurrently, each within `timeout_seconds`."""

    def __init__(self, targets: Sequence[FilesystemTarget], clock: Clock, *, timeout_seconds: float,
                 statvfs: StatVfs = os.statvfs) -> None:
        self.clock = clock
        self.timeout_seconds = timeout_seconds
        self.statvfs = statvfs
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
        observations = tuple(r for r in results if isinstance(r, Observation))
        unreachable = tuple(r for r in results if isinstance(r, Unreachable))
        return FilesystemPoll(t=started, observations=observations, unreachable=unreachable,
                              duration_seconds=max(0.0, self.clock.now() - started))

    async def _read(self, mount: _Mount) -> Observation | Unreachable:
        if mount.inflight is not None and not mount.inflight.done():
            return self._failed(mount, "timeout", f"statvfs({mount.path}) still has not returned")
        future = self._start(mount)
        mount.inflight = future
        try:
            # real time, not the daemon's clock: a hung kernel call does not care about virtual time
            st = await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_seconds)
        except TimeoutError:
            return self._failed(mount, "timeout", f"statvfs({mount.path}) took over {self.timeout_seconds:g} s")
        except OSError as exc:
            return self._failed(mount, "error", f"{type(exc).__name__}: {exc}")
        now = self.clock.now()
        mount.inflight = None
        mount.last_ok = now
        if mount.failing is not None:
            log.info("filesystem.recovered", target=mount.target.name, path=str(mount.path))
            mount.failing = None
        return observation_of(mount.target, now, st)

    def _start(self, mount: _Mount) -> Future[os.statvfs_result]:
        """statvfs in its own daemon thread (see `close`)."""
        future: Future[os.statvfs_result] = Future()
        future.set_running_or_notify_cancel()

        def work() -> None:
            try:
                future.set_result(self.statvfs(str(mount.path)))
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
