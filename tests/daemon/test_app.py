"""The daemon in-process against the simulator over verified HTTPS: cycles, stages, snapshot,
/metrics parsed as Prometheus text, /healthz transitions, systemd notifications."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from core_helpers import SettingsFactory
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs
from vastpy import VASTClient

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, Stage
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.wiring import Collaborators, growth_stage
from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.daemon.stages.store import StoreStage
from quotapilot.forecasting.types import POOL_TARGET, ActionStatus


@pytest.fixture
def clock() -> VirtualClock:  # overrides conftest's InstantClock: the pollers sleep on this one
    return VirtualClock()


async def step(clock: VirtualClock) -> None:
    """Wait until something sleeps on the clock (real IO in the pool threads finishes first),
    then move the clock to its deadline."""
    for _ in range(5000):
        deadline = clock.next_deadline
        if deadline is not None:
            clock.set(max(deadline, clock.now()))
            for _ in range(3):
                await asyncio.sleep(0)
            return
        await asyncio.sleep(0.001)  # waiting for a thread's HTTPS request, not for time
    raise AssertionError("nothing sleeps on the virtual clock")


async def quiet(clock: VirtualClock) -> None:
    """Wait until every poller sleeps again (the cycle started at `clock.now()` is complete)."""
    for _ in range(5000):
        if clock.next_deadline is not None:
            return
        await asyncio.sleep(0.001)  # a thread's HTTPS request, not time
    raise AssertionError("nothing sleeps on the virtual clock")


async def run_until(clock: VirtualClock, t: float) -> None:
    while clock.now() < t:
        await step(clock)
    await quiet(clock)


async def get(port: int | None, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


def vms_truth(sim: SimulatorServer) -> dict[str, dict[str, Any]]:
    client = VASTClient(address=sim.address, token=sim.token, cert_file=str(sim.ca_file))
    return {q["path"]: q for q in client.quotas.get()}


def core_stages(deps: Collaborators) -> list[Stage]:
    """Only the core's own stage: these tests pin the core's behaviour, whatever stages others add."""
    return [StoreStage(deps.observations)]


class Recorder:
    def __init__(self, name: str, seen: list[str], fail: bool = False) -> None:
        self.name, self._seen, self._fail = name, seen, fail

    async def on_cycle(self, ctx: CycleContext) -> None:
        self._seen.append(self.name)
        if self._fail:
            raise RuntimeError("stage bug")


class TestPollOnce:
    """`poll_once` runs exactly one cycle: poll, then every stage in order, then a new snapshot."""

    async def test_cycle_stores_and_publishes(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                              clock: VirtualClock) -> None:
        async with Daemon(make_settings(), clock) as daemon:  # every stage build_stages() wires
            assert daemon.stages[0].name == "store"
            clock.advance(600)
            ctx = await daemon.poll_once("sim")
            clock.advance(60)
            ctx2 = await daemon.poll_once("sim")
            assert ctx.poll.ok and ctx2.poll.ok
            rows = daemon.db.query("SELECT COUNT(*) AS n, COUNT(DISTINCT t) AS polls FROM observations")[0]
            assert (rows["n"], rows["polls"]) == (8, 2)  # 3 quotas + the pool, twice
            snapshot = daemon.snapshot
            raw = snapshot.find_target("/cosmos7/raw")
            assert raw is not None and raw.observation is not None
            assert ctx2.poll.t == raw.observation.t
            assert raw.ingest_rate_bytes_per_second == ctx2.poll.ingest_rates["cosmos7-raw"]
            assert raw.data_age_seconds(clock.now() + 60) == 60
            cluster = snapshot.clusters["sim"]
            assert cluster.pool is not None and cluster.pool.target.name == POOL_TARGET
            assert cluster.capacity is not None and cluster.health.polls == 2
            history = daemon.observations.history(raw.target, since=0)
            assert [ctx.poll.t, ctx2.poll.t] == [t for t, _, _ in history]

    async def test_a_failing_stage_does_not_stop_the_later_stages(
            self, make_settings: SettingsFactory, clock: VirtualClock) -> None:
        seen: list[str] = []
        stages = [Recorder("a", seen), Recorder("b", seen, fail=True), Recorder("c", seen)]
        async with Daemon(make_settings(), clock, stages=stages) as daemon:  # type: ignore[arg-type]
            with capture_logs() as logs:
                await daemon.poll_once("sim")
                await daemon.poll_once("sim")
            assert seen == ["a", "b", "c", "a", "b", "c"]
            assert [e["event"] for e in logs if e["event"].startswith("stage.")] == ["stage.failed"]
            assert dict(daemon.snapshot.stage_errors_total) == {"b": 2}
            assert daemon.registry.get_sample_value("quotapilot_stage_errors_total", {"stage": "b"}) == 2.0

    async def test_growth_goes_reactive_when_the_forecaster_raises(
            self, sim: SimulatorServer, make_settings: SettingsFactory, clock: VirtualClock) -> None:
        seen: list[str] = []

        def stages(deps: Collaborators) -> list[Stage]:
            return [StoreStage(deps.observations), Recorder("forecaster", seen, fail=True), growth_stage(deps)]

        settings = make_settings(policy={"mode": "enforce", "grow_at": 0.01, "target_utilization": 0.005})
        async with Daemon(settings, clock, stages=stages) as daemon:
            await daemon.poll_once("sim")  # first samples: growth waits for the next to confirm them
            clock.advance(3600)
            ctx = await daemon.poll_once("sim")
            assert not ctx.forecasts and ctx.decisions  # growth ran after the failed stage
            assert all("reactive (no usable forecast)" in d.reason for d in ctx.decisions)
            grown = [a for a in ctx.actions if a.status is ActionStatus.VERIFIED]
            assert grown, ctx.actions
            live = {q.path: q.hard_limit for q in sim.engine.quotas.values()}
            for action in grown:
                assert live[action.target.path] == action.new_hard
            assert dict(daemon.snapshot.stage_errors_total) == {"forecaster": 2}

    async def test_stages_see_failed_polls(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                           clock: VirtualClock) -> None:
        seen: list[str] = []
        async with Daemon(make_settings(vast={"max_retries": 0}), clock,
                          stages=[Recorder("a", seen)]) as daemon:  # type: ignore[list-item]
            await sim.stop()
            ctx = await daemon.poll_once("sim")
            assert not ctx.poll.ok and seen == ["a"]
            assert daemon.poll_state["sim"].consecutive_failures == 1
            healthy, report = daemon.health()
            assert not healthy and "no successful poll yet" in report["reasons"][0]

    async def test_ready_after_first_successful_poll_and_stopping(
            self, make_settings: SettingsFactory, clock: VirtualClock, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
        path = str(tmp_path / "notify.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        listener.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            async with Daemon(make_settings(), clock, stages=core_stages) as daemon:
                with pytest.raises(BlockingIOError):
                    listener.recv(100)
                await daemon.poll_once("sim")
                await daemon.poll_once("sim")
                daemon.stop()
            received = []
            while True:
                try:
                    received.append(listener.recv(100).decode())
                except BlockingIOError:
                    break
            assert received == ["READY=1\nSTATUS=polling", "STOPPING=1"]
        finally:
            listener.close()


@pytest.fixture
async def running(sim: SimulatorServer, make_settings: SettingsFactory,
                  clock: VirtualClock) -> AsyncIterator[Daemon]:
    """A running daemon (pollers + HTTP) on the virtual clock; stopped at the end."""
    async with Daemon(make_settings(vast={"max_retries": 2}), clock, stages=core_stages) as daemon:
        task = asyncio.create_task(daemon.run(), name="daemon-under-test")
        try:
            for _ in range(500):
                if daemon.http_port is not None and daemon.poll_state["sim"].polls:
                    break
                await asyncio.sleep(0.002)  # the first poll's HTTPS requests, not time
            yield daemon
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 5)


class TestRunning:
    """The supervisor in-process: /metrics, /healthz and a VMS outage."""

    async def test_metrics_match_vms(self, running: Daemon, sim: SimulatorServer, clock: VirtualClock) -> None:
        await run_until(clock, clock.now() + 300)
        status, body = await get(running.http_port, "/metrics")
        assert status == 200
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        truth = await asyncio.to_thread(vms_truth, sim)  # VMS now (the clock has not moved since)
        used = {labels["path"]: value for labels, value in samples["quotapilot_target_used_bytes"]}
        assert set(truth) == set(used)
        for path, quota in truth.items():
            assert quota["used_capacity"] == used[path]
        hard = {labels["path"]: value for labels, value in samples["quotapilot_target_hard_limit_bytes"]}
        assert {p: q["hard_limit"] for p, q in truth.items()} == hard
        ratio = {labels["path"]: value for labels, value in samples["quotapilot_target_utilization_ratio"]}
        assert ratio["/cosmos7/raw"] == pytest.approx(truth["/cosmos7/raw"]["used_capacity"]
                                                      / truth["/cosmos7/raw"]["hard_limit"])
        labels = samples["quotapilot_target_used_bytes"][0][0]
        assert {"cluster", "target", "path", "kind", "tier"} == set(labels)
        assert {("quota", "")} == {(lab["kind"], lab["tier"]) for lab, _ in samples["quotapilot_target_used_bytes"]}
        for name in ("quotapilot_cluster_usable_bytes", "quotapilot_cluster_used_bytes",
                     "quotapilot_cluster_free_bytes", "quotapilot_last_successful_poll_timestamp_seconds",
                     "quotapilot_poll_duration_seconds_count", "quotapilot_build_info",
                     "quotapilot_target_ingest_rate_bytes_per_second", "quotapilot_target_used_inodes",
                     "quotapilot_target_hard_limit_inodes", "quotapilot_target_soft_limit_bytes"):
            assert name in samples, name
        assert [({"cluster": "sim"}, clock.now())] == samples["quotapilot_last_successful_poll_timestamp_seconds"]
        assert samples["quotapilot_poll_duration_seconds_count"][0][1] >= 6

    async def test_healthz_goes_503_during_an_outage_and_back(
            self, running: Daemon, sim: SimulatorServer, clock: VirtualClock) -> None:
        status, body = await get(running.http_port, "/healthz")
        assert status == 200, body
        bound = 3 * 60
        await sim.stop()
        outage_start = clock.now()
        while clock.now() - outage_start <= bound:
            await step(clock)
            status, _ = await get(running.http_port, "/healthz")
            if clock.now() - outage_start < bound - 60:
                assert status == 200  # the last good data is still fresh enough
        status, body = await get(running.http_port, "/healthz")
        assert status == 503
        assert "last successful poll" in body and "connection" in body
        status, metrics = await get(running.http_port, "/metrics")
        assert 'quotapilot_poll_errors_total{cluster="sim",reason="connection"}' in metrics
        await sim.start()
        for _ in range(20):
            await step(clock)
            status, body = await get(running.http_port, "/healthz")
            if status == 200:
                break
        assert status == 200, body
        assert clock.now() - outage_start < bound + 2 * 60

    async def test_crashed_task_fails_healthz(self, running: Daemon) -> None:
        async def broken(stopping: asyncio.Event) -> None:
            raise ValueError("bug")

        running.supervisor.add("broken", broken)
        for _ in range(5):
            await asyncio.sleep(0)
        status, body = await get(running.http_port, "/healthz")
        assert status == 503
        assert "task broken crashed: ValueError: bug" in body
        assert "quotapilot_task_crashed{task=\"broken\"} 1.0" in (await get(running.http_port, "/metrics"))[1]


class TestStoreStage:
    async def test_nothing_written_for_failed_polls(self, make_settings: SettingsFactory, clock: VirtualClock,
                                                    sim: SimulatorServer) -> None:
        async with Daemon(make_settings(vast={"max_retries": 0}), clock, stages=core_stages) as daemon:
            assert isinstance(daemon.stages[0], StoreStage)
            await sim.stop()
            await daemon.poll_once("sim")
            assert daemon.db.query("SELECT COUNT(*) AS n FROM observations")[0]["n"] == 0


class TestSeveralClusters:
    """One poller per cluster; health is judged per cluster."""

    async def test_two_clusters(self, sim: SimulatorServer, make_settings: SettingsFactory,
                                clock: VirtualClock) -> None:
        async with SimulatorServer("cosmos7", clock=clock, seed=1) as other:
            base = make_settings()
            second = {"name": "other", "address": other.address, "token": other.token,
                      "ca_file": str(other.ca_file)}
            settings = make_settings(clusters=[base.clusters[0].model_dump(), second])
            async with Daemon(settings, clock, stages=core_stages) as daemon:
                assert {"sim", "other"} == set(daemon.collectors)
                await daemon.poll_once("sim")
                healthy, report = daemon.health()
                assert not healthy and report["reasons"] == ["other: no successful poll yet"]
                await daemon.poll_once("other")
                assert daemon.health()[0]
                assert {"sim", "other"} == set(daemon.snapshot.clusters)
                for name in ("sim", "other"):
                    assert len(daemon.snapshot.clusters[name].targets) == 3
                await other.stop()
                clock.advance(4 * 60)
                await daemon.poll_once("sim")
                healthy, report = daemon.health()
                assert not healthy and len(report["reasons"]) == 1
                assert report["reasons"][0].startswith("other: last successful poll 240s ago")
                assert report["clusters"]["sim"]["ok"]


class TestSystemdWatchdog:
    async def test_watchdog_pings_while_running(self, make_settings: SettingsFactory, clock: VirtualClock,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = str(tmp_path / "notify.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        listener.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "100000")  # systemd's WatchdogSec=0.1s: ping every 0.05 s
        loop = asyncio.get_running_loop()
        try:
            async with Daemon(make_settings(), clock, stages=core_stages) as daemon:
                assert daemon.notifier.watchdog_interval_seconds == 0.05
                task = asyncio.create_task(daemon.run(), name="daemon-under-test")
                messages = set()
                while "WATCHDOG=1" not in messages or not any(m.startswith("READY=1") for m in messages):
                    messages.add((await asyncio.wait_for(loop.sock_recv(listener, 100), 5)).decode())
                daemon.stop()
                await asyncio.wait_for(task, 5)
            rest = []
            while True:
                try:
                    rest.append(listener.recv(100).decode())
                except BlockingIOError:
                    break
            assert rest[-1] == "STOPPING=1"
        finally:
            listener.close()
