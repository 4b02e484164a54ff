"""Exponential smoothing fitted with statsmodels, then scored on the series' own held-out totals."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np

from quotapilot.forecasting.hw.model import (
    ABSURD_RATE_FACTOR,
    FallbackReason,
    FitFailed,
    ModelKind,
    ModelParams,
    ModelState,
    seasonal_period,
)
from quotapilot.forecasting.hw.recursions import forecast_rates
from quotapilot.forecasting.hw.scoring import SCORE_STEPS, cumulative_errors, fit_persistence
from quotapilot.forecasting.resample import FloatArray

Components = tuple[FloatArray, FloatArray] | None
"""statsmodels' level and season arrays of a seasonal fit (original units), for the rate trend."""
SmoothingFit = tuple[ModelParams, ModelState, FloatArray, float, FloatArray | None, Components]


def weekly_or_daily(rates: FloatArray, step_seconds: float, horizon_steps: int, use_brute: bool,
                     weekly: SmoothingFit) -> SmoothingFit:
    """A weekly season is allowed, but is it there? Three weeks give each weekly slot three
    observations, so bursts and noise become phantom seasons that recur next week. The daily model
    is fitted too and the one with the smaller errors of the next day's and three days' totals
    (`SCORE_STEPS`), from every origin of the later half of the history (one-step-ahead
    recursions: not an in-sample fit), is kept.
    To keep refits cheap the daily model is searched less: statsmodels' optimum and the weekly
    fit's α, not the whole α grid."""
    try:
        daily = fit_exponential_smoothing(rates, ModelKind.HW_DAILY, step_seconds, use_brute,
                                           alphas=(weekly[0].alpha,))
        check_forecast(daily[0], daily[1], rates, horizon_steps)
    except FitFailed:
        return weekly
    return daily if daily[3] < weekly[3] else weekly


def fit_exponential_smoothing(rates: FloatArray, kind: ModelKind, step_seconds: float,
                               use_brute: bool, alphas: tuple[float, ...] | None = None) -> SmoothingFit:
    period = seasonal_period(kind, step_seconds)
    # The recursions are linear, so fitting the scaled series and scaling the states back is
    # exact, and keeps the optimiser away from sums of squares near 1e20.
    scale = float(np.std(rates)) or float(np.max(np.abs(rates))) or 1.0
    y = rates / scale
    if not period:
        return statsmodels_fit(y, scale, kind, 0, damped=True, use_brute=use_brute)
    # statsmodels picks α for the best ONE-step forecast. Ingest noise persists for hours, so that
    # is often α ≈ 1: tomorrow's rate = the last hour's, noise included, which misjudges days
    # ahead (on the backtest's ramp and burst traces, worse than predict_linear). So a few smoother
    # levels are scored too, by the errors of the next day's and three days' cumulative ingest
    # (`SCORE_STEPS`), and the best is kept.
    # (A damped trend on top of the season, chosen by AICc, was also tried: three times the cost,
    # no better on the ramp. A growing rate gets its trend afterwards: `with_rate_trend`.)
    best = statsmodels_fit(y, scale, kind, period, damped=False, use_brute=use_brute)
    gamma = best[0].gamma
    for alpha in ALPHA_CANDIDATES if alphas is None else alphas:
        if abs(alpha - best[0].alpha) < 1e-3:
            continue
        try:
            candidate = statsmodels_fit(y, scale, kind, period, damped=False, use_brute=False,
                                         fixed=(alpha, gamma))
        except FitFailed:
            continue
        if candidate[3] < best[3]:
            best = candidate
    return best


ALPHA_CANDIDATES: tuple[float, ...] = (0.2, 0.05, 0.01)


def statsmodels_fit(y: FloatArray, scale: float, kind: ModelKind, period: int, *, damped: bool,
                     use_brute: bool, fixed: tuple[float, float] | None = None) -> SmoothingFit:
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
            raise FitFailed(FallbackReason.FIT_ERROR, f"{type(exc).__name__}: {exc}") from exc
    retvals = getattr(result, "mle_retvals", None)
    if retvals is not None and not bool(getattr(retvals, "success", True)):
        raise FitFailed(FallbackReason.NOT_CONVERGED, str(getattr(retvals, "message", "no convergence")))
    if any("converge" in str(w.message).lower() for w in caught):
        raise FitFailed(FallbackReason.NOT_CONVERGED, "statsmodels: optimisation did not converge")
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
        raise FitFailed(FallbackReason.NON_FINITE, "non-finite parameters, states or residuals")
    score = math.inf
    day_errors = None
    components = None
    if seasonal and not damped:
        rho = fit_persistence(y, np.asarray(result.level, dtype=np.float64),
                               np.asarray(result.season, dtype=np.float64), period, residuals / scale)
        params = replace(params, rho=rho)
        state.last_error = float(residuals[-1])
        day_errors = cumulative_errors(y, np.asarray(result.level, dtype=np.float64),
                                        np.asarray(result.season, dtype=np.float64), period,
                                        residuals / scale, rho) * scale
        longer = cumulative_errors(y, np.asarray(result.level, dtype=np.float64),
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
        raise FitFailed(FallbackReason.NON_FINITE, f"no {name}")
    as_float = float(value)  # type: ignore[arg-type]  # statsmodels' params are untyped; float() checks at run time
    if not math.isfinite(as_float):
        raise FitFailed(FallbackReason.NON_FINITE, f"{name} = {as_float}")
    return as_float


def check_forecast(params: ModelParams, state: ModelState, rates: FloatArray, horizon_steps: int) -> None:
    ahead = forecast_rates(params, state, max(horizon_steps, 1))
    if not np.isfinite(ahead).all():
        raise FitFailed(FallbackReason.NON_FINITE, "non-finite forecast")
    largest = float(np.max(np.abs(rates)))
    worst = float(np.max(np.abs(ahead)))
    if worst > ABSURD_RATE_FACTOR * largest + 1e-9:
        raise FitFailed(FallbackReason.ABSURD,
                         f"forecast rate {worst:.3g}/step vs at most {largest:.3g}/step observed")
