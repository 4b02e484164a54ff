"""The Holt-Winters recursions on plain data: one-step forecast, the O(1) update, mean paths."""

from __future__ import annotations

import numpy as np

from quotapilot.forecasting.hw.model import FAR_STEPS, NEAR_STEPS, SHIFT_STEPS, ModelParams, ModelState
from quotapilot.forecasting.resample import FloatArray


def predict_next(params: ModelParams, state: ModelState) -> float:
    if params.near is not None and state.near is not None:
        return predict_next(params.near, state.near)  # the next step is the near model's
    season = state.seasons[state.phase] if state.seasons is not None else 0.0
    fitted = float(state.level + params.phi * state.trend + season + params.rho * state.last_error)
    return fitted if params.blend == 0.0 else (1.0 - params.blend) * fitted + params.blend * state.anchor


def update(params: ModelParams, state: ModelState, y: float) -> float:
    """Consume one step's increment `y` (in place); returns the Holt-Winters one-step error (the
    recursions use it as statsmodels does; the ρ correction is an overlay on the forecast)."""
    if params.near is not None and state.near is not None:
        update(params.near, state.near, y)
    level, trend = state.level, state.trend
    season = float(state.seasons[state.phase]) if state.seasons is not None else 0.0
    damped = params.phi * trend
    error = y - (level + damped + season)
    if params.error_bound > 0.0:
        if abs(error) > params.error_bound:
            direction = 1 if error > 0.0 else -1
            run = state.outliers + direction if state.outliers * direction > 0 else direction
            state.outliers = run
            if abs(run) < SHIFT_STEPS:
                y = level + damped + season + direction * params.error_bound  # a spike: clipped
            # else: it lasts (a burst, or a level shift): the steps count as they are, the level
            # follows at its α, and the drift check refits on data the shift is part of
        else:
            state.outliers = 0
    new_level = params.alpha * (y - season) + (1.0 - params.alpha) * (level + damped)
    state.trend = params.beta * (new_level - level) + (1.0 - params.beta) * damped
    if state.seasons is not None:
        state.seasons[state.phase] = params.gamma * (y - level - damped) + (1.0 - params.gamma) * season
        state.phase = (state.phase + 1) % len(state.seasons)
    state.level = new_level
    state.last_error = error
    if params.blend > 0.0:
        state.anchor += params.anchor_alpha * (y - state.anchor)
    return error


def forecast_rates(params: ModelParams, state: ModelState, steps: int) -> FloatArray:
    """Mean increments of the next `steps` steps."""
    rates = _own_rates(params, state, steps)
    if params.near is None or state.near is None:
        return rates
    near = np.cumsum(forecast_rates(params.near, state.near, steps))
    far = np.cumsum(rates)
    weight = np.clip((np.arange(1, steps + 1) - NEAR_STEPS) / (FAR_STEPS - NEAR_STEPS), 0.0, 1.0)
    return np.diff(near + weight * (far - near), prepend=0.0)


def _own_rates(params: ModelParams, state: ModelState, steps: int) -> FloatArray:
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
    if params.blend > 0.0:
        rates = (1.0 - params.blend) * rates + params.blend * state.anchor
    return np.asarray(rates, dtype=np.float64)


def trend_sum(phi: float, steps: int) -> FloatArray:
    """Cumulative effect of a unit trend at steps 1..`steps`: Σ_{k≤h} Σ_{i≤k} φ^i."""
    h = np.arange(1, steps + 1, dtype=np.float64)
    per_step = h if phi == 1.0 else phi * (1.0 - phi**h) / (1.0 - phi)
    return np.cumsum(per_step)

