"""A trend in the rate on top of a seasonal fit, kept only when it forecasts better held out."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from quotapilot.forecasting.hw.model import FitFailed, ModelParams, ModelState
from quotapilot.forecasting.hw.recursions import forecast_rates, trend_sum
from quotapilot.forecasting.hw.scoring import SCORE_STEPS, SELECTION_STEPS, persistence, total_errors
from quotapilot.forecasting.hw.statsfit import check_forecast
from quotapilot.forecasting.resample import FloatArray

TREND_WINDOWS_SECONDS: tuple[float, ...] = (7 * 86400.0, 10 * 86400.0, 14 * 86400.0)
"""The straight line of the deseasonalised rate is fitted over this much of the latest history
(each tried where the history allows; longer ones estimate a steady slope better, shorter ones
follow a change sooner)."""
TREND_SELECTION_SECONDS = 3 * 86400.0
"""The horizon whose cumulative errors decide whether the rate's trend is used."""
SHORT_TREND_WINDOWS_SECONDS: tuple[float, ...] = (3 * 86400.0, 5 * 86400.0)
SHORT_TREND_SELECTION_SECONDS = 2 * 86400.0
"""Where no `TREND_WINDOWS_SECONDS` window fits (under ~12 days of history: a week's window, a day
of origins and the 3-day horizon), a line over the last 3 or 5 days, judged on the next 2 days'
totals: from 7 days of history on (a day of origins from the later half). A feed that accelerates
from its first days (cosmos7's 5 → 50 TB/day) otherwise had no trend for 12 days and its
week-ahead p50 crossing came 47–70 h late. Not tuned on a backtest: the shortest windows that
leave a day of origins at 7 and 9 days of history. Only a rising line: it warns earlier, while a
falling one would promise room on a week's evidence (NAB's rds_cpu, drifting down 0.3 %/day,
took one: its one-day ratio 0.75 → 0.97 on bench_forecast_phases.py)."""
SHORT_TREND_SIGNIFICANCE = 0.05
"""... and only where the history's daily mean rates rise monotonically beyond chance: Kendall's
τ of the day means against time, positive, two-sided p below this. A 2-day total has a handful of
independent origins in a week, too few to tell a trend from a weekday/weekend swing on their own
(tweet volumes at 9 days took such lines: 45 → 48 of 96 grids failing on
bench_forecast_phases.py, 45 with this test). The usual 5 %, not tuned."""
TREND_DAMPING: tuple[float, ...] = (1.0, 0.99)
"""Per-step damping φ of the rate's trend tried (0.99 at hourly steps: it fades over a few days).
A falling rate is always damped (`FALLING_DAMPING`): extrapolated straight, it would promise ever
more room."""
TREND_MIN_GAIN = 0.6
"""A trend is used only when it cuts the mean square error of the selection horizon's total
by at least this factor's complement (a slope fitted to noise must not be extrapolated)."""
TREND_MIN_ORIGINS = 24
"""Fewer held-out origins than this (a day at hourly steps) cannot tell a trend from noise."""
TREND_MIN_ERROR = 0.005
"""No trend when the level alone already forecasts the selection horizon's total within this
share (RMS) of it: a trend only fixes an error that is there (a clean seasonal rate keeps its
plain model and name)."""


@dataclass(frozen=True, slots=True, eq=False)
class Trended:
    """A seasonal fit with a rate trend, and what its band is built from."""

    params: ModelParams
    state: ModelState
    slope_sd: float
    """Spread of the slope across the origins that chose it."""
    residuals: FloatArray
    """The trended model's own one-step errors (the plain model's lag behind a growing rate would
    bias them, and the band would count the trend twice)."""
    day_errors: FloatArray
    """Its errors of the next `SELECTION_STEPS` steps' total, which calibrate the band."""
    held_out: dict[int, FloatArray]
    """Its errors of the next `SCORE_STEPS` totals from the later half (the held-out choice)."""


FALLING_DAMPING: tuple[float, ...] = (0.99, 0.98, 0.95, 0.9, 0.8, 0.5)
"""Damping tried, least first, for a falling rate until the forecast stays above its floor."""


def with_rate_trend(rates: FloatArray, params: ModelParams, state: ModelState,
                     components: tuple[FloatArray, FloatArray], residuals: FloatArray, step_seconds: float,
                     horizon_steps: int) -> Trended | None:
    """Add a trend to the rate when the history shows one (a feed growing from 5 to 50 TB/day
    is the case quotapilot exists for; the no-trend model lags it by days).

    The trend is a straight line fitted to the deseasonalised rate (rate minus the season the
    model used) over one of the last `TREND_WINDOWS_SECONDS`; it replaces the smoothed level.
    It is kept only if, from every origin of the later half of the history, it forecasts the
    next `TREND_SELECTION_SECONDS` total clearly better than the level alone (each origin using
    only the data before it; the window and damping that do best). The result is plain
    Holt-Winters state with a fixed trend (β = 0, damping φ), so the O(1) updates go on as
    before. A falling rate is damped until its forecast stays at or above the lowest rate
    observed (zero if there were never net deletes): a fading feed must not promise room that
    only deletes would make. Under ~12 days of history only a rising, undamped line over a few
    days is tried (`SHORT_TREND_WINDOWS_SECONDS`), where the day means rise beyond chance. None:
    no trend.
    """
    level, season = components
    period = params.period
    n = len(rates)
    h = round(TREND_SELECTION_SECONDS / step_seconds)
    windows = _windows(TREND_WINDOWS_SECONDS, n, h, period, step_seconds)
    dampings = TREND_DAMPING
    short = not windows
    if short:
        # undamped only: over two days φ = 0.99 and 1 differ by noise, over the plan's weeks by
        # most of the growth (with damping allowed, cosmos7's day-7 p90 80 % date came ~4.8 days
        # late in an earlier attempt)
        h = round(SHORT_TREND_SELECTION_SECONDS / step_seconds)
        windows, dampings = _windows(SHORT_TREND_WINDOWS_SECONDS, n, h, period, step_seconds), (1.0,)
    if not windows:
        return None
    # every candidate is scored on the same origins: those the longest window allows
    origins = np.arange(max(period + max(windows) - 1, n // 2), n - h, dtype=np.int64)
    # Deseasonalised rate: the season used at step j was written at j - period.
    d = np.zeros(n)
    d[period:] = rates[period:] - season[:n - period]
    j = np.arange(n, dtype=np.float64)
    c1 = np.concatenate(([0.0], np.cumsum(d)))
    cj = np.concatenate(([0.0], np.cumsum(j * d)))
    cs = np.concatenate(([0.0], np.cumsum(season)))
    cy = np.concatenate(([0.0], np.cumsum(rates)))

    def line_at(ends: npt.NDArray[np.int64], window: int) -> tuple[FloatArray, FloatArray]:
        """Least-squares line over the `window` steps ending at each of `ends`: value there, slope."""
        start = ends - window + 1
        sy = c1[ends + 1] - c1[start]
        sxy = cj[ends + 1] - cj[start] - start * sy
        x_mean = (window - 1) / 2.0
        sxx = window * (window * window - 1) / 12.0
        slope = (sxy - x_mean * sy) / sxx
        return sy / window + slope * x_mean, slope

    def errors(at: npt.NDArray[np.int64], steps: int, a: FloatArray | None, b: FloatArray | None,
               phi: float, rho: float = 0.0, last: FloatArray | None = None) -> FloatArray:
        """`total_errors` of the line (a, b, φ) or, with `a` None, of the plain level."""
        base = steps * level[at] if a is None or b is None else steps * a + b * trend_sum(phi, steps)[-1]
        return total_errors(cy, cs, at, period, steps, base, rho, last)

    # The plain model as it forecasts (its ρ overlay on its own errors); the lines without an
    # overlay, since the plain model's errors carry its lag behind the growth the line removes.
    plain_mse = float(np.mean(errors(origins, h, None, None, 1.0, params.rho, residuals) ** 2))
    if plain_mse <= (TREND_MIN_ERROR * float(np.mean(np.abs(cy[origins + h + 1] - cy[origins + 1])))) ** 2:
        return None
    best: tuple[int, float] | None = None
    best_mse = TREND_MIN_GAIN * plain_mse
    for window in windows:
        a, b = line_at(origins, window)
        for phi in dampings:
            mse = float(np.mean(errors(origins, h, a, b, phi) ** 2))
            if math.isfinite(mse) and mse < best_mse:
                best, best_mse = (window, phi), mse
    if best is None:
        return None
    window, phi = best
    a, b = line_at(origins, window)
    a_now, b_now = line_at(np.array([n - 1], dtype=np.int64), window)
    if short and (b_now[0] <= 0.0 or not _days_move(rates, period, float(b_now[0]))):
        return None
    # The trended model's own one-step errors, from every origin its window allows: its
    # persistence ρ, its last error and its band come from them.
    steps_from = np.arange(period + window - 1, n - 1, dtype=np.int64)
    a_all, b_all = line_at(steps_from, window)
    own = np.zeros(n)
    floor = min(0.0, float(np.min(rates)))
    for candidate in (phi,) if b_now[0] >= 0.0 else FALLING_DAMPING:
        own[steps_from + 1] = errors(steps_from, 1, a_all, b_all, candidate)
        rho = persistence(own[steps_from + 1])
        with_trend = replace(params, beta=0.0, phi=candidate, rho=rho, rate_trend=True)
        trended = ModelState(level=float(a_now[0]), trend=float(b_now[0]), seasons=state.seasons,
                             phase=state.phase, last_error=float(own[n - 1]))
        # the trend against the floor, not one noisy hour's overlay
        if float(np.min(forecast_rates(replace(with_trend, rho=0.0), trended, max(horizon_steps, 1)))) >= floor:
            break
    else:
        return None
    if float(np.mean(errors(origins, h, a, b, with_trend.phi) ** 2)) >= TREND_MIN_GAIN * plain_mse:
        return None  # the damping the floor needed undoes the gain
    try:
        check_forecast(with_trend, trended, rates, horizon_steps)
    except FitFailed:
        return None
    held_out: dict[int, FloatArray] = {}
    for steps in SCORE_STEPS:
        later = np.arange(max(period + window, n // 2), n - steps, dtype=np.int64)
        a_later, b_later = line_at(later, window)
        held_out[steps] = errors(later, steps, a_later, b_later, with_trend.phi, rho, own)
    return Trended(with_trend, trended, float(np.std(b)), own[steps_from + 1], held_out[SELECTION_STEPS], held_out)


def _windows(seconds: tuple[float, ...], n: int, h: int, period: int, step_seconds: float) -> list[int]:
    """The line windows (steps) that leave `TREND_MIN_ORIGINS` origins for an `h`-step total."""
    return [w for w in (round(s / step_seconds) for s in seconds)
            if w >= 3 and n - h - max(period + w - 1, n // 2) >= TREND_MIN_ORIGINS]


def _days_move(rates: FloatArray, period: int, slope: float) -> bool:
    """Whether the mean rates of the history's whole periods (days) move monotonically the way of
    `slope` beyond chance (`SHORT_TREND_SIGNIFICANCE`; the daily season cancels out of them)."""
    from scipy.stats import kendalltau  # heavy: only where a short line is kept

    days = len(rates) // period if period > 0 else 0
    if days < 4:
        return False
    means = rates[len(rates) - days * period:].reshape(days, period).mean(axis=1)
    tau = kendalltau(np.arange(days), means)
    return bool(float(tau.pvalue) < SHORT_TREND_SIGNIFICANCE and float(tau.statistic) * slope > 0.0)
