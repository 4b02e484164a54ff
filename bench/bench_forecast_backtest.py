"""Backtest of the forecaster's time-to-threshold against predict_linear and seasonal naive.

Two families of traces, judged separately (`families`, `targets_met`):

- synthetic (15-minute samples, 6 weeks, 3 seeds): a ramping ingest rate, daily+weekly
  seasonality, bursts, nightly deletes, heavy noise without season;
- real: Taylor's half-hourly electricity demand of England and Wales (12 weeks from Monday
  5 June 2000), shipped inside pmdarima (`pip install -e '.[bench]'`; `make bench` installs it),
  scaled to 20 TB/day and used as the ingest rate, as the measurement behind issue 4 used a
  half-hourly demand trace. Without pmdarima the family is skipped and the JSON says why.

At forecast origins every 12 h from day 21 to a week before the end, for each horizon H in
6h/1d/3d/7d the threshold is the usage actually reached at origin+H; the error is
|predicted − actual first crossing| / (actual crossing − origin). Compared, same run:

- ours: Holt-Winters on the rate (quotapilot.forecasting.series), p50 path;
- predict_linear: Prometheus-style least squares on the last 1h / 6h / 1d / 7d of samples,
  extrapolated from the fitted value at the origin; the best window per horizon is reported
  (chosen after the fact, which flatters it);
- seasonal naive on the rate: the hourly rate of one week earlier (one day with < 1 week);
- oracle (synthetic only): the trace's expected rate (mean of 256 other realisations of the same
  generator) added up from the actual usage at the origin. It knows the process but not the
  noise and bursts to come, so it shows the floor that noise sets: where even the oracle's median
  error is above a third of predict_linear's, the issue's target cannot be met on that trace
  family (`target_reachable_by_oracle`).

Band coverage: share of (origin, horizon) where the actual usage at origin+H lies in p10–p90.
Seeds are fixed.

Prints one JSON object.  Run: .venv/bin/python bench/bench_forecast_backtest.py [SEED ...]
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quotapilot.forecasting.resample import resample
from quotapilot.forecasting.series import ModelConfig, forecast_samples

DAY = 86400.0
HOUR = 3600.0
SAMPLE = 900.0
DAYS = 42
HORIZONS = {"6h": 6 * HOUR, "1d": DAY, "3d": 3 * DAY, "7d": 7 * DAY}
WINDOWS = {"1h": HOUR, "6h": 6 * HOUR, "1d": DAY, "7d": 7 * DAY}
T0 = 1_767_571_200.0  # a Monday, 00:00 UTC
TB_DAY = 1e12 / DAY


def _diurnal(t: np.ndarray, amplitude: float) -> np.ndarray:
    return 1 + amplitude * np.sin(2 * np.pi * ((t % DAY) / DAY - 0.25))


def _weekend(t: np.ndarray, factor: float) -> np.ndarray:
    weekday = ((t - T0) // DAY) % 7
    return np.where(weekday >= 5, factor, 1.0)


def _noise(rng: np.random.Generator, n: int, sd: float, hours: float = 2.0) -> np.ndarray:
    """Noise correlated over a couple of hours (ingest does not flip every 15 minutes)."""
    white = rng.normal(0, sd, n)
    k = max(1, int(hours * HOUR / SAMPLE))
    return np.convolve(white, np.ones(k) / math.sqrt(k), mode="same")


TraceFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def ramp(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """COSMOS-7-like: 5 → 50 TB/day over the trace, diurnal cycle, noise."""
    base = (5 + 45 * (t - T0) / (DAYS * DAY)) * TB_DAY
    return base * _diurnal(t, 0.5) * (1 + _noise(rng, len(t), 0.15))


def seasonal(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Daily + weekly seasonality with noise."""
    return 20 * TB_DAY * _diurnal(t, 0.8) * _weekend(t, 0.3) * (1 + _noise(rng, len(t), 0.2))


def bursts(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A steady diurnal base plus random multi-hour bursts at 5x."""
    rate = 10 * TB_DAY * _diurnal(t, 0.5) * (1 + _noise(rng, len(t), 0.1))
    starts = rng.choice(len(t), size=int(DAYS * 0.7), replace=False)
    for s in starts:
        rate[s:s + int(rng.integers(4, 24))] *= 5
    return rate


def deletes(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Temp-like: writes by day, a cleanup at 02:00 deleting most of the day's writes."""
    rate = 30 * TB_DAY * _diurnal(t, 0.9) * _weekend(t, 0.5) * (1 + _noise(rng, len(t), 0.1))
    cleanup = ((t % DAY) >= 2 * HOUR) & ((t % DAY) < 3 * HOUR)
    rate[cleanup] -= 0.8 * 30 * TB_DAY * 24
    return rate


def noisy_linear(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """No season at all, heavy noise."""
    return 8 * TB_DAY * (1 + _noise(rng, len(t), 0.6))


TRACES: dict[str, TraceFn] = {"ramp": ramp, "seasonal": seasonal, "bursts": bursts, "deletes": deletes,
                              "noisy_linear": noisy_linear}


def sample_times() -> np.ndarray:
    return T0 + SAMPLE * np.arange(int(DAYS * DAY / SAMPLE))


def make_trace(fn: TraceFn, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = sample_times()
    used = 5e14 + np.cumsum(fn(t, rng) * SAMPLE)
    return t, np.maximum(used, 0.0)


ORACLE_REALISATIONS = 256
"""Independent realisations averaged into a synthetic trace's expected rate (seeds 10,000 on,
never the backtest's own)."""


def expected_rate(fn: TraceFn) -> np.ndarray:
    """The trace's expected rate at each sample: the mean over many realisations. Forecasting
    with it from the actual usage at the origin shows the floor noise sets: it knows the process
    but not the noise and bursts to come. It is not a strict floor: it ignores an ongoing burst
    and the current state of the 2-hour-correlated noise, which help over the first hours."""
    t = sample_times()
    return np.mean([fn(t, np.random.default_rng(10_000 + i)) for i in range(ORACLE_REALISATIONS)], axis=0)


@dataclass(frozen=True)
class Trace:
    family: str
    """"synthetic" or "real": targets are judged per family."""
    name: str
    t: np.ndarray
    used: np.ndarray
    sample_seconds: float
    expected: np.ndarray | None = None
    """Synthetic traces only: the expected rate per sample (the oracle)."""


def synthetic_traces(seeds: tuple[int, ...]) -> list[Trace]:
    out = []
    for name, fn in TRACES.items():
        mean_rate = expected_rate(fn)
        for seed in seeds:
            t, used = make_trace(fn, seed)
            out.append(Trace("synthetic", name, t, used, SAMPLE, mean_rate))
    return out


REAL_TB_PER_DAY = 20.0


def real_traces() -> tuple[list[Trace], str | None]:
    """Real series shipped inside installed packages, used as an ingest rate (the issue's own
    measurement did the same with a half-hourly demand trace). pmdarima (the `bench` extra)
    ships Taylor's half-hourly electricity demand of England and Wales, 12 weeks from Monday
    5 June 2000: scaled to a mean of REAL_TB_PER_DAY, it becomes the bytes written per half hour.
    Returns the traces and, when none could be loaded, why."""
    try:
        from pmdarima.datasets import load_taylor
    except ImportError as exc:
        return [], f"pmdarima not installed ({exc}); pip install -e '.[bench]'"
    demand = np.asarray(load_taylor(), dtype=np.float64)
    step = 1800.0
    t = T0 + step * np.arange(len(demand))  # T0 is a Monday, as 5 June 2000 was
    rate = demand / float(np.mean(demand)) * REAL_TB_PER_DAY * TB_DAY
    used = 5e14 + np.cumsum(rate * step)
    return [Trace("real", "taylor_demand", t, used, step)], None


def true_crossing(t: np.ndarray, used: np.ndarray, origin_i: int, level: float) -> float:
    after = np.nonzero(used[origin_i:] >= level)[0]
    return float(t[origin_i + after[0]])


def crossing_of(times: np.ndarray, path: np.ndarray, level: float, cap: float) -> float:
    above = np.nonzero(path >= level)[0]
    if len(above) == 0:
        return cap
    i = int(above[0])
    if i == 0:
        return float(times[0])
    y0, y1 = path[i - 1], path[i]
    return float(times[i - 1] + (level - y0) / (y1 - y0) * (times[i] - times[i - 1])) if y1 > y0 else float(times[i])


def predict_linear(t: np.ndarray, used: np.ndarray, origin_i: int, window: float, level: float,
                   cap: float) -> float:
    origin = t[origin_i]
    lo = np.searchsorted(t, origin - window)
    x, y = t[lo:origin_i + 1] - origin, used[lo:origin_i + 1]
    if len(x) < 2:
        return cap
    slope, value_now = np.polyfit(x, y, 1)
    if value_now >= level:
        return float(origin)
    if slope <= 0:
        return cap
    return float(min(origin + (level - value_now) / slope, cap))


def seasonal_naive(t: np.ndarray, used: np.ndarray, origin_i: int, level: float, cap: float) -> float:
    series = resample(list(zip(t[:origin_i + 1].tolist(), used[:origin_i + 1].tolist(), strict=True)), HOUR)
    assert series is not None
    period = 168 if len(series.rates) >= 168 else 24
    last = series.rates[-period:]
    steps = int((cap - series.last_t) / HOUR) + 2
    rates = np.resize(last, steps)
    knots_t = np.concatenate(([series.last_t], series.end + HOUR * np.arange(1, steps + 1)))
    first = rates[0] * (series.end + HOUR - series.last_t) / HOUR
    ahead = first + np.concatenate(([0.0], np.cumsum(rates[1:])))
    path = np.concatenate(([series.last_used], series.last_used + ahead))
    return min(crossing_of(knots_t, path, level, cap), cap)


def rel_error(predicted: float, actual: float, origin: float) -> float:
    return abs(predicted - actual) / (actual - origin)


def oracle_crossing(trace: Trace, origin_i: int, level: float, cap: float) -> float:
    assert trace.expected is not None
    ahead = np.cumsum(trace.expected[origin_i + 1:] * trace.sample_seconds)
    path = trace.used[origin_i] + np.concatenate(([0.0], ahead))
    return min(crossing_of(trace.t[origin_i:], path, level, cap), cap)


Errors = dict[str, list[float]]


def backtest(trace: Trace, config: ModelConfig, errors: dict[str, Errors], covered: dict[str, list[bool]],
             models: dict[str, int]) -> tuple[int, float]:
    """Every origin of one trace: appends to `errors[method][horizon]` and `covered[horizon]`;
    returns (fits, seconds spent fitting)."""
    t, used = trace.t, trace.used
    fits, fit_seconds = 0, 0.0
    for origin in np.arange(t[0] + 21 * DAY, t[-1] - 7 * DAY, DAY / 2):
        oi = int(np.searchsorted(t, origin))
        history = list(zip(t[:oi + 1].tolist(), used[:oi + 1].tolist(), strict=True))
        start = time.perf_counter()
        _, outlook = forecast_samples(history, limit=None, config=config)
        fit_seconds += time.perf_counter() - start
        fits += 1
        forecast = outlook.forecast
        assert forecast is not None
        models[forecast.model] = models.get(forecast.model, 0) + 1
        f_t = np.concatenate(([forecast.t0], forecast.times))
        f_p50 = np.concatenate(([used[oi]], forecast.p50))
        cap = float(f_t[-1])
        for label, h in HORIZONS.items():
            ti = int(np.searchsorted(t, t[oi] + h))
            level = float(used[ti])
            if level <= used[oi]:
                continue  # net shrinkage over H: no crossing to predict
            actual = true_crossing(t, used, oi, level)
            errors["ours"][label].append(rel_error(crossing_of(f_t, f_p50, level, cap), actual, t[oi]))
            for w_label, w in WINDOWS.items():
                errors[f"linear_{w_label}"][label].append(
                    rel_error(predict_linear(t, used, oi, w, level, cap), actual, t[oi]))
            errors["seasonal_naive"][label].append(rel_error(seasonal_naive(t, used, oi, level, cap), actual, t[oi]))
            if trace.expected is not None:
                errors["oracle"][label].append(rel_error(oracle_crossing(trace, oi, level, cap), actual, t[oi]))
            p10, p90 = forecast.at(t[ti], "p10"), forecast.at(t[ti], "p90")
            if p10 is not None and p90 is not None:
                covered[label].append(p10 <= level <= p90)
    return fits, fit_seconds


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 4)


def summary(errors: dict[str, Errors], covered: dict[str, list[bool]]) -> dict[str, object]:
    """Per horizon: ours, the best predict_linear window (chosen after the fact, which flatters
    it), seasonal naive, the oracle where there is one, coverage, and whether the issue's
    target holds (ours ≤ ⅓ of the best predict_linear and ≤ seasonal naive)."""
    def stats(values: list[float]) -> dict[str, float]:
        return {"median": _median(values), "p90": round(float(np.quantile(values, 0.9)), 4)}

    out: dict[str, object] = {}
    met = True
    for label in HORIZONS:
        best_w = min(WINDOWS, key=lambda w: float(np.median(errors[f"linear_{w}"][label])))
        o, lin, nv = stats(errors["ours"][label]), stats(errors[f"linear_{best_w}"][label]), \
            stats(errors["seasonal_naive"][label])
        ok_linear, ok_naive = o["median"] <= lin["median"] / 3, o["median"] <= nv["median"]
        met = met and ok_linear and ok_naive
        row: dict[str, object] = {
            "n": len(errors["ours"][label]), "ours": o, "predict_linear_best": {**lin, "window": best_w},
            "predict_linear_by_window_median": {w: _median(errors[f"linear_{w}"][label]) for w in WINDOWS},
            "seasonal_naive": nv, "coverage_p10_p90": round(float(np.mean(covered[label])), 3),
            "ours_le_third_of_linear": ok_linear, "ours_le_naive": ok_naive}
        if errors["oracle"][label]:
            oracle = stats(errors["oracle"][label])
            row["oracle"] = oracle
            row["target_reachable_by_oracle"] = oracle["median"] <= lin["median"] / 3
        out[label] = row
    out["targets_met"] = met
    return out


def run(seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, object]:
    config = ModelConfig(horizon_seconds=10 * DAY)
    real, real_skipped = real_traces()
    traces = synthetic_traces(seeds) + real

    def new_errors() -> dict[str, Errors]:
        return defaultdict(lambda: {h: [] for h in HORIZONS})

    by_family: dict[str, dict[str, Errors]] = defaultdict(new_errors)
    by_trace: dict[str, dict[str, Errors]] = defaultdict(new_errors)
    covered: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {h: [] for h in HORIZONS})
    models: dict[str, int] = {}
    fits, fit_seconds = 0, 0.0
    for trace in traces:
        errors: dict[str, Errors] = new_errors()
        n, seconds = backtest(trace, config, errors, covered[trace.family], models)
        fits, fit_seconds = fits + n, fit_seconds + seconds
        for method, per_h in errors.items():
            for h, values in per_h.items():
                by_family[trace.family][method][h] += values
                by_trace[trace.name][method][h] += values

    def per_trace_row(errors: dict[str, Errors], h: str) -> dict[str, float]:
        row = {"ours": _median(errors["ours"][h]),
               "predict_linear_best": min(_median(errors[f"linear_{w}"][h]) for w in WINDOWS),
               "seasonal_naive": _median(errors["seasonal_naive"][h])}
        if errors["oracle"][h]:
            row["oracle"] = _median(errors["oracle"][h])
        return row

    families = {family: summary(errors, covered[family]) for family, errors in by_family.items()}
    return {
        "benchmark": "forecast_backtest", "traces": sorted({(t.family, t.name) for t in traces}),
        "seeds": list(seeds), "real_traces_skipped": real_skipped, "fits": fits,
        "fit_ms_mean": round(1000 * fit_seconds / fits, 2), "models": models, "families": families,
        "per_trace_median": {name: {h: per_trace_row(errors, h) for h in HORIZONS if errors["ours"][h]}
                             for name, errors in by_trace.items()},
        "coverage_p10_p90_all": round(float(np.mean(
            [c for cov in covered.values() for cs in cov.values() for c in cs])), 3),
        "targets_met": {family: bool(s["targets_met"]) for family, s in families.items()}}


if __name__ == "__main__":
    seeds = tuple(int(s) for s in sys.argv[1:]) or (0, 1, 2)
    print(json.dumps(run(seeds)))
