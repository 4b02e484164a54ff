"""Exponential smoothing of the ingest rate: fit with statsmodels, update and simulate in numpy.

What is modelled is the increment per step (see `resample`). The model is chosen from how much
history there is:

- ≥ 2 weeks: Holt-Winters, additive weekly season (168 hourly steps), no trend — unless the
  daily-season model forecasts the next day's and three days' totals better over the later
  half of the history;
- ≥ 2 days: the same with a daily season (24 steps);
- either season gets a trend in the rate (a growing feed) when a straight line through the
  deseasonalised rate forecasts three days ahead clearly better on the series' own history
  (`_with_rate_trend`; the model's name then ends in `_trend`);
- ≥ `DAMPED_MIN_STEPS`: a damped linear trend on the rate, no season;
- ≥ `MIN_STEPS`: the recent mean rate (a straight line for the level) — a fallback;
- below: no model at all (the caller says "insufficient history"; `stopgap` may offer a
  labelled straight line on the observed rate for metrics, never for acting).

statsmodels fits the smoothing parameters (`initialization_method="heuristic"`, which the
measurements behind issue 4 found fast and robust where estimated initial states failed to
converge). After that the model is plain data (`ModelParams`, `ModelState`): the daemon updates
it with the Holt-Winters recursions, O(1) per new step, until the next refit. A fit that does not
converge, yields non-finite numbers or forecasts an absurd rate falls back to the next simpler
model and says why (`FittedModel.fallback`), never silently.

Bands: paths are simulated by running the same recursions on block-bootstrapped one-step
residuals; for these additive models the spread of the cumulative error does not depend on the
state, so it is computed once per fit (`band_low`/`band_high`, offsets per horizon step) and
added to whatever the state forecasts until the next refit.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from quotapilot.forecasting.resample import FloatArray

MIN_STEPS = 3
"""Fewer complete steps than this: no forecast."""
DAMPED_MIN_STEPS = 12
"""statsmodels' heuristic initialisation needs at least 10 observations."""
ABSURD_RATE_FACTOR = 10.0
"""A forecast rate beyond this many times the largest observed |rate| is not believed."""
BAND_QUANTILES = (0.10, 0.90)
BAND_PATHS = 200
BAND_INFLATION = 1.4
"""Out-of-sample errors exceed in-sample ones (parameters are fitted to the same data); this
factor, set from the backtest (bench/bench_forecast_backtest.py), brings p10–p90 coverage to ~80 %."""


class ModelKind(enum.StrEnum):
    HW_WEEKLY = "holt_winters_weekly"
    HW_DAILY = "holt_winters_daily"
    DAMPED_TREND = "damped_trend"
    LINEAR = "linear"


class FallbackReason(enum.StrEnum):
    """Why a simpler model than the preferred one is in use (a metric label: keep the set small)."""

    SHORT_HISTORY = "short_history"
    CONSTANT_RATE = "constant_rate"
    NOT_CONVERGED = "not_converged"
    NON_FINITE = "non_finite"
    ABSURD = "absurd"
    FIT_ERROR = "fit_error"
    BELOW_MIN_HISTORY = "below_min_history"
    """Not a refit: fewer than `MIN_STEPS` steps, so only the stopgap line (`stopgap`) exists."""


_SIMPLER: dict[ModelKind, ModelKind] = {
    ModelKind.HW_WEEKLY: ModelKind.HW_DAILY,
    ModelKind.HW_DAILY: ModelKind.DAMPED_TREND,
    ModelKind.DAMPED_TREND: ModelKind.LINEAR,
}


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Smoothing parameters (statsmodels' names: level α, trend β, seasonal γ, damping φ)."""

    kind: ModelKind
    period: int = 0
    alpha: float = 0.0
    beta: float = 0.0
    gamma: float = 0.0
    phi: float = 1.0
    rho: float = 0.0
    """Persistence of the one-step error (lag-1 autocorrelation of the residuals, ≥ 0): a burst
    or a slow hour tends to last, so the forecast adds the last error decaying as ρ^h."""
    rate_trend: bool = False
    """A seasonal model whose rate also has a fixed (possibly damped) trend: `_with_rate_trend`."""


@dataclass(slots=True, eq=False)
class ModelState:
    """Where the recursions stand after the last consumed step. `seasons[phase]` is the seasonal
    component of the next step."""

    level: float
    trend: float = 0.0
    seasons: FloatArray | None = None
    phase: int = 0
    last_error: float = 0.0

    def copy(self) -> ModelState:
        return ModelState(self.level, self.trend,
                          None if self.seasons is None else self.seasons.copy(), self.phase, self.last_error)


@dataclass(frozen=True, slots=True, eq=False)
class FittedModel:
    """A fit: parameters, the state after the fitted steps, and the band offsets.

    `band_low[h-1]`/`band_high[h-1]` are the p10/p90 offsets of the cumulative usage `h` steps
    ahead from the model's mean path (`band_low <= 0 <= band_high`). `sigma` is the RMS one-step
    error of the rate, used to notice drift.
    """

    params: ModelParams
    state: ModelState
    sigma: float
    band_low: FloatArray
    band_high: FloatArray
    n_steps: int
    step_seconds: float
    fallback: FallbackReason | None = None
    fallback_detail: str | None = None

    @property
    def model_name(self) -> str:
        return f"{self.params.kind}_trend" if self.params.rate_trend else str(self.params.kind)


def seasonal_period(kind: ModelKind, step_seconds: float) -> int:
    if kind is ModelKind.HW_WEEKLY:
        return max(2, round(7 * 86400 / step_seconds))
    if kind is ModelKind.HW_DAILY:
        return max(2, round(86400 / step_seconds))
    return 0


def preferred_kind(n_steps: int, step_seconds: float) -> ModelKind | None:
    """The model the history length allows (None: not enough for any forecast)."""
    for kind in (ModelKind.HW_WEEKLY, ModelKind.HW_DAILY):
        period = seasonal_period(kind, step_seconds)
        if n_steps >= max(2 * period, 10 + 2 * (period // 2)):
            return kind
    if n_steps >= DAMPED_MIN_STEPS:
        return ModelKind.DAMPED_TREND
    if n_steps >= MIN_STEPS:
        return ModelKind.LINEAR
    return None


# ------------------------------------------------------------------------------ the recursions
def predict_next(params: ModelParams, state: ModelState) -> float:
    season = state.seasons[state.phase] if state.seasons is not None else 0.0
    return float(state.level + params.phi * state.trend + season + params.rho * state.last_error)


def update(params: ModelParams, state: ModelState, y: float) -> float:
    """Consume one step's increment `y` (in place); returns the Holt-Winters one-step error (the
    recursions use it as statsmodels does; the ρ correction is an overlay on the forecast)."""
    level, trend = state.level, state.trend
    season = float(state.seasons[state.phase]) if state.seasons is not None else 0.0
    damped = params.phi * trend
    error = y - (level + damped + season)
    new_level = params.alpha * (y - season) + (1.0 - params.alpha) * (level + damped)
    state.trend = params.beta * (new_level - level) + (1.0 - params.beta) * damped
    if state.seasons is not None:
        state.seasons[state.phase] = params.gamma * (y - level - damped) + (1.0 - params.gamma) * season
        state.phase = (state.phase + 1) % len(state.seasons)
    state.level = new_level
    state.last_error = error
    return error


def forecast_rates(params: ModelParams, state: ModelState, steps: int) -> FloatArray:
    """Mean increments of the next `steps` steps."""
    h = np.arange(1, steps + 1, dtype=np.float64)
    if params.phi == 1.0:
        trend = h * state.trend
    else:
        trend = params.phi * (1.0 - params.phi**h) / (1.0 - params.phi) * state.trend
    rates = state.level + trend
    if state.seasons is not None:
        rates = rates + state.seasons[(state.phase + np.arange(steps)) % len(state.seasons)]
    if params.rho > 0.0:
        rates = rates + state.last_error * params.rho**h
    return np.asarray(rates, dtype=np.float64)


# ---------------------------------------------------------------------------------- fitting
class _FitFailed(Exception):
    def __init__(self, reason: FallbackReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def fit_rates(rates: FloatArray, *, step_seconds: float, horizon_steps: int, seed: int = 0,
              use_brute: bool = False) -> FittedModel | None:
    """Fit the best model the history allows; None when it is too short for any."""
    rates = np.asarray(rates, dtype=np.float64)
    n = len(rates)
    kind = preferred_kind(n, step_seconds)
    if kind is None or not np.isfinite(rates).all():
        return None
    fallback: FallbackReason | None = None
    detail: str | None = None
    if _is_constant(rates):
        kind, fallback, detail = ModelKind.LINEAR, FallbackReason.CONSTANT_RATE, "the rate does not vary"
    elif kind is ModelKind.LINEAR:
        fallback, detail = FallbackReason.SHORT_HISTORY, f"{n} steps: too few for a damped trend"
    day_errors: FloatArray | None = None
    slope_sd = 0.0
    usable: FloatArray | None = None
    while kind is not ModelKind.LINEAR:
        try:
            fit = _fit_exponential_smoothing(rates, kind, step_seconds, use_brute)
            _check_forecast(fit[0], fit[1], rates, horizon_steps)
            if kind is ModelKind.HW_WEEKLY:
                fit = _weekly_or_daily(rates, step_seconds, horizon_steps, use_brute, fit)
            params, state, residuals, _, day_errors, components = fit
            kind = params.kind
            trended = None if components is None else _with_rate_trend(
                rates, params, state, components, residuals, step_seconds, horizon_steps)
            if trended is not None:
                params, state, slope_sd = trended.params, trended.state, trended.slope_sd
                usable, day_errors = trended.residuals, trended.day_errors
            break
        except _FitFailed as failed:
            if fallback is None:
                fallback, detail = failed.reason, f"{kind}: {failed.detail}"
            kind = _SIMPLER[kind]
    if kind is ModelKind.LINEAR:
        params, state, residuals = _fit_linear(rates, step_seconds)
        if fallback is FallbackReason.CONSTANT_RATE:
            residuals = np.zeros_like(residuals)  # not rounding noise of the mean: exactly no spread
    if usable is None:
        # The first cycles' residuals are small because the heuristic initial states were computed
        # from them; they would make the band too narrow.
        warmup = 2 * params.period if params.period else (10 if kind is ModelKind.DAMPED_TREND else 0)
        usable = residuals[warmup:] if len(residuals) - warmup >= 20 else residuals[len(residuals) // 2:]
    sigma = float(np.sqrt(np.mean(usable**2))) if len(usable) else 0.0
    low, high = band_offsets(params, usable, horizon_steps, step_seconds=step_seconds, seed=seed,
                             n_fitted=n, slope_sd=slope_sd)
    if day_errors is not None and kind is not ModelKind.LINEAR:
        factor = _calibration(day_errors, low, high)
        low, high = low * factor, high * factor
    low, high = low * BAND_INFLATION, high * BAND_INFLATION
    return FittedModel(params=params, state=state, sigma=sigma, band_low=low, band_high=high,
                       n_steps=n, step_seconds=step_seconds, fallback=fallback, fallback_detail=detail)


_Components = tuple[FloatArray, FloatArray] | None
"""statsmodels' level and season arrays of a seasonal fit (original units), for the rate trend."""
_Fit = tuple[ModelParams, ModelState, FloatArray, float, FloatArray | None, _Components]


def _weekly_or_daily(rates: FloatArray, step_seconds: float, horizon_steps: int, use_brute: bool,
                     weekly: _Fit) -> _Fit:
    """A weekly season is allowed, but is it there? Three weeks give each weekly slot three
    observations, so bursts and noise become phantom seasons that recur next week. The daily model
    is fitted too and the one with the smaller errors of the next day's and three days' totals
    (`SCORE_STEPS`), from every origin of the later half of the history (one-step-ahead
    recursions: not an in-sample fit), is kept.
    To keep refits cheap the daily model is searched less: statsmodels' optimum and the weekly
    fit's α, not the whole α grid."""
    try:
        daily = _fit_exponential_smoothing(rates, ModelKind.HW_DAILY, step_seconds, use_brute,
                                           alphas=(weekly[0].alpha,))
        _check_forecast(daily[0], daily[1], rates, horizon_steps)
    except _FitFailed:
        return weekly
    return daily if daily[3] < weekly[3] else weekly


def _calibration(day_errors: FloatArray, low: FloatArray, high: FloatArray) -> float:
    """How much wider the band must be for its p10–p90 to match the spread of the in-sample
    errors of the next day's total (≥ 1: simulated paths from one-step residuals miss the level's
    wandering, and the backtest's coverage showed it). The factor applies at every horizon."""
    h = min(SELECTION_STEPS, len(low)) - 1
    if h < 0 or len(day_errors) < 10 or not np.isfinite(day_errors).all():
        return 1.0
    simulated = float(high[h] - low[h])
    empirical = float(np.quantile(day_errors, BAND_QUANTILES[1]) - np.quantile(day_errors, BAND_QUANTILES[0]))
    if simulated <= 0.0:
        return 1.0
    return float(min(4.0, max(1.0, empirical / simulated)))


def _is_constant(rates: FloatArray) -> bool:
    spread = float(np.max(rates) - np.min(rates))
    return spread <= 1e-9 * max(float(np.max(np.abs(rates))), 1.0)


def _fit_linear(rates: FloatArray, step_seconds: float) -> tuple[ModelParams, ModelState, FloatArray]:
    """The recent mean rate, held (α = 0: only a refit moves it)."""
    window = max(1, min(len(rates), round(86400 / step_seconds)))
    recent = rates[-window:]
    mean = float(np.mean(recent))
    return ModelParams(ModelKind.LINEAR), ModelState(level=mean), recent - mean


def _fit_exponential_smoothing(rates: FloatArray, kind: ModelKind, step_seconds: float,
                               use_brute: bool, alphas: tuple[float, ...] | None = None) -> _Fit:
    period = seasonal_period(kind, step_seconds)
    # The recursions are linear, so fitting the scaled series and scaling the states back is
    # exact, and keeps the optimiser away from sums of squares near 1e20.
    scale = float(np.std(rates)) or float(np.max(np.abs(rates))) or 1.0
    y = rates / scale
    if not period:
        return _statsmodels_fit(y, scale, kind, 0, damped=True, use_brute=use_brute)
    # statsmodels picks α for the best ONE-step forecast. Ingest noise persists for hours, so that
    # is often α ≈ 1: tomorrow's rate = the last hour's, noise included, which misjudges days
    # ahead (on the backtest's ramp and burst traces, worse than predict_linear). So a few smoother
    # levels are scored too, by the errors of the next day's and three days' cumulative ingest
    # (`SCORE_STEPS`), and the best is kept.
    # (A damped trend on top of the season, chosen by AICc, was also tried: three times the cost,
    # no better on the ramp. A growing rate gets its trend afterwards: `_with_rate_trend`.)
    best = _statsmodels_fit(y, scale, kind, period, damped=False, use_brute=use_brute)
    gamma = best[0].gamma
    for alpha in ALPHA_CANDIDATES if alphas is None else alphas:
        if abs(alpha - best[0].alpha) < 1e-3:
            continue
        try:
            candidate = _statsmodels_fit(y, scale, kind, period, damped=False, use_brute=False,
                                         fixed=(alpha, gamma))
        except _FitFailed:
            continue
        if candidate[3] < best[3]:
            best = candidate
    return best


ALPHA_CANDIDATES: tuple[float, ...] = (0.2, 0.05, 0.01)
SELECTION_STEPS = 24
"""A day at hourly steps: the horizon whose errors calibrate the band (and one of those that
choose ρ, α and the season)."""
SCORE_STEPS = (SELECTION_STEPS, 72)
"""Steps ahead whose cumulative errors (each mean square per step², so both count alike) choose
α among the candidates and the weekly or daily season: a day and three days, since runways are
read days ahead."""


def _persistence(residuals: FloatArray) -> float:
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


def _fit_persistence(y: FloatArray, level: FloatArray, season: FloatArray, period: int,
                     residuals: FloatArray) -> float:
    """ρ chosen on the series' own history: among the lag-1 autocorrelation and a few fixed
    values, the one whose decaying last-error overlay best forecasts the next 6 and 24 steps'
    sums from every origin of the later half (each horizon's mean square relative to no overlay).
    Lag-1 autocorrelation alone under-weights errors that persist for hours (bursts)."""
    candidates = sorted({*RHO_CANDIDATES, _persistence(residuals)})
    baseline = [float(np.mean(_cumulative_errors(y, level, season, period, residuals, 0.0, steps=h) ** 2))
                for h in PERSISTENCE_STEPS]
    if not all(math.isfinite(b) and b > 0.0 for b in baseline):
        return _persistence(residuals)
    best_rho, best_score = 0.0, math.inf
    for rho in candidates:
        score = sum(float(np.mean(_cumulative_errors(y, level, season, period, residuals, rho, steps=h) ** 2)) / b
                    for h, b in zip(PERSISTENCE_STEPS, baseline, strict=True))
        if score < best_score - 1e-12:
            best_rho, best_score = rho, score
    return best_rho


def _season_sums(cs: FloatArray, origins: npt.NDArray[np.int64], period: int, h: int) -> FloatArray:
    """Sum of the seasons forecast for the `h` steps after each origin (`cs`: cumulative sum of
    the seasonal states, led by 0; from origin o, step o+k uses the one written at o+k-period,
    repeating every period)."""
    base = origins + 1 - period
    return np.asarray((h // period) * (cs[origins + 1] - cs[base]) + cs[base + h % period] - cs[base],
                      dtype=np.float64)


def _cumulative_errors(y: FloatArray, level: FloatArray, season: FloatArray, period: int,
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
    return _total_errors(cy, cs, origins, period, h, h * level[origins], rho, residuals)


def _total_errors(cy: FloatArray, cs: FloatArray, at: npt.NDArray[np.int64], period: int, steps: int,
                  base: FloatArray, rho: float = 0.0, last: FloatArray | None = None) -> FloatArray:
    """Errors of the next `steps` steps' total from each origin in `at` (`cy`, `cs`: cumulative
    sums of the rates and seasonal states, led by 0), forecast as `base` (the level's or line's
    part of the total) plus the seasons and the overlay ρ of the one-step errors `last`."""
    forecast = base + _season_sums(cs, at, period, steps)
    if rho > 0.0 and last is not None:
        forecast = forecast + last[at] * rho * (1.0 - rho**steps) / (1.0 - rho)
    return np.asarray(cy[at + steps + 1] - cy[at + 1] - forecast, dtype=np.float64)


TREND_WINDOWS_SECONDS: tuple[float, ...] = (7 * 86400.0, 10 * 86400.0, 14 * 86400.0)
"""The straight line of the deseasonalised rate is fitted over this much of the latest history
(each tried where the history allows; longer ones estimate a steady slope better, shorter ones
follow a change sooner)."""
TREND_SELECTION_SECONDS = 3 * 86400.0
"""The horizon whose cumulative errors decide whether the rate's trend is used."""
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


def trend_sum(phi: float, steps: int) -> FloatArray:
    """Cumulative effect of a unit trend at steps 1..`steps`: Σ_{k≤h} Σ_{i≤k} φ^i."""
    h = np.arange(1, steps + 1, dtype=np.float64)
    per_step = h if phi == 1.0 else phi * (1.0 - phi**h) / (1.0 - phi)
    return np.cumsum(per_step)


@dataclass(frozen=True, slots=True, eq=False)
class _Trended:
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


FALLING_DAMPING: tuple[float, ...] = (0.99, 0.98, 0.95, 0.9, 0.8, 0.5)
"""Damping tried, least first, for a falling rate until the forecast stays above its floor."""


def _with_rate_trend(rates: FloatArray, params: ModelParams, state: ModelState,
                     components: tuple[FloatArray, FloatArray], residuals: FloatArray, step_seconds: float,
                     horizon_steps: int) -> _Trended | None:
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
    only deletes would make. None: no trend.
    """
    level, season = components
    period = params.period
    n = len(rates)
    h = round(TREND_SELECTION_SECONDS / step_seconds)
    windows = [w for w in (round(seconds / step_seconds) for seconds in TREND_WINDOWS_SECONDS)
               if w >= 3 and n - h - max(period + w - 1, n // 2) >= TREND_MIN_ORIGINS]
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
        """`_total_errors` of the line (a, b, φ) or, with `a` None, of the plain level."""
        base = steps * level[at] if a is None or b is None else steps * a + b * trend_sum(phi, steps)[-1]
        return _total_errors(cy, cs, at, period, steps, base, rho, last)

    # The plain model as it forecasts (its ρ overlay on its own errors); the lines without an
    # overlay, since the plain model's errors carry its lag behind the growth the line removes.
    plain_mse = float(np.mean(errors(origins, h, None, None, 1.0, params.rho, residuals) ** 2))
    if plain_mse <= (TREND_MIN_ERROR * float(np.mean(np.abs(cy[origins + h + 1] - cy[origins + 1])))) ** 2:
        return None
    best: tuple[int, float] | None = None
    best_mse = TREND_MIN_GAIN * plain_mse
    for window in windows:
        a, b = line_at(origins, window)
        for phi in TREND_DAMPING:
            mse = float(np.mean(errors(origins, h, a, b, phi) ** 2))
            if math.isfinite(mse) and mse < best_mse:
                best, best_mse = (window, phi), mse
    if best is None:
        return None
    window, phi = best
    a, b = line_at(origins, window)
    a_now, b_now = line_at(np.array([n - 1], dtype=np.int64), window)
    # The trended model's own one-step errors, from every origin its window allows: its
    # persistence ρ, its last error and its band come from them.
    steps_from = np.arange(period + window - 1, n - 1, dtype=np.int64)
    a_all, b_all = line_at(steps_from, window)
    own = np.zeros(n)
    floor = min(0.0, float(np.min(rates)))
    for candidate in (phi,) if b_now[0] >= 0.0 else FALLING_DAMPING:
        own[steps_from + 1] = errors(steps_from, 1, a_all, b_all, candidate)
        rho = _persistence(own[steps_from + 1])
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
        _check_forecast(with_trend, trended, rates, horizon_steps)
    except _FitFailed:
        return None
    later = np.arange(max(period + window, n // 2), n - SELECTION_STEPS, dtype=np.int64)
    a_later, b_later = line_at(later, window)
    return _Trended(with_trend, trended, float(np.std(b)), own[steps_from + 1],
                    errors(later, SELECTION_STEPS, a_later, b_later, with_trend.phi, rho, own))


def _statsmodels_fit(y: FloatArray, scale: float, kind: ModelKind, period: int, *, damped: bool,
                     use_brute: bool, fixed: tuple[float, float] | None = None) -> _Fit:
    """One statsmodels fit (`fixed`: α and γ given, not optimised); then the cumulative-error
    score of seasonal fits (inf otherwise), their errors of the next day's total, and their
    level and season arrays."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # heavy: only where fits run

    seasonal = period > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = ExponentialSmoothing(
                y, trend="add" if damped else None, damped_trend=damped,
                seasonal="add" if seasonal else None, seasonal_periods=period or None,
                initialization_method="heuristic")
            if fixed is None:
                # SLSQP: the same optimum as the default L-BFGS-B here, ten times faster (finite
                # differences on a flat SSE made L-BFGS-B take ~30 iterations).
                result = model.fit(use_brute=use_brute, method="SLSQP")
            else:
                result = model.fit(smoothing_level=fixed[0], smoothing_seasonal=fixed[1], optimized=False)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            raise _FitFailed(FallbackReason.FIT_ERROR, f"{type(exc).__name__}: {exc}") from exc
    retvals = getattr(result, "mle_retvals", None)
    if retvals is not None and not bool(getattr(retvals, "success", True)):
        raise _FitFailed(FallbackReason.NOT_CONVERGED, str(getattr(retvals, "message", "no convergence")))
    if any("converge" in str(w.message).lower() for w in caught):
        raise _FitFailed(FallbackReason.NOT_CONVERGED, "statsmodels: optimisation did not converge")
    p = result.params
    params = ModelParams(
        kind=kind, period=period, alpha=_param(p, "smoothing_level"),
        beta=_param(p, "smoothing_trend") if damped else 0.0,
        gamma=_param(p, "smoothing_seasonal") if seasonal else 0.0,
        phi=_param(p, "damping_trend") if damped else 1.0)
    state = ModelState(
        level=float(result.level[-1]) * scale,
        trend=float(result.trend[-1]) * scale if damped else 0.0,
        # statsmodels' season[i] is the seasonal state written at step i; the next step (n) reuses
        # the one written at n - period, the first of the last `period`.
        seasons=np.asarray(result.season[-period:], dtype=np.float64) * scale if seasonal else None)
    residuals = np.asarray(result.resid, dtype=np.float64) * scale
    finite = [params.alpha, params.beta, params.gamma, params.phi, state.level, state.trend]
    if not (all(math.isfinite(v) for v in finite) and np.isfinite(residuals).all()
            and (state.seasons is None or np.isfinite(state.seasons).all())):
        raise _FitFailed(FallbackReason.NON_FINITE, "non-finite parameters, states or residuals")
    score = math.inf
    day_errors = None
    components = None
    if seasonal and not damped:
        rho = _fit_persistence(y, np.asarray(result.level, dtype=np.float64),
                               np.asarray(result.season, dtype=np.float64), period, residuals / scale)
        params = replace(params, rho=rho)
        state.last_error = float(residuals[-1])
        day_errors = _cumulative_errors(y, np.asarray(result.level, dtype=np.float64),
                                        np.asarray(result.season, dtype=np.float64), period,
                                        residuals / scale, rho) * scale
        longer = _cumulative_errors(y, np.asarray(result.level, dtype=np.float64),
                                    np.asarray(result.season, dtype=np.float64), period, residuals / scale, rho,
                                    steps=SCORE_STEPS[1])
        # A short history has no origins for the longer horizon: score on the ones it has (every
        # candidate of one refit has the same history, so they stay comparable).
        terms = [float(np.mean(e**2)) / steps**2
                 for e, steps in ((day_errors / scale, SCORE_STEPS[0]), (longer, SCORE_STEPS[1]))]
        finite = [term for term in terms if math.isfinite(term)]
        score = sum(finite) if finite else math.inf
        components = (np.asarray(result.level, dtype=np.float64) * scale,
                      np.asarray(result.season, dtype=np.float64) * scale)
    return params, state, residuals, score, day_errors, components


def _param(params: dict[str, object], name: str) -> float:
    value = params.get(name)
    if value is None:
        raise _FitFailed(FallbackReason.NON_FINITE, f"no {name}")
    as_float = float(value)  # type: ignore[arg-type]
    if not math.isfinite(as_float):
        raise _FitFailed(FallbackReason.NON_FINITE, f"{name} = {as_float}")
    return as_float


def _check_forecast(params: ModelParams, state: ModelState, rates: FloatArray, horizon_steps: int) -> None:
    ahead = forecast_rates(params, state, max(horizon_steps, 1))
    if not np.isfinite(ahead).all():
        raise _FitFailed(FallbackReason.NON_FINITE, "non-finite forecast")
    largest = float(np.max(np.abs(rates)))
    worst = float(np.max(np.abs(ahead)))
    if worst > ABSURD_RATE_FACTOR * largest + 1e-9:
        raise _FitFailed(FallbackReason.ABSURD,
                         f"forecast rate {worst:.3g}/step vs at most {largest:.3g}/step observed")


# ------------------------------------------------------------------------------------- bands
def band_offsets(params: ModelParams, residuals: FloatArray, horizon_steps: int, *, step_seconds: float,
                 seed: int = 0, n_paths: int = BAND_PATHS, n_fitted: int | None = None,
                 slope_sd: float = 0.0) -> tuple[FloatArray, FloatArray]:
    """p10/p90 offsets of the cumulative error, per horizon step, from simulated paths.

    Residuals are drawn in blocks of a day so that errors that persist (a burst lasting hours, a
    slow week) widen the band as they do in reality; independent draws would make it too narrow.
    Each path also gets a constant error in the starting rate, as large as the level's own
    estimation error (steady-state variance σ²·α/(2−α) of exponential smoothing, at least σ²/n):
    in-sample residuals do not see it, yet over days it is what dominates the cumulative error.
    With a rate trend, each path's slope is off by `slope_sd`·N(0, 1) too (`trend_sum` shapes it).
    """
    if horizon_steps <= 0 or len(residuals) == 0 or not np.any(residuals):
        return np.zeros(horizon_steps), np.zeros(horizon_steps)
    rng = np.random.default_rng(seed)
    block = max(1, min(round(86400 / step_seconds), len(residuals) // 2 or 1))
    n_blocks = math.ceil(horizon_steps / block)
    starts = rng.integers(0, len(residuals) - block + 1, size=(n_paths, n_blocks))
    index = (starts[:, :, None] + np.arange(block)).reshape(n_paths, n_blocks * block)[:, :horizon_steps]
    errors = residuals[index]
    # The deviation from the mean path follows the same (linear) recursions from a zero state.
    zero = ModelState(level=0.0, seasons=np.zeros(params.period) if params.period else None)
    cumulative = _simulate_deviation(params, zero, errors)
    sigma = float(np.sqrt(np.mean(residuals**2)))
    level_var = max(params.alpha / (2.0 - params.alpha), 1.0 / max(n_fitted or len(residuals), 1))
    level_error = sigma * math.sqrt(level_var) * rng.standard_normal(n_paths)
    cumulative += level_error[:, None] * np.arange(1, horizon_steps + 1)
    if slope_sd > 0.0:
        cumulative += (slope_sd * rng.standard_normal(n_paths))[:, None] * trend_sum(params.phi, horizon_steps)
    low = np.minimum(np.quantile(cumulative, BAND_QUANTILES[0], axis=0), 0.0)
    high = np.maximum(np.quantile(cumulative, BAND_QUANTILES[1], axis=0), 0.0)
    return low, high


def _simulate_deviation(params: ModelParams, state: ModelState, errors: FloatArray) -> FloatArray:
    n_paths, steps = errors.shape
    level = np.full(n_paths, state.level)
    trend = np.full(n_paths, state.trend)
    seasons = None if state.seasons is None else np.tile(state.seasons, (n_paths, 1))
    total = np.zeros(n_paths)
    out = np.empty((n_paths, steps))
    a, b, g, phi = params.alpha, params.beta, params.gamma, params.phi
    for h in range(steps):
        damped = phi * trend
        if seasons is not None:
            col = (state.phase + h) % params.period
            season = seasons[:, col]
            y = level + damped + season + errors[:, h]
            new_level = a * (y - season) + (1.0 - a) * (level + damped)
            seasons[:, col] = g * (y - level - damped) + (1.0 - g) * season  # `season` is a view
        else:
            y = level + damped + errors[:, h]
            new_level = a * y + (1.0 - a) * (level + damped)
        trend = b * (new_level - level) + (1.0 - b) * damped
        level = new_level
        total = total + y
        out[:, h] = total
    return out

