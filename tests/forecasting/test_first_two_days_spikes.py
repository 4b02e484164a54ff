"""2c7f906: under two days of history the model is now `linear` (the mean rate of the last day),
fitted on the raw rates: `fit_rates` clips spikes only for the other kinds. The damped trend it
replaced from 12 steps on was fitted on spike-clipped rates, so a single delete or burst in the
first two days now becomes the rate of the whole week ahead."""

from __future__ import annotations

import numpy as np
import pytest

from quotapilot.forecasting.hw import fit_rates, forecast_rates

HOUR = 3600.0
FEED = 1000.0  # bytes per hour, steady, 10 % noise


def history(hours: int, at: int, value: float) -> np.ndarray:
    rng = np.random.default_rng(hours)
    rates = FEED * (1 + 0.1 * rng.normal(size=hours))
    rates[at] = value  # one step, in the middle of the history
    return rates


@pytest.mark.parametrize("hours", [12, 18, 24, 30, 36, 47])
@pytest.mark.parametrize(("what", "value"), [("delete", -60 * FEED), ("burst", 60 * FEED)])
def test_one_step_in_the_first_two_days_is_not_the_week_ahead(hours: int, what: str, value: float) -> None:
    """The commit's own yardstick (TestTheFirstTwoDays): the week's p50 within a factor of 2.5 of
    what the feed writes. One delete mid-history made it negative (the quota forecast to shrink for
    a week: never grown); one burst made it ~3.5x (growth and pages days early)."""
    rates = history(hours, hours // 2, value)
    fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=168, seed=0)
    assert fitted is not None
    week = float(np.sum(forecast_rates(fitted.params, fitted.state, 168)))
    expected = FEED * 168
    assert expected / 2.5 <= week <= 2.5 * expected, (
        f"{what} at step {hours // 2} of {hours}: model {fitted.params.kind.value}, "
        f"week p50 {week / expected:.2f}x the feed")
