"""The simulated cluster: enforcement, write-failure counting, determinism, ground truth."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from sim_helpers import call, client_for

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import Engine, EngineError, SimulatorServer, load_scenario
from quotapilot.daemon.simulator.scenario import parse_scenario

TB = 10**12
DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday


def one_view(*, rate: str = "1TB", hard: str = "10TB", soft: str | None = None, used: str = "9TB",
             extra: str = "", cluster: str = 'usable_capacity = "1PB"', quota_extra: str = "") -> str:
    soft_part = f', soft_limit = "{soft}"' if soft else ""
    return f"""
[cluster]
{cluster}

[[views]]
path = "/t/data"
quota_name = "t-data"
quota = {{ hard_limit = "{hard}"{soft_part}{quota_extra} }}
initial = {{ used = "{used}", files = 100 }}

[views.ingest]
bytes_per_day = "{rate}"
mean_file_size = "1GB"
{extra}
"""


def engine_for(text: str, seed: int = 0, **kwargs: Any) -> Engine:
    return Engine(parse_scenario(tomllib.loads(text)), seed=seed, start=START, **kwargs)


class TestHardLimits:
    """Writes beyond the hard limit are refused and counted."""

    def test_fills_to_the_limit_then_refuses(self) -> None:
        engine = engine_for(one_view())
        engine.advance_to(START + 2 * DAY)
        summary = engine.summary()
        quota = summary["quotas"]["/t/data"]
        assert (quota["used_capacity"], quota["state"]) == (10 * TB, "HARD_EXCEEDED")
        assert summary["bytes_refused"] == pytest.approx(1 * TB, rel=1e-6)  # 2 TB offered, 1 TB room
        assert summary["write_failures"] == summary["write_failures_by_path"]["/t/data"]
        # one day at 1 TB/day of 1 GB files refused: ~1000 files (at least one per refusing step)
        assert 1000 <= summary["write_failures"] <= 1000 + 24 * 60

    def test_patch_applies_to_the_next_write(self) -> None:
        engine = engine_for(one_view())
        engine.advance_to(START + 2 * DAY)
        refused_before = engine.summary()["bytes_refused"]
        engine.patch_quota(1, {"hard_limit": 20 * TB})
        engine.advance_to(START + 3 * DAY)
        summary = engine.summary()
        assert summary["bytes_refused"] == refused_before
        assert summary["quotas"]["/t/data"]["used_capacity"] == pytest.approx(11 * TB, rel=1e-6)
        assert summary["limits_over_time"]["/t/data"] == [(START, 10 * TB), (START + 2 * DAY, 20 * TB)]

    def test_shrinking_below_usage_is_refused(self) -> None:
        engine = engine_for(one_view())
        with pytest.raises(EngineError) as err:
            engine.patch_quota(1, {"hard_limit": 5 * TB})
        assert err.value.field == "hard_limit"

    def test_inode_limit_blocks_writes(self) -> None:
        engine = engine_for(one_view(quota_extra=", hard_limit_inodes = 600", hard="100TB"))
        engine.advance_to(START + 1 * DAY)  # 1000 files offered, 500 fit
        summary = engine.summary()
        rec = engine.quotas[1]
        assert engine.quota_state(rec) == "INODE_HARD_EXCEEDED"
        assert summary["quotas"]["/t/data"]["used_inodes"] == 600
        assert summary["bytes_refused"] == pytest.approx(0.5 * TB, rel=1e-3)

    def test_full_pool_refuses_writes(self) -> None:
        engine = engine_for(one_view(hard="100TB", cluster='usable_capacity = "9.5TB"'))
        engine.advance_to(START + 1 * DAY)
        summary = engine.summary()
        assert summary["cluster"]["free_usable_capacity"] == 0
        assert summary["cluster"]["pool_refused_bytes"] == pytest.approx(0.5 * TB, rel=1e-3)
        assert summary["write_failures"] > 0

    async def test_enforced_through_vastpy(self, clock: VirtualClock, tmp_path: Path) -> None:
        scenario = tmp_path / "one.toml"
        scenario.write_text(one_view())
        async with SimulatorServer(scenario, clock=clock, state_dir=tmp_path / "s") as sim:
            client = client_for(sim)
            clock.advance(2 * DAY)
            full = (await call(client.quotas.get))[0]
            await call(client.quotas[full["id"]].patch, hard_limit=30 * TB, soft_limit=27 * TB)
            clock.advance(1 * DAY)
            grown = (await call(client.quotas.get))[0]
            summary = sim.engine.summary()
        assert (full["state"], full["percent_capacity"]) == ("HARD_EXCEEDED", 100)
        assert (grown["state"], grown["used_capacity"] // 10**9) == ("OK", 11_000)
        assert summary["bytes_refused"] == pytest.approx(1 * TB, rel=1e-6)


class TestSoftLimitsAndGrace:
    def test_grace_expiry_blocks_writes(self) -> None:
        engine = engine_for(one_view(hard="100TB", soft="9.5TB", quota_extra=', grace_period = "6h"'))
        engine.advance_to(START + 0.25 * DAY)  # crosses 9.5 TB after 12 h: not yet
        assert engine.quota_state(engine.quotas[1]) == "OK"
        engine.advance_to(START + 0.7 * DAY)  # crossed at 12:00, grace ends at 18:00
        assert engine.quota_state(engine.quotas[1]) == "SOFT_EXCEEDED"
        engine.advance_to(START + 1.0 * DAY)
        summary = engine.summary()
        assert engine.quota_state(engine.quotas[1]) == "GRACE_EXPIRED"
        assert summary["quotas"]["/t/data"]["used_capacity"] == pytest.approx(9.75 * TB, rel=1e-3)
        assert summary["bytes_refused"] == pytest.approx(0.25 * TB, rel=1e-2)

    @pytest.mark.parametrize("move_soft", [True, False])
    def test_raising_only_the_hard_limit_fails_once_grace_expires(self, move_soft: bool) -> None:
        """The reactive baseline (+1 TiB at 90 %, `plan_reactive_cycle`) every 15 minutes for a
        week: moving the soft limit with the hard one keeps writes flowing; a script that raises
        only the hard limit leaves usage above the soft limit, and when its grace period ends the
        quota refuses writes (GRACE_EXPIRED) although the hard limit has room."""
        from quotapilot.forecasting.planner import CycleInput, TargetInput, plan_reactive_cycle
        from quotapilot.forecasting.types import Observation, TargetId

        engine = engine_for(one_view(rate="2TB", hard="10TB", soft="9TB", used="5TB",
                                     quota_extra=', grace_period = "1d"'))
        record = engine.quotas[1]
        t = START
        while t < START + 7 * DAY:
            t += 900
            engine.advance_to(t)
            used = int(engine.quota_usage(record)[0])
            observation = Observation(target=TargetId("sim", record.name, record.path), t=t, used_bytes=used,
                                      hard_limit_bytes=record.hard_limit, soft_limit_bytes=record.soft_limit)
            (decision,) = plan_reactive_cycle(CycleInput(now=t, targets=(TargetInput(observation),), capacity=None))
            if decision.new_hard is not None:
                change = {"hard_limit": decision.new_hard}
                if move_soft:
                    assert decision.new_soft is not None
                    change["soft_limit"] = decision.new_soft
                engine.patch_quota(record.id, change)
        summary = engine.summary()
        if move_soft:
            assert summary["write_failures"] == 0
            assert engine.quota_state(record) == "OK"
        else:
            assert summary["write_failures"] > 0
            assert engine.quota_state(record) == "GRACE_EXPIRED"
            assert record.hard_limit > engine.quota_usage(record)[0]  # refused with room under the hard limit

    def test_soft_limit_without_grace_only_warns(self) -> None:
        engine = engine_for(one_view(hard="100TB", soft="9.5TB"))
        engine.advance_to(START + 1 * DAY)
        assert engine.quota_state(engine.quotas[1]) == "SOFT_EXCEEDED"
        assert engine.summary()["bytes_refused"] == 0


class TestDeterminism:
    """Same seed, same run — whatever the timing and number of requests."""

    def test_step_by_step_equals_one_jump(self) -> None:
        jump = Engine(load_scenario("cosmos7"), seed=7, start=START)
        steps = Engine(load_scenario("cosmos7"), seed=7, start=START)
        jump.advance_to(START + 3 * DAY)
        t = START
        for i in range(500):
            t += 17.0 + (i * 7919) % 900  # irregular request times
            steps.advance_to(min(t, START + 3 * DAY))
        steps.advance_to(START + 3 * DAY)
        assert jump.summary() == steps.summary()
        assert list(jump.used_bytes) == list(steps.used_bytes)

    def test_other_seed_other_run(self) -> None:
        a = Engine(load_scenario("cosmos7"), seed=1, start=START)
        b = Engine(load_scenario("cosmos7"), seed=2, start=START)
        a.advance_to(START + 0.5 * DAY)
        b.advance_to(START + 0.5 * DAY)
        assert list(a.used_bytes) != list(b.used_bytes)

    async def test_through_the_server_with_different_poll_rates(self, tmp_path: Path) -> None:
        results = []
        for polls in (4, 37):
            clock = VirtualClock(START)
            async with SimulatorServer("step3x", clock=clock, seed=3, state_dir=tmp_path / str(polls)) as sim:
                client = client_for(sim)
                for _ in range(polls):
                    clock.advance(DAY / polls)
                    await call(client.quotas.get)
                results.append([(q["used_capacity"], q["used_inodes"]) for q in await call(client.quotas.get)])
        assert results[0] == results[1]


class TestScenarioShapes:
    def test_cosmos7_raw_fills_within_two_days_without_growth(self) -> None:
        engine = Engine(load_scenario("cosmos7"), seed=0, start=START)
        for hour in range(1, 49):
            engine.advance_to(START + hour * 3600)
            if engine.quota_state(engine.quotas[1]) == "HARD_EXCEEDED":
                break
        assert 12 <= hour < 48

    def test_cosmos7_processed_is_about_40_percent_of_raw(self) -> None:
        engine = Engine(load_scenario("cosmos7"), seed=0, start=START)
        for q in engine.quotas.values():
            engine.patch_quota(q.id, {"hard_limit": 10**16, "soft_limit": 0})
        engine.advance_to(START + 10 * DAY)
        written = engine.summary()["bytes_written_by_path"]
        assert written["/cosmos7/processed"] / written["/cosmos7/raw"] == pytest.approx(0.4, abs=0.03)

    def test_cosmos7_temp_is_swept_nightly(self) -> None:
        engine = Engine(load_scenario("cosmos7"), seed=0, start=START)
        engine.advance_to(START + 1 * DAY + 0.5 * 3600)  # 00:30 on day 2: full of yesterday's temp
        before = engine.used_bytes[2]
        engine.advance_to(START + 1 * DAY + 1.1 * 3600)  # just after the 01:00 sweep
        assert before > 1 * TB
        assert engine.used_bytes[2] < 0.01 * TB

    def test_cosmos7_ramp_reaches_50_tb_per_day(self) -> None:
        engine = Engine(load_scenario("cosmos7"), seed=0, start=START)
        for q in engine.quotas.values():
            engine.patch_quota(q.id, {"hard_limit": 10**16, "soft_limit": 0})
        engine.advance_to(START + 29 * DAY)
        raw_before = engine.used_bytes[0]
        engine.advance_to(START + 30 * DAY)
        assert engine.used_bytes[0] - raw_before == pytest.approx(50 * TB, rel=0.25)
        free = engine.summary()["cluster"]["free_usable_capacity"]
        assert 0.2 * engine.usable_capacity_bytes < free < 0.6 * engine.usable_capacity_bytes

    @pytest.mark.parametrize("name", ["step3x", "burst20", "lull_surge"])
    def test_benchmark_scenarios_refuse_writes_without_growth(self, name: str) -> None:
        engine = Engine(load_scenario(name), seed=0, start=START)
        engine.advance_to(START + 30 * DAY)
        assert engine.summary()["write_failures"] > 0

    def test_burst20_writes_a_fifth_of_the_quota_in_an_hour(self) -> None:
        engine = Engine(load_scenario("burst20"), seed=0, start=START)
        engine.patch_quota(1, {"hard_limit": 10**15})
        engine.advance_to(START + 7.3 * DAY)
        before = engine.used_bytes[0]
        engine.advance_to(START + 7.3 * DAY + 3600)
        assert engine.used_bytes[0] - before == pytest.approx(10 * TB, rel=0.05)


class TestSummary:
    def test_utilization_definitions(self) -> None:
        engine = engine_for(one_view(rate="0", used="5TB"))
        engine.create_quota(name="empty", path="/t/empty", hard_limit=10 * TB)
        engine.advance_to(START + 3600)
        summary = engine.summary()
        # capacity-weighted: (5 + 0) / (10 + 10); per path: 0.5 and 0
        assert summary["mean_utilization"] == pytest.approx(0.25)
        assert summary["mean_utilization_by_path"] == pytest.approx({"/t/data": 0.5, "/t/empty": 0.0})
        assert summary["peak_utilization"] == pytest.approx(0.5)
        assert summary["utilization_samples"] == 60

    def test_extra_quotas_stay_out_of_the_ground_truth(self) -> None:
        engine = engine_for(one_view(), extra_quotas=100)
        engine.advance_to(START + DAY)
        summary = engine.summary()
        assert list(summary["quotas"]) == ["/t/data"]
        assert summary["cluster"]["quotas_allocated_capacity"] > 10 * TB

