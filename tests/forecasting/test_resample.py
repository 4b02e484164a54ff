"""Resampling irregular samples into step rates, batch and incremental."""

from __future__ import annotations

import numpy as np
from forecast_helpers import T0
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.forecasting.resample import StepAccumulator, resample

HOUR = 3600.0


class TestResample:
    """`resample` puts increments on an epoch-aligned grid and keeps totals exact."""

    def test_constant_rate_on_grid(self) -> None:
        samples = [(T0 + k * 900.0, 1000.0 + k * 25.0) for k in range(4 * 10 + 1)]
        series = resample(samples, HOUR)
        assert series is not None
        assert series.start == T0
        np.testing.assert_allclose(series.rates, np.full(10, 100.0))
        assert series.end == T0 + 10 * HOUR

    def test_gap_spreads_the_bytes_evenly(self) -> None:
        samples = [(T0, 0.0), (T0 + HOUR, 100.0), (T0 + 5 * HOUR, 900.0), (T0 + 6 * HOUR, 1000.0)]
        series = resample(samples, HOUR)
        assert series is not None
        np.testing.assert_allclose(series.rates, [100.0, 200.0, 200.0, 200.0, 200.0, 100.0])

    def test_deletes_are_negative_rates(self) -> None:
        series = resample([(T0, 500.0), (T0 + HOUR, 800.0), (T0 + 2 * HOUR, 300.0)], HOUR)
        assert series is not None
        assert series.rates.tolist() == [300.0, -500.0]

    def test_unsorted_duplicates_and_nan_are_cleaned(self) -> None:
        samples = [(T0 + HOUR, 100.0), (T0, 0.0), (T0 + HOUR, 120.0), (T0 + 2 * HOUR, float("nan"))]
        series = resample(samples, HOUR)
        assert series is not None
        assert series.rates.tolist() == [120.0]

    def test_partial_first_step_is_not_invented(self) -> None:
        series = resample([(T0 + 1800.0, 0.0), (T0 + 2 * HOUR, 150.0)], HOUR)
        assert series is not None
        assert series.start == T0 + HOUR
        assert series.rates.tolist() == [100.0]

    def test_empty(self) -> None:
        assert resample([], HOUR) is None


class TestStepAccumulator:
    """One sample at a time gives what the batch resample gives."""

    @settings(max_examples=60, deadline=None)
    @given(gaps=st.lists(st.floats(min_value=10.0, max_value=4 * HOUR), min_size=2, max_size=60),
           deltas=st.lists(st.floats(min_value=-1e6, max_value=1e9), min_size=60, max_size=60),
           offset=st.floats(min_value=0.0, max_value=HOUR))
    def test_incremental_equals_batch(self, gaps: list[float], deltas: list[float], offset: float) -> None:
        t, used = T0 + offset, 1e12
        samples = [(t, used)]
        for gap, delta in zip(gaps, deltas, strict=False):
            t, used = t + gap, used + delta
            samples.append((t, used))
        series = resample(samples, HOUR)
        assert series is not None
        acc = StepAccumulator(HOUR)
        emitted: list[float] = []
        for sample_t, sample_used in samples:
            emitted.extend(acc.add(sample_t, sample_used))
        np.testing.assert_allclose(emitted, series.rates, rtol=1e-9, atol=1e-3)
        assert acc.open_start == series.end
        # the increments add up to the change between the first and last boundary
        if len(series.rates):
            first = np.interp(series.start, *zip(*samples, strict=True))
            assert abs(float(np.sum(series.rates)) - (float(np.interp(series.end, *zip(*samples, strict=True)))
                                                       - float(first))) < 1e-2

    def test_after_batch_continues_seamlessly(self) -> None:
        samples = [(T0 + k * 600.0, k * 10.0) for k in range(40)]
        series = resample(samples[:25], HOUR)
        assert series is not None
        acc = StepAccumulator.after(series)
        emitted = [r for s in samples[25:] for r in acc.add(*s)]
        full = resample(samples, HOUR)
        assert full is not None
        np.testing.assert_allclose([*series.rates, *emitted], full.rates)

    def test_ignores_time_going_backwards(self) -> None:
        acc = StepAccumulator(HOUR)
        acc.add(T0, 0.0)
        assert acc.add(T0 - 10, 5.0) == []
        assert acc.add(T0 + HOUR, 100.0) == [100.0]
