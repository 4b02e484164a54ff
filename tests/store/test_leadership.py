"""The leadership loop (daemon/runtime/leadership.py) on both backends, on a virtual clock:
one leader per cluster, failover after the lease runs out, store down → no leader, a loop that
outlives whatever a round raises, hand-over on a clean exit, metrics and roles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from store_helpers import OpenStore
from structlog.testing import capture_logs

from quotapilot.alerts.model import Severity
from quotapilot.alerts.rules import task_conditions
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.health import HealthReport, health_report
from quotapilot.daemon.runtime.leadership import LeaseLeadership, SoleLeadership
from quotapilot.daemon.runtime.supervisor import Supervisor
from quotapilot.daemon.runtime.wiring import task_health
from quotapilot.daemon.settings import PollSettings
from quotapilot.daemon.store.actions import ActionStore, Fence, FencedOut
from quotapilot.daemon.store.backend import Backend, Params, Row, StoreUnavailable, Transaction
from quotapilot.daemon.store.leases import Lease, LeaseStore
from quotapilot.daemon.store.members import Member, MemberStore
from quotapilot.daemon.store.postgres import PostgresDatabase
from quotapilot.forecasting.types import Decision, DecisionKind, Dimension, TargetId

CLUSTERS = ["c1", "c2"]


def instance(backend: Backend, clock: VirtualClock, name: str) -> LeaseLeadership:
    return LeaseLeadership(LeaseStore(backend), CLUSTERS, clock, instance_name=name, lease_seconds=15,
                           renew_seconds=5)


class Unplugged:
    """A backend whose database can be made unreachable (our own boundary: the store protocol)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.down = False

    @property
    def schema_version(self) -> int:
        return self.inner.schema_version

    def describe(self) -> str:
        return self.inner.describe()

    def outage(self) -> str | None:
        return "PostgreSQL at test unavailable" if self.down else None

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL at test unavailable")

    def transaction(self) -> AbstractContextManager[Transaction]:
        self._check()
        return self.inner.transaction()

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        self._check()
        return self.inner.query(sql, params)

    def checkpoint(self) -> None: ...

    def close(self) -> None:
        self.inner.close()


def grow() -> Decision:
    return Decision(target=TargetId("c1", "raw", "/raw"), dimension=Dimension.BYTES, kind=DecisionKind.GROW,
                    reason="r", t=0.0, current_hard=100, new_hard=200)


class TestLeaseLeadership:
    async def test_first_instance_leads_the_other_stands_by(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        a, b = instance(open_store(), clock, "a"), instance(open_store(), clock, "b")
        with capture_logs() as logs:
            await a.step()
            await b.step()
        assert [(r.cluster, r.leader, r.epoch) for r in a.roles()] == [("c1", True, 1), ("c2", True, 1)]
        assert [(r.cluster, r.leader, r.epoch) for r in b.roles()] == [("c1", False, None), ("c2", False, None)]
        assert [e["event"] for e in logs] == ["leadership.gained", "leadership.gained"]

    async def test_standby_takes_over_when_the_leader_stops_renewing(self, open_store: OpenStore) -> None:
        """a is killed (it simply never renews again): within one lease plus one renewal, b leads
        under epoch 2, and a's fence — should it wake up — is refused by the store."""
        clock = VirtualClock()
        a_store = open_store()
        a, b = instance(a_store, clock, "a"), instance(open_store(), clock, "b")
        await a.step()
        await b.step()
        old = a.fence("c1")
        waited = 0.0
        while not b.is_leader("c1"):
            clock.advance(5)
            waited += 5
            await b.step()
        assert waited <= 15 + 5
        assert (b.epoch("c1"), b.epoch("c2")) == (2, 2)
        assert not a.is_leader("c1")  # its local estimate ran out before b could take over
        with pytest.raises(FencedOut):
            ActionStore(a_store).record(grow(), mode="enforce", status="intent", now=clock.now(), quota_id=1,
                                        fence=old)
        assert not await a.epoch_is_current("c1")

    async def test_not_leading_gives_a_fence_the_store_refuses(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        backend = open_store()
        a, b = instance(backend, clock, "a"), instance(open_store(), clock, "b")
        await a.step()
        await b.step()
        with pytest.raises(FencedOut):
            ActionStore(backend).record(grow(), mode="enforce", status="intent", now=clock.now(), quota_id=1,
                                        fence=b.fence("c1"))

    async def test_store_down_drops_leadership_at_once_and_it_comes_back(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        plug = Unplugged(open_store())
        a = instance(plug, clock, "a")
        await a.step()
        assert a.is_leader("c1")
        plug.down = True
        with capture_logs() as logs:
            await a.step()
            assert not a.is_leader("c1") and not a.is_leader("c2")
            assert not await a.epoch_is_current("c1")
            await a.step()  # still down: logged once, not per attempt
            plug.down = False
            clock.advance(5)
            await a.step()
        events = [e["event"] for e in logs]
        assert events.count("lease_store.failed") == 1
        assert events.count("leadership.lost") == 2
        assert "lease_store.recovered" in events
        assert a.is_leader("c1") and a.epoch("c1") == 1  # nobody else took it: same holder, same epoch

    async def test_clean_exit_hands_over_at_once(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        a, b = instance(open_store(), clock, "a"), instance(open_store(), clock, "b")
        task = asyncio.create_task(a.run(), name="leases-a")
        await until(lambda: a.is_leader("c1") and a.is_leader("c2"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.step()  # no waiting for the expiry
        assert (b.epoch("c1"), b.epoch("c2")) == (2, 2)

    async def test_metrics(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        a, b = instance(open_store(), clock, "a"), instance(open_store(), clock, "b")
        await a.step()
        await b.step()
        leader, standby = CollectorRegistry(), CollectorRegistry()
        leader.register(a.collector())
        standby.register(b.collector())
        assert leader.get_sample_value("quotapilot_leader", {"cluster": "c1"}) == 1.0
        assert leader.get_sample_value("quotapilot_lease_epoch", {"cluster": "c1"}) == 1.0
        assert standby.get_sample_value("quotapilot_leader", {"cluster": "c1"}) == 0.0
        assert standby.get_sample_value("quotapilot_lease_epoch", {"cluster": "c1"}) is None


SPREAD = ["c1", "c2", "c3"]


class Fleet:
    """Instances of one store on one virtual clock, stepped in rounds of `RENEW` seconds; after
    every single step the invariant is checked against the lease table: at any instant, at most
    one instance believes it leads a cluster, and that one is the table's live holder."""

    def __init__(self, open_store: OpenStore, clock: VirtualClock, names: list[str]) -> None:
        self.open_store, self.clock = open_store, clock
        self.table = LeaseStore(open_store())
        self.alive = {name: self.start(name) for name in names}
        self.checks = 0

    def start(self, name: str) -> LeaseLeadership:
        return LeaseLeadership(LeaseStore(self.open_store()), SPREAD, self.clock, instance_name=name,
                               lease_seconds=15, renew_seconds=5)

    async def round(self) -> None:
        for instance in list(self.alive.values()):
            await instance.step()
            self.check()
        self.clock.advance(5)

    def check(self) -> None:
        now = self.clock.now()
        live = {lease.cluster: lease.holder for lease in self.table.all() if lease.expires_at > now}
        for cluster in SPREAD:
            leading = [i.holder for i in self.alive.values() if i.is_leader(cluster)]
            assert len(leading) <= 1, (cluster, leading)
            assert leading == [] or live.get(cluster) == leading[0], (cluster, leading, live)
        self.checks += 1

    def led_by(self) -> dict[str, list[str]]:
        return {name: [c for c in SPREAD if i.is_leader(c)] for name, i in self.alive.items()}

    def handovers(self) -> int:
        return sum(i.handovers for i in self.alive.values())


class Broken(Unplugged):
    """A backend that can be made to raise what no store error handler expects (a bug, a driver
    error of a kind not mapped to `StoreError`)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.broken = False

    def _check(self) -> None:
        if self.broken:
            raise RuntimeError("not a store error")
        super()._check()


async def next_round(clock: VirtualClock, loop_task: asyncio.Task[None]) -> None:
    """Wake the sleeping lease loop for its next round and wait until it sleeps again (or died)."""
    await until(lambda: clock.next_deadline is not None or loop_task.done())
    if not loop_task.done():
        clock.set(clock.next_deadline or clock.now())
        await until(lambda: clock.next_deadline is not None or loop_task.done())


class FailingLeases(LeaseStore):
    """A lease store whose acquire (take or renew) of the clusters in `failing` raises an error
    that is no `StoreError` (a row only that cluster has, a bug on a path only it takes)."""

    def __init__(self, db: Backend) -> None:
        super().__init__(db)
        self.failing: set[str] = set()

    def acquire(self, cluster: str, holder: str, *, now: float, ttl_seconds: float) -> Fence | None:
        if cluster in self.failing:
            raise RuntimeError("not a store error")
        return super().acquire(cluster, holder, now=now, ttl_seconds=ttl_seconds)


def supervised_leader(leases: LeaseStore) -> tuple[VirtualClock, Supervisor, LeaseLeadership]:
    """Instance "a" leading CLUSTERS on `leases` (15 s leases, renewed every 5 s) on a fresh
    virtual clock, its status the `leases` task's of a supervisor: the task registered, not
    started (the test steps the rounds)."""
    clock = VirtualClock()
    supervisor = Supervisor(shutdown_timeout_seconds=1)
    a = LeaseLeadership(leases, CLUSTERS, clock, instance_name="a", lease_seconds=15, renew_seconds=5,
                        status=supervisor.status("leases"))
    supervisor.add("leases", a.run)  # registered, not started: the test steps the rounds
    return clock, supervisor, a


class FailingMembers(MemberStore):
    """A membership whose read of the live members raises (once `broken`) what no store error
    handler expects: a round that fails outside any one cluster's lease."""

    def __init__(self, db: Backend) -> None:
        super().__init__(db)
        self.broken = False

    def live(self, *, now: float, ttl_seconds: float) -> list[Member]:
        if self.broken:
            raise RuntimeError("not a store error")
        return super().live(now=now, ttl_seconds=ttl_seconds)


def live_leases(table: LeaseStore, holder: str, now: float) -> dict[str, Lease]:
    """The leases `holder` holds in the store at `now` (what keeps every other instance off them)."""
    return {lease.cluster: lease for lease in table.all() if lease.holder == holder and lease.expires_at > now}


def read_only(db: PostgresDatabase, on: bool) -> None:
    """The one pooled connection now reaches a read-only server (or a writable one again)."""
    with db.transaction() as conn:
        conn.execute(f"SET default_transaction_read_only = {'on' if on else 'off'}")


class TestLeaseLoopSurvives:
    """The `leases` task is supervised but not restarted: when it died, its instance never led
    again (the watchdog still pinged), and when every instance of the fleet met the same failure,
    no quota grew anywhere until someone restarted them all."""

    async def test_lease_loop_outlives_a_read_only_server_and_leads_again(self, pg_url: str) -> None:
        """Guards the read-only mapping: during a failover the fleet often reaches a server that
        answers but is read-only (a demoted primary, a hot standby); every write fails with
        SQLSTATE 25006, a psycopg `InternalError` that escaped `step()` and killed the loop. It
        is a store outage now: leases dropped, logged, taken again when writes work."""
        clock = VirtualClock()
        db = PostgresDatabase(pg_url, max_connections=1)
        leadership = LeaseLeadership(LeaseStore(db), ["c1"], clock, instance_name="a")
        stopping = asyncio.Event()
        loop_task = asyncio.create_task(leadership.run(stopping), name="leases")
        try:
            await until(lambda: leadership.is_leader("c1") or loop_task.done())
            with capture_logs() as logs:
                read_only(db, True)  # failover under way: the server answers, read-only
                await next_round(clock, loop_task)
                assert not loop_task.done(), f"the lease loop died: {loop_task.exception()!r}"
                assert not leadership.is_leader("c1")
                read_only(db, False)  # the failover is over
                await next_round(clock, loop_task)
            assert not loop_task.done(), f"the lease loop died: {loop_task.exception()!r}"
            assert leadership.is_leader("c1"), "the store is writable again, yet this instance does not lead c1"
            [failed] = [e for e in logs if e["event"] == "lease_store.failed"]
            assert "read-only" in failed["error"]
        finally:
            stopping.set()
            await asyncio.gather(loop_task, return_exceptions=True)
            db.close()

    async def test_an_unexpected_error_drops_the_leases_and_the_next_round_leads_again(
            self, open_store: OpenStore) -> None:
        """Guards `run()` itself: whatever a round raises (a driver error not known to be
        temporary, a bug), the leases are dropped — nothing acts on a lease it cannot renew — and
        released in the store as far as it answers, it is logged once with its traceback, and the
        next round tries again."""
        clock = VirtualClock()
        store = Broken(open_store())
        a = instance(store, clock, "a")
        stopping = asyncio.Event()
        loop_task = asyncio.create_task(a.run(stopping), name="leases")
        try:
            await until(lambda: clock.next_deadline is not None or loop_task.done())  # its first round is over
            assert a.is_leader("c1") and a.is_leader("c2")
            with capture_logs() as logs:
                store.broken = True
                await next_round(clock, loop_task)
                assert not loop_task.done(), f"the lease loop died: {loop_task.exception()!r}"
                assert not a.is_leader("c1") and not a.is_leader("c2")
                await next_round(clock, loop_task)  # still failing: not logged again
                store.broken = False
                await next_round(clock, loop_task)
            assert not loop_task.done()
            assert a.is_leader("c1") and a.is_leader("c2")
            failed = [e for e in logs if e["event"] == "lease_round.failed"]
            assert [(e["log_level"], e["error"], e["exc_info"]) for e in failed] == [
                ("error", "RuntimeError: not a store error", True)]
            assert [e["failures"] for e in logs if e["event"] == "lease_round.recovered"] == [2]
        finally:
            stopping.set()
            await asyncio.gather(loop_task, return_exceptions=True)

    async def test_a_lease_that_raises_loses_that_cluster_alone(self, open_store: OpenStore) -> None:
        """Guards the round against a failure tied to one cluster (review r4): the round that
        renewed c1 and then failed on c2 used to drop every lease in memory only, so c1 stayed
        renewed in the store by this live instance, round after round, while it never led c1 —
        and no other instance could take it. Now only c2 is lost; c1 is led throughout, and every
        lease this instance holds in the store is one it leads."""
        clock = VirtualClock()
        leases = FailingLeases(open_store())
        leases.failing.add("c2")
        a = LeaseLeadership(leases, CLUSTERS, clock, instance_name="a", lease_seconds=15, renew_seconds=5)
        table = LeaseStore(open_store())
        for _ in range(13):  # a minute of rounds: far more than a lease
            await a._round()
            assert set(live_leases(table, a.holder, clock.now())) == {c for c in CLUSTERS if a.is_leader(c)} == {"c1"}
            clock.advance(5)

    async def test_a_renewal_that_raises_releases_the_lease_to_another_instance(
            self, open_store: OpenStore) -> None:
        """Guards the release of a failing cluster's lease: its leader stops acting on it at once
        and gives the lease up in the store (best effort), so another instance takes it at its
        next round instead of finding it held by a live member; the other cluster stays led."""
        clock = VirtualClock()
        leases = FailingLeases(open_store())
        a = LeaseLeadership(leases, CLUSTERS, clock, instance_name="a", lease_seconds=15, renew_seconds=5)
        b = instance(open_store(), clock, "b")
        await a._round()
        await b._round()
        assert (a.is_leader("c1"), a.is_leader("c2"), b.is_leader("c1")) == (True, True, False)
        epoch = a.epoch("c1")
        clock.advance(5)
        leases.failing.add("c1")
        await a._round()
        assert (a.is_leader("c1"), a.is_leader("c2")) == (False, True)
        assert set(live_leases(LeaseStore(open_store()), a.holder, clock.now())) == {"c2"}
        await b._round()  # the least loaded live member: it takes the released lease at once
        assert (b.is_leader("c1"), b.epoch("c1")) == (True, (epoch or 0) + 1)
        assert a.is_leader("c2")

    async def test_a_round_that_raises_releases_every_lease_it_held(self, open_store: OpenStore) -> None:
        """Guards the round's own fallback: an error outside any one cluster's lease (here: reading
        the fleet's members) drops every lease and releases them in the store (best effort) —
        none stays held by an instance that no longer acts on it."""
        clock = VirtualClock()
        db = open_store()
        members = FailingMembers(db)
        a = LeaseLeadership(LeaseStore(db), CLUSTERS, clock, instance_name="a", lease_seconds=15,
                            renew_seconds=5, members=members)
        await a._round()
        assert a.is_leader("c1") and a.is_leader("c2")
        clock.advance(5)
        members.broken = True
        await a._round()
        assert not a.is_leader("c1") and not a.is_leader("c2")
        assert live_leases(LeaseStore(open_store()), a.holder, clock.now()) == {}
        members.broken = False
        clock.advance(5)
        await a._round()
        assert a.is_leader("c1") and a.is_leader("c2")

    async def test_a_lease_that_keeps_failing_shows_in_healthz_and_the_daemon_alert(
            self, open_store: OpenStore) -> None:
        """Guards visibility: the loop outlives a failing round (a crashed `leases` task used to
        be the only sign, on /healthz and as the `daemon` alert), so it reports the failure
        through the same supervisor state once its rounds have failed for a lease
        (`lease_seconds`, on the injected clock): the `leases` task keeps failing, with the
        latest error and since the streak's first failure (/healthz 503, the `daemon` alert
        critical), and is healthy again once a round works. Logged once per failure streak,
        with the traceback."""
        leases = FailingLeases(open_store())
        clock, supervisor, a = supervised_leader(leases)

        def healthz() -> HealthReport:
            return health_report({}, supervisor.crashes, PollSettings(), now=clock.now(), mode=None)

        await a._round()
        assert healthz()[0]
        with capture_logs() as logs:
            leases.failing.add("c2")
            clock.advance(5)
            first_failure = clock.now()
            await a._round()
            while clock.now() - first_failure < a.lease_seconds:
                assert healthz()[0], "reported before the streak lasted a lease"
                clock.advance(5)
                await a._round()
            healthy, report = healthz()
            assert (healthy, report["reasons"], report["failing_tasks"]) == (
                False, ["task leases keeps failing: c2: RuntimeError: not a store error"],
                {"leases": "c2: RuntimeError: not a store error"})
            assert supervisor.crashes["leases"].t == first_failure
            [alert] = task_conditions(task_health(supervisor))
            assert (alert.severity, alert.summary) == (
                Severity.CRITICAL, "daemon task leases keeps failing: c2: RuntimeError: not a store error")
            leases.failing.clear()
            clock.advance(5)
            await a._round()
        assert healthz()[0]
        assert [alert.severity for alert in task_conditions(task_health(supervisor))] == [None]
        assert a.is_leader("c1") and a.is_leader("c2")
        failed = [(e["log_level"], e["cluster"], e["error"], e["exc_info"])
                  for e in logs if e["event"] == "lease_round.failed"]
        assert failed == [("error", "c2", "RuntimeError: not a store error", True)]
        assert [(e["cluster"], e["failures"]) for e in logs if e["event"] == "lease_round.recovered"] == [("c2", 4)]

    async def test_a_failure_shorter_than_a_lease_is_no_failing_task(self, open_store: OpenStore) -> None:
        """Guards against a page for a blip (review r5): the loop reported `failing` on the first
        round that failed, so one transient error in one 5 s round made /healthz 503 ("task
        leases keeps failing"), set `quotapilot_task_crashed{task="leases"}` and, had the
        alerting stage's task check fallen in that window, fired the critical `daemon` alert
        (for_seconds 0) that resolved at the next check. A streak shorter than a lease (the time
        a standby's takeover takes anyway) is no failing task, and a round that works ends it:
        the next streak starts from nothing."""
        leases = FailingLeases(open_store())
        clock, supervisor, a = supervised_leader(leases)
        await a._round()
        for _ in range(2):  # two streaks of three failed rounds, 10 s each, a working round between
            leases.failing.add("c2")
            for _ in range(3):
                clock.advance(5)
                await a._round()
                healthy, report = health_report({}, supervisor.crashes, PollSettings(), now=clock.now(), mode=None)
                [alert] = task_conditions(task_health(supervisor))
                assert (healthy, report["failing_tasks"], alert.severity) == (True, {}, None), report["reasons"]
            leases.failing.clear()
            clock.advance(5)
            await a._round()
            assert a.is_leader("c1") and a.is_leader("c2")

    async def test_a_store_outage_neither_ends_nor_hides_a_lease_loop_that_keeps_failing(
            self, open_store: OpenStore) -> None:
        """Guards what a store outage does to the `leases` task's report: nothing. Its rounds end
        before any lease is tried, so they say nothing of whether the loop's own error is fixed:
        a task that keeps failing is still shown, next to the `store:` reason (clearing it would
        resolve the `daemon` alert and zero `quotapilot_task_crashed` for an error nobody fixed,
        and fire them again after the outage), and a streak that began before the outage goes on
        after it, since its first failure, as its log does (one `lease_round.failed`, no
        `recovered`). Only a round that works clears it."""
        plug = Unplugged(open_store())
        leases = FailingLeases(plug)
        clock, supervisor, a = supervised_leader(leases)
        failing = "task leases keeps failing: c2: RuntimeError: not a store error"
        outage = "store: PostgreSQL at test unavailable"

        def reasons() -> list[str]:
            return health_report({}, supervisor.crashes, PollSettings(), now=clock.now(), mode=None,
                                 store_outage=plug.outage())[1]["reasons"]

        await a._round()
        leases.failing.add("c2")
        clock.advance(5)
        first_failure = clock.now()
        with capture_logs() as logs:
            await a._round()  # a streak begins: not reported yet
            plug.down = True
            for _ in range(6):  # 30 s down: longer than a lease
                clock.advance(5)
                await a._round()
                assert reasons() == [outage]
            plug.down = False
            clock.advance(5)
            await a._round()  # c2 fails again: the same streak, now longer than a lease
            assert reasons() == [failing]
            assert supervisor.crashes["leases"].t == first_failure
            plug.down = True
            clock.advance(5)
            await a._round()
            assert reasons() == [failing, outage]
            assert [alert.severity for alert in task_conditions(task_health(supervisor))] == [Severity.CRITICAL]
            plug.down = False
            leases.failing.clear()
            clock.advance(5)
            await a._round()
        assert reasons() == []
        assert [e["cluster"] for e in logs if e["event"] == "lease_round.failed"] == ["c2"]
        assert [(e["cluster"], e["failures"]) for e in logs if e["event"] == "lease_round.recovered"] == [("c2", 2)]

    async def test_a_release_that_fails_unexpectedly_still_ends_the_loop_cleanly(
            self, open_store: OpenStore) -> None:
        """Guards `release()` on the way out: it is best effort (an unreleased lease runs out by
        itself), so an error there is logged, not raised in place of the reason the loop ends."""
        clock = VirtualClock()
        store = Broken(open_store())
        a = instance(store, clock, "a")
        stopping = asyncio.Event()
        loop_task = asyncio.create_task(a.run(stopping), name="leases")
        await until(lambda: clock.next_deadline is not None or loop_task.done())  # its first round is over
        assert a.is_leader("c1") and a.is_leader("c2")
        store.broken = True
        with capture_logs() as logs:
            stopping.set()
            await loop_task  # raises nothing
        assert [e["event"] for e in logs].count("lease.release_failed") == 2
        assert "member.leave_failed" in [e["event"] for e in logs]


class TestSpread:
    """Clusters spread over the live instances (runtime/placement.py), on both backends."""

    async def test_three_instances_three_clusters_each_leads_one(self, open_store: OpenStore) -> None:
        """All start together: the first takes everything, then hands over one lease per round
        once the others are stable (live for two renewals) — never two leaders at once."""
        fleet = Fleet(open_store, VirtualClock(), ["a", "b", "c"])
        for _ in range(6):
            await fleet.round()
        assert sorted(len(clusters) for clusters in fleet.led_by().values()) == [1, 1, 1]
        assert fleet.handovers() == 2
        for _ in range(10):  # settled: nothing moves any more
            await fleet.round()
        assert fleet.handovers() == 2

    async def test_a_dead_instance_cluster_moves_and_comes_back_once(self, open_store: OpenStore) -> None:
        fleet = Fleet(open_store, VirtualClock(), ["a", "b", "c"])
        for _ in range(6):
            await fleet.round()
        orphan = fleet.led_by()["b"][0]
        fleet.alive.pop("b")  # killed: never renews, never releases
        killed_at = fleet.clock.now() - 5  # its last renewal, in the round just run
        while not any(i.is_leader(orphan) for i in fleet.alive.values()):
            await fleet.round()
        # the lease runs out 15 s after b's last renewal; the preferred survivor takes it at its
        # next round: within the lease plus one renewal (with the default 60 s polls and 15 s
        # leases, well within 2 poll intervals)
        assert fleet.clock.now() - 5 - killed_at <= 15 + 5
        assert sorted(len(clusters) for clusters in fleet.led_by().values()) == [1, 2]
        handovers = fleet.handovers()
        fleet.alive["b"] = fleet.start("b")  # restarted (a new holder under the same name)
        for _ in range(10):
            await fleet.round()
        assert sorted(len(clusters) for clusters in fleet.led_by().values()) == [1, 1, 1]
        assert fleet.handovers() == handovers + 1  # rebalanced once, then still
        assert fleet.checks >= 6 * 3 + 10 * 3  # the invariant held after every single step

    async def test_a_member_that_just_came_back_is_not_handed_leases_yet(self, open_store: OpenStore) -> None:
        """Hysteresis: a lease is handed over only to a member live for two renewals."""
        fleet = Fleet(open_store, VirtualClock(), ["a"])
        await fleet.round()
        assert fleet.led_by() == {"a": SPREAD}
        fleet.alive["b"] = fleet.start("b")
        await fleet.round()  # b: first heartbeat
        await fleet.round()  # b live for one renewal: still nothing handed over
        assert fleet.handovers() == 0
        await fleet.round()  # two renewals: a hands one over, and b takes it in the same round
        assert fleet.handovers() == 1
        assert [len(c) for c in fleet.led_by().values()] == [2, 1]

    async def test_a_free_lease_is_taken_by_anyone_after_the_grace(self, open_store: OpenStore) -> None:
        """The preferred member (the least loaded) heartbeats but never takes the free lease
        (stuck): a waits, then takes it once it has been free for the grace (one lease length),
        so no cluster stays unled."""
        clock = VirtualClock()
        a = LeaseLeadership(LeaseStore(open_store()), ["c1"], clock, instance_name="a", lease_seconds=15,
                            renew_seconds=5)
        assert LeaseStore(open_store()).acquire("elsewhere", a.holder, now=clock.now(), ttl_seconds=3600)
        members = MemberStore(open_store())  # a leads one cluster already; "stuck" leads none
        waited = 0.0
        while not a.is_leader("c1"):
            members.heartbeat("stuck/0", "stuck", now=clock.now(), ttl_seconds=15)
            await a.step()
            if not a.is_leader("c1"):
                clock.advance(5)
                waited += 5
        assert 15 <= waited <= 15 + 5


class TestSoleLeadership:
    async def test_single_instance_always_leads_unfenced(self) -> None:
        sole = SoleLeadership(CLUSTERS, holder="h")
        assert sole.is_leader("c1") and sole.epoch("c1") == 0 and sole.fence("c1") is None
        assert await sole.epoch_is_current("c2")
        registry = CollectorRegistry()
        registry.register(sole.collector())
        assert registry.get_sample_value("quotapilot_leader", {"cluster": "c2"}) == 1.0
        assert [r.as_json()["role"] for r in sole.roles()] == ["leader", "leader"]


async def until(condition: Callable[[], Any], attempts: int = 2000) -> None:
    """Let the event loop (and the store's worker threads) run until `condition` holds."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.005)  # a thread's round trip to the database, not simulated time
    raise AssertionError("condition never held")
