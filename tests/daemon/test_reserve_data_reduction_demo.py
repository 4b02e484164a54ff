"""The cluster-reserve guard on a pool with data reduction, end to end (growth-scenario review, 2026-12-05).

Quota limits and usage are logical bytes; the pool's `usable_capacity` / `free_usable_capacity` are
physical (the simulator, like VMS, stores logical / `drr`; it reports `logical_space` = usable x drr).
`planner.net_of_overcommit` bounded the room by `usable - quotas_allocated` and by `free - unused
promises`, both logical minus physical. On a pool reducing 2:1 whose quotas promise as many logical
bytes as it has physical ones, every growth was blocked "cluster reserve: 0 B of room" while most of
the pool was physically free, and quotas filled: the review's drr_pool scenario (4 x 250 TB quotas,
pool 70 % physically used at the end of the month) gave 0 growth actions and 320,110 write failures;
the reactive baseline, which has no reserve guard, had none. The promises now count at the pool's
DRR (`planner.data_reduction`); unit test `tests/forecasting/test_planner.py::TestPlanCycle::
test_the_reserve_counts_logical_promises_at_the_pools_data_reduction`.

The demo runs the real daemon against the simulator on one VirtualClock (no real sleeping).
"""

from __future__ import annotations

from pathlib import Path

from quotapilot.daemon.commands.demo import DemoOptions, run_demo

# physical: usable 1 PB; in use (400 + 212 + 100) TB / 2 = 356 TB; free 644 TB (reserve: 100 TB).
# logical: capacity 2 PB; quotas allocate 250 + 800 = 1050 TB; unused promises 38 + 700 = 738 TB
# (369 TB physical). A DRR-aware guard leaves ~175 TB physical (~350 TB logical) of room.
SCENARIO = """
[scenario]
name = "drr_reserve_test"
step_seconds = 60
[cluster]
name = "drr-vast"
usable_capacity = "1PB"
used = "400TB"
drr = 2.0
[[views]]
path = "/proj/busy"
quota_name = "proj-busy"
quota = { hard_limit = "250TB", soft_limit = "225TB" }
initial = { used = "212TB", files = 212_000 }
[views.ingest]
bytes_per_day = "10TB"
mean_file_size = "1GB"
noise = 0.1
[[views]]
path = "/proj/allocated"
quota_name = "proj-allocated"
quota = { hard_limit = "800TB", soft_limit = "720TB" }
initial = { used = "100TB", files = 100_000 }
"""


async def test_growth_is_not_blocked_on_a_pool_with_data_reduction_and_room(tmp_path: Path) -> None:
    scenario = tmp_path / "drr_reserve_test.toml"
    scenario.write_text(SCENARIO)
    report = await run_demo(DemoOptions(days=4.5, scenario=str(scenario)))
    busy = report["by_path"]["/proj/busy"]
    assert busy["growth_actions"] >= 1 and report["write_failures"] == 0, (
        f"proj-busy: {busy['growth_actions']} growths, {busy['write_failures']} write failures, peak "
        f"{busy['peak_utilization']}: growth blocked by the cluster reserve although the pool is ~36 % "
        "physically used (logical promises compared with physical capacity)")
