"""Growth and a quota's soft limit with a grace period, end to end (growth-scenario review, 2026-12-05).

VAST (and the built-in simulator) refuse *every* write to a quota whose soft limit has been exceeded
for longer than its grace period (`GRACE_EXPIRED`), although usage is below the hard limit. The
planner triggered only on the hard limit's `grow_at` and never looked at the grace period: a soft
limit at 80 % of the hard limit with grow_at 0.85 let the quota sit between the two until the grace
expired; from then on it was frozen (usage no longer rose, so no forecast crossed grow_at): 30 days
of the review's soft_grace scenario gave 85,288 write failures and 7 days of `GRACE_EXPIRED` with no
growth. (`planner.SeriesState.binding_soft`; the unit tests are `tests/forecasting/test_planner.py::
TestASoftLimitWithAGracePeriodBinds`.)

The demo runs the real daemon against the simulator on one VirtualClock (no real sleeping).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quotapilot.daemon.commands.demo import DemoOptions, run_demo

SCENARIO = """
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
    scenario.write_text(SCENARIO)
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
