"""`fit_rates`: the model a history supports, with its band."""

from __future__ import annotations

import numpy as np

from quotapilot.forecasting.hw.bands import BAND_INFLATION, band_offsets, calibration
from quotapilot.forecasting.hw.model import (
    SIMPLER,
    FallbackReason,
    FitFailed,
    FittedModel,
    ModelKind,
    ModelParams,
    ModelState,
    preferred_kind,
)
from quotapilot.forecasting.hw.statsfit import check_forecast, fit_exponential_smoothing, weekly_or_daily
from quotapilot.forecasting.hw.trend import with_rate_trend
from quotapilot.forecasting.resample import FloatArray


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
            fit = fit_exponential_smoothing(rates, kind, step_seconds, use_brute)
            check_forecast(fit[0], fit[1], rates, horizon_steps)
            if kind is ModelKind.HW_WEEKLY:
                fit = weekly_or_daily(rates, step_seconds, horizon_steps, use_brute, fit)
            params, state, residuals, _, day_errors, components = fit
            kind = params.kind
            trended = None if components is None else with_rate_trend(
                rates, params, state, components, residuals, step_seconds, horizon_steps)
            if trended is not None:
                params, state, slope_sd = trended.params, trended.state, trended.slope_sd
                usable, day_errors = trended.residuals, trended.day_errors
            break
        except FitFailed as failed:
            if fallback is None:
                fallback, detail = failed.reason, f"{kind}: {failed.detail}"
            kind = SIMPLER[kind]
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
        factor = calibration(day_errors, low, high)
        low, high = low * factor, high * factor
    low, high = low * BAND_INFLATION, high * BAND_INFLATION
    return FittedModel(params=params, state=state, sigma=sigma, band_low=low, band_high=high,
                       n_steps=n, step_seconds=step_seconds, fallback=fallback, fallback_detail=detail)


def _is_constant(rates: FloatArray) -> bool:
    spread = float(np.max(rates) - np.min(rates))
    return spread <= 1e-9 * max(float(np.max(np.abs(rates))), 1.0)


def _fit_linear(rates: FloatArray, step_seconds: float) -> tuple[ModelParams, ModelState, FloatArray]:
    """The recent mean rate, held (α = 0: only a refit moves it)."""
    window = max(1, min(len(rates), round(86400 / step_seconds)))
    recent = rates[-window:]
    mean = float(np.mean(recent))
    return ModelParams(ModelKind.LINEAR), ModelState(level=mean), recent - mean
