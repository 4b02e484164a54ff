"""The stopgap line for young series: predict_linear on the samples seen, a wide labelled band."""

from __future__ import annotations

import pytest

from quotapilot.forecasting.series import ModelConfig, SeriesModel
from quotapilot.forecasting.stopgap import STOPGAP_MODEL, stopgap_forecast

T0 = 1_767_571_200.0
RATE = 1e7


def line(n: int, spacing: float) -> list[tuple[float, float]]:
    return [(T0 + k * spacing, 1e12 + RATE * k * spacing) for k in range(n)]


def forecast(samples: list[tuple[float, float]], limit: float | None = 2e12, min_span: float = 1.0):  # type: ignore[no-untyped-def]
    return stopgap_forecast(samples, now=samples[-1][0], step_seconds=3600.0, horizon_seconds=7 * 86400.0,
                            limit=limit, min_span_seconds=min_span)


class TestStopgap:
    """What predict_linear would say, labelled, with p10 <= p50 <= p90."""

    def test_too_few_or_too_close_samples_give_none(self) -> None:
        assert forecast(line(1, 60.0)) is None
        assert forecast(line(2, 0.5)) is None
        assert forecast(line(2, 60.0), min_span=120.0) is None

    def test_constant_rate_gives_the_exact_line(self) -> None:
        samples = line(5, 60.0)
        result = forecast(samples)
        assert result is not None
        assert result.rate_per_second == pytest.approx(RATE)
        assert result.forecast.model == STOPGAP_MODEL
        assert result.forecast.fallback == "below_min_history"
        full = result.runways[-1]
        expected = samples[-1][0] + (2e12 - samples[-1][1]) / RATE
        assert full.p50 == pytest.approx(expected)
        assert full.p90 is not None and full.p90 < full.p50  # the pessimistic path crosses first
        assert full.p10 is None  # the optimistic rate band reaches down to 0: never

    def test_band_is_wide_and_ordered(self) -> None:
        samples = [(T0, 1e12), (T0 + 60, 1e12 + 9e8), (T0 + 120, 1e12 + 1.1e9), (T0 + 180, 1e12 + 1.9e9)]
        result = forecast(samples)
        assert result is not None
        f = result.forecast
        assert all(a <= b <= c for a, b, c in zip(f.p10, f.p50, f.p90, strict=True))
        rise = f.p50[-1] - samples[-1][1]
        assert f.p90[-1] - f.p50[-1] >= rise  # at least twice the rate on the pessimistic side

    def test_the_line_ends_at_the_horizon(self) -> None:
        """A horizon that is not a whole number of steps ends there: a limit reached 15 minutes
        past a 30-minute horizon is not within it."""
        samples = line(5, 60.0)
        limit = samples[-1][1] + RATE * (1800 + 900)
        result = stopgap_forecast(samples, now=samples[-1][0], step_seconds=3600.0, horizon_seconds=1800.0,
                                  limit=limit, min_span_seconds=1.0)
        assert result is not None
        assert list(result.forecast.times) == [samples[-1][0] + 1800.0]
        assert result.runways[-1].p50 is None

    def test_no_limit_gives_no_runways(self) -> None:
        result = forecast(line(3, 60.0), limit=None)
        assert result is not None and result.runways == ()


class TestSeriesModelStopgap:
    """A series offers the stopgap only until its first fit."""

    def test_before_and_after_the_first_fit(self) -> None:
        config = ModelConfig()
        model = SeriesModel(config)
        for t, used in line(3, 60.0):
            model.add_sample(t, used)
        early = model.outlook(T0 + 120, limit=2e12)
        assert early.forecast is None and early.provisional is not None
        for t, used in line(6 * 60, 60.0)[3:]:
            model.add_sample(t, used)
        model.refit(T0 + 6 * 3600)
        later = model.outlook(T0 + 6 * 3600, limit=2e12)
        assert later.forecast is not None and later.provisional is None
        assert len(model.recent) == 0
