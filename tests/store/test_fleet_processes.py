"""A fleet of real processes on one throwaway PostgreSQL: `quotapilot run` instances (enforce
mode, 2.5 s polls, 3 s leases renewed every second) against `quotapilot simulator` over verified
HTTPS, with real faults — kill -9, SIGSTOP/SIGCONT, the database stopped and started — judged by
the simulator's ground truth of quota writes, the shared audit trail and a real webhook receiver.

Mid-growth is made exact with the simulator's fault injection: a growth's PATCH (or the re-read
between its intent and its PATCH) is held for a moment, and the fault's `fired` count says when
the leader is inside it. No fixed sleeps: every wait is a condition polled until a deadline.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alert_receivers import Receiver, free_port
from fleet_processes import (
    Instance,
    Processes,
    RestartableServer,
    Simulator,
    actions,
    instance_config,
    leases,
    rows,
    wait_until,
)
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor
from store_helpers import NO_PG_CTL, PG_CTL

from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.daemon.store.postgres import PostgresDatabase

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PG_CTL is None, reason=NO_PG_CTL)]

POLL, LEASE, RENEW = 2.5, 3.0, 1.0
"""Failover takes at most a lease plus a renewal (4 s): within 2 polls with a second to spare."""
OPEN = ("intent", "patched", "unknown")
APPLIED = ("verified", "reconciled")
GROWTH_ENDS = ("quota.grown", "quota.grow_fenced", "quota.grow_failed", "quota.grow_unknown", "quota.verify_failed")
"""Log events that end one growth attempt in the actuator."""
RAW, PROCESSED = "/cosmos7/raw", "/cosmos7/processed"


@pytest.fixture
def url(postgresql_server: PostgreSQLExecutor) -> Iterator[str]:
    """A database of this test's own on the session's throwaway server, migrated."""
    proc = postgresql_server
    dbname = f"qp_{uuid.uuid4().hex[:12]}"
    with DatabaseJanitor(user=proc.user, host=proc.host, port=proc.port, dbname=dbname, password=proc.password):
        address = f"postgresql://{proc.user}@{proc.host}:{proc.port}/{dbname}"
        PostgresDatabase(address).close()  # migrated once here, not raced by the instances
        yield address


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.kill_all()


@dataclass
class Fleet:
    """The simulator and the instances of one test, on one store."""

    processes: Processes
    directory: Path
    url: str
    sim: Simulator
    store: str = ""
    policy: str = ""
    tables: str = ""
    mode: str = "enforce"
    clusters: tuple[str, ...] = ("sim",)

    def __post_init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str) -> Instance:
        """Start (or restart, on the same port) the instance `name`."""
        port = self.ports.setdefault(name, free_port())
        config = instance_config(self.sim, self.directory, name, self.url, port=port, clusters=self.clusters,
                                 poll_seconds=POLL, lease_seconds=LEASE, renew_seconds=RENEW, mode=self.mode,
                                 store=self.store, policy=self.policy, tables=self.tables)
        self.instances[name] = Instance(self.processes, config, name, port)
        return self.instances[name]

    def leader(self, cluster: str = "sim") -> Instance | None:
        """The instance whose /healthz says it leads `cluster` (None: nobody does)."""
        leading = [i for i in self.instances.values() if i.proc.poll() is None and i.roles().get(cluster) == "leader"]
        assert len(leading) <= 1, f"two leaders of {cluster}: {[i.name for i in leading]}"
        return leading[0] if leading else None

    def standby(self, cluster: str = "sim") -> Instance | None:
        found = [i for i in self.instances.values() if i.roles().get(cluster) == "standby"]
        return found[0] if found else None

    def kill_switch(self, engaged: bool) -> None:
        db = PostgresDatabase(self.url)
        try:
            overrides = OverrideStore(db)
            if engaged:
                overrides.engage_kill_switch(now=time.time(), reason="test: hold growth until the fleet is up")
            else:
                overrides.release_kill_switch()
        finally:
            db.close()


@pytest.fixture
async def fleet(processes: Processes, tmp_path: Path, url: str) -> AsyncIterator[Fleet]:
    sim = Simulator(processes, tmp_path, "--scenario", "cosmos7", "--speed", "60", "--seed", "7")
    yield Fleet(processes, tmp_path, url, sim)


def open_rows(url: str) -> list[dict[str, Any]]:
    return [r for r in actions(url) if r["status"] in OPEN]


def growths_by_path(url: str) -> Counter[tuple[str, int, int]]:
    """The audit trail's applied growths: (path, old hard, new hard) → how often."""
    return Counter((r["path"], r["old_hard"], r["new_hard"]) for r in actions(url)
                   if r["status"] in APPLIED and r["mode"] == "enforce")


def truth_by_path(sim: Simulator) -> Counter[tuple[str, int, int]]:
    """The simulator's applied hard-limit changes: (path, old hard, new hard) → how often."""
    return Counter((w["path"], w["before"]["hard_limit"], w["changes"]["hard_limit"]) for w in sim.limit_changes())


def led_by_another(url: str, leader: Instance, epoch: int) -> bool:
    """Whether the lease of `sim` has passed from `leader` (under `epoch`) to another instance."""
    holder, current = leases(url).get("sim", ("", 0))
    return holder != leader.name and current > epoch


async def fleet_up(fleet: Fleet, *names: str) -> Instance:
    """Start `names` together; wait until every one answers and one of them leads; the leader."""
    for name in names:
        fleet.start(name)
    await wait_until(lambda: all(i.roles() for i in fleet.instances.values()), "every instance's /healthz")
    return await wait_until(fleet.leader, "a leader")


class TestKillTheLeaderMidGrowth:
    async def test_standby_takes_over_and_settles_the_intent_once(self, fleet: Fleet) -> None:
        """kill -9 while the leader's PATCH of raw is held at VMS: the standby leads within two
        poll intervals, settles the dead leader's intent from VMS (never re-applying it), and every
        limit change in the simulator is one audited growth — none twice, none missing."""
        sim, url = fleet.sim, fleet.url
        fleet.kill_switch(True)
        # VMS applies the PATCH of raw at once but holds its answer 2 s (then drops it)
        held = sim.add_fault(kind="applied_answer_lost", method="PATCH", path=f"/quotas/{sim.quota_id(RAW)}/",
                             seconds=2.0, count=1)
        leader = await fleet_up(fleet, "a", "b")
        fleet.kill_switch(False)
        await wait_until(lambda: sim.fired(held) == 1, "the leader's PATCH of raw at VMS")
        killed_at = time.monotonic()
        leader.kill()
        _, epoch = leases(url)["sim"]
        # killed mid-growth: the intent recorded under its epoch, its PATCH applied, its answer never back
        [intent] = [r for r in actions(url) if r["path"] == RAW and r["status"] in OPEN]
        assert (intent["status"], intent["epoch"]) == ("intent", epoch)
        await wait_until(partial(led_by_another, url, leader, epoch), "a new lease holder", timeout=4 * POLL)
        failover_seconds = time.monotonic() - killed_at
        assert failover_seconds <= 2 * POLL, f"failover took {failover_seconds:.1f}s"

        def settled() -> bool:
            grown = {path for path, _, _ in growths_by_path(url)}
            return not open_rows(url) and {RAW, PROCESSED} <= grown

        await wait_until(settled, "both growths settled by the new leader")
        print(f"failover after kill -9: {failover_seconds:.2f}s ({failover_seconds / POLL:.2f} poll intervals)")
        settled_by = {r["id"]: r for r in actions(url)}[intent["id"]]
        assert settled_by["status"] == "reconciled"  # the dead leader's PATCH is found applied, not repeated
        assert truth_by_path(sim) == growths_by_path(url)  # no lost growth
        assert all(n == 1 for n in truth_by_path(sim).values())  # no duplicate
        assert sorted(path for path, _, _ in truth_by_path(sim)) == [PROCESSED, RAW]


class TestPausedLeaderIsFenced:
    async def test_leader_stopped_between_intent_and_patch_never_writes_after_its_successor(
            self, fleet: Fleet) -> None:
        """SIGSTOP the leader while its re-read of raw (between the intent and the PATCH) is held
        at VMS; the standby takes the lease, settles the stale intent and grows raw itself; then
        SIGCONT the old leader: its re-check before the PATCH refuses, and VMS sees exactly one
        change of raw — the new leader's."""
        sim, url = fleet.sim, fleet.url
        fleet.kill_switch(True)
        held = sim.add_fault(kind="latency", method="GET", path=f"/quotas/{sim.quota_id(RAW)}/", seconds=2.0,
                             count=1)
        leader = await fleet_up(fleet, "a", "b")
        fleet.kill_switch(False)
        await wait_until(lambda: sim.fired(held) == 1, "the leader's re-read of raw before its PATCH")
        leader.signal(signal.SIGSTOP)
        _, epoch = leases(url)["sim"]
        [stale] = [r for r in actions(url) if r["path"] == RAW and r["status"] in OPEN]
        assert (stale["status"], stale["epoch"]) == ("intent", epoch)
        await wait_until(partial(led_by_another, url, leader, epoch), "the standby's lease", timeout=4 * POLL)

        def grown_by_successor() -> list[dict[str, Any]]:
            return [r for r in actions(url) if r["path"] == RAW and r["epoch"] > epoch and r["status"] in APPLIED]

        [successor_growth] = await wait_until(grown_by_successor, "the new leader's growth of raw")
        assert {r["id"]: r for r in actions(url)}[stale["id"]]["status"] == "abandoned"  # settled, not repeated
        leader.signal(signal.SIGCONT)
        ended = await wait_until(lambda: [e["event"] for e in leader.events() if e.get("event") in GROWTH_ENDS
                                          and e.get("target", "").endswith("cosmos7-raw")],
                                 "the old leader's growth of raw to end")
        await wait_until(lambda: leader.roles().get("sim") == "standby", "the old leader standing by")
        raw_changes = [w for w in sim.limit_changes() if w["path"] == RAW]
        assert [(w["before"]["hard_limit"], w["changes"]["hard_limit"]) for w in raw_changes] == \
            [(successor_growth["old_hard"], successor_growth["new_hard"])]  # none by the old leader
        assert ended == ["quota.grow_fenced"]
        assert truth_by_path(sim) == growths_by_path(url)


def metric(instance: Instance, name: str) -> float | None:
    """The value of an unlabelled-or-first sample `name` on the instance's /metrics (None: absent)."""
    answer = instance.get("/metrics")
    if answer is None or answer[0] != 200:
        return None
    for line in answer[1].splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            return float(line.rsplit(" ", 1)[1])
    return None


def polled_since(instance: Instance, t: float) -> bool:
    """Whether the instance's last successful poll (its /metrics) is later than `t` (wall time)."""
    last = metric(instance, "quotapilot_last_successful_poll_timestamp_seconds")
    return last is not None and last > t


class TestDatabaseRestart:
    async def test_leader_stops_writing_while_the_database_is_down_and_leads_again(
            self, fleet: Fleet, postgresql_server: PostgreSQLExecutor) -> None:
        """The store stops while a growth of raw becomes due (VMS reports raw 95 % full): the
        leader drops its lease at once, writes nothing, keeps polling and serving /metrics, and
        reports the store; once the database is back it leads again by itself and grows raw."""
        sim, url = fleet.sim, fleet.url
        fleet.store = "connect_timeout_seconds = 0.5\nstatement_timeout_seconds = 1"  # short polls: give up fast
        fleet.policy = "cooldown_seconds = 0"  # whichever instance leads after the outage grows raw at once
        leader = await fleet_up(fleet, "a", "b")
        await wait_until(lambda: not open_rows(url) and len(growths_by_path(url)) == 2, "the first growths")
        before = truth_by_path(sim)
        raw_hard = sim.quotas()[RAW]["hard_limit"]
        with RestartableServer(postgresql_server).stopped():
            down_at = time.time()
            sim.add_fault(kind="rewrite", path="/quotas", match=RAW, values={"used_capacity": int(raw_hard * 0.95)})
            await wait_until(lambda: not fleet.leader(), "every instance standing by", timeout=2 * RENEW + 1)
            dropped_after = time.time() - down_at
            await wait_until(partial(polled_since, leader, down_at + POLL), "polls while the database is down",
                             timeout=4 * POLL)
            health = leader.get("/healthz")
            assert health is not None
            status, body = health
            print(f"database down: leadership dropped after {dropped_after:.2f}s; /healthz {status} {body}")
            assert status == 503  # the outage is reported: nobody can lead, so nothing is protected
            assert [r for r in json.loads(body)["reasons"] if r.startswith("store: ")]
            assert truth_by_path(sim) == before  # nothing written while the store is down
        await wait_until(fleet.leader, "a leader again")

        def raw_grown_again() -> bool:
            return not open_rows(url) and sum(n for (path, _, _), n in growths_by_path(url).items()
                                              if path == RAW) == 2

        await wait_until(raw_grown_again, "the growth of raw once the database is back")
        assert truth_by_path(sim) == growths_by_path(url)


class TestSpread:
    async def test_three_instances_lead_one_cluster_each(self, fleet: Fleet) -> None:
        """Three clusters (the simulator under three names, observe mode), three instances: once
        the leases settle, each instance leads exactly one cluster and every cluster has a leader."""
        fleet.mode, fleet.clusters = "observe", ("c1", "c2", "c3")
        for name in ("a", "b", "c"):
            fleet.start(name)

        def led_by() -> dict[str, list[str]]:
            return {i.name: sorted(c for c, role in i.roles().items() if role == "leader")
                    for i in fleet.instances.values()}

        await wait_until(lambda: all(len(r) == 3 for r in (i.roles() for i in fleet.instances.values())),
                         "every instance's /healthz")
        await wait_until(lambda: sorted(c for led in led_by().values() for c in led) == ["c1", "c2", "c3"],
                         "a leader for every cluster")
        try:
            await wait_until(lambda: all(len(led) == 1 for led in led_by().values()),
                             "one cluster led by each instance", timeout=3 * LEASE)
        finally:
            print("leases:", leases(fleet.url), "led by:", led_by())
        assert sorted(holder for holder, _ in leases(fleet.url).values()) == ["a", "b", "c"]


RETRY = 3.0
"""Seconds between delivery attempts of the alert test (the quiet window it kills the leader in)."""


def raw_alert_rows(url: str) -> list[dict[str, Any]]:
    """The outbox rows of raw's utilization alert."""
    try:
        return rows(url, "SELECT * FROM outbox WHERE alert_id LIKE %s", ("%/cosmos7-raw/utilization",))
    except psycopg.errors.UndefinedTable:
        return []


class TestAlertOnceAcrossTheFleet:
    async def test_one_alert_is_sent_once_while_leaders_die_and_restart(self, fleet: Fleet,
                                                                         receiver: Receiver) -> None:
        """raw stays above the warning threshold (observe mode). The receiver refuses the alert
        at first, so it waits in the shared outbox for its retry when its leader is killed -9; the
        successor delivers it; the dead one restarts, and the new leader is killed and restarted
        too. The receiver gets the raw utilization alert once, and no dedup key twice."""
        fleet.mode, fleet.policy = "observe", "warning_at = 0.55"
        fleet.tables = (f'[alerts]\nlog_sink = false\nretry_backoffs_seconds = [{RETRY}]\n\n'
                        f'[[alerts.webhooks]]\nurl = "{receiver.url}"\n')
        receiver.statuses = [503] * 10_000  # down until the first leader is dead
        leader = await fleet_up(fleet, "a", "b")

        def refused_once() -> bool:
            return any(r["attempts"] >= 1 for r in raw_alert_rows(fleet.url))

        await wait_until(refused_once, "a refused delivery waiting for its retry")

        def raw_utilization() -> list[dict[str, Any]]:
            return [b for b in receiver.bodies() if b["kind"] == "utilization" and b["path"] == RAW]

        for round_ in range(2):
            leader.kill()
            taken_at = time.time()
            successor = await wait_until(fleet.leader, "the standby leading", timeout=4 * POLL)
            if round_ == 0:
                receiver.statuses.clear()  # the receiver is back: the queued alert goes out now
                await wait_until(raw_utilization, "the raw utilization alert at the receiver", timeout=3 * RETRY)
            fleet.start(leader.name)  # the dead one comes back (a new process, a new holder)
            # a cycle that started after the takeover has ended (alerts evaluated by the new leader)
            await wait_until(partial(polled_since, successor, taken_at + POLL), "the new leader's cycles")
            leader = successor
        await wait_until(lambda: fleet.standby() is not None, "the restarted instance standing by")
        [alert] = raw_utilization()
        assert alert["status"] == "firing"
        duplicated = {k: n for k, n in Counter(b["dedup_key"] for b in receiver.bodies()).items() if n > 1}
        assert duplicated == {}
