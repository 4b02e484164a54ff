"""Held-out errors of cumulative totals: from every origin of the later half of a history,
how far the next steps' sum landed from what a model forecast. They choose α, ρ, the season and
the trend, and calibrate the bands."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from quotapilot.forecasting.resample import FloatArray

SELECTION_STEPS = 24
"""A day at hourly steps: the horizon whose errors calibrate the band (and one of those that
choose ρ, α and the season)."""
SCORE_STEPS = (SELECTION_STEPS, 72)
"""Steps ahead whose cumulative errors (each mean square per step², so both count alike) choose
α among the candidates and the weekly or daily season: a day and three days, since runways are
read days ahead."""


def persistence(residuals: FloatArray) -> float:
    """Lag-1 autocorrelation of the later half of the residuals, in [0, 0.95]."""
    later = residuals[len(residuals) // 2:]
    if len(later) < 10:
        return 0.0
    centred = later - np.mean(later)
    denominator = float(np.dot(centred, centred))
    if denominator <= 0.0:
        return 0.0
    return float(min(0.95, max(0.0, np.dot(centred[1:], centred[:-1]) / denominator)))


RHO_CANDIDATES: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
PERSISTENCE_STEPS: tuple[int, ...] = (6, SELECTION_STEPS)
"""Steps ahead whose cumulative errors choose ρ (the first hours, where an ongoing burst or lull
matters most, and a day)."""


def fit_persistence(y: FloatArray, level: FloatArray, season: FloatArray, period: int,
                     residuals: FloatArray) -> float:
    """ρ chosen on the series' own history: among the lag-1 autocorrelation and a few fixed
    values, the one whose decaying last-error overlay best forecasts the next 6 and 24 steps'
    sums from every origin of the later half (each horizon's mean square relative to no overlay).
    Lag-1 autocorrelation alone under-weights errors that persist for hours (bursts)."""
    candidates = sorted({*RHO_CANDIDATES, persistence(residuals)})
    baseline = [float(np.mean(cumulative_errors(y, level, season, period, residuals, 0.0, steps=h) ** 2))
                for h in PERSISTENCE_STEPS]
    if not all(math.isfinite(b) and b > 0.0 for b in baseline):
        return persistence(residuals)
    best_rho, best_score = 0.0, math.inf
    for rho in candidates:
        score = sum(float(np.mean(cumulative_errors(y, level, season, period, residuals, rho, steps=h) ** 2)) / b
                    for h, b in zip(PERSISTENCE_STEPS, baseline, strict=True))
        if score < best_score - 1e-12:
            best_rho, best_score = rho, score
    return best_rho


def season_sums(cs: FloatArray, origins: npt.NDArray[np.int64], period: int, h: int) -> FloatArray:
    """Sum of the seasons forecast for the `h` steps after each origin (`cs`: cumulative sum of
    the seasonal states, led by 0; from origin o, step o+k uses the one written at o+k-period,
    repeating every period)."""
    base = origins + 1 - period
    return np.asarray((h // period) * (cs[origins + 1] - cs[base]) + cs[base + h % period] - cs[base],
                      dtype=np.float64)


def cumulative_errors(y: FloatArray, level: FloatArray, season: FloatArray, period: int,
                       residuals: FloatArray, rho: float, steps: int = SELECTION_STEPS) -> FloatArray:
    """Mean squared error of the next `steps` steps' sum, forecast from every origin of
    the later half (vectorised: for no-trend additive HW the sum is H·level + the known seasons).
    Their mean square chooses α; their spread calibrates the band."""
    h = steps
    n = len(y)
    origins = np.arange(max(period, n // 2), n - h)
    if len(origins) < 4:
        return np.full(1, np.inf)
    cy = np.concatenate(([0.0], np.cumsum(y)))
    cs = np.concatenate(([0.0], np.cumsum(season)))
    return total_errors(cy, cs, origins, period, h, h * level[origins], rho, residuals)


def total_errors(cy: FloatArray, cs: FloatArray, at: npt.NDArray[np.int64], period: int, steps: int,
                  base: FloatArray, rho: float = 0.0, last: FloatArray | None = None) -> FloatArray:
    """Errors of the next `steps` steps' total from each origin in `at` (`cy`, `cs`: cumulative
    sums of the rates and seasonal states, led by 0), forecast as `base` (the level's or line's
    part of the total) plus the seasons and the overlay ρ of the one-step errors `last`."""
    forecast = base + season_sums(cs, at, period, steps)
    if rho > 0.0 and last is not None:
        forecast = forecast + last[at] * rho * (1.0 - rho**steps) / (1.0 - rho)
    return np.asarray(cy[at + steps + 1] - cy[at + 1] - forecast, dtype=np.float64)
