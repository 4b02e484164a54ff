"""Two real daemons sharing one PostgreSQL store, against the simulator (vastpy over verified
HTTPS): only the leader of the cluster writes; a standby takes over when the leader's lease runs
out; a leader paused between its intent and its PATCH (a SIGSTOP, a GC pause) does not write
once a newer leader has taken over, and the growth happens exactly once."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from store_helpers import FailsToAcquire, alerting, leases

from quotapilot.alerts.model import Phase, Severity
from quotapilot.daemon.cli import main
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.fs.collector import FilesystemCollector
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import FilesystemTarget, Settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.stages.growth import GrowthStage
from quotapilot.daemon.store.actions import query_actions
from quotapilot.daemon.store.leases import LeaseStore
from quotapilot.forecasting.types import ActionStatus

LEASE, RENEW = 15.0, 5.0


def settings_for(sim: SimulatorServer, tmp_path: Path, url: str, name: str) -> Settings:
    return Settings(
        clusters=({"name": "sim", "address": sim.address, "token": sim.token,  # type: ignore[arg-type]
                   "ca_file": str(sim.ca_file)},),
        store={"url": url, "instance_name": name, "path": tmp_path / f"{name}.db",  # type: ignore[arg-type]
               "lease_seconds": LEASE, "lease_renew_seconds": RENEW},
        policy={"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4})  # type: ignore[arg-type]


@asynccontextmanager
async def fleet(tmp_path: Path, url: str) -> AsyncIterator[tuple[SimulatorServer, VirtualClock, Daemon, Daemon]]:
    clock = VirtualClock()
    async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim, \
            Daemon(settings_for(sim, tmp_path, url, "a"), clock) as a, \
            Daemon(settings_for(sim, tmp_path, url, "b"), clock) as b:
        yield sim, clock, a, b


def growth_stage(daemon: Daemon) -> GrowthStage:
    return next(s for s in daemon.stages if isinstance(s, GrowthStage))


def raw_hard_limit(sim: SimulatorServer) -> Any:
    return sim.engine.summary()["quotas"]["/cosmos7/raw"]["hard_limit"]


class TestFleet:
    async def test_only_the_leader_writes_and_the_standby_takes_over(self, tmp_path: Path, pg_url: str) -> None:
        async with fleet(tmp_path, pg_url) as (sim, clock, a, b):
            await leases(a).step()
            await leases(b).step()
            assert a.health()[1]["leadership"] == [{"cluster": "sim", "role": "leader", "epoch": 1,
                                                    "holder": leases(a).holder, "lease_epoch": 1,
                                                    "expires_in_seconds": LEASE}]
            standby = b.health()[1]["leadership"][0]
            assert (standby["role"], standby["holder"], standby["lease_epoch"]) == ("standby", leases(a).holder, 1)
            standby_ctx = await b.poll_once("sim")
            assert standby_ctx.poll.ok and standby_ctx.actions == []  # polled, did not act
            await a.poll_once("sim")  # first samples: growth waits for the next to confirm them
            leader_ctx = await a.poll_once("sim")
            grown = {x.target.name: x for x in leader_ctx.actions}
            assert grown["cosmos7-raw"].status == ActionStatus.VERIFIED
            assert raw_hard_limit(sim) == grown["cosmos7-raw"].new_hard
            # the leader evaluated the cluster's alerts; the standby (same inputs) did not
            assert alerting(a).alerts_raised > 0
            assert alerting(b).alerts_raised == 0
            # a dies (never renews again); b takes over within one lease plus one renewal
            waited = 0.0
            while not leases(b).is_leader("sim"):
                clock.advance(RENEW)
                waited += RENEW
                await leases(b).step()
            assert waited <= LEASE + RENEW
            assert leases(b).epoch("sim") == 2
            assert (await a.poll_once("sim")).actions == []  # the old leader no longer acts
            epochs = {(r["target"], r["status"]): r for r in query_actions(b.db)}
            assert epochs[("cosmos7-raw", "verified")]["growth"] == grown["cosmos7-raw"].new_hard - \
                grown["cosmos7-raw"].old_hard

    async def test_leader_paused_between_intent_and_patch_never_writes(self, tmp_path: Path, pg_url: str) -> None:
        """SIGSTOP in-process: at a's `intent` checkpoint, time runs past its lease and b takes the
        cluster. a resumes: the re-check before the PATCH refuses. b settles a's intent and grows
        once: one growth in the simulator's ground truth, none by a."""
        async with fleet(tmp_path, pg_url) as (sim, clock, a, b):
            await leases(a).step()
            await leases(b).step()
            before = sim.engine.summary()["quotas"]
            stalled: list[str] = []

            def stall(point: str) -> None:
                if point == "intent" and not stalled:
                    stalled.append(point)
                    clock.advance(LEASE + RENEW)  # a is stopped; its lease runs out
                    fence = LeaseStore(b.db).acquire("sim", leases(b).holder, now=clock.now(), ttl_seconds=LEASE)
                    assert fence is not None and fence.epoch == 2

            await a.poll_once("sim")  # first samples: growth waits for the next to confirm them
            growth_stage(a).actuator.checkpoint = stall  # type: ignore[method-assign]  # the test's SIGSTOP
            paused_ctx = await a.poll_once("sim")
            assert stalled
            assert {x.status for x in paused_ctx.actions if x.target.name == "cosmos7-raw"} == {ActionStatus.FAILED}
            assert sim.engine.summary()["quotas"] == before  # a wrote nothing
            assert alerting(a).alerts_raised == 0  # deposed by the end of its cycle: no alerts from it
            await leases(b).step()
            assert leases(b).is_leader("sim")
            await b.poll_once("sim")  # b's first samples
            taken_over = await b.poll_once("sim")
            raw = [x for x in taken_over.actions if x.target.name == "cosmos7-raw"]
            assert [x.status for x in raw] == [ActionStatus.VERIFIED]
            assert raw_hard_limit(sim) == raw[0].new_hard
            rows = [(r["target"], r["status"], r["epoch"])
                    for r in b.db.query("SELECT target, status, epoch FROM actions ORDER BY id")]
            # a's processed intent (epoch 1) is held open by b while a's request could still land
            # (the landing window, issue 13 defect 4): processed is frozen, not grown under epoch 2;
            # a's raw intent was refused outright (a no longer led); b grows raw under epoch 2
            assert rows[0] == ("cosmos7-processed", "intent", 1)
            assert ("cosmos7-raw", "verified", 2) in rows
            assert not [r for r in rows if r[0] == "cosmos7-processed" and r[1] == "verified"]

    async def test_status_shows_who_leads_what(self, tmp_path: Path, pg_url: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
        """`quotapilot status` against the standby's HTTP API: the holder is the leader, with its
        epoch and remaining time; this instance stands by."""
        async with fleet(tmp_path, pg_url) as (_, clock, a, b):
            await leases(a).step()
            await leases(b).step()
            clock.advance(RENEW)
            await b.http.start()
            url = f"http://127.0.0.1:{b.http_port}"
            assert await asyncio.to_thread(main, ["status", "--url", url]) == 0
            table = capsys.readouterr().out.splitlines()
            assert await asyncio.to_thread(main, ["status", "--url", url, "--json"]) == 0
            body = json.loads(capsys.readouterr().out)
            await b.http.close()
        assert table[-1].split() == ["sim", leases(a).holder, "1", f"{LEASE - RENEW:.0f}s", "standby"]
        assert body["leadership"] == {"instance": leases(b).holder, "clusters": [
            {"cluster": "sim", "role": "standby", "epoch": None, "holder": leases(a).holder, "lease_epoch": 1,
             "expires_in_seconds": LEASE - RENEW}]}


def full_statvfs(path: str) -> os.statvfs_result:
    """A filesystem 92 % full (our boundary: the call the filesystem poller makes)."""
    blocks, free = 1_000_000, 80_000
    return os.statvfs_result((4096, 4096, blocks, free, free, 1000, 900, 900, 0, 255))


class TestLeaseLoopHealth:
    async def test_a_lease_loop_that_keeps_failing_shows_in_healthz_and_the_daemon_alert(
            self, tmp_path: Path, pg_url: str) -> None:
        """Guards the daemon's wiring of the lease loop's health: the loop outlives a round that
        fails (it used to crash, which /healthz and the `daemon` alert showed), so rounds that
        keep failing for a lease (`lease_seconds`; one failed round is a blip) must give the same
        signs — /healthz 503 with the `leases` task failing, the critical `daemon` alert,
        `quotapilot_task_crashed{task="leases"}` — and all clear once a round works."""
        async with fleet(tmp_path, pg_url) as (_, clock, a, _b):
            loop = leases(a)
            working = loop.leases
            loop.leases = FailsToAcquire(working.db)
            first_failure = clock.now()
            await loop._round()
            assert (a.health()[1]["failing_tasks"],
                    a.registry.get_sample_value("quotapilot_task_crashed", {"task": "leases"})) == ({}, None)
            while clock.now() - first_failure < LEASE:
                clock.advance(RENEW)
                await loop._round()
            report = a.health()[1]
            assert report["failing_tasks"] == {"leases": "sim: RuntimeError: not a store error"}
            assert "task leases keeps failing: sim: RuntimeError: not a store error" in report["reasons"]
            assert a.registry.get_sample_value("quotapilot_task_crashed", {"task": "leases"}) == 1.0
            await alerting(a).check_tasks()
            fired = (await alerting(a).states())["_daemon/leases@a/daemon"]   # a's own (review W5)
            assert (fired.phase, fired.severity, fired.summary) == (Phase.FIRING, Severity.CRITICAL,
                                                                    "daemon task leases on a keeps failing: sim: "
                                                                    "RuntimeError: not a store error")
            loop.leases = working
            clock.advance(RENEW)
            await loop._round()
            report = a.health()[1]
            assert loop.is_leader("sim")
            assert (report["failing_tasks"], [r for r in report["reasons"] if "leases" in r]) == ({}, [])
            assert a.registry.get_sample_value("quotapilot_task_crashed", {"task": "leases"}) is None
            await alerting(a).check_tasks()
            assert (await alerting(a).states())["_daemon/leases@a/daemon"].phase is not Phase.FIRING


class TestFleetFilesystems:
    """A host's own filesystems have no VMS leader: every instance watches its own, in a fleet as
    alone (the `filesystems` pseudo-cluster has no lease)."""

    async def test_each_instance_alerts_on_its_own_filesystems(self, tmp_path: Path, pg_url: str) -> None:
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim:
            daemons = []
            for name in ("a", "b"):
                (tmp_path / f"mnt-{name}").mkdir()
                base = settings_for(sim, tmp_path, pg_url, name)
                daemons.append(Daemon(base.model_copy(update={"filesystems": (FilesystemTarget(
                    name=f"scratch-{name}", path=tmp_path / f"mnt-{name}", tier="hot"),)}), clock))
            async with daemons[0] as a, daemons[1] as b:
                for daemon in (a, b):
                    collector = daemon.collectors[FILESYSTEM_CLUSTER]
                    assert isinstance(collector, FilesystemCollector)
                    collector.poller.statvfs = full_statvfs
                await leases(a).step()
                await leases(b).step()
                assert leases(a).is_leader("sim") != leases(b).is_leader("sim")
                for daemon in (a, b):
                    await daemon.poll_once(FILESYSTEM_CLUSTER)
                states = {r["alert_id"]: json.loads(r["state"])["severity"] for r in a.db.query(
                    "SELECT alert_id, state FROM alert_state WHERE alert_id LIKE 'filesystems/%/utilization'")}
        assert states == {"filesystems/scratch-a/utilization": "critical",
                          "filesystems/scratch-b/utilization": "critical"}
