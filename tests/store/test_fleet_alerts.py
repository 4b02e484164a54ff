"""Fleet alerts (the fleet-operator review of 2026-12-05): an SRE running two quotapilot instances
on one PostgreSQL, following the README's "A fleet on PostgreSQL (high availability)". Each test is
a defect found by running the
fleet by hand (real processes, a real PostgreSQL stopped for a minute, SIGKILL/SIGSTOP), reduced
to in-process daemons on the suite's throwaway PostgreSQL and a virtual clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Receiver
from capacity_cycles import T0, TB, pool_cycle
from store_helpers import NO_PG_CTL, PG_CTL, FailsToAcquire, Outage, alerting, leases

from quotapilot.alerts.model import Phase
from quotapilot.alerts.rules import TaskHealth, task_conditions
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.supervisor import Supervisor
from quotapilot.daemon.runtime.wiring import Collaborators, build_stages
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.store.actions import Fence
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore

pytestmark = pytest.mark.skipif(PG_CTL is None, reason=NO_PG_CTL)

LEASE, RENEW = 15.0, 5.0
TASK_CHECK = 15.0
"""The alerting stage's `task_check_seconds` (its delivery task checks the daemon's tasks this often)."""


# ----------------------------------------------------------------------------------- helpers
def settings_for(sim: SimulatorServer, tmp_path: Path, url: str, name: str, **groups: Any) -> Settings:
    return Settings(
        clusters=({"name": "sim", "address": sim.address, "token": sim.token,  # type: ignore[arg-type]
                   "ca_file": str(sim.ca_file)},),
        store={"url": url, "instance_name": name, "path": tmp_path / f"{name}.db",  # type: ignore[arg-type]
               "lease_seconds": LEASE, "lease_renew_seconds": RENEW, "connect_timeout_seconds": 0.5},
        policy={"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4},  # type: ignore[arg-type]
        daemon={"shutdown_timeout_seconds": 1},  # type: ignore[arg-type]
        **groups)


async def real_wait(condition: Callable[[], object], timeout: float) -> bool:  # noqa: ASYNC109 (test helper)
    """Poll `condition` in real time (the store's connection attempts take real time); its truth."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def stored_state(daemon: Daemon, alert_id: str) -> dict[str, Any] | None:
    found = daemon.db.query("SELECT state FROM alert_state WHERE alert_id = ?", (alert_id,))
    return None if not found else dict(json.loads(found[0]["state"]))


class Standby:
    """The `Leadership` of an instance that stands by for every cluster (another instance leads)."""

    holder = "b/standby"

    def is_leader(self, cluster: str) -> bool:
        return False

    def epoch(self, cluster: str) -> int | None:
        return None

    def fence(self, cluster: str) -> Fence | None:
        return Fence(self.holder, -1)

    async def epoch_is_current(self, cluster: str) -> bool:
        return False

    def roles(self) -> list[Any]:
        return []

    def subscribe(self, listener: Any) -> None:
        pass


# -------------------------------------------------------------------------------------- tests
class TestDatabaseOutageAndAlertDelivery:
    async def test_alert_delivery_survives_a_database_outage(self, tmp_path: Path, database: tuple[str, Outage],
                                                             receiver: Receiver) -> None:
        """README ("A fleet on PostgreSQL"): with PostgreSQL unreachable the instance stops
        acting, keeps polling and serving, and takes the lease back when the database returns;
        the outbox is durable and a receiver gets the backlog when it is back. Found by hand:
        after stopping PostgreSQL for a minute, `/healthz` of BOTH instances stayed 503 for good
        with `task alerts crashed: StoreUnavailable: …` — the delivery task (`AlertingStage.run`)
        runs `check_tasks()` every 15 s, which loads the alert states from the store; the outage
        raised out of it, the supervisor restarts nothing, so no alert (not even the new leader's
        `leadership/sim@N`) was ever delivered again by any instance until each was restarted."""
        url, outage = database
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim:
            settings = settings_for(sim, tmp_path, url, "a", alerts={  # type: ignore[arg-type]
                "log_sink": False, "webhooks": [{"url": receiver.url, "name": "oncall"}]})
            async with Daemon(settings, clock) as daemon:
                runner = asyncio.create_task(daemon.supervisor.run(), name="supervisor")
                try:
                    assert await real_wait(lambda: leases(daemon).is_leader("sim"), 10), "a leader at start"
                    outage.begin()
                    try:
                        clock.advance(TASK_CHECK)  # the delivery task checks the daemon's tasks meanwhile
                        await real_wait(lambda: "alerts" in daemon.supervisor.crashes, 5)  # (crashes today)
                    finally:
                        outage.end()

                    def leading_again() -> bool:
                        clock.advance(RENEW)
                        return leases(daemon).is_leader("sim")

                    assert await real_wait(leading_again, 15), "the lease back once the database is"
                    await daemon.poll_once("sim")  # first samples; the second confirms them and grows
                    await daemon.poll_once("sim")

                    def grown_and_alerted() -> bool:
                        return any(b.get("kind") == "growth" for b in receiver.bodies())

                    delivered = await real_wait(grown_and_alerted, 10)
                    crashes = dict(daemon.supervisor.crashes)
                finally:
                    daemon.supervisor.stop()
                    await runner
        assert "alerts" not in crashes, f"the alert delivery task died of the outage: {crashes['alerts']}"
        assert delivered, "a growth made after the database came back was never alerted"


class TestDaemonAlertInAFleet:
    async def test_a_healthy_peer_does_not_resolve_another_instances_daemon_alert(
            self, tmp_path: Path, pg_url: str) -> None:
        """README (Alerts): `daemon` (`_daemon/<task>/daemon`) fires while a supervised task
        crashed or keeps failing (a fleet's lease loop) and resolves when "the task runs again".
        In a fleet the id names no instance and every instance evaluates it against its OWN
        tasks (`AlertingStage.check_tasks`, every 15 s, not gated by leadership, states shared in
        the store): instance a's lease loop keeps failing and a fires the critical alert; b,
        healthy, loads the shared state at its next check and resolves it — on-call is told
        "runs again" while a is still broken, and a (whose cached state still says firing)
        never re-fires before its 4 h re-notify."""
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim, \
                Daemon(settings_for(sim, tmp_path, pg_url, "a"), clock) as a, \
                Daemon(settings_for(sim, tmp_path, pg_url, "b"), clock) as b:
            loop = leases(a)
            loop.leases = FailsToAcquire(loop.leases.db)
            first_failure = clock.now()
            await loop._round()
            while clock.now() - first_failure < LEASE:  # a lease's worth of failed rounds: reported
                clock.advance(RENEW)
                await loop._round()
            await leases(b).step()
            assert "leases" in a.supervisor.crashes and "leases" not in b.supervisor.crashes
            await alerting(a).check_tasks()
            fired = stored_state(a, "_daemon/leases@a/daemon")
            assert fired is not None and fired["phase"] == Phase.FIRING.value
            await alerting(b).check_tasks()  # b's own lease loop is fine
            assert "leases" in a.supervisor.crashes  # a is still broken
            after = stored_state(a, "_daemon/leases@a/daemon")
        assert after is not None and after["phase"] == Phase.FIRING.value, (
            f"b resolved a's daemon alert while a's lease loop still fails: {after}")

    async def test_one_stored_under_the_id_without_an_instance_ends(self, tmp_path: Path, pg_url: str) -> None:
        """A fleet upgraded with `_daemon/leases/daemon` firing (the id before it named the
        instance) would keep it firing for ever, re-sent every 4 h: the next check ends it (the
        instance's own alert fires again if its task still fails)."""
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim, \
                Daemon(settings_for(sim, tmp_path, pg_url, "a"), clock) as a:
            stage = alerting(a)
            await stage._apply(await stage.states(), task_conditions(
                [TaskHealth("leases", True, "boom", still_running=True)]), clock.now())
            assert (stored_state(a, "_daemon/leases/daemon") or {}).get("phase") == Phase.FIRING.value
            await stage.check_tasks([TaskHealth("leases", False)])
            legacy = stored_state(a, "_daemon/leases/daemon")
        assert legacy is not None and legacy["phase"] == Phase.INACTIVE.value, legacy


RAW = "/cosmos7/raw"


def push_raw_to(sim: SimulatorServer, ratio: float, rules: list[Any]) -> None:
    """VMS reports raw `ratio` full of its current hard limit (a burst), replacing the last such rule."""
    for rule in rules:
        sim.faults.remove(rule.id)
    rules.clear()
    hard = sim.engine.summary()["quotas"][RAW]["hard_limit"]
    rules.append(sim.faults.add("rewrite", path="/quotas", match=RAW, values={"used_capacity": int(hard * ratio)}))


class TestLeaderAgainWithStaleAlertStates:
    async def test_every_growth_of_raw_is_alerted_when_leadership_comes_back(
            self, tmp_path: Path, pg_url: str) -> None:
        """README: "an alert is sent once across the fleet", every growth is an info `growth`
        alert. a leads, grows raw (growth#1) and hangs past its lease (a GC pause, SIGSTOP, a
        slow poll interval: no cycle runs meanwhile); b takes over and grows raw (growth#2); b
        dies; a takes the lease back and grows raw again. a's alerting stage still holds the
        alert states it cached before it lost the lease (`AlertingStage._states` is dropped only
        by a cycle run as a standby), so it numbers its growth #2 again: the dedup key
        `sim/cosmos7-raw/growth#2` is already in the shared outbox, the row is ignored, and the
        third growth is never alerted (its state row overwritten with a stale sequence)."""
        clock = VirtualClock()
        policy = {"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4, "cooldown_seconds": 0}
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim:
            a_settings = settings_for(sim, tmp_path, pg_url, "a", alerts={"log_sink": True})
            b_settings = settings_for(sim, tmp_path, pg_url, "b", alerts={"log_sink": True})
            a_settings = a_settings.model_copy(update={"policy": a_settings.policy.model_copy(update=policy)})
            b_settings = b_settings.model_copy(update={"policy": b_settings.policy.model_copy(update=policy)})
            async with Daemon(a_settings, clock) as a, Daemon(b_settings, clock) as b:
                rules: list[Any] = []
                await leases(a).step()
                await leases(b).step()
                assert leases(a).is_leader("sim")
                await a.poll_once("sim")
                await a.poll_once("sim")  # a grows raw (and processed): growth#1
                # a hangs past its lease; b takes over and, raw bursting, grows it
                clock.advance(LEASE + RENEW)
                await leases(b).step()
                assert leases(b).is_leader("sim") and not leases(a).is_leader("sim")
                push_raw_to(sim, 0.95, rules)
                for _ in range(3):  # a jump up is confirmed by a second sample
                    clock.advance(60)
                    await leases(b).step()
                    await b.poll_once("sim")
                # b dies; a (no cycle ran meanwhile) takes the lease back, raw bursts again
                clock.advance(LEASE + RENEW)
                await leases(a).step()
                assert leases(a).is_leader("sim")
                push_raw_to(sim, 0.95, rules)
                for _ in range(3):
                    clock.advance(60)
                    await leases(a).step()
                    await a.poll_once("sim")
                grown = [r for r in a.db.query("SELECT epoch, status FROM actions WHERE path = ? ORDER BY id",
                                               (RAW,)) if r["status"] in ("verified", "reconciled")]
                alerted = sorted({r["dedup_key"] for r in a.db.query(
                    "SELECT dedup_key FROM outbox WHERE alert_id = 'sim/cosmos7-raw/growth' AND sink = 'log'")})
        assert sorted(r["epoch"] for r in grown) == [1, 2, 3], grown  # three growths, one per leadership
        assert len(alerted) == len(grown), f"{len(grown)} growths of raw, growth alerts queued: {alerted}"


class TestStandbyCapacityAlert:
    async def test_a_standby_does_not_evaluate_the_clusters_capacity_order_alert(self, tmp_path: Path) -> None:
        """README (fleet): "Only the leader of a cluster plans, writes quotas and evaluates that
        cluster's alerts". The `capacity_order` alert (`<cluster>/pool/capacity_order`) is a
        cluster's alert, yet `CapacityStage.on_cycle` raises it through
        `AlertingStage.raise_conditions` on every instance — the alerting stage's own
        `on_cycle` skips a standby (`acts_on`), `raise_conditions` does not: a standby
        evaluates it against its own `_due`/`_clear_since` memory and writes its state and
        notifications into the shared store next to the leader's."""
        settings = load_settings(None, store={"path": tmp_path / "s.db"},
                                 capacity={"procurement_lead_time": "2w", "alert_lead_time": "30d",
                                           "alert_for": 0},
                                 alerts={"log_sink": True}, daemon={"shutdown_timeout_seconds": 1})
        db = Database(settings.store.path)
        try:
            deps = Collaborators(settings=settings, clock=VirtualClock(T0), db=db,
                                 observations=ObservationStore(db, raw_retention_seconds=86400.0,
                                                               hourly_retention_seconds=86400.0),
                                 writers={}, supervisor=Supervisor(shutdown_timeout_seconds=1),
                                 leadership=Standby())
            wired = build_stages(deps)
            ctx = pool_cycle(used=500 * TB, usable=1000 * TB, rate_per_day=10 * TB)
            await wired.alerting.on_cycle(ctx)  # the standby leaves the cluster's alerts to the leader…
            await wired.capacity.on_cycle(ctx)  # …and its capacity plan (served on /api/v1/capacity)
            raised = wired.alerting.alerts_raised
            stored = [r["alert_id"] for r in db.query("SELECT alert_id FROM alert_state")]
            queued = [r["dedup_key"] for r in db.query("SELECT dedup_key FROM outbox")]
        finally:
            db.close()
        assert (raised, stored, queued) == (0, [], []), "a standby evaluated the cluster's capacity_order alert"
