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
- ≥ `MIN_STEPS`: the mean rate of the last day (a straight line for the level), also the
  fallback of a damped linear trend on the rate, no season, which is itself only the fallback of
  a daily fit that fails (under two days a trend cannot be told from the daily cycle);
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

Modules, one concern each: `model` (kinds, parameters, state, fallbacks), `recursions` (update
and mean paths), `scoring` (held-out errors of cumulative totals), `statsfit` (statsmodels fits),
`trend` (a trend in the rate), `bands` (p10/p90 offsets), `fit` (`fit_rates`, which puts them
together).
"""

from quotapilot.forecasting.hw.bands import band_offsets
from quotapilot.forecasting.hw.fit import fit_rates
from quotapilot.forecasting.hw.model import (
    MIN_STEPS,
    FallbackReason,
    FittedModel,
    ModelKind,
    ModelParams,
    ModelState,
    preferred_kind,
    seasonal_period,
)
from quotapilot.forecasting.hw.recursions import forecast_rates, predict_next, trend_sum, update

__all__ = ["MIN_STEPS", "FallbackReason", "FittedModel", "ModelKind", "ModelParams", "ModelState",
           "band_offsets", "fit_rates", "forecast_rates", "predict_next", "preferred_kind", "seasonal_period",
           "trend_sum", "update"]
