"""The held-out choice between the fit and the simple candidates (forecasting/hw/selection.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.forecasting.hw import (
    ModelKind,
    ModelParams,
    ModelState,
    fit_rates,
    forecast_rates,
    predict_next,
    update,
)
from quotapilot.forecasting.hw.model import FAR_STEPS, NEAR_STEPS
from quotapilot.forecasting.hw.selection import (
    BLEND_WEIGHT,
    SCORE_TOLERANCE,
    level_shifts,
    reanchored,
    recent_level_shift,
    simple_candidates,
    usage_slopes,
)

HOUR = 3600.0


def rate_series(days: int, *, season: float, noise: float, seed: int, shift_at: float | None = None,
                shift: float = 1.0, spikes: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.arange(days * 24)
    rates = 1000.0 * (1 + season * np.sin(2 * np.pi * h / 24)) + noise * rng.normal(size=len(h))
    if shift_at is not None:
        rates[int(shift_at * len(h)):] *= shift
    if spikes:
        rates[rng.choice(len(h) - 3, size=spikes, replace=False)] *= 500.0
    return rates


class TestHeldOutChoice:
    """The model in use never forecasts its own later half worse than the best simple one."""

    def test_spikes_and_a_level_shift_do_not_freeze_the_level(self) -> None:
        """The ec2_network_in failure: giant spikes made least squares freeze the level (α ≈ 0),
        and after the rate fell to a third the forecast stayed at the old level (27× too much)."""
        rates = rate_series(10, season=0.2, noise=30.0, seed=4, shift_at=0.625, shift=1 / 3)
        rates[[10, 60, 61, 130, 175]] *= 800.0
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None
        day_total = float(forecast_rates(fitted.params, fitted.state, 24).sum())
        assert 0.7 < day_total / (24 * 1000.0 / 3) < 1.4

    @settings(max_examples=25, deadline=None)
    @given(days=st.integers(4, 21), season=st.floats(0.0, 0.9), noise=st.floats(0.0, 600.0),
           seed=st.integers(0, 10_000), shift=st.sampled_from([None, 0.3, 3.0]), spikes=st.integers(0, 4))
    def test_never_worse_than_the_best_simple_candidate(self, days: int, season: float, noise: float, seed: int,
                                                        shift: float | None, spikes: int) -> None:
        rates = rate_series(days, season=season, noise=noise, seed=seed, shift_at=None if shift is None else 0.7,
                            shift=shift or 1.0, spikes=spikes)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None
        if fitted.best_simple_score is not None:
            assert fitted.held_out_score is not None
            assert fitted.held_out_score <= fitted.best_simple_score + SCORE_TOLERANCE

    def test_a_clean_season_keeps_holt_winters(self) -> None:
        fitted = fit_rates(rate_series(7, season=0.8, noise=20.0, seed=1), step_seconds=HOUR, horizon_steps=48)
        assert fitted is not None and fitted.params.kind is ModelKind.HW_DAILY

    def test_white_noise_around_a_level_gets_a_simple_model_or_a_flat_one(self) -> None:
        rates = rate_series(14, season=0.0, noise=500.0, seed=2)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None
        ahead = forecast_rates(fitted.params, fitted.state, 72)
        assert np.ptp(ahead) < 0.5 * 1000.0  # no phantom season bigger than the noise's own mean


class TestCandidates:
    """Each candidate is plain state the O(1) recursions carry on."""

    def test_seasonal_naive_repeats_the_last_day_and_keeps_doing_so(self) -> None:
        rates = rate_series(6, season=0.5, noise=100.0, seed=5)
        naive = next(c for c in simple_candidates(rates, HOUR) if c.params.kind is ModelKind.SEASONAL_NAIVE)
        np.testing.assert_allclose(forecast_rates(naive.params, naive.state, 48), np.tile(rates[-24:], 2))
        state = naive.state.copy()
        update(naive.params, state, 123.0)
        assert forecast_rates(naive.params, state, 24)[-1] == pytest.approx(123.0)

    def test_level_candidates_are_predict_linear_rates(self) -> None:
        rates = np.concatenate((np.full(96, 100.0), np.full(96, 400.0)))
        levels = {c.name: c for c in simple_candidates(rates, HOUR) if c.params.kind is ModelKind.LEVEL}
        assert levels["level_6"].state.level == pytest.approx(400.0)
        usage = np.cumsum(rates)[-72:]
        assert levels["level_72"].state.level == pytest.approx(np.polyfit(np.arange(72), usage, 1)[0])

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.floats(-1e6, 1e6), min_size=8, max_size=60), st.integers(2, 8))
    def test_usage_slopes_match_a_least_squares_line(self, values: list[float], window: int) -> None:
        rates = np.asarray(values)
        slopes = usage_slopes(rates, window)
        usage = np.cumsum(rates)
        assert np.isnan(slopes[:window - 1]).all()
        for end in range(window - 1, len(rates)):
            expected = np.polyfit(np.arange(window), usage[end - window + 1:end + 1], 1)[0]
            assert slopes[end] == pytest.approx(expected, rel=1e-6, abs=1e-3)


class TestReanchored:
    """After a level shift the fit's seasons with a re-anchored level forecast the new level."""

    def test_reanchoring_follows_a_shift_the_smoothed_level_lags(self) -> None:
        period = 24
        season = 100.0 * np.sin(2 * np.pi * np.arange(10 * period) / period)
        rates = 1000.0 + season
        rates[7 * period:] += 2000.0  # the level triples for the last three days
        got = reanchored(rates, season, period, period, {})
        assert got is not None
        errors, level_now = got
        assert level_now == pytest.approx(3000.0)
        # from origins a day after the shift on, its next day's total is exact
        day = errors[24]
        assert np.allclose(day[-(3 * period - 24 - period):], 0.0, atol=1e-6)


class TestNearModel:
    """A second model for the next day: the forecast follows it for a day and hands over to the
    model by three days; both are carried by the O(1) updates."""

    def _pair(self) -> tuple[ModelParams, ModelState]:
        far = ModelParams(ModelKind.HW_DAILY, period=24)
        near = ModelParams(ModelKind.LEVEL)
        state = ModelState(level=100.0, seasons=10.0 * np.sin(2 * np.pi * np.arange(24) / 24),
                           near=ModelState(level=160.0))
        return replace(far, near=near), state

    def test_the_path_is_the_near_models_for_a_day_and_the_models_from_three_days(self) -> None:
        params, state = self._pair()
        assert params.near is not None and state.near is not None
        cumulative = np.cumsum(forecast_rates(params, state, 120))
        near = np.cumsum(forecast_rates(params.near, state.near, 120))
        far = np.cumsum(forecast_rates(replace(params, near=None), state, 120))
        np.testing.assert_allclose(cumulative[:NEAR_STEPS], near[:NEAR_STEPS])
        np.testing.assert_allclose(cumulative[FAR_STEPS - 1:], far[FAR_STEPS - 1:])
        between = cumulative[NEAR_STEPS:FAR_STEPS - 1]
        assert (np.minimum(near, far)[NEAR_STEPS:FAR_STEPS - 1] <= between + 1e-9).all()
        assert (between <= np.maximum(near, far)[NEAR_STEPS:FAR_STEPS - 1] + 1e-9).all()
        assert predict_next(params, state) == pytest.approx(160.0)

    def test_updates_move_both_and_copies_are_deep(self) -> None:
        params, state = self._pair()
        params = replace(params, alpha=0.5, near=replace(ModelParams(ModelKind.LEVEL), alpha=0.5))
        kept = state.copy()
        update(params, state, 200.0)
        assert state.near is not None and kept.near is not None
        assert state.near.level == pytest.approx(180.0)
        assert kept.near.level == pytest.approx(160.0)
        assert state.level != kept.level

    def test_a_fit_with_a_near_model_still_never_loses_to_the_best_simple_candidate(self) -> None:
        """A daily season on a level that wanders (the last day's level tells the next day)."""
        rng = np.random.default_rng(7)
        h = np.arange(21 * 24)
        level = 1000.0 + np.cumsum(rng.normal(0.0, 20.0, len(h)))
        rates = level * (1 + 0.5 * np.sin(2 * np.pi * h / 24)) + rng.normal(0.0, 50.0, len(h))
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=96)
        assert fitted is not None and fitted.held_out_score is not None
        assert fitted.best_simple_score is not None
        assert fitted.held_out_score <= fitted.best_simple_score + SCORE_TOLERANCE
        total = float(forecast_rates(fitted.params, fitted.state, 24).sum())
        assert abs(total / float(rates[-24:].sum()) - 1.0) < 0.3


class TestLevelShift:
    """A day after a level shift the held-out origins all forecast across it; the next day's
    forecast must come from what is anchored on the last day, not from whichever candidate
    recovered fastest from the shift (ec2_network_in: a 6-hour slope, 20–30 % off)."""

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_a_day_after_a_fall_the_next_day_is_forecast_from_the_last_day(self, seed: int) -> None:
        rates = rate_series(8, season=0.3, noise=40.0, seed=seed, shift_at=7 / 8, shift=1 / 3)
        rates[6 * 24 - 30:6 * 24 - 20] *= 4.0  # a burst before the fall, as ec2_network_in had
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None
        day_total = float(forecast_rates(fitted.params, fitted.state, 24).sum())
        assert day_total / float(rates[-24:].sum()) == pytest.approx(1.0, abs=0.08)

    def test_detection(self) -> None:
        steady = rate_series(10, season=0.3, noise=40.0, seed=1)
        assert recent_level_shift(steady, 24) == 0
        fell = steady.copy()
        fell[-24:] /= 3
        assert recent_level_shift(fell, 24) == 1
        fell[-48:] = steady[-48:] / 3
        assert recent_level_shift(fell, 24) == 2
        assert recent_level_shift(steady * np.linspace(1.0, 1.1, len(steady)), 24) == 0  # slow growth


class TestSubDayLevelShift:
    """A lasting shift a few hours before a refit: the held-out origins nearly all lie before it
    (`recent_level_shift` sees whole days), so the next day was forecast at the old level (the
    short-traces bench's `steps`: 7 h after a ×1.4 step, 29 % of the day off where predict_linear
    over 1 h was right)."""

    @staticmethod
    def _day_total(rates: np.ndarray) -> float:
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None
        return float(forecast_rates(fitted.params, fitted.state, 24).sum())

    @pytest.mark.parametrize(("hours", "factor", "season"),
                             [(5, 1.4, 0.0), (8, 0.7, 0.0), (10, 1.3, 0.3), (6, 0.6, 0.3)])
    def test_the_next_day_is_forecast_from_the_level_since(self, hours: int, factor: float,
                                                          season: float) -> None:
        rates = rate_series(10, season=season, noise=20.0, seed=hours)
        rates[-hours:] += 1000.0 * (factor - 1.0)  # the level moves; the season stays as it was
        # the season's day total is the level's: 24 × 1000 at the new level
        assert self._day_total(rates) / (24_000.0 * factor) == pytest.approx(1.0, abs=0.04)

    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_a_step_half_a_day_ago_that_the_whole_day_rule_also_sees(self, seed: int) -> None:
        """As rds_cpu_utilization_e47b3b (NAB): ×1.6 thirteen hours before the origin moves the
        last day's mean by a third, so `recent_level_shift` fires too, and its near model is
        anchored on the whole last day — half of it before the step (20 % of the horizon off on
        that trace). The sub-day rule knows the shift is younger than the day and wins."""
        rng = np.random.default_rng(seed)
        rates = 1000.0 + 10.0 * rng.normal(size=10 * 24)
        rates[-13:] = 1600.0 + 10.0 * rng.normal(size=13)
        assert recent_level_shift(rates, 24) == 1
        assert self._day_total(rates) / 38_400.0 == pytest.approx(1.0, abs=0.04)

    def test_a_feed_that_paused_is_not_forecast_to_stay_paused(self) -> None:
        rates = rate_series(10, season=0.0, noise=20.0, seed=4)
        rates[-6:] = 0.0
        assert self._day_total(rates) > 0.7 * 24_000.0

    def test_shifts_that_did_not_last_in_the_history_are_not_followed(self) -> None:
        """Eight-hour bursts at ×1.6 every 36 hours, the last one five hours old: at every
        earlier burst the level since forecast the next day worse than the model did."""
        rates = rate_series(12, season=0.0, noise=20.0, seed=5)
        for start in range(30, len(rates), 36):
            rates[start:start + 8] *= 1.6
        rates[-5:] = 1.6 * rate_series(12, season=0.0, noise=20.0, seed=6)[-5:]
        shifts = level_shifts(rates, HOUR)
        assert shifts is not None and shifts.fired[-1]  # the rule sees one...
        assert self._day_total(rates) < 1.2 * 24_000.0  # ...and the history says it will not last

    def test_detection(self) -> None:
        steady = rate_series(10, season=0.5, noise=20.0, seed=1)
        shifts = level_shifts(steady, HOUR)
        assert shifts is not None and not shifts.fired.any()  # a strong daily season is no shift
        stepped = steady.copy()
        stepped[-10:] += 400.0
        shifts = level_shifts(stepped, HOUR)
        assert shifts is not None
        # from the third step at the new level (`SHIFT_MIN_STEPS`: two are a burst as yet), not before
        assert shifts.fired[-8:].all() and not shifts.fired[:-8].any()
        assert shifts.levels[-1] == pytest.approx(1400.0, rel=0.03)


class TestUncheckedFit:
    """Two or three days gave a daily fit that no held-out origin could score (all of them lie
    within the two days its initialisation read): every score was inf, and the tie kept the fit
    unchecked — after truncation at a level shift, on ec2_network_in, it missed the next day by 50 %."""

    @pytest.mark.parametrize("steps", [60, 72, 80])
    def test_a_fit_nothing_can_check_is_averaged_with_the_last_day(self, steps: int) -> None:
        """2.5–3.3 days. (The simple candidates can be scored on ~12 origins from 3 days on, but
        choosing among them on so few was worse on bench_forecast_phases at 3 days of history —
        85 of 96 grids failing against 75 before — than this average, 71.)"""
        rates = rate_series(4, season=0.3, noise=50.0, seed=2)[:steps]
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None and fitted.held_out_score is None
        assert (BLEND_WEIGHT, float(np.mean(rates[-24:]))) == (fitted.params.blend, fitted.state.anchor)

    def test_a_fit_that_can_be_checked_is_scored_as_before(self) -> None:
        fitted = fit_rates(rate_series(5, season=0.3, noise=50.0, seed=1), step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None and fitted.held_out_score is not None
