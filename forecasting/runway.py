"""From a model's rate forecast to the cumulative `Forecast` with bands, and from that to runways.

The cumulative path starts at the last observed usage; the rest of the open step gets its share
of that step's forecast rate, every later step its whole rate. Between grid points the path is
linear (a constant rate within a step), so crossings are interpolated exactly.

Every path is floored at 0 bytes: stored usage cannot be negative, but a model extrapolating a
shrinking series, a counter reset or a wide band would otherwise carry it below zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from quotapilot.forecasting.hw import FittedModel, ModelState, forecast_rates
from quotapilot.forecasting.resample import FloatArray
from quotapilot.forecasting.types import QUANTILES, Forecast, Runway, StepTimes, float_array

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.75, 0.90, 1.00)


@dataclass(frozen=True, slots=True, eq=False)
class Paths:
    """A `Forecast` and the same paths as arrays, each starting with the origin `(t0, used)`
    (runways read the arrays: converting the tuples back costs more than the rest)."""

    forecast: Forecast
    times: FloatArray
    p10: FloatArray
    p50: FloatArray
    p90: FloatArray

    def runways(self, *, limit: float | None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                now: float) -> tuple[Runway, ...]:
        return runways_of_paths(self.times, {"p10": self.p10, "p50": self.p50, "p90": self.p90},
                                limit=limit, thresholds=thresholds, now=now)


def paths_of(last_t: float, last_used: float, step: float, out_t: FloatArray, p10: FloatArray, p50: FloatArray,
             p90: FloatArray, *, model: str, fallback: str | None) -> Paths:
    """`Paths` of quantile levels at `out_t` (`last_t + k*step`, k = 1 … n, the last one possibly
    earlier: the horizon), starting at `last_used`,
    each floored at 0 bytes (the floor keeps p10 <= p50 <= p90; NaN stays NaN for the caller to see)."""
    n_out = len(out_t)
    p10, p50, p90 = (np.maximum(path, 0.0) for path in (p10, p50, p90))
    # compact paths (8 bytes a value, the grid derived): ~20,000 series each hold one
    end = float(out_t[-1]) if n_out and out_t[-1] < last_t + step * n_out else math.inf
    forecast = Forecast(t0=last_t, step_seconds=step, times=StepTimes(last_t, step, n_out, end),
                        p10=float_array(p10.tolist()), p50=float_array(p50.tolist()), p90=float_array(p90.tolist()),
                        model=model, fallback=fallback)
    origin = np.array([last_used])
    return Paths(forecast, np.concatenate(([last_t], out_t)),
                 np.concatenate((origin, p10)), np.concatenate((origin, p50)), np.concatenate((origin, p90)))


def cumulative_paths(fitted: FittedModel, state: ModelState, *, open_start: float, last_t: float,
                     last_used: float, horizon_seconds: float) -> Paths:
    """The p10/p50/p90 cumulative paths at `last_t + k*step`, k = 1 … ceil(horizon/step), the last
    point at the horizon itself (a horizon that is not a whole number of steps ends there: nothing
    past what was asked for is forecast, and no runway beyond it is reported)."""
    step = fitted.step_seconds
    n_out = max(1, math.ceil(horizon_seconds / step - 1e-9))
    n_knots = math.ceil((last_t + n_out * step - open_start) / step - 1e-9)
    n_knots = max(n_knots, 1)
    rates = forecast_rates(fitted.params, state, n_knots)
    first_share = min(1.0, max(0.0, (open_start + step - last_t) / step))
    increments = rates.copy()
    increments[0] *= first_share
    knot_t = np.concatenate(([last_t], open_start + step * np.arange(1, n_knots + 1)))
    mean = np.concatenate(([last_used], last_used + np.cumsum(increments)))
    low = np.concatenate(([0.0], _band(fitted.band_low, n_knots)))
    high = np.concatenate(([0.0], _band(fitted.band_high, n_knots)))
    out_t = np.minimum(last_t + step * np.arange(1, n_out + 1, dtype=np.float64), last_t + horizon_seconds)
    p50 = np.interp(out_t, knot_t, mean)
    p10 = np.minimum(p50 + np.interp(out_t, knot_t, low), p50)
    p90 = np.maximum(p50 + np.interp(out_t, knot_t, high), p50)
    return paths_of(last_t, last_used, step, out_t, p10, p50, p90, model=fitted.model_name,
                    fallback=fallback_text(fitted))


def fallback_text(fitted: FittedModel) -> str | None:
    if fitted.fallback is None:
        return None
    return f"{fitted.fallback}: {fitted.fallback_detail}" if fitted.fallback_detail else str(fitted.fallback)


def _band(offsets: FloatArray, n: int) -> FloatArray:
    """Offsets for `n` steps; past the fitted horizon the last offset grows like the path's spread."""
    if len(offsets) >= n:
        return offsets[:n]
    if len(offsets) == 0:
        return np.zeros(n)
    extra = offsets[-1] * np.sqrt(np.arange(len(offsets) + 1, n + 1) / len(offsets)) ** 3
    return np.concatenate((offsets, extra))


def runways(forecast: Forecast, *, current_used: float, limit: float | None,
            thresholds: Sequence[float] = DEFAULT_THRESHOLDS, now: float) -> tuple[Runway, ...]:
    """Earliest crossing of `threshold × limit` by each quantile path, ordered by threshold.

    Already at or above: `now`. Not within the forecast: None. Crossings are never before `now`.
    """
    if limit is None or limit <= 0:
        return ()
    times = np.concatenate(([forecast.t0], np.asarray(forecast.times, dtype=np.float64)))
    paths = {q: np.concatenate(([current_used], np.asarray(getattr(forecast, q), dtype=np.float64)))
             for q in QUANTILES}
    return runways_of_paths(times, paths, limit=limit, thresholds=thresholds, now=now)


def runways_of_paths(times: FloatArray, paths: dict[str, FloatArray], *, limit: float | None,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS, now: float) -> tuple[Runway, ...]:
    """`runways` on arrays that start at the origin (`Paths`)."""
    if limit is None or limit <= 0:
        return ()
    horizon_end = float(times[-1])
    out = []
    for ratio in sorted(thresholds):
        level = ratio * limit
        crossing = {q: _first_crossing(times, paths[q], level, now) for q in QUANTILES}
        out.append(Runway(threshold_ratio=ratio, p10=crossing["p10"], p50=crossing["p50"],
                          p90=crossing["p90"], horizon_end=horizon_end))
    return tuple(out)


def _first_crossing(times: FloatArray, path: FloatArray, level: float, now: float) -> float | None:
    above = path >= level
    if not above.any():
        return None
    i = int(np.argmax(above))
    if i == 0:
        return now
    y0, y1 = float(path[i - 1]), float(path[i])
    t0, t1 = float(times[i - 1]), float(times[i])
    t = t0 + (level - y0) / (y1 - y0) * (t1 - t0) if y1 > y0 else t1
    return max(t, now)
