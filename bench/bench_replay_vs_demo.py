"""`quotapilot replay` against `quotapilot demo` on the built-in scenarios: do they agree?

Per scenario it runs the demo (simulator + the real daemon over HTTPS, enforce mode, virtual clock)
and a replay of the same scenario's ground truth (the engine with limits lifted, sampled at the
demo's poll interval, from the demo's start, same seed) under the demo's policy, and prints one
JSON object: per scenario the demo's and the replay's write failures, growth actions and mean
utilization (capacity-weighted over the views, as the demo computes it), the relative deltas,
whether each is within 10 % with 0 write failures on both sides (the issue's bar), and the
replay's reactive baseline for reference.

    .venv/bin/python bench/bench_replay_vs_demo.py [--days 30] [--seed 0] [--scenarios a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.commands.demo import DEMO_POLICY, POLL_INTERVAL_SECONDS, DemoOptions, run_demo
from quotapilot.daemon.commands.replay import replay_settings_for
from quotapilot.daemon.history.trace import scenario_trace
from quotapilot.daemon.logs import configure_logging
from quotapilot.daemon.settings import load_settings
from quotapilot.forecasting.replay import TargetTrace, combined_summary, replay_target

SCENARIOS = ("cosmos7", "step3x", "burst20", "lull_surge")
TOLERANCE = 0.10


def replay_scenario(scenario: str, *, days: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The replay's totals over the scenario's ground truth, under the demo's policy and under
    the reactive baseline."""
    settings = load_settings(None, policy=dict(DEMO_POLICY), forecast={"workers": 0})
    ours, reactive = [], []
    for trace in scenario_trace(scenario, start=VirtualClock().now(), days=days,
                                interval_seconds=POLL_INTERVAL_SECONDS, seed=seed):
        target = TargetTrace(trace.name, list(trace.times), list(trace.used_bytes),
                             initial_hard_limit_bytes=trace.initial_hard_limit_bytes,
                             initial_soft_limit_bytes=trace.initial_soft_limit_bytes, path=trace.path)
        replayed = replay_target(target, replay_settings_for(settings, target))
        ours.append(replayed.quotapilot)
        reactive.append(replayed.reactive)
    return dict(combined_summary(ours)), dict(combined_summary(reactive))


def delta(replayed: float, shown: float) -> float | None:
    """The replay's relative difference from the demo (None when the demo shows 0)."""
    return round((replayed - shown) / shown, 4) if shown else None


async def one(scenario: str, days: float, seed: int) -> dict[str, Any]:
    demo = await run_demo(DemoOptions(days=days, scenario=scenario, seed=seed))
    replay, reactive = await asyncio.to_thread(replay_scenario, scenario, days=days, seed=seed)
    figures = ("write_failures", "growth_actions", "mean_utilization")
    row: dict[str, Any] = {
        "demo": {key: demo[key] for key in (*figures, "bytes_added")},
        "replay": {key: replay[key] for key in (*figures, "bytes_added")},
        "delta": {key: delta(float(replay[key]), float(demo[key])) for key in figures[1:]},
        "replay_reactive": {key: reactive[key] for key in (*figures, "near_misses")},
    }
    row["agree"] = (demo["write_failures"] == 0 and replay["write_failures"] == 0
                    and all(d is not None and abs(d) <= TOLERANCE for d in row["delta"].values()))
    return row


async def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = parser.parse_args(argv)
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for scenario in args.scenarios.split(","):
        results[scenario] = await one(scenario, args.days, args.seed)
        print(f"{scenario}: {json.dumps(results[scenario])}", file=sys.stderr)
    return {"benchmark": "replay_vs_demo", "days": args.days, "seed": args.seed, "tolerance": TOLERANCE,
            "results": results, "all_agree": all(r["agree"] for r in results.values()),
            "wall_seconds": round(time.monotonic() - started, 1)}


if __name__ == "__main__":
    configure_logging("error", "json")
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
