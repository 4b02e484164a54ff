"""Model choice, fitting, fallbacks and bands of the rate model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from forecast_helpers import T0
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.forecasting import hw
from quotapilot.forecasting.hw import FallbackReason, ModelKind, fit_rates, forecast_rates, update
from quotapilot.forecasting.series import ModelConfig, forecast_samples

HOUR = 3600.0


def seasonal_rates(days: int, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.arange(days * 24)
    return 1000.0 * (1 + 0.8 * np.sin(2 * np.pi * h / 24)) + noise * rng.normal(size=len(h))


def refuse_fits(monkeypatch: pytest.MonkeyPatch, refused: ModelKind) -> None:
    """statsmodels' fit of `refused` fails (not converged); every other kind fits as usual."""
    real = hw.statsfit.fit_exponential_smoothing

    def fit(rates: np.ndarray, kind: ModelKind, step: float, brute: bool):  # type: ignore[no-untyped-def]
        if kind is refused:
            raise hw.model.FitFailed(FallbackReason.NOT_CONVERGED, "refused by the test")
        return real(rates, kind, step, brute)

    for module in (hw.fit, hw.statsfit):
        monkeypatch.setattr(module, "fit_exponential_smoothing", fit)


class TestModelChoice:
    """The history length picks the model."""

    @pytest.mark.parametrize(("steps", "kind"), [
        (2, None), (3, ModelKind.LINEAR), (11, ModelKind.LINEAR), (12, ModelKind.LINEAR),
        (47, ModelKind.LINEAR), (48, ModelKind.HW_DAILY), (335, ModelKind.HW_DAILY),
        (336 + 35, ModelKind.HW_DAILY),
        (336 + 36, ModelKind.HW_WEEKLY)])
    def test_by_history_length(self, steps: int, kind: ModelKind | None) -> None:
        assert kind == hw.preferred_kind(steps, HOUR)

    def test_too_short_gives_no_model(self) -> None:
        assert fit_rates(np.array([1.0, 2.0]), step_seconds=HOUR, horizon_steps=10) is None


class TestFallbacks:
    """A simpler model is used with a stated reason, never silently."""

    def test_tiny_history_falls_back_to_linear(self) -> None:
        fitted = fit_rates(np.array([5.0, 7.0, 6.0, 6.0]), step_seconds=HOUR, horizon_steps=10)
        assert fitted is not None
        assert (fitted.params.kind, fitted.fallback) == (ModelKind.LINEAR, FallbackReason.SHORT_HISTORY)

    @given(rate=st.floats(min_value=-1e9, max_value=1e12), steps=st.integers(min_value=3, max_value=400))
    @settings(max_examples=30, deadline=None)
    def test_constant_rate_is_linear_and_exact(self, rate: float, steps: int) -> None:
        fitted = fit_rates(np.full(steps, rate), step_seconds=HOUR, horizon_steps=50)
        assert fitted is not None
        assert fitted.params.kind == ModelKind.LINEAR
        assert fitted.fallback == FallbackReason.CONSTANT_RATE
        np.testing.assert_allclose(forecast_rates(fitted.params, fitted.state, 50), rate, rtol=1e-12)
        assert not fitted.band_low.any() and not fitted.band_high.any()

    def test_failed_fit_falls_back_to_the_next_simpler(self, monkeypatch: pytest.MonkeyPatch) -> None:
        refuse_fits(monkeypatch, ModelKind.HW_WEEKLY)
        fitted = fit_rates(seasonal_rates(16, noise=50.0), step_seconds=HOUR, horizon_steps=24)
        assert fitted is not None
        assert fitted.params.kind == ModelKind.HW_DAILY
        assert fitted.fallback == FallbackReason.NOT_CONVERGED
        assert fitted.fallback_detail is not None and "holt_winters_weekly" in fitted.fallback_detail

    def test_absurd_forecast_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = hw.statsfit.fit_exponential_smoothing

        def exploding(rates: np.ndarray, kind: ModelKind, step: float, brute: bool):  # type: ignore[no-untyped-def]
            result = real(rates, kind, step, brute)
            if kind is ModelKind.HW_DAILY:
                result[1].level = 1e6 * float(np.max(np.abs(rates)))
            return result

        for module in (hw.fit, hw.statsfit):
            monkeypatch.setattr(module, "fit_exponential_smoothing", exploding)
        fitted = fit_rates(seasonal_rates(3, noise=50.0), step_seconds=HOUR, horizon_steps=24)
        assert fitted is not None
        assert (fitted.params.kind, fitted.fallback) == (ModelKind.DAMPED_TREND, FallbackReason.ABSURD)


class TestHoltWinters:
    """The fitted model and its recursions agree with statsmodels and learn a season."""

    def test_pure_daily_season_is_learnt(self) -> None:
        rates = seasonal_rates(4)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=48)
        assert fitted is not None and fitted.fallback is None
        assert fitted.params.kind == ModelKind.HW_DAILY
        ahead = forecast_rates(fitted.params, fitted.state, 48)
        truth = seasonal_rates(6)[len(rates):]
        assert np.max(np.abs(ahead - truth)) < 0.01 * 1000.0

    def test_end_state_matches_statsmodels_forecast(self) -> None:
        """With the chosen α, γ, the state reproduces statsmodels' forecast; ρ adds the decaying
        last error on top."""
        from dataclasses import replace

        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        rates = seasonal_rates(5, noise=100.0, seed=3)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=30)
        assert fitted is not None and fitted.params.kind == ModelKind.HW_DAILY
        scale = float(np.std(rates))
        result = ExponentialSmoothing(rates / scale, seasonal="add", seasonal_periods=24,
                                      initialization_method="heuristic").fit(
            smoothing_level=fitted.params.alpha, smoothing_seasonal=fitted.params.gamma, optimized=False)
        plain = replace(fitted.params, rho=0.0)
        np.testing.assert_allclose(forecast_rates(plain, fitted.state, 30), result.forecast(30) * scale,
                                   rtol=1e-9, atol=1e-6)
        correction = forecast_rates(fitted.params, fitted.state, 30) - forecast_rates(plain, fitted.state, 30)
        np.testing.assert_allclose(correction, fitted.state.last_error * fitted.params.rho ** np.arange(1, 31),
                                   atol=1e-6)

    @pytest.mark.parametrize("steps", [60, 100, 150])
    def test_short_history_still_scores_alpha(self, steps: int) -> None:
        """Too short for the 3-day score, the day's score still chooses α (an infinite score
        would leave statsmodels' one-step α, often ≈ 1)."""
        rates = seasonal_rates(7, noise=100.0, seed=2)[:steps]
        score = hw.statsfit.fit_exponential_smoothing(rates, ModelKind.HW_DAILY, HOUR, False)[3]
        assert math.isfinite(score)

    def test_update_is_the_holt_winters_recursion(self) -> None:
        # four days: a plain fit (under ~3.5 days it is averaged with the last day, whose one-step
        # forecast is no longer the Holt-Winters one the error is taken against)
        rates = seasonal_rates(5, noise=30.0, seed=1)
        fitted = fit_rates(rates[:96], step_seconds=HOUR, horizon_steps=24)
        assert fitted is not None and fitted.params.blend == 0.0
        state = fitted.state.copy()
        expected = forecast_rates(fitted.params, state, 1)[0]
        error = update(fitted.params, state, float(rates[96]))
        assert math.isclose(error, rates[96] - expected, rel_tol=1e-12)
        assert state.phase == 1

    def test_damped_trend_on_a_ramp(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The fallback of a daily fit that fails follows a ramp."""
        refuse_fits(monkeypatch, ModelKind.HW_DAILY)
        rates = 100.0 + 5.0 * np.arange(60)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=10)
        assert fitted is not None and fitted.params.kind == ModelKind.DAMPED_TREND
        ahead = forecast_rates(fitted.params, fitted.state, 10)
        assert ahead[0] > rates[-1] - 10.0
        assert np.all(np.diff(ahead) >= -1e-9)


class TestSeasonSums:
    """The vectorised season sums behind model choice agree with stepping the seasons by hand."""

    @given(period=st.integers(min_value=2, max_value=30), h=st.integers(min_value=1, max_value=100),
           seed=st.integers(min_value=0, max_value=2**16))
    @settings(max_examples=40, deadline=None)
    def test_against_a_loop(self, period: int, h: int, seed: int) -> None:
        season = np.random.default_rng(seed).normal(size=3 * period + 5)
        cs = np.concatenate(([0.0], np.cumsum(season)))
        origins = np.arange(period, len(season), dtype=np.int64)
        got = hw.scoring.season_sums(cs, origins, period, h)
        for o, value in zip(origins, got, strict=True):
            # from origin o, step o+k uses the season written at o+k-period, then repeats
            expected = sum(season[o + 1 - period + (k - 1) % period] for k in range(1, h + 1))
            assert math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9)


class TestRateTrend:
    """A feed whose rate grows (5 → 50 TB/day) gets a trend in the rate; a steady one does not."""

    @staticmethod
    def growing(days: int, *, slope: float, noise: float = 50.0, seed: int = 0) -> np.ndarray:
        """Daily season on a rate that changes by `slope` per hour, with noise."""
        rng = np.random.default_rng(seed)
        h = np.arange(days * 24)
        return 1000.0 + slope * h + 300.0 * np.sin(2 * np.pi * h / 24) + noise * rng.normal(size=len(h))

    def test_growing_rate_is_extrapolated(self) -> None:
        days = 28
        rates = self.growing(days + 7, slope=2.0)
        fitted = fit_rates(rates[:days * 24], step_seconds=HOUR, horizon_steps=168)
        assert fitted is not None and fitted.params.rate_trend
        assert fitted.model_name.endswith("_trend")
        week_ahead = float(np.sum(forecast_rates(fitted.params, fitted.state, 168)))
        truth = float(np.sum(self.growing(days + 7, slope=2.0, noise=0.0)[days * 24:]))
        # without the trend the week's total would be short by 2·168²/2 ≈ 28,000 of ~420,000
        assert abs(week_ahead - truth) < 0.02 * truth

    def test_steady_rate_gets_no_trend(self) -> None:
        fitted = fit_rates(self.growing(28, slope=0.0, noise=150.0), step_seconds=HOUR, horizon_steps=168)
        assert fitted is not None and not fitted.params.rate_trend
        assert fitted.state.trend == 0.0 and fitted.params.phi == 1.0

    def test_clean_season_keeps_the_plain_model(self) -> None:
        """No error to fix, no trend (and no `_trend` in the model's name)."""
        fitted = fit_rates(seasonal_rates(21), step_seconds=HOUR, horizon_steps=168)
        assert fitted is not None and fitted.model_name == "holt_winters_daily"

    def test_falling_rate_is_damped(self) -> None:
        """Extrapolated straight, a falling rate would promise ever more room: it fades instead."""
        fitted = fit_rates(self.growing(28, slope=-0.5), step_seconds=HOUR, horizon_steps=168)
        assert fitted is not None and fitted.params.rate_trend
        assert fitted.state.trend < 0.0 and fitted.params.phi < 1.0

    @pytest.mark.parametrize("slope", [-1.0, -1.4, -2.5])
    def test_falling_rate_never_forecasts_unseen_deletes(self, slope: float) -> None:
        """However steep the fall, the forecast rate stays at or above the lowest rate observed
        (zero when the series never shrank): room that only deletes would make is not promised."""
        rng = np.random.default_rng(7)
        h = np.arange(28 * 24)
        rates = np.maximum(2000.0 + slope * h + 300.0 * np.sin(2 * np.pi * h / 24) + 10.0 * rng.normal(size=len(h)),
                           5.0)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=14 * 24)
        assert fitted is not None
        assert float(np.min(forecast_rates(fitted.params, fitted.state, 14 * 24))) >= min(0.0, float(rates.min()))

    @pytest.mark.parametrize("noise", [50.0, 1.0])
    def test_trend_band_is_not_one_sided(self, noise: float) -> None:
        """The band, ρ and the last error come from the trended model's own errors: the plain
        model's lag behind the growth would push the whole band up (p10 = p50) and count the
        trend twice, or, through a ρ overlay of those lagging errors, push it down (p90 = p50)."""
        fitted = fit_rates(self.growing(28, slope=2.0, noise=noise), step_seconds=HOUR, horizon_steps=14 * 24)
        assert fitted is not None and fitted.params.rate_trend
        week = 167
        low, high = -fitted.band_low[week], fitted.band_high[week]
        assert low > 0.2 * high and high > 0.2 * low

    def test_updates_carry_the_trend(self) -> None:
        """Between refits the O(1) recursions keep following the growth."""
        rates = self.growing(36, slope=2.0)
        fitted = fit_rates(rates[:28 * 24], step_seconds=HOUR, horizon_steps=48)
        assert fitted is not None and fitted.params.rate_trend
        state = fitted.state.copy()
        for y in rates[28 * 24:34 * 24]:
            update(fitted.params, state, float(y))
        day_ahead = float(np.sum(forecast_rates(fitted.params, state, 24)))
        truth = float(np.sum(self.growing(36, slope=2.0, noise=0.0)[34 * 24:35 * 24]))
        assert abs(day_ahead - truth) < 0.03 * truth


SEED_0_P50_LATE = pytest.mark.xfail(strict=True, reason=(
    "known, measured 2026-12-05: from 7 days of history seed 0's 3-day line puts the week-ahead p50 "
    "crossing 25.4 h late (tolerance 24 h; p90 before the crossing, p10 after it); seeds 1 and 2 are "
    "inside. Before the short-history trend there was no trend under ~12 days: 47-70 h late"))


class TestShortHistoryTrend:
    """A feed that accelerates from its first days (cosmos7's 5 → 50 TB/day) gets its trend after
    a week of history, not only once the standard windows fit (~12 days); a steady feed of the
    same length still does not."""

    NIGHT_PROFILE = np.array([1.8, 1.8, 1.8, 1.8, 1.7, 1.5, 1.0, 0.7, 0.5, 0.4, 0.4, 0.4,
                              0.4, 0.4, 0.4, 0.4, 0.5, 0.6, 0.8, 1.1, 1.5, 1.7, 1.8, 1.8])
    """cosmos7's raw feed: observing at night, most of it landing between 20:00 and 06:00."""

    @classmethod
    def feed(cls, hours: int, *, growth_per_day: float, noise: float, seed: int) -> np.ndarray:
        """Hourly rate of a feed starting at 5 (TB/day) and growing by `growth_per_day` every day
        (cosmos7: 1.5, ~10 %/day at day 7, 30 %/day at day 0), on the night profile, with
        relative noise."""
        rng = np.random.default_rng(seed)
        h = np.arange(hours)
        profile = cls.NIGHT_PROFILE / cls.NIGHT_PROFILE.mean()
        return (5.0 + growth_per_day * h / 24) / 24 * profile[h % 24] * (1 + noise * rng.normal(size=hours))

    @pytest.mark.parametrize("days", [7, 8, 9])
    def test_accelerating_feed_gets_a_trend_after_a_week(self, days: int) -> None:
        rates = self.feed(days * 24, growth_per_day=1.5, noise=0.1, seed=days)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=14 * 24)
        assert fitted is not None and fitted.params.rate_trend, fitted and fitted.model_name
        assert fitted.state.trend > 0.0

    @pytest.mark.parametrize("seed", [pytest.param(0, marks=SEED_0_P50_LATE), 1, 2])
    def test_the_week_ahead_crossing_lies_inside_a_two_sided_band(self, seed: int) -> None:
        """From 7 days of history, the date the usage reaches its level of a week later: p50
        within a day of it, p90 before, p10 after — and p10 apart from p50 (without a trend p50
        is days late; the band's low side was cut at the mean path, p10 = p50, until a young
        band's empty side was drawn from the paths centred on the forecast)."""
        days, ahead = 7, 7
        rates = self.feed((days + ahead + 7) * 24, growth_per_day=1.5, noise=0.1, seed=seed)
        used = 100.0 + np.cumsum(rates)
        samples = [(T0 + (k + 1) * HOUR, float(u)) for k, u in enumerate(used[:days * 24])]
        limit = float(used[(days + ahead) * 24 - 1])
        actual = T0 + (days + ahead) * 24 * HOUR
        _, outlook = forecast_samples(samples, limit=limit, thresholds=(1.0,),
                                      config=ModelConfig(horizon_seconds=14 * 86400.0))
        assert outlook.forecast is not None and outlook.forecast.model.endswith("_trend"), outlook.forecast
        (way,) = outlook.runways
        assert way.p90 is not None and way.p50 is not None
        assert way.p90 <= actual, (actual - way.p90) / HOUR
        assert abs(way.p50 - actual) <= 24 * HOUR, (way.p50 - actual) / HOUR
        assert way.p10 is None or way.p10 >= actual, (way.p10 - actual) / HOUR
        assert way.p10 is None or way.p10 - way.p50 >= 2 * HOUR, (way.p10 - way.p50) / HOUR

    WEEK_RISING = np.array([0.6, 0.8, 1.0, 1.2, 1.4, 0.5, 0.5])
    """Monday … Sunday: a load that rises through the working week and drops at the weekend."""

    @classmethod
    def weekly_swing(cls, days: int, seed: int) -> np.ndarray:
        """Hourly rate on `WEEK_RISING` with a daily cycle and 10 % noise, the last day a Friday."""
        rng = np.random.default_rng(seed)
        h = np.arange(days * 24)
        weekday = (h // 24 + 4 - (days - 1)) % 7
        profile = 1.0 + 0.5 * np.sin(2 * np.pi * (h % 24) / 24)
        return 10.0 * cls.WEEK_RISING[weekday] * profile * (1 + 0.1 * rng.normal(size=len(h)))

    @pytest.mark.parametrize("days", [8, 9, 10, 11])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_a_weekly_swing_is_not_a_trend(self, days: int, seed: int) -> None:
        """Four days rising to a Friday, after a weekend: a 3- or 5-day line rises and forecasts
        the next two days held out better than the level, but the day means of the history go down
        and up again — not a trend to extrapolate for two weeks (a week of history ending on that
        Friday rises monotonically from the Saturday before, and does get one: it cannot be told
        apart)."""
        rates = self.weekly_swing(days, seed)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=14 * 24)
        assert fitted is not None and not fitted.params.rate_trend, fitted.model_name

    @pytest.mark.parametrize("days", [7, 8, 9, 10, 11])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_steady_feed_of_a_week_gets_no_trend(self, days: int, seed: int) -> None:
        """A slope fitted to a short, noisy history must still clear the held-out gain to be kept."""
        rates = self.feed(days * 24, growth_per_day=0.0, noise=0.2, seed=seed)
        fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=14 * 24)
        assert fitted is not None and not fitted.params.rate_trend, fitted.model_name


class TestBands:
    """Band offsets straddle the mean path and widen with the horizon."""

    @given(seed=st.integers(min_value=0, max_value=2**16), noise=st.floats(min_value=1.0, max_value=500.0))
    @settings(max_examples=15, deadline=None)
    def test_offsets_ordered(self, seed: int, noise: float) -> None:
        fitted = fit_rates(seasonal_rates(3, noise=noise, seed=seed), step_seconds=HOUR, horizon_steps=72)
        assert fitted is not None
        assert np.all(fitted.band_low <= 0.0) and np.all(fitted.band_high >= 0.0)
        assert fitted.band_high[-1] - fitted.band_low[-1] > fitted.band_high[0] - fitted.band_low[0]

    def test_coverage_on_iid_noise(self) -> None:
        """Over several histories, the p10–p90 of the cumulative error 24 steps ahead holds ~80 %
        of fresh realisations (the level's estimation error included)."""
        inside = []
        for seed in range(12):
            rng = np.random.default_rng(seed)
            rates = 1000.0 + 200.0 * rng.normal(size=24 * 6)
            fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=24, seed=seed)
            assert fitted is not None
            mean_total = float(np.sum(forecast_rates(fitted.params, fitted.state, 24)))
            totals = (1000.0 + 200.0 * rng.normal(size=(200, 24))).sum(axis=1)
            inside.append(np.mean((totals >= mean_total + fitted.band_low[23])
                                  & (totals <= mean_total + fitted.band_high[23])))
        assert 0.65 <= float(np.mean(inside)) <= 0.95


class TestRobustUpdate:
    """Between refits one spike does not bend the level or the season; a shift re-anchors."""

    def _model(self) -> tuple[hw.ModelParams, hw.ModelState]:
        params = hw.ModelParams(ModelKind.HW_DAILY, period=24, alpha=0.2, gamma=0.3, error_bound=100.0)
        return params, hw.ModelState(level=1000.0, seasons=np.zeros(24))

    def test_a_spike_moves_the_state_only_by_the_bound(self) -> None:
        params, state = self._model()
        update(params, state, 1e9)
        assert state.level == pytest.approx(1000.0 + 0.2 * 100.0)
        assert state.seasons is not None and state.seasons[0] == pytest.approx(0.3 * 100.0)
        update(params, state, 1000.0)
        assert state.outliers == 0

    def test_from_the_third_step_the_same_way_the_steps_count_as_they_are(self) -> None:
        params, state = self._model()
        for _ in range(2):
            update(params, state, 5000.0)
        clipped_level = state.level
        assert clipped_level == pytest.approx(1000.0 + 0.2 * 100.0 + 0.2 * 100.0, rel=0.01)
        update(params, state, 5000.0)
        assert state.level - clipped_level > 0.2 * 1000.0  # the full error moves it: a shift or burst

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.floats(-1e12, 1e12), min_size=1, max_size=2))
    def test_isolated_steps_never_move_the_level_further_than_alpha_times_the_bound(self, ys: list[float]) -> None:
        params, state = self._model()
        before = state.level
        for y in ys:
            update(params, state, y)
        assert abs(state.level - before) <= len(ys) * (0.2 * 100.0 + 1e-6)


def wandering_rates(days: int, seed: int) -> np.ndarray:
    """Hourly rates with a daily season whose daily level wanders (±8 % a day, a random walk)
    under 25 % noise: a young series whose level error persists."""
    rng = np.random.default_rng(seed)
    level = 1000.0 * np.exp(np.cumsum(0.08 * rng.normal(size=days)))
    h = np.arange(days * 24)
    return np.repeat(level, 24) * (1 + 0.5 * np.sin(2 * np.pi * h / 24)) * (1 + 0.25 * rng.normal(size=len(h)))


class TestShortHistoryBands:
    """A history of a few days holds no held-out errors three days ahead; the band must not
    narrow there as if the level's error averaged out."""

    @staticmethod
    def outcomes(history_days: tuple[int, ...], steps: int = 72) -> tuple[float, float]:
        """Over 60 wandering levels per history length: the share of actual totals `steps`
        ahead above p90 (late) and inside p10–p90."""
        late = inside = count = 0
        for days in history_days:
            for seed in range(60):
                rates = wandering_rates(days + 3, seed)
                fitted = fit_rates(rates[:days * 24], step_seconds=HOUR, horizon_steps=72, seed=seed)
                assert fitted is not None
                mean = float(np.sum(forecast_rates(fitted.params, fitted.state, steps)))
                actual = float(np.sum(rates[days * 24:days * 24 + steps]))
                low, high = mean + fitted.band_low[steps - 1], mean + fitted.band_high[steps - 1]
                late += actual > high
                inside += low <= actual <= high
                count += 1
        return late / count, inside / count

    def test_the_three_day_band_holds_a_wandering_level(self) -> None:
        """From 4–6 days of history, the actual total 72 steps ahead lies inside p10–p90 in
        about 80 % of 180 histories and above p90 (a missed warning) in at most 20 %."""
        late, inside = self.outcomes((4, 5, 6))
        assert late <= 0.2 and inside >= 0.6, (late, inside)

    def test_neither_side_of_a_young_series_band_is_empty(self) -> None:
        """From 4–6 days, the residuals' day-long blocks are a few overlapping windows of the
        same days; where those ran below the fit, every simulated path did, and p90 sat on p50
        from a day on (10 of 180 histories here; forecast-real's traces cut to 4 days: 106 of
        512 origins)."""
        empty = []
        for days in (4, 5, 6):
            for seed in range(60):
                fitted = fit_rates(wandering_rates(days, seed), step_seconds=HOUR, horizon_steps=72, seed=seed)
                assert fitted is not None
                if not (fitted.band_high[[23, 71]] > 0).all() or not (fitted.band_low[[23, 71]] < 0).all():
                    empty.append((days, seed))
        assert not empty

    def test_a_few_days_of_residuals_below_the_fit_still_spread_both_ways(self) -> None:
        rng = np.random.default_rng(0)
        residuals = rng.normal(-0.3, 1.0, 48)  # two days, running below the fit
        params = hw.ModelParams(ModelKind.HW_DAILY, period=24, alpha=0.1, gamma=0.1)
        low, high = hw.bands.band_offsets(params, residuals, 72, step_seconds=HOUR, seed=1, n_fitted=96)
        assert (high[[23, 71]] > 0).all() and (low[[23, 71]] < 0).all()
        assert high[71] > 2 * high[23]  # and the upper side grows with the horizon

    def test_the_three_day_band_holds_a_wandering_level_from_a_week_of_history(self) -> None:
        """From 7–9 days of history the fit's held-out three-day errors exist, but as consecutive
        origins' overlapping totals of one or two windows: a band narrowed to their spread was
        late in 24 % of 180 histories and held the actual total in 61 %."""
        late, inside = self.outcomes((7, 8, 9))
        assert late <= 0.2 and inside >= 0.7, (late, inside)

    def test_the_one_day_band_holds_a_wandering_level_from_a_few_days_of_history(self) -> None:
        """From 4–6 days of history the held-out next-day errors are the overlapping totals of
        a day or two of origins: a band widened to their spread alone was late in 16 % of 180
        histories and held the actual total in 66 %."""
        late, inside = self.outcomes((4, 5, 6), steps=24)
        assert late <= 0.13 and inside >= 0.72, (late, inside)

    @pytest.mark.parametrize(("origins", "factor"), [(10, 2.40), (24, 2.40), (48, 1.47), (168, 1.10),
                                                     (504, 1.03), (10_000, 1.00)])
    def test_errors_from_few_independent_windows_widen_their_spread(self, origins: int, factor: float) -> None:
        """Student's t with origins / 24 degrees of freedom (at least one) against the normal."""
        assert hw.bands.small_sample_factor(origins, 24) == pytest.approx(factor, abs=0.005)

    def test_the_day_calibration_reads_the_spread_of_few_days_wider(self) -> None:
        steps = np.arange(1, 73, dtype=np.float64)
        low, high = -np.sqrt(steps), np.sqrt(steps)
        day_errors = np.linspace(-1.0, 1.0, 48) * np.sqrt(24.0) * 1.5  # p10–p90 wider than the band's
        plain = hw.bands.calibration_at(day_errors, low, high, 23)
        assert plain > 1.0
        assert hw.bands.calibration(day_errors, low, high) == pytest.approx(
            plain * hw.bands.small_sample_factor(48, 24))

    @pytest.mark.parametrize("origins", [12, 72, 144, 300])
    def test_the_floor_past_a_day_gives_way_as_three_day_origins_accumulate(self, origins: int) -> None:
        """Three-day errors that barely spread: from two horizons' worth of origins on they set
        the band alone; from fewer, the band keeps that share of the floor in proportion to the
        horizon."""
        steps = np.arange(1, 97, dtype=np.float64)
        low, high = -np.sqrt(steps), np.sqrt(steps)
        day_errors = np.linspace(-1.0, 1.0, 50)  # narrower than the band: no widening at a day
        far_errors = np.linspace(-1.0, 1.0, origins)
        new_low, new_high = hw.bands.calibrated(low, high, day_errors, far_errors, 72)
        doubt = max(0.0, 1.0 - origins / (hw.bands.FAR_EVIDENCE_WINDOWS * 72))
        floor = high[23] * 72 / 24
        assert new_high[71] == pytest.approx(high[71] + doubt * (floor - high[71]))
        assert new_low[71] == pytest.approx(-new_high[71])
        np.testing.assert_allclose(new_high[:24], high[:24])

    def test_a_band_shorter_than_three_days_keeps_the_day_calibration_when_three_day_errors_exist(self) -> None:
        """With held-out three-day errors there is evidence of how the error grows: a band of two
        days (the CLI's `--horizon 2d`) is not stretched in proportion to the horizon as a young
        series' is."""
        steps = np.arange(1, 49, dtype=np.float64)
        low, high = -np.sqrt(steps), np.sqrt(steps)
        day_errors = np.linspace(-np.sqrt(24.0), np.sqrt(24.0), 50) * 1.25  # p10–p90 wider than the band's
        far_errors = np.linspace(-1.0, 1.0, 50)
        new_low, new_high = hw.bands.calibrated(low, high, day_errors, far_errors, 72)
        factor = hw.bands.calibration(day_errors, low, high)
        np.testing.assert_allclose(new_high, high * factor)
        np.testing.assert_allclose(new_low, low * factor)


class TestTheFirstTwoDays:
    """Under two days no daily season can be fitted, and a trend in the rate cannot be told from
    the part of the daily cycle the history happens to hold: a damped trend fitted there
    extrapolated the cycle's slope (on a new install's pool, a critical "full in 10 days" page for
    a runway of months, from 12 h to 2.5 days of history)."""

    @staticmethod
    def night_feed(hours: int, start_hour: int, seed: int) -> np.ndarray:
        """A steady feed written mostly at night (1.9× the mean rate at night, 0.3× by day), 20 %
        noise: a telescope's."""
        rng = np.random.default_rng(seed)
        h = start_hour + np.arange(hours)
        profile = 1.1 + 0.8 * np.cos(2 * np.pi * h / 24)
        return 1000.0 * profile * (1 + 0.2 * rng.normal(size=hours))

    def test_a_week_ahead_stays_near_the_feed(self) -> None:
        """From 12 to 47 hours of history, starting at any hour: the week's p50 total within a
        factor of 2.5 of what the feed writes, and p90 within 3 times it."""
        off = []
        for hours in (12, 18, 24, 30, 36, 47):
            for start_hour in range(0, 24, 3):
                rates = self.night_feed(hours, start_hour, seed=hours + start_hour)
                fitted = fit_rates(rates, step_seconds=HOUR, horizon_steps=168, seed=0)
                assert fitted is not None
                week = float(np.sum(forecast_rates(fitted.params, fitted.state, 168)))
                expected = 1100.0 * 168
                p90 = week + fitted.band_high[167]
                if not (expected / 2.5 <= week <= 2.5 * expected and p90 <= 3 * expected):
                    off.append((hours, start_hour, round(week / expected, 2), round(p90 / expected, 2)))
        assert not off
