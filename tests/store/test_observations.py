"""Observation history: batched writes, two tiers, retention, and surviving SIGKILL mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from store_helpers import OpenStore

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.leadership import LeaseLeadership
from quotapilot.daemon.stages.store import StoreStage
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.leases import LeaseStore
from quotapilot.daemon.store.observations import HOUR_SECONDS, ObservationStore
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

T0 = 1_767_225_600.0  # an hour boundary
RAW = TargetId("c", "raw", "/raw")
POOL = TargetId("c", "pool", "/", TargetKind.POOL)


def obs(target: TargetId, t: float, used: int, inodes: int | None = 5) -> Observation:
    return Observation(target=target, t=t, used_bytes=used, hard_limit_bytes=1000, used_inodes=inodes)


@pytest.fixture
def store(backend: Backend) -> ObservationStore:
    """On each backend (SQLite, PostgreSQL)."""
    return ObservationStore(backend, raw_retention_seconds=2 * 86400,
                            hourly_retention_seconds=30 * 86400)


class TestWriteAndHistory:
    """Every poll sample goes to the raw tier; the last one of each hour to the hourly tier."""

    def test_history_returns_raw_samples_in_order(self, store: ObservationStore) -> None:
        store.write_poll([obs(RAW, T0 + 60, 10), obs(POOL, T0 + 60, 100, None)])
        store.write_poll([obs(RAW, T0 + 120, 20), obs(POOL, T0 + 120, 110, None)])
        assert store.history(RAW, since=T0) == [(T0 + 60, 10, 5), (T0 + 120, 20, 5)]
        assert store.history(POOL, since=T0 + 100) == [(T0 + 120, 110, None)]

    def test_hourly_tier_keeps_the_last_sample_of_each_hour(self, store: ObservationStore) -> None:
        for minute in range(0, 180, 10):
            store.write_poll([obs(RAW, T0 + minute * 60, minute)])
        rows = store.db.query("SELECT hour, t, used_bytes FROM observations_hourly ORDER BY hour")
        assert [tuple(r) for r in rows] == [(T0, T0 + 50 * 60, 50), (T0 + HOUR_SECONDS, T0 + 110 * 60, 110),
                (T0 + 2 * HOUR_SECONDS, T0 + 170 * 60, 170)]

    def test_history_falls_back_to_hourly_where_raw_was_pruned(self, store: ObservationStore) -> None:
        day = 86400.0
        for hour in range(24 * 5):  # five days, one sample per half hour
            store.write_poll([obs(RAW, T0 + hour * HOUR_SECONDS, hour * 10)])
            store.write_poll([obs(RAW, T0 + hour * HOUR_SECONDS + 1800, hour * 10 + 5)])
        now = T0 + 5 * day
        raw_deleted, hourly_deleted = store.prune(now)
        assert raw_deleted > 0 and hourly_deleted == 0
        history = store.history(RAW, since=T0)
        times = [t for t, _, _ in history]
        assert times == sorted(times)
        cutoff = now - 2 * day
        old = [t for t in times if t < cutoff]
        recent = [t for t in times if t >= cutoff]
        assert all(t % HOUR_SECONDS == 1800 for t in old)  # hourly: the last sample of each hour
        assert len(old) == 72 and len(recent) == 96

    def test_histories_of_a_cluster_equal_history_per_target(self, store: ObservationStore) -> None:
        other = TargetId("c", "other", "/other")
        for hour in range(24 * 4):
            store.write_poll([obs(RAW, T0 + hour * HOUR_SECONDS, hour), obs(POOL, T0 + hour * HOUR_SECONDS, 5, None)])
            store.write_poll([obs(RAW, T0 + hour * HOUR_SECONDS + 900, hour + 1)])
        store.write_poll([obs(other, T0 + 10, 1)])
        store.prune(T0 + 4 * 86400)
        everything = store.histories("c", since=T0)
        assert {"raw", "pool", "other"} == set(everything)
        for target in (RAW, POOL, other):
            assert store.history(target, since=T0) == everything[target.name]
        assert store.histories("elsewhere", since=T0) == {}

    def test_prune_drops_hourly_past_its_retention(self, store: ObservationStore) -> None:
        store.write_poll([obs(RAW, T0, 1)])
        store.write_poll([obs(RAW, T0 + 40 * 86400, 2)])
        store.prune(T0 + 40 * 86400)
        assert store.history(RAW, since=0) == [(T0 + 40 * 86400, 2, 5)]

    def test_prune_in_batches(self, store: ObservationStore) -> None:
        for minute in range(100):
            store.write_poll([obs(RAW, T0 + minute * 60, minute), obs(POOL, T0 + minute * 60, minute, None)])
        raw, hourly = store.prune(T0 + 2 * 86400 + 50 * 60, batch_rows=7)
        assert (raw, hourly) == (100, 0)  # samples before minute 50 (both targets) are gone
        assert [T0 + m * 60 for m in range(50, 100)] == [t for t, _, _ in store.history(RAW, since=T0 + 50 * 60)]
        if store.db.dialect == "sqlite":
            plan = " ".join(str(tuple(row)) for row in store.db.query(
                "EXPLAIN QUERY PLAN SELECT cluster, target, t FROM observations WHERE t < 0"))
            assert "observations_by_t" in plan
        else:  # the planner picks a seq scan on a table this small; the index must exist
            assert store.db.query("SELECT 1 FROM pg_indexes WHERE indexname = 'observations_by_t'")

    def test_latest_per_target(self, store: ObservationStore) -> None:
        store.write_poll([obs(RAW, T0, 1), obs(POOL, T0, 9, None)])
        store.write_poll([obs(RAW, T0 + 60, 2)])
        latest = {o.target.name: (o.t, o.used_bytes, o.target.kind) for o in store.latest("c")}
        assert latest == {"raw": (T0 + 60, 2, TargetKind.QUOTA), "pool": (T0, 9, TargetKind.POOL)}

    def test_recent_hard_limits_of_the_quota_the_name_is_now(self, store: ObservationStore) -> None:
        """What the growth stage replays after a restart: the newest limits before a time, oldest
        first, and none of a quota the name stood for before (another VMS id)."""
        for k, (quota_id, hard) in enumerate([(6, 10), (7, 20), (7, 30), (7, 40), (7, 50)]):
            store.write_poll([replace(obs(RAW, T0 + 60 * k, 1), hard_limit_bytes=hard, hard_limit_inodes=k,
                                      quota_id=quota_id)])
        assert store.recent_hard_limits(RAW, 7, before=T0 + 240, count=2) == [(30, 2), (40, 3)]
        assert store.recent_hard_limits(RAW, 7, before=T0 + 240, count=16) == [(20, 1), (30, 2), (40, 3)]
        assert store.recent_hard_limits(RAW, 6, before=T0 + 300, count=16) == []
        assert store.recent_hard_limits(replace(RAW, path="/elsewhere"), 7, before=T0 + 300, count=16) == []


_WRITER = """
import sys
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.leases import LeaseStore
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.forecasting.types import Observation, TargetId
store = ObservationStore(Database(sys.argv[1]), raw_retention_seconds=1e9, hourly_retention_seconds=1e9)
targets = [TargetId("c", f"q{i}", f"/q{i}") for i in range(200)]
poll = 0
while True:
    poll += 1
    store.write_poll([Observation(target=t, t=float(poll), used_bytes=poll, hard_limit_bytes=10**9)
                      for t in targets])
    if poll in (3, 10):
        print(f"wrote {poll}", flush=True)
"""


class TestCrashSafety:
    """A SIGKILL in the middle of writing leaves a consistent database: whole polls only."""

    def test_sigkill_mid_write(self, tmp_path: Path) -> None:
        path = tmp_path / "crash.db"
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "wrote 3"
            assert proc.stdout.readline().strip() == "wrote 10"  # poll 11 is being written now
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            per_poll = conn.execute("SELECT t, COUNT(*) FROM observations GROUP BY t").fetchall()
        finally:
            conn.close()
        assert len(per_poll) >= 3
        assert {200} == {count for _, count in per_poll}  # never half a poll
        db = Database(path)  # and it reopens (migrations already applied)
        assert db.schema_version >= 1
        db.close()


class TestFleetWrites:
    """A fleet polls every cluster on every instance; only the cluster's leader records the
    samples, so the shared history is one series, not one per instance interleaved."""

    async def test_only_the_leader_records_observations(self, open_store: OpenStore) -> None:
        clock = VirtualClock(T0)
        stores = [open_store(), open_store()]
        a, b = (LeaseLeadership(LeaseStore(db), ["c"], clock, instance_name=name, lease_seconds=15,
                                renew_seconds=5) for db, name in zip(stores, "ab", strict=True))
        await a.step()
        await b.step()
        assert a.is_leader("c") and not b.is_leader("c")
        for db, leadership, t in ((stores[0], a, T0 + 1), (stores[1], b, T0 + 2)):
            stage = StoreStage(ObservationStore(db, raw_retention_seconds=86400, hourly_retention_seconds=86400),
                               leadership=leadership)
            await stage.on_cycle(CycleContext(poll=PollResult("c", t, (obs(RAW, t, 10),)), now=t))
        rows = stores[0].query("SELECT t FROM observations ORDER BY t")
        assert [r["t"] for r in rows] == [T0 + 1]  # the standby's sample (T0 + 2) was not recorded

    async def test_alone_every_sample_is_recorded(self, backend: Backend) -> None:
        stage = StoreStage(ObservationStore(backend, raw_retention_seconds=86400, hourly_retention_seconds=86400))
        for t in (T0 + 1, T0 + 2):
            await stage.on_cycle(CycleContext(poll=PollResult("c", t, (obs(RAW, t, 10),)), now=t))
        assert [r["t"] for r in backend.query("SELECT t FROM observations ORDER BY t")] == [T0 + 1, T0 + 2]
