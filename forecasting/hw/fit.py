"""`fit_rates`: the model a history supports, with its band."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    seasonal_period,
)
from quotapilot.forecasting.hw.robust import SPIKE_SIGMAS, clip_spikes
from quotapilot.forecasting.hw.scoring import SCORE_STEPS, SELECTION_STEPS, cumulative_errors
from quotapilot.forecasting.hw.selection import (
    BLEND_WEIGHT,
    HW_MARGIN,
    SCORE_TOLERANCE,
    actual_totals,
    best_simple,
    blended_errors,
    fitted_starts,
    reanchored,
    score,
    simple_candidates,
    trim_to,
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
    held_out: dict[int, FloatArray] | None = None
    scores: tuple[float, float] | None = None
    season_written: FloatArray | None = None
    # Spikes are fitted out (one would freeze the level for weeks) but stay in what the fit is
    # judged against and in the residuals the band is drawn from.
    daily, weekly = (seasonal_period(k, step_seconds) for k in (ModelKind.HW_DAILY, ModelKind.HW_WEEKLY))
    clipped = clip_spikes(rates, (daily, weekly)) if kind is not ModelKind.LINEAR else rates
    while kind is not ModelKind.LINEAR:
        try:
            fit = fit_exponential_smoothing(clipped, kind, step_seconds, use_brute)
            check_forecast(fit[0], fit[1], rates, horizon_steps)
            if kind is ModelKind.HW_WEEKLY:
                fit = weekly_or_daily(clipped, step_seconds, horizon_steps, use_brute, fit)
            params, state, residuals, _, day_errors, components = fit
            residuals = residuals + (rates - clipped)
            kind = params.kind
            trended = None if components is None else with_rate_trend(
                clipped, params, state, components, residuals, step_seconds, horizon_steps)
            if trended is not None:
                params, state, slope_sd = trended.params, trended.state, trended.slope_sd
                usable, day_errors = trended.residuals, trended.day_errors
                held_out = trended.held_out
            elif components is not None:
                held_out = {h: cumulative_errors(clipped, components[0], components[1], params.period,
                                                 residuals, params.rho, steps=h) for h in SCORE_STEPS}
                season_written = components[1]
            break
        except FitFailed as failed:
            if fallback is None:
                fallback, detail = failed.reason, f"{kind}: {failed.detail}"
            kind = SIMPLER[kind]
    if kind is ModelKind.LINEAR:
        params, state, residuals = _fit_linear(rates, step_seconds)
        if fallback is FallbackReason.CONSTANT_RATE:
            residuals = np.zeros_like(residuals)  # not rounding noise of the mean: exactly no spread
    if held_out is not None or (kind is ModelKind.LINEAR and fallback not in (None, FallbackReason.CONSTANT_RATE,
                                                                              FallbackReason.SHORT_HISTORY)):
        choice = _held_out_choice(rates, clipped, step_seconds, params, state, held_out, season_written)
        if choice is not None:
            scores = choice.scores
            if choice.params is not None and choice.state is not None:
                params, state, kind = choice.params, choice.state, choice.params.kind
                day_errors = choice.day_errors if choice.day_errors is not None else day_errors
                if choice.residuals is not None:
                    usable, slope_sd = choice.residuals, 0.0
    if usable is None:
        # The first cycles' residuals are small because the heuristic initial states were computed
        # from them; they would make the band too narrow.
        warmup = 2 * params.period if params.period else (10 if kind is ModelKind.DAMPED_TREND else 0)
        usable = residuals[warmup:] if len(residuals) - warmup >= 20 else residuals[len(residuals) // 2:]
    sigma = float(np.sqrt(np.mean(usable**2))) if len(usable) else 0.0
    if kind is not ModelKind.LINEAR and len(usable):
        params = replace(params, error_bound=SPIKE_SIGMAS * 1.4826 * float(np.median(np.abs(usable))))
    low, high = band_offsets(params, usable, horizon_steps, step_seconds=step_seconds, seed=seed,
                             n_fitted=n, slope_sd=slope_sd)
    if day_errors is not None and kind is not ModelKind.LINEAR:
        factor = calibration(day_errors, low, high)
        low, high = low * factor, high * factor
    low, high = low * BAND_INFLATION, high * BAND_INFLATION
    return FittedModel(params=params, state=state, sigma=sigma, band_low=low, band_high=high,
                       n_steps=n, step_seconds=step_seconds, fallback=fallback, fallback_detail=detail,
                       held_out_score=None if scores is None else scores[0],
                       best_simple_score=None if scores is None else scores[1])


def _is_constant(rates: FloatArray) -> bool:
    spread = float(np.max(rates) - np.min(rates))
    return spread <= 1e-9 * max(float(np.max(np.abs(rates))), 1.0)


def _fit_linear(rates: FloatArray, step_seconds: float) -> tuple[ModelParams, ModelState, FloatArray]:
    """The recent mean rate, held (α = 0: only a refit moves it)."""
    window = max(1, min(len(rates), round(86400 / step_seconds)))
    recent = rates[-window:]
    mean = float(np.mean(recent))
    return ModelParams(ModelKind.LINEAR), ModelState(level=mean), recent - mean


@dataclass(frozen=True, slots=True, eq=False)
class _Choice:
    """What the held-out choice changed: the model (None: the fit stays as it is), its residuals
    for the band when they are its own, its held-out day errors, and (chosen, best simple) scores."""

    params: ModelParams | None
    state: ModelState | None
    residuals: FloatArray | None
    day_errors: FloatArray | None
    scores: tuple[float, float] | None


def _held_out_choice(rates: FloatArray, clipped: FloatArray, step_seconds: float, params: ModelParams,
                     state: ModelState, held_out: dict[int, FloatArray] | None,
                     season_written: FloatArray | None) -> _Choice | None:
    """The fit, the fit re-anchored, the fit blended with the best level, or the best simple
    candidate, whichever forecasts the later half of the history best (`selection`)."""
    n = len(rates)
    starts = {} if held_out is None else fitted_starts(held_out, n, params.period)
    if held_out is not None:
        held_out = trim_to(held_out, n, starts)
    _, means = actual_totals(clipped, starts)
    fitted_score = math.inf if held_out is None else score(held_out, means)
    candidates = simple_candidates(rates, step_seconds, starts, clipped)
    simple = best_simple(candidates)
    if simple is None:
        return None
    level = best_simple(candidates, ModelKind.LEVEL)
    chosen: tuple[ModelParams, ModelState] | None = None
    day_errors: FloatArray | None = None
    daily = seasonal_period(ModelKind.HW_DAILY, step_seconds)
    anchored = None if season_written is None else reanchored(clipped, season_written, params.period, daily, starts)
    if anchored is not None and held_out is not None and all(
            len(anchored[0].get(h, ())) == len(e) for h, e in held_out.items()):
        anchored_score = score(anchored[0], means)
        if anchored_score + SCORE_TOLERANCE < fitted_score:
            # the fit's seasons with its level re-anchored on the last day: a level shift
            moved = state.copy()
            moved.level, moved.last_error = anchored[1], 0.0
            chosen, fitted_score, held_out = (replace(params, rho=0.0), moved), anchored_score, anchored[0]
            day_errors = held_out.get(SELECTION_STEPS)
    blended = None if held_out is None or level is None else blended_errors(held_out, level, BLEND_WEIGHT)
    blended_score = math.inf if blended is None else score(blended, means)
    if simple.score * HW_MARGIN + SCORE_TOLERANCE < min(fitted_score, blended_score):
        return _Choice(simple.params, simple.state.copy(), simple.residuals, simple.day_errors,
                       (simple.score, simple.score))
    if blended is not None and level is not None and blended_score + SCORE_TOLERANCE < fitted_score:
        base_params, base_state = chosen if chosen is not None else (params, state.copy())
        base_state.anchor = level.state.level
        return _Choice(replace(base_params, blend=BLEND_WEIGHT, anchor_alpha=level.params.alpha), base_state,
                       None, blended.get(SELECTION_STEPS), (blended_score, simple.score))
    return _Choice(chosen[0] if chosen else None, chosen[1] if chosen else None, None, day_errors,
                   (fitted_score, simple.score))
