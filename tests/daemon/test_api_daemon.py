"""The pipeline API on the real daemon (its own aiohttp app from `daemon.http`, every stage) against
the built-in simulator over verified HTTPS, on a virtual clock: preflight follows the quota as it
fills and grows, a reservation makes the daemon grow in enforce mode, the cluster reserve refuses
with a reason, reservations expire, survive a restart, and bad requests get 401/400/404."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from core_helpers import InstantClock, SettingsFactory

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator.server import SimulatorServer

TOKEN = "pipeline-token"
TB = 10**12
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def api_settings(make_settings: SettingsFactory, **policy: Any) -> Settings:
    return make_settings(http={"write_token": TOKEN}, policy=policy)


@asynccontextmanager
async def served(daemon: Daemon) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(daemon.http.build_app())) as client:
        yield client


def raw_quota(sim: SimulatorServer) -> Any:
    return next(q for q in sim.engine.quotas.values() if q.path == "/cosmos7/raw")


class TestAgainstTheSimulator:
    """The API sees what the daemon sees, and its reservations steer the growth stage."""

    async def test_preflight_follows_filling_and_growth(self, sim: SimulatorServer,
                                                        make_settings: SettingsFactory, clock: InstantClock) -> None:
        settings = api_settings(make_settings, mode="enforce")
        request = {"target": "/cosmos7/raw", "bytes": "1TB", "needed_for": 60}
        async with Daemon(settings, clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            first = await (await client.post("/api/v1/preflight", json=request)).json()
            rooms, limits = [first["bytes"]["room_now"]], [first["bytes"]["limit"]]
            for _ in range(24):  # a day, hourly polls; the raw feed fills, the daemon grows
                clock.advance(3600)
                await daemon.poll_once("sim")
                answer = await (await client.post("/api/v1/preflight", json=request)).json()
                rooms.append(answer["bytes"]["room_now"])
                limits.append(answer["bytes"]["limit"])
            actions = await (await client.get("/api/v1/actions?target=cosmos7-raw")).json()
        assert first["fits"] is True and first["bytes"]["limit"] == 20 * TB
        assert any(b < a for a, b in itertools.pairwise(rooms)), "room shrinks as data lands"
        assert max(limits) > limits[0], "the daemon grew the quota"
        grown_at = next(i for i, limit in enumerate(limits) if limit > limits[0])
        assert rooms[grown_at] > rooms[grown_at - 1], "growth gives room back"
        assert any(a["status"] == "verified" for a in actions["actions"])

    async def test_reservation_makes_the_daemon_grow(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                                     clock: InstantClock) -> None:
        settings = api_settings(make_settings, mode="enforce")
        async with Daemon(settings, clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            before = raw_quota(sim).hard_limit
            resp = await client.post("/api/v1/reservations", headers=AUTH, json={
                "target": "cosmos7-raw", "bytes": "30TB", "ttl": "6h", "idempotency_key": "night-run"})
            granted = await resp.json()
            assert resp.status == 201, granted
            assert granted["fits_now"] is False and granted["action"]["kind"] == "grow"
            clock.advance(60)
            await daemon.poll_once("sim")  # the growth stage sees the reservation as demand
            after = raw_quota(sim).hard_limit
            clock.advance(60)
            await daemon.poll_once("sim")
            again = await (await client.post("/api/v1/preflight", json={
                "target": "cosmos7-raw", "bytes": 1, "needed_for": 60})).json()
        assert after >= before + 30 * TB
        assert again["bytes"]["reserved"] == 30 * TB
        assert again["fits_now"] is True

    async def test_cluster_reserve_refuses_with_a_reason(self, sim: SimulatorServer,
                                                         make_settings: SettingsFactory, clock: InstantClock) -> None:
        settings = api_settings(make_settings, mode="enforce", max_growth_bytes="3PB", max_hard_limit_bytes="5PB")
        # the pool: 2 PB usable, 1.65 PB free (physical), 10 % reserved, data reduction 1.2 — room for
        # 1.45 PB physical, about 1.74 PB logical, which is what quota bytes are
        async with Daemon(settings, clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            resp = await client.post("/api/v1/reservations", headers=AUTH, json={
                "target": "/cosmos7/processed", "bytes": "1900TB", "ttl": "1h", "idempotency_key": "too-big"})
            body = await resp.json()
            replay = await client.post("/api/v1/reservations", headers=AUTH, json={
                "target": "/cosmos7/processed", "bytes": "1900TB", "ttl": "1h", "idempotency_key": "too-big"})
            again = await replay.json()
            # a refusal is not replayed but asked anew (a retry after the guard lifts may be granted):
            # the same answer while nothing changed
            assert (replay.status, again["guard"], again["reason"]) == (resp.status, body["guard"], body["reason"])
        assert resp.status == 507, body
        assert body["guard"] == "cluster_reserve"
        assert "reserve" in body["reason"]

    async def test_expiry_and_restart(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                      clock: InstantClock) -> None:
        settings = api_settings(make_settings)
        async with Daemon(settings, clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            for key, ttl in (("short", "1h"), ("long", "5h")):
                resp = await client.post("/api/v1/reservations", headers=AUTH, json={
                    "target": "cosmos7-temp", "bytes": "1TB", "ttl": ttl, "idempotency_key": key})
                assert resp.status == 201
        clock.advance(2 * 3600)
        async with Daemon(settings, clock) as daemon, served(daemon) as client:  # a restart
            await daemon.poll_once("sim")
            listed = await (await client.get("/api/v1/reservations")).json()
            target = await (await client.get("/api/v1/targets/cosmos7-temp")).json()
        assert [r["idempotency_key"] for r in listed["reservations"]] == ["long"]
        assert target["reserved_bytes"] == TB

    async def test_bad_requests(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                clock: InstantClock) -> None:
        async with Daemon(api_settings(make_settings), clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            body = {"target": "cosmos7-raw", "bytes": 1, "ttl": "1h", "idempotency_key": "k"}
            assert (await client.post("/api/v1/reservations", json=body)).status == 401
            bad = await client.post("/api/v1/reservations", headers=AUTH, json={**body, "bytes": "lots"})
            assert bad.status == 400 and (await bad.json())["error"]["field"] == "bytes"
            missing = await client.post("/api/v1/preflight", json={"target": "/no/such/path", "bytes": 1})
            assert missing.status == 404
            listed = await (await client.get("/api/v1/targets")).json()
        assert sorted(t["path"] for t in listed["targets"]) == ["/cosmos7/processed", "/cosmos7/raw", "/cosmos7/temp"]


async def until(condition: Any, what: str) -> None:
    """Wait (real time: HTTPS requests in the pool threads, never the virtual clock) for `condition()`."""
    for _ in range(2500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"timed out waiting for {what}")


class TestReservationWakesTheRunningDaemon:
    """A granted reservation that needs growth makes the running daemon poll and grow now, not at
    its next tick: no virtual time passes."""

    @pytest.fixture
    def clock(self) -> VirtualClock:  # the pollers sleep on it; only the test moves it
        return VirtualClock()

    async def test_reservation_grows_without_waiting_for_the_next_poll(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: VirtualClock) -> None:
        settings = make_settings(http={"write_token": TOKEN}, policy={"mode": "enforce"},
                                 poll={"interval_seconds": 3600})
        async with Daemon(settings, clock) as daemon, served(daemon) as client:
            task = asyncio.create_task(daemon.run(), name="daemon-under-test")
            try:
                def cycles() -> int:  # published when every stage of the cycle has run
                    cluster = daemon.snapshot.clusters.get("sim")
                    return 0 if cluster is None else cluster.health.polls

                await until(lambda: cycles() == 1, "the first cycle")
                started, before = clock.now(), raw_quota(sim).hard_limit
                resp = await client.post("/api/v1/reservations", headers=AUTH, json={
                    "target": "cosmos7-raw", "bytes": "30TB", "ttl": "6h", "idempotency_key": "now"})
                assert resp.status == 201, await resp.json()
                await until(lambda: cycles() == 2, "the requested cycle")
                after = raw_quota(sim).hard_limit
                actions = await (await client.get("/api/v1/actions?target=cosmos7-raw")).json()
            finally:
                daemon.stop()
                await asyncio.wait_for(task, 5)
        assert clock.now() == started, "no virtual time passed"
        assert after >= before + 30 * TB
        assert [a["status"] for a in actions["actions"]] == ["verified"]
