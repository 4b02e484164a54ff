"""A quota without a byte limit through the whole daemon in enforce mode: the simulator (HTTPS,
vastpy) → poll → store → forecast → growth → alerts → metrics → /api/v1/targets, on a virtual clock.

VMS's hard limit of 0 is "no limit". Such quotas were dropped as `zero_limit` at every poll: a quota
that limits only the file count was never watched nor grown (its inodes filled unseen), and
`quotapilot_samples_dropped_total{reason="zero_limit"}` climbed as if VMS sent garbage."""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from core_helpers import InstantClock, SettingsFactory

from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator.scenario import parse_scenario
from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.forecasting.types import Dimension

TB = 10**12

NO_BYTE_LIMITS = parse_scenario(tomllib.loads("""
[cluster]
name = "lab-vast"
usable_capacity = "2PB"

[[views]]
path = "/lab/files"
quota_name = "files-only"
quota = { hard_limit = 0, hard_limit_inodes = 1_000_000 }
initial = { used = "50TB", files = 900_000 }
[views.ingest]
bytes_per_day = "2TB"
files_per_day = 1_000

[[views]]
path = "/lab/ledger"
quota_name = "ledger"
quota = { hard_limit = 0 }
initial = { used = "30TB", files = 1_000 }
[views.ingest]
bytes_per_day = "1TB"
"""), "no-byte-limits")
"""`files-only` limits only the file count (90 % full: its inode limit needs growth); `ledger` is
kept for accounting (no limit at all; the test gives it a soft limit alone)."""

UNLIMITED = ("files-only", "ledger")


@pytest.fixture
async def sim(clock: InstantClock) -> AsyncIterator[SimulatorServer]:
    """The no-byte-limit cluster (in place of conftest's cosmos7: `make_settings` points at it)."""
    async with SimulatorServer(NO_BYTE_LIMITS, clock=clock, seed=0) as server:
        ledger = server.engine.quota_by_name("ledger")
        assert ledger is not None
        server.engine.patch_quota(ledger.id, {"soft_limit": 40 * TB}, source="operator")  # a soft limit, no hard
        yield server


def metric_lines(text: str, name: str, target: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") and f'target="{target}"' in line]


async def test_a_quota_without_a_byte_limit_is_watched_and_grown_in_inodes_only(
        sim: SimulatorServer, make_settings: SettingsFactory, clock: InstantClock) -> None:
    settings = make_settings(policy={"mode": "enforce"}, forecast={"workers": 0})
    cycles: list[CycleContext] = []
    async with Daemon(settings, clock) as daemon, TestClient(TestServer(daemon.http.build_app())) as client:
        for _ in range(4):
            cycles.append(await daemon.poll_once("sim"))
            clock.advance(900)
        listed: dict[str, Any] = await (await client.get("/api/v1/targets")).json()
        files_api: dict[str, Any] = await (await client.get("/api/v1/targets/files-only")).json()
        metrics = daemon.exposition.render().decode()
        snapshot = daemon.snapshot

    # watched: every sample kept, no stage raised on one
    assert [(d.target, d.reason) for ctx in cycles for d in ctx.poll.dropped] == []
    assert dict(snapshot.stage_errors_total) == {}
    for ctx in cycles:
        assert set(UNLIMITED) <= {o.target.name for o in ctx.poll.observations}
    last = {o.target.name: o for o in cycles[-1].poll.observations}
    assert (last["files-only"].hard_limit_bytes, last["ledger"].hard_limit_bytes) == (None, None)
    assert last["ledger"].soft_limit_bytes == 40 * TB

    # grown in inodes only: no byte decision (nor "would grow") for either, ever
    decided = {(d.target.name, d.dimension) for ctx in cycles for d in ctx.decisions if d.target.name in UNLIMITED}
    assert decided == {("files-only", Dimension.INODES)}
    sim.sync()
    writes = [(w.name, set(w.changes)) for w in sim.engine.writes.by("api:", applied=None)]
    assert writes and all(name == "files-only" and changes <= {"hard_limit_inodes", "soft_limit_inodes"}
                          for name, changes in writes), writes
    files, ledger = sim.engine.quota_by_name("files-only"), sim.engine.quota_by_name("ledger")
    assert files is not None and ledger is not None
    assert (files.hard_limit, files.soft_limit) == (0, 0)
    assert files.hard_limit_inodes > 1_000_000
    assert (ledger.hard_limit, ledger.soft_limit, ledger.hard_limit_inodes) == (0, 40 * TB, 0)

    # alerted in inodes only: no bytes utilization, runway or growth alert
    with sqlite3.connect(settings.store.path) as conn:
        alerts = [row[0].split("/") for row in conn.execute("SELECT alert_id FROM outbox WHERE sink = 'log'")]
    kinds = {kind for _, target, kind in alerts if target in UNLIMITED}
    assert {"utilization_inodes", "growth_inodes"} <= kinds
    assert kinds.isdisjoint({"utilization", "runway", "growth", "growth_would_grow", "growth_blocked", "growth_failed"})

    # exported: usage, no byte limit nor ratio; the inode limit as read; no drop counted
    for name in UNLIMITED:
        assert metric_lines(metrics, "quotapilot_target_used_bytes", name)
        assert metric_lines(metrics, "quotapilot_target_hard_limit_bytes", name) == []
        assert metric_lines(metrics, "quotapilot_target_utilization_ratio", name) == []
    assert metric_lines(metrics, "quotapilot_target_hard_limit_inodes", "files-only")
    assert 'quotapilot_samples_dropped_total{cluster="sim",reason="zero_limit"} 0.0' in metrics.splitlines()

    # served: no limit is null, not 0
    served = {t["name"]: t for t in listed["targets"]}
    assert (served["files-only"]["hard_limit_bytes"], served["files-only"]["utilization_ratio"]) == (None, None)
    assert (served["ledger"]["hard_limit_bytes"], served["ledger"]["soft_limit_bytes"]) == (None, 40 * TB)
    assert files_api["hard_limit_inodes"] > 1_000_000 and files_api["used_bytes"] > 0
    assert files_api["decision"] is None  # the bytes decision: there is none
