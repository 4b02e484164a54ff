"""What a fitted series model is: its kinds, parameters, state, and why a simpler one is in use."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from quotapilot.forecasting.resample import FloatArray

MIN_STEPS = 3
"""Fewer complete steps than this: no forecast."""
WEEKLY_HELD_OUT_SECONDS = 1.5 * 86400.0
"""History beyond the two weeks that initialise a weekly season, so that its held-out choice has
a day's totals from a dozen origins (`selection.MIN_ORIGINS`) the initialisation did not read."""
SHIFT_STEPS = 3
"""Steps in a row beyond the error bound, the same way, that are a burst or a level shift, not
spikes. (Re-anchoring the level on the third such step, α = 1, was tried first: a multi-hour
burst would then set the level until the next refit.)"""
NEAR_STEPS = 24
FAR_STEPS = 72
"""With a near model (`ModelParams.near`), the cumulative forecast is the near model's up to
`NEAR_STEPS` ahead and the other's from `FAR_STEPS` on, weighted linearly in between: the two
horizons the held-out choice scores (`scoring.SCORE_STEPS`, a day and three days at hourly steps)."""
ABSURD_RATE_FACTOR = 10.0
"""A forecast rate beyond this many times the largest observed |rate| is not believed."""


class ModelKind(enum.StrEnum):
    HW_WEEKLY = "holt_winters_weekly"
    HW_DAILY = "holt_winters_daily"
    DAMPED_TREND = "damped_trend"
    LINEAR = "linear"
    LEVEL = "level"
    """The rate smoothed exponentially, no season: chosen held out (`selection`)."""
    SEASONAL_NAIVE = "seasonal_naive"
    """The last period's rates, repeated: chosen held out (`selection`)."""


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


SIMPLER: dict[ModelKind, ModelKind] = {
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
    """A seasonal model whose rate also has a fixed (possibly damped) trend: `with_rate_trend`."""
    blend: float = 0.0
    """Weight of the anchor (a second, simply smoothed level) in the forecast: a fit and a simple
    candidate averaged, when that forecasts the held-out history best (`selection`)."""
    anchor_alpha: float = 0.0
    """Smoothing of the anchor (used only with `blend` > 0)."""
    error_bound: float = 0.0
    """A one-step error beyond this is a spike to the O(1) updates: the step is clipped to it
    before it moves the level and the season, unless `SHIFT_STEPS` in a row go the same way (a
    burst or a level shift: those steps count as they are). 0: no clipping."""
    near: ModelParams | None = None
    """The model that forecast the next day best held out, when it is another than this one
    (which forecast three days best): the forecast follows it for the first `NEAR_STEPS` and
    moves over to this one by `FAR_STEPS` (`recursions.forecast_rates`). Its state is
    `ModelState.near`; both are updated with every step."""


@dataclass(slots=True, eq=False)
class ModelState:
    """Where the recursions stand after the last consumed step. `seasons[phase]` is the seasonal
    component of the next step."""

    level: float
    trend: float = 0.0
    seasons: FloatArray | None = None
    phase: int = 0
    last_error: float = 0.0
    anchor: float = 0.0
    """The blended simple level (`ModelParams.blend`)."""
    outliers: int = 0
    """Consecutive steps beyond `ModelParams.error_bound`, signed by their direction."""
    near: ModelState | None = None
    """The state of `ModelParams.near`."""

    def copy(self) -> ModelState:
        return ModelState(self.level, self.trend, None if self.seasons is None else self.seasons.copy(),
                          self.phase, self.last_error, self.anchor, self.outliers,
                          None if self.near is None else self.near.copy())


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
    held_out_score: float | None = None
    """How the model in use forecast the later half of its history (`selection.score`: mean
    |error| of the next day's and three days' totals, relative to their mean); None: not scored."""
    best_simple_score: float | None = None
    """The same for the best simple candidate (level or seasonal naive); `held_out_score` is
    never above it (beyond `selection.SCORE_TOLERANCE`)."""

    @property
    def model_name(self) -> str:
        name = f"{self.params.kind}_trend" if self.params.rate_trend else str(self.params.kind)
        return f"{name}_blend" if self.params.blend > 0.0 else name


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
        # A weekly season is initialised from two weeks; it must also be checked on data it has
        # not read (`selection`), so it waits for `WEEKLY_HELD_OUT_SECONDS` more.
        held_out = round(WEEKLY_HELD_OUT_SECONDS / step_seconds) if kind is ModelKind.HW_WEEKLY else 0
        if n_steps >= max(2 * period, 10 + 2 * (period // 2)) + held_out:
            return kind
    # Under two days no damped trend either (it stays the fallback of a daily fit that fails): a
    # trend in the rate cannot be told from the part of the daily cycle the history holds, and
    # extrapolated, that slope put a steady feed's week ahead anywhere from -10× to 10× what it
    # writes (a new install's pool paged "full in 10 days" for a runway of months)
    if n_steps >= MIN_STEPS:
        return ModelKind.LINEAR
    return None


class FitFailed(Exception):
    def __init__(self, reason: FallbackReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

