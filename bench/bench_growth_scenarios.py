"""Growth policies on the simulator's scenarios: quotapilot versus the reactive baseline.

For cosmos7 and the three harder traces (step3x: a sudden 3x ingest step; burst20: bursts that
write 20 % of a quota in an hour; lull_surge: a quiet week, then a surge) it runs the full demo
loop (simulator + real daemon over HTTPS, enforce mode, virtual clock) once per policy and prints
one JSON object: per scenario and policy the write failures, growth actions, mean utilization of
the hard limits, and growths per quota per day; plus whether quotapilot met its targets (zero
write failures everywhere, mean utilization >= 0.55, <= 1 growth per quota per day on average).

    .venv/bin/python bench/bench_growth_scenarios.py [--days 30] [--seed 0] [--scenarios a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from quotapilot.daemon.commands.demo import DemoOptions, run_demo
from quotapilot.daemon.logs import configure_logging

SCENARIOS = ("cosmos7", "step3x", "burst20", "lull_surge")
POLICIES = ("quotapilot", "reactive")


async def one(scenario: str, policy: str, days: float, seed: int) -> dict[str, Any]:
    report = await run_demo(DemoOptions(days=days, scenario=scenario, policy=policy, seed=seed))
    quotas = max(1, len(report["final_hard_limits"]))
    return {
        "write_failures": report["write_failures"],
        "bytes_refused": report["bytes_refused"],
        "growth_actions": report["growth_actions"],
        "growths_per_quota_per_day": round(report["growth_actions"] / quotas / report["days"], 3),
        "mean_utilization": report["mean_utilization"],
        "peak_utilization": report["peak_utilization"],
        "bytes_added": report["bytes_added"],
        "wall_seconds": report["wall_seconds"],
    }


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for scenario in args.scenarios.split(","):
        results[scenario] = {policy: await one(scenario, policy, args.days, args.seed) for policy in POLICIES}
        print(f"{scenario}: {json.dumps(results[scenario])}", file=sys.stderr)
    ours = [r["quotapilot"] for r in results.values()]
    targets = {
        "zero_write_failures": all(r["write_failures"] == 0 for r in ours),
        "mean_utilization_at_least_0_55": all(r["mean_utilization"] >= 0.55 for r in ours),
        "at_most_one_growth_per_quota_per_day": (
            sum(r["growths_per_quota_per_day"] for r in ours) / len(ours) <= 1.0 if ours else True),
    }
    return {"benchmark": "growth_scenarios", "days": args.days, "seed": args.seed, "results": results,
            "quotapilot_targets_met": targets, "wall_seconds": round(time.monotonic() - started, 1)}


if __name__ == "__main__":
    configure_logging("error", "json")
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
