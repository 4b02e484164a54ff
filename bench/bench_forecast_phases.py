"""forecast-real's judgement, over many origin grids and over short histories.

`forecast-real` (the acceptance check) judges `quotapilot forecast` on each dev trace from one grid
of at most 12 origins: the ratio of the median time-to-threshold error of our p50 path to that of
predict_linear with its best window chosen in hindsight, at 1 d and 3 d, and the late rate of the
p90 path. Twelve origins make that median noisy: this bench repeats the same judgement on
`--phases` grids, each the check's own grid (same spacing, same count) started a fraction of the
spacing later, so a change can be judged on many samples of the check instead of one.
`--lookbacks` repeats it with histories cut to that many days (the check passes 42), with
predict_linear's windows cut to the same history, as a young quota's would be.

The method is the check's: each trace is taken as an ingest rate summed into a usage; from each
origin the history up to it is forecast (in process, `forecast_samples` as `quotapilot forecast
--csv` calls it); the threshold at horizon H is the usage actually reached at origin + H.

Prints one JSON object: per lookback, per trace and horizon, the ratio of each grid (phase 0 is
the check's own grid), their geometric mean, how many grids fail (ratio > 1.0 or late > 0.25, the
check's goal), the late rates; and totals.
`--short-traces` judges, instead of the dev traces, the two-week traces `short_traces.py` writes
(a wandering level, lasting steps, weekday traffic: kinds NAB's other real series show).
Run: .venv/bin/python bench/bench_forecast_phases.py [--phases 8] [--lookbacks 42,6,4]
     [--dev-traces DIR | --short-traces]
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from bench_forecast_backtest import DAY, Trace, crossing_of, dev_traces, predict_linear
from short_traces import write_traces

from quotapilot.forecasting.series import ModelConfig, forecast_samples

H_DAYS = (1, 3)
PL_WINDOWS = (3600.0, 6 * 3600.0, DAY, 7 * DAY)
GOAL_RATIO = 1.0
LATE_MAX = 0.25
CHECK_LOOKBACK_DAYS = 42.0


def check_grid(trace: Trace, phase: float) -> list[int]:
    """The check's origins (indices), started `phase` (0..1) of its spacing later."""
    step = trace.sample_seconds
    days = (trace.t[-1] - trace.t[0]) / DAY
    history = 21 if days > 40 else 7
    every = max(1, int(max(0.5, (days - history - 3) / 12) * DAY / step))
    ahead = int(max(H_DAYS) * DAY / step)
    start = int(history * DAY / step) + int(phase * every)
    return list(range(start, len(trace.t) - ahead - 1, every))[:12]


def forecast_from(job: tuple[Trace, int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    trace, origin, lookback_days = job
    first = max(0, origin - int(lookback_days * DAY / trace.sample_seconds))
    samples = list(zip(trace.t[first:origin + 1].tolist(), np.round(trace.used[first:origin + 1]).tolist(),
                       strict=True))
    _, outlook = forecast_samples(samples, limit=None, config=ModelConfig(horizon_seconds=8 * DAY))
    forecast = outlook.forecast
    assert forecast is not None
    return np.asarray(forecast.times), np.asarray(forecast.p50), np.asarray(forecast.p90)


def judge(trace: Trace, grids: list[list[int]], paths: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
          lookback_days: float) -> dict[str, object]:
    step = trace.sample_seconds
    out: dict[str, object] = {}
    for h in H_DAYS:
        ratios, lates = [], []
        for grid in grids:
            ours, late, linear = [], [], {w: [] for w in PL_WINDOWS}
            for origin in grid:
                k = origin + int(h * DAY / step)
                t0, tq, level = trace.t[origin], trace.t[k], trace.used[k]
                times, p50, p90 = paths[origin]
                ours.append(abs(crossing_of(times, p50, level, math.inf) - tq) / (tq - t0))
                late.append(crossing_of(times, p90, level, math.inf) > tq)
                for w in PL_WINDOWS:
                    eta = predict_linear(trace.t, trace.used, origin, min(w, lookback_days * DAY), level, math.inf)
                    linear[w].append(abs(eta - tq) / (tq - t0))
            best = min(float(np.median(v)) for v in linear.values())
            ratios.append(float(np.median(ours)) / best if best > 0 else math.inf)
            lates.append(float(np.mean(late)))
        failing = sum(r > GOAL_RATIO or lt > LATE_MAX for r, lt in zip(ratios, lates, strict=True))
        out[f"{h}d"] = {"ratio_by_grid": [round(r, 3) for r in ratios],
                        "ratio_geomean": round(float(np.exp(np.mean(np.log(ratios)))), 3),
                        "late_by_grid": [round(lt, 3) for lt in lates], "grids_failing": failing}
    return out


def run(phases: int, lookbacks: list[float], directory: str | None) -> dict[str, object]:
    traces, skipped = dev_traces(directory)
    result: dict[str, object] = {"benchmark": "forecast_phases", "phases": phases, "dev_traces_skipped": skipped}
    started = time.perf_counter()
    by_lookback: dict[str, object] = {}
    for lookback in lookbacks:
        rows: dict[str, object] = {}
        logs: list[float] = []
        failing = cells = on_check_grid = 0
        for trace in traces:
            grids = [check_grid(trace, k / phases) for k in range(phases)]
            origins = sorted({o for g in grids for o in g})
            with ProcessPoolExecutor(2) as pool:
                paths = dict(zip(origins, pool.map(forecast_from, [(trace, o, lookback) for o in origins]),
                                 strict=True))
            row = judge(trace, grids, paths, lookback)
            rows[trace.name] = row
            for cell in row.values():
                assert isinstance(cell, dict)
                logs += [math.log(max(r, 1e-12)) for r in cell["ratio_by_grid"]]
                failing += cell["grids_failing"]
                cells += len(cell["ratio_by_grid"])
                on_check_grid += cell["ratio_by_grid"][0] > GOAL_RATIO or cell["late_by_grid"][0] > LATE_MAX
        by_lookback[f"{lookback:g}d"] = {
            "traces": rows, "grids_failing": failing, "grids": cells, "check_grid_failing": on_check_grid,
            "ratio_geomean": round(math.exp(sum(logs) / len(logs)), 3) if logs else None}
    result["lookbacks"] = by_lookback
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=8)
    parser.add_argument("--lookbacks", default=f"{CHECK_LOOKBACK_DAYS:g},6,4")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dev-traces", default=None)
    source.add_argument("--short-traces", action="store_true",
                        help="judge short_traces.py's two-week traces instead of the dev traces")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as generated:
        directory = args.dev_traces
        if args.short_traces:
            write_traces(generated)
            directory = generated
        print(json.dumps(run(args.phases, [float(x) for x in args.lookbacks.split(",")], directory)))
