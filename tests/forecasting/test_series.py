"""The incremental series model, its forecasts and runways."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from forecast_helpers import T0, cumulative, daily
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.forecasting.hw import FallbackReason, ModelKind
from quotapilot.forecasting.runway import runways
from quotapilot.forecasting.series import ModelConfig, SeriesModel, forecast_samples, run_refit
from quotapilot.forecasting.types import Forecast

HOUR = 3600.0
SHORT = ModelConfig(horizon_seconds=4 * 86400.0)


class TestConstantRate:
    """A constant rate gives the exact linear answer, whatever the sampling."""

    @given(rate=st.floats(min_value=1.0, max_value=1e9), ahead_hours=st.floats(min_value=0.5, max_value=90.0),
           every=st.sampled_from([60.0, 300.0, 900.0, 3600.0]), history_hours=st.integers(min_value=4, max_value=400))
    @settings(max_examples=40, deadline=None)
    def test_exact_runway(self, rate: float, ahead_hours: float, every: float, history_hours: int) -> None:
        samples = cumulative(lambda t: rate, history_hours, every_seconds=every, start_used=0.0)
        last_t, last_used = samples[-1]
        limit = last_used + rate * ahead_hours * HOUR
        _, outlook = forecast_samples(samples, limit=limit, thresholds=(1.0,), config=SHORT)
        assert outlook.forecast is not None
        assert outlook.rate_per_second is not None and math.isclose(outlook.rate_per_second, rate, rel_tol=1e-9)
        (way,) = outlook.runways
        for crossing in (way.p10, way.p50, way.p90):
            assert crossing is not None
            assert abs(crossing - (last_t + ahead_hours * HOUR)) < 1.0


class TestSeasonal:
    """A pure daily-seasonal rate is learnt: the runway is the true one within 1 %."""

    def test_daily_rate_runway(self) -> None:
        rate = daily(2e7)
        samples = cumulative(rate, 4 * 24)
        _last_t, last_used = samples[-1]
        _, outlook = forecast_samples(samples, limit=last_used + 2e7 * 30 * HOUR, thresholds=(1.0,), config=SHORT)
        assert outlook.forecast is not None and outlook.forecast.model == ModelKind.HW_DAILY
        truth = cumulative(rate, 4 * 24 + 48, start_used=samples[0][1] - rate(T0) * 900)
        level = last_used + 2e7 * 30 * HOUR
        true_t = next(t for t, used in truth if used >= level)
        (way,) = outlook.runways
        assert way.p50 is not None and abs(way.p50 - true_t) < 0.01 * 30 * HOUR


class TestRunways:
    """Runway ordering invariants."""

    @given(thresholds=st.lists(st.floats(min_value=0.05, max_value=3.0), min_size=1, max_size=6, unique=True),
           noise=st.floats(min_value=0.0, max_value=0.5), seed=st.integers(0, 1000))
    @settings(max_examples=25, deadline=None)
    def test_ordered(self, thresholds: list[float], noise: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        samples = cumulative(lambda t: 1e6 * (1 + noise * rng.normal()), 20, every_seconds=600.0)
        limit = samples[-1][1] * 1.002
        _, outlook = forecast_samples(samples, limit=limit, thresholds=thresholds, config=SHORT)
        forecast = outlook.forecast
        assert forecast is not None
        assert all(a <= b <= c for a, b, c in zip(forecast.p10, forecast.p50, forecast.p90, strict=True))
        never = math.inf
        ways = outlook.runways
        assert [w.threshold_ratio for w in ways] == sorted(thresholds)
        for w in ways:  # the pessimistic path crosses first
            p90, p50, p10 = (never if x is None else x for x in (w.p90, w.p50, w.p10))
            assert p90 <= p50 <= p10
        for lower, higher in itertools.pairwise(ways):  # higher thresholds later
            for q in ("p10", "p50", "p90"):
                a, b = getattr(lower, q), getattr(higher, q)
                assert (never if a is None else a) <= (never if b is None else b)

    def test_already_above_is_now_and_never_is_none(self) -> None:
        forecast = Forecast(t0=0.0, step_seconds=10.0, times=(10.0, 20.0), p10=(1.0, 2.0), p50=(2.0, 3.0),
                            p90=(3.0, 4.0), model="test")
        above, never = runways(forecast, current_used=5.0, limit=10.0, thresholds=(0.4, 1.0), now=3.0)
        assert (above.p10, above.p50, above.p90) == (3.0, 3.0, 3.0)
        assert (never.p10, never.p50, never.p90) == (None, None, None)
        assert runways(forecast, current_used=0.0, limit=None, now=0.0) == ()


class TestIncremental:
    """Samples update the model in O(1); refits are scheduled, replayed and picklable."""

    def test_too_little_history_says_why(self) -> None:
        model = SeriesModel(SHORT)
        model.add_sample(T0, 0.0)
        model.add_sample(T0 + HOUR, 10.0)
        assert model.refit_reason(T0 + HOUR) is None
        outlook = model.outlook(T0 + HOUR, limit=100.0)
        assert outlook.forecast is None and outlook.reason is not None and "insufficient" in outlook.reason

    def test_refit_schedule_and_upgrade(self) -> None:
        model = SeriesModel(SHORT)
        for t, used in cumulative(daily(1e6), 13):
            model.add_sample(t, used)
        now = model.last_t or 0.0
        assert model.refit_reason(now) == "initial"
        model.refit(now)
        assert model.fitted is not None and model.fitted.params.kind == ModelKind.LINEAR
        assert model.refit_reason(now + 60) is None
        assert model.refit_reason(now + SHORT.refit_interval_seconds) == "schedule"
        for t, used in cumulative(daily(1e6), 50, start_used=model.last_used or 0.0, t0=now + 900):
            model.add_sample(t, used)
        assert model.refit_reason(now + 100) == "more_history"

    def test_a_failed_refit_backs_off_a_refit_interval(self) -> None:
        """A refit that gave no model (or raised where it ran: the daemon applies None) is not
        tried again every cycle, whatever the reason (here "initial"); a later fit clears it."""
        model = SeriesModel(SHORT)
        for t, used in cumulative(daily(1e6), 13):
            model.add_sample(t, used)
        now = model.last_t or 0.0
        model.apply_refit(model.refit_request(), None, now)
        assert model.fitted is None
        assert model.refit_reason(now + SHORT.refit_interval_seconds - 1) is None
        assert model.refit_reason(now + SHORT.refit_interval_seconds) == "initial"
        fitted = model.refit(now + SHORT.refit_interval_seconds)
        assert fitted is not None and model.failed_at is None

    def test_drift_triggers_refit(self) -> None:
        model = SeriesModel(SHORT)
        samples = cumulative(lambda t: 1e6, 30)
        for t, used in samples:
            model.add_sample(t, used)
        model.refit(samples[-1][0])
        assert model.fitted is not None and model.fitted.fallback == FallbackReason.CONSTANT_RATE
        for t, used in cumulative(lambda t: 5e6, 8, start_used=samples[-1][1], t0=samples[-1][0] + 900):
            model.add_sample(t, used)
        assert model.refit_reason(samples[-1][0] + 3600) == "drift"

    def test_refit_result_replays_missed_steps(self) -> None:
        samples = cumulative(daily(1e6), 24 * 3)
        model = SeriesModel.from_samples(samples[:200], SHORT)
        request = pickle.loads(pickle.dumps(model.refit_request()))
        for t, used in samples[200:]:
            model.add_sample(t, used)
        fitted = pickle.loads(pickle.dumps(run_refit(request)))
        model.apply_refit(request, fitted, samples[-1][0])
        reference = SeriesModel.from_samples(samples[:200], SHORT)
        reference.refit(0.0)
        for t, used in samples[200:]:
            reference.add_sample(t, used)
        assert model.state is not None and reference.state is not None
        assert math.isclose(model.state.level, reference.state.level, rel_tol=1e-12)
        assert model.steps_seen == reference.steps_seen

    def test_gappy_irregular_sampling(self) -> None:
        rng = np.random.default_rng(3)
        times = np.sort(T0 + rng.uniform(0, 5 * 86400, size=300))
        times = times[(times < T0 + 2 * 86400) | (times > T0 + 2.5 * 86400)]  # a 12 h gap
        samples = [(float(t), 5e5 * float(t - T0)) for t in times]
        _, outlook = forecast_samples(samples, limit=samples[-1][1] + 5e5 * 86400, thresholds=(1.0,),
                                      config=SHORT)
        (way,) = outlook.runways
        assert way.p50 is not None and abs(way.p50 - (samples[-1][0] + 86400)) < 0.02 * 86400

    def test_model_pickles(self) -> None:
        model, _ = forecast_samples(cumulative(daily(1e6), 60), limit=None, config=SHORT)
        clone = pickle.loads(pickle.dumps(model))
        assert clone.fitted is not None and clone.steps_seen == model.steps_seen


class TestRealWorldSampling:
    """Missed polls, jittered poll times and spikes do not bend the forecast."""

    def test_irregular_samples_with_a_day_missing_and_spikes(self) -> None:
        rng = np.random.default_rng(7)
        rate = daily(1e6, amplitude=0.5)
        samples = cumulative(rate, 10 * 24, every_seconds=300.0)
        times = np.array([t for t, _ in samples]) + rng.uniform(-120, 120, len(samples))  # jitter
        used = np.array([u for _, u in samples])
        for k in rng.choice(len(used) - 10, 4, replace=False):
            used[k:] += 500 * 1e6 * 300  # a spike: 500× the usual rate for one poll interval
        keep = (times < T0 + 4 * 86400) | (times > T0 + 5 * 86400)  # a day of missed polls
        history = sorted(zip(times[keep].tolist(), used[keep].tolist(), strict=True))
        _, outlook = forecast_samples(history, limit=None)
        assert outlook.forecast is not None
        ahead = outlook.forecast.at(outlook.forecast.t0 + 86400.0)
        assert ahead is not None
        assert abs((ahead - used[-1]) / (1e6 * 86400.0) - 1.0) < 0.25  # a day's writes within 25 %


class TestNeverBelowZero:
    """Stored usage is never below 0 bytes: every path is floored there, in order, whatever the model says."""

    @staticmethod
    def assert_floored(forecast: Forecast | None) -> None:
        assert forecast is not None
        for path in (forecast.p10, forecast.p50, forecast.p90):
            assert min(path) >= 0.0
        assert all(a <= b <= c for a, b, c in zip(forecast.p10, forecast.p50, forecast.p90, strict=True))

    def test_a_shrinking_series_ends_at_zero(self) -> None:
        """A usage shrinking by 5 TB a day from 3 TB: all three paths were below -6 TB at +14 d."""
        samples = cumulative(lambda t: -5e12 / 86400, 12, every_seconds=HOUR, start_used=3e12)
        _, outlook = forecast_samples(samples, limit=None)
        self.assert_floored(outlook.forecast)
        assert outlook.forecast is not None
        assert (outlook.forecast.p10[-1], outlook.forecast.p50[-1], outlook.forecast.p90[-1]) == (0.0, 0.0, 0.0)

    def test_a_counter_reset_in_the_last_hours(self) -> None:
        """Growth for 5 days, then usage reset to 1 MB for the last 3 h: the fall was carried on (p50 -1.5e14)."""
        samples = cumulative(daily(1e12 / 86400, amplitude=0.5), 5 * 24, every_seconds=HOUR)
        reset_from = len(samples) - 3
        offset = samples[reset_from][1]
        samples = [(t, used if k < reset_from else used - offset + 1e6) for k, (t, used) in enumerate(samples)]
        _, outlook = forecast_samples(samples, limit=None)
        self.assert_floored(outlook.forecast)

    def test_a_wide_band_on_a_series_that_never_shrank(self) -> None:
        """3 days of growth, then one sample 10 days later at 1.5×: p10 went to -1.2e13 by +14 d."""
        samples = cumulative(daily(1e12 / 86400, amplitude=0.5), 3 * 24, every_seconds=HOUR)
        samples.append((samples[-1][0] + 10 * 86400, samples[-1][1] * 1.5))
        _, outlook = forecast_samples(samples, limit=None)
        self.assert_floored(outlook.forecast)

    def test_the_stopgap_line_too(self) -> None:
        """Before the first fit the stopgap extrapolates the observed (here falling) rate."""
        samples = cumulative(lambda t: -1e9, 1, every_seconds=300.0, start_used=1e12)
        _, outlook = forecast_samples(samples, limit=None)
        assert outlook.forecast is None and outlook.provisional is not None
        self.assert_floored(outlook.provisional.forecast)


class TestNonFiniteForecast:
    """A model whose forecast overflows gives no forecast and says why, never NaN paths."""

    def test_overflowing_band_is_no_forecast(self) -> None:
        """119 hours near 1 TB, then 1e155 bytes: the band's squares overflow to NaN (a CLI traceback)."""
        samples = cumulative(lambda t: 1e12 / 86400, 119, every_seconds=HOUR)
        samples.append((samples[-1][0] + HOUR, 1e155))
        _, outlook = forecast_samples(samples, limit=2e12)
        assert outlook.forecast is None and outlook.runways == ()
        assert outlook.reason is not None and "non-finite" in outlook.reason
        assert outlook.rate_per_second is None or math.isfinite(outlook.rate_per_second)


class TestOneOffDropAtTheEnd:
    """A delete or a counter reset in the last hours is a step down in usage, not a rate to carry
    on: the forecast goes on growing from where usage now is (a refit then had the drop repeated
    daily by the seasonal naive candidate, or carried on by the error overlay: p50 went to 0)."""

    DAILY = 1e12
    """Bytes written a day."""

    @classmethod
    def history(cls, seed: int) -> list[tuple[float, float]]:
        """Five days of hourly usage: a daily cycle, 10 % noise."""
        rng = np.random.default_rng(seed)
        rate = daily(cls.DAILY / 86400, amplitude=0.5)
        out, used = [], 1e13
        for k in range(5 * 24):
            t = T0 + k * HOUR
            used += rate(t) * HOUR * (1 + 0.1 * rng.normal())
            out.append((t, used))
        return out

    def day_ahead(self, samples: list[tuple[float, float]]) -> float:
        _, outlook = forecast_samples(samples, limit=None)
        assert outlook.forecast is not None
        ahead = outlook.forecast.at(outlook.forecast.t0 + 86400.0)
        assert ahead is not None
        return (ahead - samples[-1][1]) / self.DAILY

    @pytest.mark.parametrize("seed", [0, 1, 2])
    @pytest.mark.parametrize(("hours_ago", "kept"), [(0, 0.7), (1, 0.7), (2, 0.5), (2, 1e-6)])
    def test_the_next_day_grows_as_before(self, seed: int, hours_ago: int, kept: float) -> None:
        """Usage cut to `kept` of itself `hours_ago` hours before the last sample (1e-6: a reset)."""
        samples = self.history(seed)
        at = len(samples) - 1 - hours_ago
        cut = samples[at][1] * (1 - kept)
        samples = [(t, used - cut if k >= at else used) for k, (t, used) in enumerate(samples)]
        assert 0.6 < self.day_ahead(samples) < 1.4

    def test_without_the_drop(self) -> None:
        """(the same histories as they are: a day's writes within 40 %)"""
        assert 0.6 < self.day_ahead(self.history(0)) < 1.4

    @pytest.mark.parametrize("kept", [0.7, 1e-6])
    def test_between_refits(self, kept: float) -> None:
        """Fitted on the five days, then the drop arrives as one more hourly step."""
        samples = self.history(0)
        model = SeriesModel.from_samples(samples[:-1], ModelConfig(horizon_seconds=4 * 86400.0))
        model.refit(samples[-2][0])
        t, used = samples[-1]
        model.add_sample(t, used * kept)
        model.add_sample(t + HOUR, used * kept + self.DAILY / 24)  # the next hour's writes complete the step
        outlook = model.outlook(t + HOUR, limit=None)
        assert outlook.forecast is not None
        ahead = outlook.forecast.at(outlook.forecast.t0 + 86400.0)
        assert ahead is not None
        assert 0.6 < (ahead - (used * kept + self.DAILY / 24)) / self.DAILY < 1.4
