"""Two growth defects the growth-scenario review (2026-12-05) found, end to end: the real daemon
against the simulator on one VirtualClock through `run_demo` (no real sleeping).

1. A quota's soft limit with a grace period.

   VAST (and the built-in simulator) refuse *every* write to a quota whose soft limit has been exceeded
   for longer than its grace period (`GRACE_EXPIRED`), although usage is below the hard limit. The
   planner triggered only on the hard limit's `grow_at` and never looked at the grace period: a soft
   limit at 80 % of the hard limit with grow_at 0.85 let the quota sit between the two until the grace
   expired; from then on it was frozen (usage no longer rose, so no forecast crossed grow_at): 30 days
   of the review's soft_grace scenario gave 85,288 write failures and 7 days of `GRACE_EXPIRED` with no
   growth. (`planner.SeriesState.binding_soft`; the unit tests are `tests/forecasting/test_planner.py::
   TestASoftLimitWithAGracePeriodBinds`.)

2. The cluster-reserve guard on a pool with data reduction.

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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quotapilot.daemon.commands.demo import DemoOptions, run_demo

GRACE_SCENARIO = """
[scenario]
name = "soft_grace_test"
step_seconds = 60
[cluster]
name = "grace-vast"
usable_capacity = "3PB"
used = "300TB"
drr = 1.2
[[views]]
path = "/hpc/project"
quota_name = "hpc-project"
quota = { hard_limit = "50TB", soft_limit = "40TB", grace_period = "6h" }
initial = { used = "41TB", files = 41_000 }
[views.ingest]
bytes_per_day = "1TB"
mean_file_size = "1GB"
"""


async def _run(tmp_path: Path, days: float) -> dict[str, Any]:
    scenario = tmp_path / "soft_grace_test.toml"
    scenario.write_text(GRACE_SCENARIO)
    return await run_demo(DemoOptions(days=days, scenario=str(scenario)))


async def test_quota_over_its_soft_limit_is_grown_before_the_grace_expires(tmp_path: Path) -> None:
    """Usage is at 82 % of the hard limit, above the 80 % soft limit, with a 6 h grace: quotapilot has
    24 polls to move the soft limit above usage. It does nothing (below grow_at), the grace expires
    and every write is refused for the rest of the run."""
    report = await _run(tmp_path, days=1.0)
    assert report["write_failures"] == 0, (
        f"{report['write_failures']} writes refused ({report['bytes_refused']} bytes) by GRACE_EXPIRED at "
        f"{report['peak_utilization']:.0%} of the hard limit; growth actions: {report['growth_actions']}")


async def test_grace_expired_quota_is_grown(tmp_path: Path) -> None:
    """Once VMS reports GRACE_EXPIRED the quota refuses all writes: it is as full as a quota at its hard
    limit. Within 1.5 days (~30 h of GRACE_EXPIRED) quotapilot should have grown it at least once."""
    report = await _run(tmp_path, days=1.5)
    assert report["growth_actions"] >= 1, (
        f"no growth while the quota refused every write (GRACE_EXPIRED); write failures "
        f"{report['write_failures']}, peak utilization {report['peak_utilization']}")


# physical: usable 1 PB; in use (400 + 212 + 100) TB / 2 = 356 TB; free 644 TB (reserve: 100 TB).
# logical: capacity 2 PB; quotas allocate 250 + 800 = 1050 TB; unused promises 38 + 700 = 738 TB
# (369 TB physical). A DRR-aware guard leaves ~175 TB physical (~350 TB logical) of room.
DRR_SCENARIO = """
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
    scenario.write_text(DRR_SCENARIO)
    report = await run_demo(DemoOptions(days=4.5, scenario=str(scenario)))
    busy = report["by_path"]["/proj/busy"]
    assert busy["growth_actions"] >= 1 and report["write_failures"] == 0, (
        f"proj-busy: {busy['growth_actions']} growths, {busy['write_failures']} write failures, peak "
        f"{busy['peak_utilization']}: growth blocked by the cluster reserve although the pool is ~36 % "
        "physically used (logical promises compared with physical capacity)")
