"""Leadership per VMS cluster: which instance of a fleet plans, writes quotas and sends alerts.

Every instance polls, forecasts and serves metrics; only the leader of a cluster acts on it.
Two implementations of one small interface (`Leadership`):

- `SoleLeadership` (SQLite, one host): this instance always leads every cluster, epoch 0, and
  records intents without a fence — single-instance behaviour is exactly what it was.
- `LeaseLeadership` (PostgreSQL, a fleet): a loop on the injected clock heartbeats this
  instance's `members` row, then renews the leases it holds and takes the free ones it is
  preferred for, every `renew_seconds` (`store.leases`); the lease lasts `lease_seconds`.
  `runtime/placement.py` decides which: clusters spread over the live instances (least loaded
  first), and an instance two leases above a stable member hands one over. A lease whose holder
  stopped renewing (killed, partitioned, paused) expires and the preferred survivor takes it at
  its next round, with the epoch incremented.

A change of leader is announced by the NEW leader (it holds the lease; a deposed one cannot be
trusted to): each subscriber (`subscribe`) gets a `LeadershipChange` — the wiring turns it into an
info notification and a `leadership` event whose dedup key is `leadership/<cluster>@<epoch>`, the
same whichever instance enqueues it, so it is delivered once across the fleet.

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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.logs import TransitionLog
from quotapilot.daemon.runtime.placement import place
from quotapilot.daemon.runtime.supervisor import Supervisor, TaskStatus, sleep_unless
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.store.actions import Fence
from quotapilot.daemon.store.backend import Backend, StoreError
from quotapilot.daemon.store.leases import Lease, LeaseStore
from quotapilot.daemon.store.members import Member, MemberStore

log = structlog.get_logger(__name__)

_WHOLE_ROUND = ("round",)
"""The key of a round's own failure among the per-cluster ones (a cluster's name is a str)."""


@dataclass(frozen=True, slots=True)
class Role:
    """This instance's part in one cluster, for `/healthz`, `status` and metrics: whether it leads
    (and under which epoch), and who holds the lease as this instance last read it."""

    cluster: str
    leader: bool
    epoch: int | None
    holder: str
    """The lease's holder as last read (this instance when it leads; None-like "" when nobody does)."""
    lease_epoch: int | None = None
    """The lease's epoch as last read, whoever holds it."""
    expires_in_seconds: float | None = None
    """How long the lease runs on as last read (negative: expired, free to take)."""

    def as_json(self) -> dict[str, object]:
        return {"cluster": self.cluster, "role": "leader" if self.leader else "standby", "epoch": self.epoch,
                "holder": self.holder, "lease_epoch": self.lease_epoch,
                "expires_in_seconds": None if self.expires_in_seconds is None else round(self.expires_in_seconds, 3)}


@dataclass(frozen=True, slots=True)
class LeadershipChange:
    """A cluster got a new leader: this instance, under `epoch` (announced by the new leader)."""

    cluster: str
    holder: str
    epoch: int
    t: float
    previous_holder: str | None
    transition: str
    """`first` (the cluster never had a leader), `takeover` (the previous holder is gone: it
    died, was cut off or exited) or `handover` (the previous holder is live: it handed over to
    even out the fleet)."""

    @property
    def dedup_key(self) -> str:
        """The same on every instance: one announcement per (cluster, epoch)."""
        return f"leadership/{self.cluster}@{self.epoch}"

    def summary(self) -> str:
        was = f" from {self.previous_holder}" if self.previous_holder else ""
        return f"{self.holder} leads cluster {self.cluster} (epoch {self.epoch}, {self.transition}{was})"


ChangeListener = Callable[[LeadershipChange], Awaitable[None]]
"""Told of every leadership this instance gains (the wiring: an info alert and an event)."""


class Leadership(Protocol):
    """What the stages ask before acting on a cluster."""

    holder: str
    """This instance, as lease rows name it."""

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

    def subscribe(self, listener: ChangeListener) -> None:
        """Call `listener` on every leadership this instance gains (never for the single instance)."""
        ...


def acts_on(leadership: Leadership | None, cluster: str) -> bool:
    """Does this instance record, evaluate and act for `cluster`? Alone (None): always. In a fleet:
    a VMS cluster only on its leader; the host's own filesystems (the `filesystems` pseudo-cluster,
    which has no lease) always, on every instance — each watches the mounts it is configured with."""
    return leadership is None or cluster == FILESYSTEM_CLUSTER or leadership.is_leader(cluster)


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
        return [Role(cluster, True, 0, self.holder, 0) for cluster in self.clusters]

    def subscribe(self, listener: ChangeListener) -> None:
        """The single instance leads from start to end: there is never a change to announce."""

    def collector(self) -> LeadershipCollector:
        return LeadershipCollector(self)


class LeaseLeadership:
    """Leases in the shared store, renewed by `run()` (a supervised task) every `renew_seconds`.

    `members`: the fleet's membership (None: no spreading — this instance takes every free lease,
    as a fleet of one would); `grace_seconds` (default: `lease_seconds`): a free lease that its
    preferred member has not taken within this long is taken by anyone; `status`: where the loop
    reports rounds that keep failing, once they have for `lease_seconds` (the supervisor's handle
    for this task; None: logs only)."""

    def __init__(self, leases: LeaseStore, clusters: Iterable[str], clock: Clock, *,
                 instance_name: str | None = None, lease_seconds: float = 15.0,
                 renew_seconds: float = 5.0, members: MemberStore | None = None,
                 grace_seconds: float | None = None, status: TaskStatus | None = None) -> None:
        if renew_seconds * 2 > lease_seconds:
            raise ValueError("renew_seconds must be at most half of lease_seconds")
        self.leases = leases
        self.members = members if members is not None else MemberStore(leases.db)
        self.clusters = list(clusters)
        self.clock = clock
        self.instance = instance_name or socket.gethostname()
        # a per-process suffix: a restarted instance is a new holder, so it waits for (or is
        # handed) the lease and bumps the epoch — two processes can never share an epoch
        self.holder = f"{self.instance}/{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.grace_seconds = lease_seconds if grace_seconds is None else grace_seconds
        self.started_at = clock.now()
        self.status = status
        self._fences: dict[str, Fence] = {}
        self._valid_until: dict[str, float] = {}
        self._seen: dict[str, Lease] = {}
        self._listeners: list[ChangeListener] = []
        self._unannounced: list[LeadershipChange] = []
        # one line per outage: a real one fails differently (the connection cut, then pool timeouts)
        self._store_health = TransitionLog(log, "lease_store", once_per_outage=True)
        self._rounds = TransitionLog(log, "lease_round", failed_level="error", once_per_outage=True)
        """A round, or one cluster's lease in it, that failed unexpectedly (not a `StoreError`):
        logged with its traceback (keys: `_WHOLE_ROUND`, or the cluster)."""
        self._failing_since: float | None = None
        """The first failure (`clock.now()`) of the current streak of failed rounds; None: the
        last round that tried its leases worked."""
        self.changes = 0
        """Leadership transitions of this instance so far (gained + lost)."""
        self.handovers = 0
        """Leases this instance handed over to even out the fleet."""

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
        """Per cluster: this instance's role, and the lease as this instance last read it."""
        now = self.clock.now()
        roles = []
        for cluster in self.clusters:
            leader = self.is_leader(cluster)
            seen = self._seen.get(cluster)
            if leader:
                fence = self._fences[cluster]
                roles.append(Role(cluster, True, fence.epoch, self.holder, fence.epoch,
                                  self._valid_until[cluster] - now))
            elif seen is not None:
                roles.append(Role(cluster, False, None, seen.holder, seen.epoch, seen.expires_at - now))
            else:
                roles.append(Role(cluster, False, None, ""))
        return roles

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def collector(self) -> LeadershipCollector:
        return LeadershipCollector(self)

    # ------------------------------------------------------------------------------- the loop
    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Renew (or try to take) every lease every `renew_seconds` until `stopping` is set (or
        the task is cancelled); then give them up, so a standby takes over at once."""
        stopping = stopping or asyncio.Event()
        try:
            while True:
                await self._round()
                if not await sleep_unless(self.clock, self.renew_seconds, stopping):
                    return
        finally:
            await asyncio.shield(self.release())

    async def _round(self) -> None:
        """`step()`, surviving whatever it raises: the supervisor does not restart this task, and
        an instance whose lease loop died would never lead again (while it kept answering the
        watchdog). A cluster whose lease fails unexpectedly is lost alone (`step()`); a round that
        fails outside any one cluster's lease drops every lease and releases them in the store
        (best effort) — nothing may act on a lease it cannot renew, and none stays held by an
        instance that does not act on it — and the next round tries again. Logged once per
        failure streak, with the traceback.

        Reported as the `leases` task failing (`status`: /healthz, the `daemon` alert) once the
        streak has lasted `lease_seconds`, since its first failure, until a round works: a
        shorter one is a blip, over within the time a standby's takeover takes anyway, not a
        page. A store outage is not reported here (the store's own health shows it), and its
        rounds, which try no lease, leave the streak and the report as they were: they say
        nothing of whether the loop's own error is fixed (as its log says nothing: no
        `recovered`)."""
        try:
            failures = await self.step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._rounds.failed(_WHOLE_ROUND, error, exc_info=True, holder=self.holder)
            await self._give_up_all("lease round failed")
            self._round_failed(f"lease round failed: {error}")
            return
        self._rounds.ok(_WHOLE_ROUND, holder=self.holder)
        if failures is None:
            return
        if failures:
            self._round_failed("; ".join(f"{cluster}: {error}" for cluster, error in failures.items()))
            return
        self._failing_since = None
        if self.status is not None:
            self.status.ok()

    def _round_failed(self, error: str) -> None:
        """Count a failed round into the streak; report it once it has lasted a lease."""
        now = self.clock.now()
        if self._failing_since is None:
            self._failing_since = now
        if self.status is not None and now - self._failing_since >= self.lease_seconds:
            self.status.failing(error, since=self._failing_since)

    async def step(self) -> dict[str, str] | None:
        """One round: heartbeat, read the fleet, renew what we keep, take what we are preferred
        for, hand over at most one lease. A store error drops every lease at once (None: the
        round ended there). Any other error on one cluster's lease loses that cluster alone
        (`_abandon`); returns those clusters, with their errors."""
        now = self.clock.now()
        try:
            members, seen = await asyncio.to_thread(self._read_fleet, now)
        except StoreError as exc:
            self._lose_all(str(exc))
            return None
        self._seen = {lease.cluster: lease for lease in seen}
        me = next((m for m in members if m.holder == self.holder), Member(self.holder, self.instance, now, now))
        placement = place(me, self.clusters, members, seen, now=now, stable_seconds=2 * self.renew_seconds,
                          grace_seconds=self.grace_seconds, started_at=self.started_at)
        live = {m.holder for m in members}
        failures: dict[str, str] = {}
        for cluster in [*placement.renew, *placement.take]:
            started = self.clock.now()
            try:
                fence = await asyncio.to_thread(self.leases.acquire, cluster, self.holder, now=started,
                                                ttl_seconds=self.lease_seconds)
            except StoreError as exc:
                self._lose_all(str(exc))
                return None
            except Exception as exc:  # a row only this cluster has, a bug on a path only it takes
                failures[cluster] = f"{type(exc).__name__}: {exc}"
                self._rounds.failed(cluster, failures[cluster], exc_info=True, cluster=cluster, holder=self.holder)
                await self._abandon(cluster)
                continue
            self._rounds.ok(cluster, cluster=cluster, holder=self.holder)
            if fence is None:
                self._lose(cluster, "held by another instance")
            else:
                self._gain(cluster, fence, started + self.lease_seconds, self._seen.get(cluster), live)
        for cluster in set(self.clusters) - {*placement.renew, *placement.take}:
            self._rounds.forget(cluster)  # not tried this round: a later failure is a new streak
            if cluster != placement.release:
                self._lose(cluster, "held by another instance")
        self._store_health.ok("store", holder=self.holder)
        if (placement.release is not None and placement.release in self._fences
                and not await self._hand_over(placement.release)):
            return None
        await self._announce()
        return failures

    def _read_fleet(self, now: float) -> tuple[list[Member], list[Lease]]:
        self.members.heartbeat(self.holder, self.instance, now=now, ttl_seconds=self.lease_seconds)
        return self.members.live(now=now, ttl_seconds=self.lease_seconds), self.leases.all()

    async def _hand_over(self, cluster: str) -> bool:
        """Give one lease up to even out the fleet: a less loaded member takes it next round.
        False on a store error (every lease dropped)."""
        fence = self._fences.pop(cluster)
        self._valid_until.pop(cluster, None)
        self.changes += 1
        self.handovers += 1
        try:
            await asyncio.to_thread(self.leases.release, fence, cluster, now=self.clock.now())
        except StoreError as exc:  # it expires by itself; the fence already stops our writes
            self._lose_all(str(exc))
            return False
        log.info("leadership.handed_over", cluster=cluster, epoch=fence.epoch, holder=self.holder)
        return True

    async def _abandon(self, cluster: str) -> None:
        """`cluster`'s lease failed to renew or be taken (not a store outage): stop acting on it
        now and release its lease in the store, best effort, so another instance can take it
        instead of finding it held by a live member (a lease not released runs out by itself: it
        is no longer renewed)."""
        fence = self._fences.get(cluster)
        seen = self._seen.get(cluster)
        if fence is None and seen is not None and seen.holder == self.holder:
            fence = Fence(self.holder, seen.epoch)  # ours in the store, though not led here
        self._lose(cluster, "lease failed")
        if fence is not None:
            await self._release_lease(cluster, fence)

    async def _give_up_all(self, why: str) -> None:
        """Drop every lease and release each in the store, best effort (a round that failed)."""
        held = dict(self._fences)
        self._drop_all(why)
        for cluster, fence in held.items():
            await self._release_lease(cluster, fence)

    async def _release_lease(self, cluster: str, fence: Fence) -> None:
        """Release one lease, best effort, whatever fails: a lease not released runs out by itself,
        and an error here would only replace the reason it is given up."""
        try:
            released = await asyncio.to_thread(self.leases.release, fence, cluster, now=self.clock.now())
        except Exception as exc:
            log.warning("lease.release_failed", cluster=cluster, error=f"{type(exc).__name__}: {exc}")
            return
        if released:
            log.info("leadership.released", cluster=cluster, epoch=fence.epoch, holder=self.holder)

    async def _announce(self) -> None:
        """Tell the listeners of the leaderships gained; one that fails is retried next round
        while we still lead under that epoch (the store may be briefly down)."""
        pending, self._unannounced = self._unannounced, []
        for change in pending:
            if self.epoch(change.cluster) != change.epoch:
                continue  # lost it again meanwhile: the next leader announces its own epoch
            try:
                for listener in self._listeners:
                    await listener(change)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("leadership.announce_failed", cluster=change.cluster, epoch=change.epoch, error=str(exc))
                self._unannounced.append(change)

    async def release(self) -> None:
        """Hand every lease we hold over now and leave the fleet (a clean shutdown), so a
        standby need not wait."""
        held = dict(self._fences)
        self._fences.clear()
        for cluster, fence in held.items():
            await self._release_lease(cluster, fence)
        try:
            await asyncio.to_thread(self.members.leave, self.holder)
        except Exception as exc:
            log.warning("member.leave_failed", holder=self.holder, error=f"{type(exc).__name__}: {exc}")

    def _gain(self, cluster: str, fence: Fence, valid_until: float, before: Lease | None,
              live: set[str]) -> None:
        previous = self._fences.get(cluster)
        self._fences[cluster] = fence
        self._valid_until[cluster] = valid_until
        if previous != fence:
            self.changes += 1
            log.info("leadership.gained", cluster=cluster, epoch=fence.epoch, holder=self.holder)
            if before is not None and before.epoch == fence.epoch:
                return  # our own lease again (after a store outage): nobody led in between
            transition = "first" if before is None else "handover" if before.holder in live else "takeover"
            self._unannounced.append(LeadershipChange(cluster, self.holder, fence.epoch, self.clock.now(),
                                                      None if before is None else before.holder, transition))

    def _lose(self, cluster: str, why: str) -> None:
        fence = self._fences.pop(cluster, None)
        self._valid_until.pop(cluster, None)
        if fence is not None:
            self.changes += 1
            log.warning("leadership.lost", cluster=cluster, epoch=fence.epoch, holder=self.holder, reason=why)

    def _lose_all(self, error: str) -> None:
        self._store_health.failed("store", error, holder=self.holder)
        self._drop_all("store unavailable")

    def _drop_all(self, why: str) -> None:
        for cluster in list(self._fences):
            self._lose(cluster, why)


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
                     supervisor: Supervisor) -> SoleLeadership | LeaseLeadership:
    """The daemon's leadership: leases (and their supervised renewal task `leases`, which reports
    rounds that keep failing through the supervisor) on PostgreSQL; the single instance leading
    alone on SQLite."""
    clusters = [cluster.name for cluster in settings.clusters]
    store = settings.store
    if db.dialect != "postgres":
        return SoleLeadership(clusters, store.instance_name)
    leadership = LeaseLeadership(LeaseStore(db), clusters, clock, instance_name=store.instance_name,
                                 lease_seconds=store.lease_seconds, renew_seconds=store.lease_renew_seconds,
                                 members=MemberStore(db), status=supervisor.status("leases"))
    supervisor.add("leases", leadership.run)
    return leadership
