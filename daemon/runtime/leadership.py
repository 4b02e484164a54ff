"""Leadership per VMS cluster: which instance of a fleet plans, writes quotas and sends alerts.

Every instance polls, forecasts and serves metrics; only the leader of a cluster acts on it.
Two implementations of one small interface (`Leadership`):

- `SoleLeadership` (SQLite, one host): this instance always leads every cluster, epoch 0, and
  records intents without a fence — single-instance behaviour is exactly what it was.
- `LeaseLeadership` (PostgreSQL, a fleet): a loop on the injected clock takes or renews the lease
  of every configured cluster every `renew_seconds` (`store.leases`); the lease lasts
  `lease_seconds`. A lease whose holder stopped renewing (killed, partitioned, paused) expires
  and the next instance's attempt takes it, with the epoch incremented.

Safety does not rest on this loop's view: `is_leader` is only a fast local answer (it turns false
as soon as a renewal fails or the local estimate of the lease runs out — PostgreSQL down means
no lease, so no write). The guarantee is the fence: the actuator records each intent with
`fence(cluster)`, and the store refuses it in the same transaction unless that epoch is still
current; `epoch_is_current(cluster)` is the re-check right before the PATCH.

Lease rows (not advisory locks) because a row carries an epoch that survives the session (the
fencing token), works through connection poolers, and shows who leads what to `status`, a SQL
console and the tests; an advisory lock dies with its session and needs a separate epoch counter
anyway. See the README's "Fleets" section.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import TransitionLog
from quotapilot.daemon.runtime.supervisor import TaskFactory, sleep_unless
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.store.actions import Fence
from quotapilot.daemon.store.backend import Backend, StoreError
from quotapilot.daemon.store.leases import LeaseStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Role:
    """This instance's part in one cluster, for `/healthz`, `status` and metrics."""

    cluster: str
    leader: bool
    epoch: int | None
    holder: str

    def as_json(self) -> dict[str, object]:
        return {"cluster": self.cluster, "role": "leader" if self.leader else "standby", "epoch": self.epoch,
                "holder": self.holder}


class Leadership(Protocol):
    """What the stages ask before acting on a cluster."""

    def is_leader(self, cluster: str) -> bool: ...

    def epoch(self, cluster: str) -> int | None:
        """The epoch this instance leads `cluster` under, None when it does not lead it."""
        ...

    def fence(self, cluster: str) -> Fence | None:
        """What to record an intent under (None: record unfenced — the single SQLite instance)."""
        ...

    async def epoch_is_current(self, cluster: str) -> bool:
        """The re-check right before a PATCH: does the store still say we lead `cluster`?"""
        ...

    def roles(self) -> list[Role]: ...


class SoleLeadership:
    """One instance on SQLite: it leads every cluster, always, under epoch 0."""

    def __init__(self, clusters: Iterable[str], holder: str | None = None) -> None:
        self.clusters = list(clusters)
        self.holder = holder or socket.gethostname()

    def is_leader(self, cluster: str) -> bool:
        return True

    def epoch(self, cluster: str) -> int | None:
        return 0

    def fence(self, cluster: str) -> Fence | None:
        return None

    async def epoch_is_current(self, cluster: str) -> bool:
        return True

    def roles(self) -> list[Role]:
        return [Role(cluster, True, 0, self.holder) for cluster in self.clusters]

    def collector(self) -> LeadershipCollector:
        return LeadershipCollector(self)


class LeaseLeadership:
    """Leases in the shared store, renewed by `run()` (a supervised task) every `renew_seconds`."""

    def __init__(self, leases: LeaseStore, clusters: Iterable[str], clock: Clock, *,
                 instance_name: str | None = None, lease_seconds: float = 15.0,
                 renew_seconds: float = 5.0) -> None:
        if renew_seconds * 2 > lease_seconds:
            raise ValueError("renew_seconds must be at most half of lease_seconds")
        self.leases = leases
        self.clusters = list(clusters)
        self.clock = clock
        # a per-process suffix: a restarted instance is a new holder, so it waits for (or is
        # handed) the lease and bumps the epoch — two processes can never share an epoch
        self.holder = f"{instance_name or socket.gethostname()}/{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._fences: dict[str, Fence] = {}
        self._valid_until: dict[str, float] = {}
        self._store_health = TransitionLog(log, "lease_store")
        self.changes = 0
        """Leadership transitions of this instance so far (gained + lost)."""

    # ------------------------------------------------------------------------------ queries
    def is_leader(self, cluster: str) -> bool:
        # the local estimate ends one renewal early: a stalled loop stops acting before the lease
        # can pass to another instance (the fence catches whatever slips through)
        return cluster in self._fences and self.clock.now() < self._valid_until[cluster] - self.renew_seconds

    def epoch(self, cluster: str) -> int | None:
        return self._fences[cluster].epoch if self.is_leader(cluster) else None

    def fence(self, cluster: str) -> Fence | None:
        """The fence to record under. Not leading: a fence that the store will refuse (epoch -1),
        so a caller that skipped `is_leader` still cannot write."""
        if self.is_leader(cluster):
            return self._fences[cluster]
        return Fence(self.holder, -1)

    async def epoch_is_current(self, cluster: str) -> bool:
        fence = self._fences.get(cluster)
        if fence is None or not self.is_leader(cluster):
            return False
        try:
            return await asyncio.to_thread(self.leases.is_current, cluster, fence, now=self.clock.now())
        except StoreError as exc:
            self._lose_all(str(exc))
            return False

    def roles(self) -> list[Role]:
        return [Role(c, self.is_leader(c), self.epoch(c), self.holder) for c in self.clusters]

    def collector(self) -> LeadershipCollector:
        return LeadershipCollector(self)

    # ------------------------------------------------------------------------------- the loop
    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Renew (or try to take) every lease every `renew_seconds` until `stopping` is set (or
        the task is cancelled); then give them up, so a standby takes over at once."""
        stopping = stopping or asyncio.Event()
        try:
            while True:
                await self.step()
                if not await sleep_unless(self.clock, self.renew_seconds, stopping):
                    return
        finally:
            await asyncio.shield(self.release())

    async def step(self) -> None:
        """One round over every cluster. A store error drops every lease at once."""
        for cluster in self.clusters:
            started = self.clock.now()
            try:
                fence = await asyncio.to_thread(self.leases.acquire, cluster, self.holder, now=started,
                                                ttl_seconds=self.lease_seconds)
            except StoreError as exc:
                self._lose_all(str(exc))
                return
            self._store_health.ok("store", holder=self.holder)
            if fence is None:
                self._lose(cluster, "held by another instance")
            else:
                self._gain(cluster, fence, started + self.lease_seconds)

    async def release(self) -> None:
        """Hand every lease we hold over now (a clean shutdown), so a standby need not wait."""
        held = dict(self._fences)
        self._fences.clear()
        for cluster, fence in held.items():
            try:
                await asyncio.to_thread(self.leases.release, fence, cluster, now=self.clock.now())
            except StoreError as exc:
                log.warning("lease.release_failed", cluster=cluster, error=str(exc))
                continue
            log.info("leadership.released", cluster=cluster, epoch=fence.epoch, holder=self.holder)

    def _gain(self, cluster: str, fence: Fence, valid_until: float) -> None:
        previous = self._fences.get(cluster)
        self._fences[cluster] = fence
        self._valid_until[cluster] = valid_until
        if previous != fence:
            self.changes += 1
            log.info("leadership.gained", cluster=cluster, epoch=fence.epoch, holder=self.holder)

    def _lose(self, cluster: str, why: str) -> None:
        fence = self._fences.pop(cluster, None)
        self._valid_until.pop(cluster, None)
        if fence is not None:
            self.changes += 1
            log.warning("leadership.lost", cluster=cluster, epoch=fence.epoch, holder=self.holder, reason=why)

    def _lose_all(self, error: str) -> None:
        self._store_health.failed("store", error, holder=self.holder)
        for cluster in list(self._fences):
            self._lose(cluster, "store unavailable")


class LeadershipCollector:
    """`quotapilot_leader{cluster}` (1 leads / 0 standby) and `quotapilot_lease_epoch{cluster}`."""

    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership

    def collect(self) -> Iterator[Metric]:
        roles: Sequence[Role] = self.leadership.roles()
        leader = GaugeMetricFamily("quotapilot_leader", "1 when this instance leads the cluster (plans, writes "
                                   "quotas, sends its alerts), 0 when it stands by.", labels=["cluster"])
        epoch = GaugeMetricFamily("quotapilot_lease_epoch", "Lease epoch this instance leads the cluster under "
                                  "(absent when standing by; 0 for the single SQLite instance).", labels=["cluster"])
        for role in roles:
            leader.add_metric([role.cluster], 1.0 if role.leader else 0.0)
            if role.epoch is not None:
                epoch.add_metric([role.cluster], float(role.epoch))
        yield leader
        yield epoch


def build_leadership(settings: Settings, db: Backend, clock: Clock,
                     add_task: Callable[[str, TaskFactory], None]) -> SoleLeadership | LeaseLeadership:
    """The daemon's leadership: leases (and their supervised renewal task `leases`) on
    PostgreSQL; the single instance leading alone on SQLite."""
    clusters = [cluster.name for cluster in settings.clusters]
    store = settings.store
    if db.dialect != "postgres":
        return SoleLeadership(clusters, store.instance_name)
    leadership = LeaseLeadership(LeaseStore(db), clusters, clock, instance_name=store.instance_name,
                                 lease_seconds=store.lease_seconds, renew_seconds=store.lease_renew_seconds)
    add_task("leases", leadership.run)
    return leadership
