"""A stopgap for young series: a straight line on the observed rate, with a wide band.

Below `hw.MIN_STEPS` complete model steps (a few hours at hourly steps) there is no
model at all. Rather than say nothing for those first hours, the forecaster offers what
Prometheus' `predict_linear` would: the least-squares rate of the samples seen so far,
extrapolated from the last one. It is labelled as such (`STOPGAP_MODEL`, fallback
`FallbackReason.BELOW_MIN_HISTORY`) and kept apart from the real forecast
(`SeriesForecast.provisional`): it feeds metrics and the API, never growth or alerts, which act
only on a fitted model (the planner's cold start stays reactive).

The band is wide on purpose. Minutes of samples say nothing about the daily cycle (the rate at
the night's trough and the day's peak differ by a factor of several in the reference case), so
the p10–p90 rate band is at least ±`STOPGAP_RATE_BAND_RATIO` of the observed rate, widened by
the slope's own standard error when the samples scatter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from quotapilot.forecasting.hw import FallbackReason
from quotapilot.forecasting.resample import FloatArray
from quotapilot.forecasting.runway import DEFAULT_THRESHOLDS, paths_of
from quotapilot.forecasting.types import Forecast, Runway

STOPGAP_MODEL = "predict_linear"
"""`Forecast.model` of a stopgap (distinct from the fitted `linear` model)."""
STOPGAP_RATE_BAND_RATIO = 1.0
"""Half-width of the p10–p90 rate band as a share of |observed rate| (p90 = twice the rate)."""
Z_80 = 1.2816
"""Standard normal quantile of 0.9: a ±z·se band holds ~80 %."""


@dataclass(frozen=True, slots=True)
class Stopgap:
    """The stopgap forecast of one series and its runways."""

    forecast: Forecast
    runways: tuple[Runway, ...]
    rate_per_second: float


def stopgap_forecast(samples: Sequence[tuple[float, float]] | FloatArray, *, now: float, step_seconds: float,
                     horizon_seconds: float, limit: float | None, min_span_seconds: float,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS, detail: str = "") -> Stopgap | None:
    """A linear forecast from `samples` (oldest first; `(t, used)` pairs or an (n, 2) array), or
    None with fewer than two samples or a span shorter than `min_span_seconds`."""
    if len(samples) < 2:
        return None
    arr = np.asarray(samples, dtype=np.float64)
    t, used = arr[:, 0], arr[:, 1]
    span = float(t[-1] - t[0])
    if not (span >= min_span_seconds and span > 0.0) or not np.isfinite(arr).all():
        return None
    centred = t - np.mean(t)
    sxx = float(np.dot(centred, centred))
    rate = float(np.dot(centred, used - np.mean(used)) / sxx)
    se = 0.0
    if len(t) > 2:
        fitted = np.mean(used) + rate * centred
        residual_var = float(np.sum((used - fitted) ** 2)) / (len(t) - 2)
        se = math.sqrt(residual_var / sxx)
    half_width = max(STOPGAP_RATE_BAND_RATIO * abs(rate), Z_80 * se)
    last_t, last_used = float(t[-1]), float(used[-1])
    n_out = max(1, math.ceil(horizon_seconds / step_seconds - 1e-9))
    ahead = np.minimum(step_seconds * np.arange(1, n_out + 1, dtype=np.float64), horizon_seconds)
    p50 = last_used + rate * ahead
    p10 = p50 - half_width * ahead
    p90 = p50 + half_width * ahead
    reason = str(FallbackReason.BELOW_MIN_HISTORY)
    paths = paths_of(last_t, last_used, step_seconds, last_t + ahead, p10, p50, p90, model=STOPGAP_MODEL,
                     fallback=f"{reason}: {detail}" if detail else reason)
    return Stopgap(paths.forecast, paths.runways(limit=limit, thresholds=thresholds, now=now), rate)
