"""Issue 13, defect 9: readiness with one VMS down, an empty cluster listing as a failure, the
cluster reserve under over-commit, and reservations that expire."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import pytest
from trust_helpers import TrustClock, query, settings_for

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer


async def test_an_empty_cluster_listing_makes_health_fail(trust: SimulatorServer, clock: TrustClock,
                                                          store: Path) -> None:
    settings = settings_for(trust, store=store, policy={"mode": "observe"})
    async with Daemon(settings, clock) as daemon:
        await daemon.poll_once("sim")
        assert daemon.health()[0]
        trust.faults.add("empty", path="clusters")  # VMS lists no cluster from now on
        bound = settings.poll.stale_after_intervals * settings.poll.interval_seconds
        for _ in range(int(bound // 60) + 2):
            clock.advance(60)
            await daemon.poll_once("sim")
        healthy, report = daemon.health()
    assert not healthy, report


async def test_ready_once_one_cluster_is_polled(trust: SimulatorServer, clock: TrustClock, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
        async with SimulatorServer("cosmos7", clock=clock, state_dir=tmp_path / "down") as down:
            settings = settings_for(trust, down, store=tmp_path / "state.db", policy={"mode": "observe"},
                                    vast={"max_retries": 0})
        # the second VMS is down (its server closed) when the daemon boots
        async with Daemon(settings, clock) as daemon:
            await daemon.poll_once("sim")
            await daemon.poll_once("sim2")
            messages = []
            while True:
                try:
                    messages.append(listener.recv(4096).decode())
                except BlockingIOError:
                    break
    assert any("READY=1" in m for m in messages)


OVERCOMMITTED = """
# 140 TB of hard limits on a 100 TB pool: the quotas already promise more than the cluster holds.
[scenario]
name = "overcommit"
[cluster]
usable_capacity = "100TB"
used = "5TB"
[[views]]
path = "/o/busy"
quota_name = "o-busy"
quota = { hard_limit = "60TB", soft_limit = "54TB" }
initial = { used = "50TB" }
[[views]]
path = "/o/idle"
quota_name = "o-idle"
quota = { hard_limit = "80TB", soft_limit = "72TB" }
initial = { used = "5TB" }
"""


async def test_no_growth_while_the_quotas_already_overcommit_the_pool(clock: TrustClock, tmp_path: Path) -> None:
    scenario = tmp_path / "overcommit.toml"
    scenario.write_text(OVERCOMMITTED)
    async with SimulatorServer(scenario, clock=clock, state_dir=tmp_path / "sim") as sim:
        # o-busy is at 83 % and would grow by ~12 TB: the pool has the free bytes, but its quotas
        # already allocate 140 TB of its 100 TB (more than usable minus the 10 % reserve)
        async with Daemon(settings_for(sim, store=tmp_path / "state.db"), clock) as daemon:
            await daemon.poll_once("sim")
        grown = [w for w in sim.engine.writes.by("api:") if w.name == "o-busy"]
        assert sim.engine.quotas_allocated() > sim.engine.usable_capacity_bytes
    assert grown == []


async def test_a_reservation_past_its_ttl_is_expired(trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
    settings = settings_for(trust, store=store, policy={"mode": "observe"}, http={"write_token": "s3cret"})
    async with Daemon(settings, clock) as daemon:
        await daemon.poll_once("sim")  # the API knows the targets of the latest snapshot
        await daemon.http.start()
        async with aiohttp.ClientSession() as session:
            answer = await session.post(
                f"http://127.0.0.1:{daemon.http_port}/api/v1/reservations",
                headers={"Authorization": "Bearer s3cret"},
                json={"target": "t-data", "bytes": "1TB", "ttl": "1h", "idempotency_key": "run-1"})
            body = await answer.json()
        assert body["status"] == "granted", body
        for _ in range(3):  # two hours later: the reservation's hour is over
            clock.advance(3600)
            await daemon.poll_once("sim")
        await daemon.http.close()
    assert [r["status"] for r in query(store, "SELECT status FROM reservations")] == ["expired"]
