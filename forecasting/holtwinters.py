"""Exponential smoothing of the ingest rate: fit with statsmodels, update and simulate in numpy.

What is modelled is the increment per step (see `resample`). The model is chosen from how much
history there is:

- ≥ 2 weeks: Holt-Winters, additive weekly season (168 hourly steps), no trend;
- ≥ 2 days: the same with a daily season (24 steps);
- ≥ `DAMPED_MIN_STEPS`: a damped linear trend on the rate, no season;
- ≥ `MIN_STEPS`: the recent mean rate (a straight line for the level) — a fallback;
- below: no model at all (the caller says "insufficient history").

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

from quotapilot.forecasting.resample import FloatArray

MIN_STEPS = 3
"""Fewer complete steps than this: no forecast."""
DAMPED_MIN_STEPS = 12
"""statsmodels' heuristic initialisation needs at least 10 observations."""
ABSURD_RATE_FACTOR = 10.0
"""A forecast rate beyond this many times the largest observed |rate| is not believed."""
BAND_QUANTILES = (0.10, 0.90)
BAND_PATHS = 256


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


@dataclass(slots=True, eq=False)
class ModelState:
    """Where the recursions stand after the last consumed step. `seasons[phase]` is the seasonal
    component of the next step."""

    level: float
    trend: float = 0.0
    seasons: FloatArray | None = None
    phase: int = 0

    def copy(self) -> ModelState:
        return ModelState(self.level, self.trend,
                          None if self.seasons is None else self.seasons.copy(), self.phase)


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
        return str(self.params.kind)


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
    return float(state.level + params.phi * state.trend + season)


def update(params: ModelParams, state: ModelState, y: float) -> float:
    """Consume one step's increment `y` (in place); returns the one-step error."""
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
    while kind is not ModelKind.LINEAR:
        try:
            params, state, residuals = _fit_exponential_smoothing(rates, kind, step_seconds, use_brute)
            _check_forecast(params, state, rates, horizon_steps)
            break
        except _FitFailed as failed:
            if fallback is None:
                fallback, detail = failed.reason, f"{kind}: {failed.detail}"
            kind = _SIMPLER[kind]
    if kind is ModelKind.LINEAR:
        params, state, residuals = _fit_linear(rates, step_seconds)
        if fallback is FallbackReason.CONSTANT_RATE:
            residuals = np.zeros_like(residuals)  # not rounding noise of the mean: exactly no spread
    # The first cycles' residuals are small because the heuristic initial states were computed
    # from them; they would make the band too narrow.
    warmup = 2 * params.period if params.period else (10 if kind is ModelKind.DAMPED_TREND else 0)
    usable = residuals[warmup:] if len(residuals) - warmup >= 20 else residuals[len(residuals) // 2:]
    sigma = float(np.sqrt(np.mean(usable**2))) if len(usable) else 0.0
    low, high = band_offsets(params, usable, horizon_steps, step_seconds=step_seconds, seed=seed,
                             n_fitted=n)
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


def _fit_exponential_smoothing(rates: FloatArray, kind: ModelKind, step_seconds: float,
                               use_brute: bool) -> tuple[ModelParams, ModelState, FloatArray]:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # heavy: only where fits run

    period = seasonal_period(kind, step_seconds)
    # The recursions are linear, so fitting the scaled series and scaling the states back is
    # exact, and keeps the optimiser away from sums of squares near 1e20.
    scale = float(np.std(rates)) or float(np.max(np.abs(rates))) or 1.0
    y = rates / scale
    seasonal = period > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = ExponentialSmoothing(
                y, trend=None if seasonal else "add", damped_trend=not seasonal,
                seasonal="add" if seasonal else None, seasonal_periods=period or None,
                initialization_method="heuristic")
            result = model.fit(use_brute=use_brute)
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
        beta=0.0 if seasonal else _param(p, "smoothing_trend"),
        gamma=_param(p, "smoothing_seasonal") if seasonal else 0.0,
        phi=1.0 if seasonal else _param(p, "damping_trend"))
    state = ModelState(
        level=float(result.level[-1]) * scale,
        trend=0.0 if seasonal else float(result.trend[-1]) * scale,
        # statsmodels' season[i] is the seasonal state written at step i; the next step (n) reuses
        # the one written at n - period, the first of the last `period`.
        seasons=np.asarray(result.season[-period:], dtype=np.float64) * scale if seasonal else None)
    residuals = np.asarray(result.resid, dtype=np.float64) * scale
    finite = [params.alpha, params.beta, params.gamma, params.phi, state.level, state.trend]
    if not (all(math.isfinite(v) for v in finite) and np.isfinite(residuals).all()
            and (state.seasons is None or np.isfinite(state.seasons).all())):
        raise _FitFailed(FallbackReason.NON_FINITE, "non-finite parameters, states or residuals")
    return params, state, residuals


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
                 seed: int = 0, n_paths: int = BAND_PATHS, n_fitted: int | None = None
                 ) -> tuple[FloatArray, FloatArray]:
    """p10/p90 offsets of the cumulative error, per horizon step, from simulated paths.

    Residuals are drawn in blocks of a day so that errors that persist (a burst lasting hours, a
    slow week) widen the band as they do in reality; independent draws would make it too narrow.
    Each path also gets a constant error in the starting rate, as large as the level's own
    estimation error (steady-state variance σ²·α/(2−α) of exponential smoothing, at least σ²/n):
    in-sample residuals do not see it, yet over days it is what dominates the cumulative error.
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


def with_state(model: FittedModel, state: ModelState) -> FittedModel:
    return replace(model, state=state)
