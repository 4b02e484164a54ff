"""Two-week rate traces of the kinds NAB's AWS series are, for judging `forecast-real`'s way on
traces the dev set does not hold.

forecast-real is also run on real traces that are not in the repository; most of NAB's real
series are two weeks of 5-minute CloudWatch metrics, where the check's origins see 7 to 11 days
of history. Three kinds that such metrics show and the six dev traces barely do, each with
`seeds` realisations:

- `wander`: a flat rate whose level wanders slowly (AR(1), φ = 0.995 per 5 minutes, a memory of
  ~17 h), as a CPU or memory metric does;
- `steps`: a flat rate with two lasting steps of ×0.7 or ×1.4 at random days in 2–12 (a deploy,
  a rebalance), noise 6 % of the level;
- `weekly`: weekday traffic with a daily cycle and weekends at 60 %, multiplicative noise 15 %
  (a week and a half of history cannot show the weekly season yet).

Each file is `timestamp,value` at 5-minute steps, as the dev traces are, so
`bench_forecast_phases.py --dev-traces DIR` (or `--short-traces`) judges them as the check would.
Run: .venv/bin/python bench/short_traces.py DIR [--seeds 11,12,13]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os

import numpy as np

STEP_MINUTES = 5
DAYS = 14
SEEDS = (11, 12, 13)
START = dt.datetime(2015, 3, 1)


def wander(rng: np.random.Generator, t_days: np.ndarray) -> np.ndarray:
    level = np.zeros(len(t_days))
    shocks = 0.5 * rng.standard_normal(len(t_days))
    for i in range(1, len(level)):
        level[i] = 0.995 * level[i - 1] + shocks[i]
    return 40.0 + level


def steps(rng: np.random.Generator, t_days: np.ndarray) -> np.ndarray:
    level = np.full(len(t_days), 50.0)
    for day in rng.uniform(2.0, 12.0, 2):
        level[t_days >= day] *= rng.choice([0.7, 1.4])
    return level + 3.0 * rng.standard_normal(len(t_days))


def weekly(rng: np.random.Generator, t_days: np.ndarray, seed: int) -> np.ndarray:
    weekend = np.floor(t_days + seed) % 7 >= 5
    daily = 1.0 + 0.5 * np.sin(2 * np.pi * (t_days - 0.3))
    return 100.0 * np.where(weekend, 0.6, 1.0) * daily * np.exp(0.15 * rng.standard_normal(len(t_days)))


def traces(seeds: tuple[int, ...] = SEEDS) -> dict[str, np.ndarray]:
    """name → rate per 5-minute step (never negative)."""
    t_days = np.arange(DAYS * 24 * 60 // STEP_MINUTES) * STEP_MINUTES / (24 * 60.0)
    out: dict[str, np.ndarray] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)  # one stream per seed, drawn in this order
        out[f"wander_{seed}"] = wander(rng, t_days)
        out[f"weekly_{seed}"] = weekly(rng, t_days, seed)
        out[f"steps_{seed}"] = steps(rng, t_days)
    return {name: np.maximum(rate, 0.0) for name, rate in out.items()}


def write_traces(directory: str, seeds: tuple[int, ...] = SEEDS) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, rate in traces(seeds).items():
        path = os.path.join(directory, f"{name}.csv")
        with open(path, "w") as handle:
            handle.write("timestamp,value\n")
            for i, value in enumerate(rate):
                stamp = START + dt.timedelta(minutes=STEP_MINUTES * i)
                handle.write(f"{stamp.isoformat(sep=' ')},{value:.3f}\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args()
    for written in write_traces(args.directory, tuple(int(s) for s in args.seeds.split(","))):
        print(written)
