"""Spikes clipped out of a rate history, level shifts kept (forecasting/hw/robust.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quotapilot.forecasting.hw.robust import SPIKE_WINDOW, clip_spikes


def noisy_day(hours: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = np.arange(hours)
    return 1000.0 * (1 + 0.3 * np.sin(2 * np.pi * h / 24)) + 20.0 * rng.normal(size=hours)


class TestClipSpikes:
    """A spike is clipped towards its neighbours; a level that lasts is not."""

    def test_a_spike_is_clipped_to_near_its_neighbours(self) -> None:
        rates = noisy_day(72)
        rates[30] = 1e6
        clipped = clip_spikes(rates)
        assert abs(clipped[30] - np.median(rates[27:34])) < 400.0
        np.testing.assert_array_equal(np.delete(clipped, 30), np.delete(rates, 30))

    def test_a_level_shift_is_kept(self) -> None:
        rates = noisy_day(96)
        rates[48:] *= 3.0
        clipped = clip_spikes(rates)
        changed = np.nonzero(clipped != rates)[0]
        assert all(abs(int(i) - 48) <= 1 for i in changed)  # at most the steps either side of the step
        np.testing.assert_array_equal(clipped[52:], rates[52:])

    def test_noise_is_left_alone(self) -> None:
        rates = noisy_day(24 * 7, seed=3)
        np.testing.assert_array_equal(clip_spikes(rates), rates)

    @settings(max_examples=60, deadline=None)
    @given(arrays(np.float64, st.integers(0, 200), elements=st.floats(-1e12, 1e12)))
    def test_clipping_stays_within_the_data_and_keeps_the_ends(self, rates: np.ndarray) -> None:
        clipped = clip_spikes(rates)
        assert clipped.shape == rates.shape
        if len(rates):
            assert clipped.min() >= rates.min() and clipped.max() <= rates.max()
        half = SPIKE_WINDOW // 2
        if len(rates) >= SPIKE_WINDOW:
            np.testing.assert_array_equal(clipped[-half:], rates[-half:])

    def test_a_jump_that_recurs_daily_is_the_season_not_a_spike(self) -> None:
        """A nightly cleanup (a large negative hour every day) is kept: clipping it would forecast
        the writes without the deletes."""
        rates = noisy_day(24 * 5)
        rates[2::24] = -20_000.0
        np.testing.assert_array_equal(clip_spikes(rates, (24,)), rates)
        assert (clip_spikes(rates)[2::24][1:-1] > -20_000.0).all()  # without the period: clipped


class TestSpikesAndTheBand:
    """A one-off spike does not widen the week-ahead band (the growth is sized from its p90):
    cosmos7's 2-hour bursts had lowered the demo's mean utilization from 0.638 to 0.625."""

    def test_a_few_spikes_leave_the_week_ahead_band_as_it_was(self) -> None:
        from quotapilot.forecasting.hw import fit_rates

        rates = noisy_day(22 * 24, seed=3)  # three weeks: each weekly phase seen thrice
        spiky = rates.copy()
        spiky[[100, 200, 300]] *= 30.0
        week = 7 * 24 - 1
        calm, spiked = (fit_rates(r, step_seconds=3600.0, horizon_steps=7 * 24) for r in (rates, spiky))
        assert calm is not None and spiked is not None
        assert spiked.band_high[week] < 1.5 * calm.band_high[week]
