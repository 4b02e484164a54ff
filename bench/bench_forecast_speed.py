"""Speed of the forecaster at 10,000 series: full refits in a process pool, and one poll's
incremental update.

1. Refits: N series of 8 weeks of hourly history (weekly Holt-Winters on the rate, α selection,
   bootstrap bands: exactly what the daemon runs), in a `ProcessPoolExecutor` of `--workers`
   processes, in batches as `daemon/forecaster.py` sends them. Wall time includes pickling and
   worker start-up. `--sample K` fits only K series and extrapolates (reported as such).
2. Incremental: N fitted series (copies of 50 distinct fits: the update cost does not depend on
   the parameters) each receive one sample that completes a step (the worst case: an HW update
   for every series), in one process; then the same plus the full outlook (cumulative forecast
   with bands out to 14 days and runways for 3 thresholds) that the stage computes each cycle.

Prints one JSON object. Run: .venv/bin/python bench/bench_forecast_speed.py [--series N] [--workers W]
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from quotapilot.daemon.stages.forecast import REFIT_BATCH, timed_refits
from quotapilot.forecasting.series import ModelConfig, RefitRequest, SeriesModel

HOUR = 3600.0
STEPS = 8 * 168
T0 = 1_767_571_200.0


def rates_for(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.arange(STEPS)
    scale = 10 ** rng.uniform(6, 11)
    daily = 1 + rng.uniform(0.2, 0.9) * np.sin(2 * np.pi * (h / 24 + rng.uniform()))
    weekly = np.where((h // 24) % 7 >= 5, rng.uniform(0.3, 1.0), 1.0)
    trend = 1 + rng.uniform(0, 1) * h / STEPS
    return np.asarray(scale * daily * weekly * trend * (1 + rng.normal(0, 0.2, STEPS)), dtype=np.float64)


def refits(n_series: int, workers: int, config: ModelConfig) -> dict[str, object]:
    requests = [RefitRequest(rates=rates_for(i), steps_seen=STEPS, step_seconds=HOUR,
                             horizon_steps=config.horizon_steps) for i in range(n_series)]
    batches = [requests[i:i + REFIT_BATCH] for i in range(0, n_series, REFIT_BATCH)]
    started = time.perf_counter()
    cpu: list[float] = []
    models: dict[str, int] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        for results in pool.map(timed_refits, batches):
            for fitted, seconds, error in results:
                cpu.append(seconds)
                name = fitted.model_name if fitted is not None else "error" if error is not None else "none"
                models[name] = models.get(name, 0) + 1
    wall = time.perf_counter() - started
    return {"series": n_series, "workers": workers, "wall_seconds": round(wall, 2),
            "cpu_ms_per_series_mean": round(1000 * float(np.mean(cpu)), 2),
            "cpu_ms_per_series_p90": round(1000 * float(np.quantile(cpu, 0.9)), 2),
            "wall_ms_per_series": round(1000 * wall / n_series, 3), "models": models}


def incremental(n_series: int, config: ModelConfig) -> dict[str, object]:
    templates = []
    for i in range(50):
        level = np.concatenate(([1e12], 1e12 + np.cumsum(np.abs(rates_for(i)))))
        samples = [(T0 + k * HOUR, float(v)) for k, v in enumerate(level)]
        model = SeriesModel.from_samples(samples, config)
        model.refit(samples[-1][0])
        templates.append(model)
    models = [copy.deepcopy(templates[i % len(templates)]) for i in range(n_series)]
    t = T0 + (STEPS + 1) * HOUR
    started = time.perf_counter()
    completed = 0
    for model in models:
        completed += model.add_sample(t, (model.last_used or 0.0) + 1e9)
    update_seconds = time.perf_counter() - started
    t += HOUR
    started = time.perf_counter()
    for model in models:
        model.add_sample(t, (model.last_used or 0.0) + 1e9)
        model.outlook(t, limit=(model.last_used or 0.0) * 1.5)
    outlook_seconds = time.perf_counter() - started
    return {"series": n_series, "steps_completed": completed,
            "update_seconds": round(update_seconds, 4),
            "update_us_per_series": round(1e6 * update_seconds / n_series, 2),
            "update_and_outlook_seconds": round(outlook_seconds, 3),
            "update_and_outlook_us_per_series": round(1e6 * outlook_seconds / n_series, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample", type=int, default=None, help="refit only this many, extrapolate")
    parser.add_argument("--skip-refits", action="store_true")
    args = parser.parse_args()
    config = ModelConfig()
    result: dict[str, object] = {"benchmark": "forecast_speed", "cpus": os.cpu_count(),
                                 "history_steps": STEPS, "horizon_steps": config.horizon_steps}
    if not args.skip_refits:
        n = args.sample or args.series
        measured = refits(n, args.workers, config)
        if args.sample:
            factor = args.series / n
            measured["extrapolated_wall_seconds_for"] = {
                "series": args.series, "seconds": round(float(measured["wall_seconds"]) * factor, 1)}  # type: ignore[arg-type]
        result["refit"] = measured
        wall = measured.get("extrapolated_wall_seconds_for", {"seconds": measured["wall_seconds"]})
        result["refit_target_met_le_300s"] = float(wall["seconds"]) <= 300  # type: ignore[index]
    result["incremental"] = inc = incremental(args.series, config)
    result["incremental_target_met_le_1s"] = float(inc["update_seconds"]) <= 1.0  # type: ignore[arg-type]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
