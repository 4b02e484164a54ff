"""Observed write rates (`UsageHistory`): running sums over a day, checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from quotapilot.forecasting.observed_rate import UsageHistory
from quotapilot.forecasting.planner import TIB
from quotapilot.forecasting.types import Dimension, Observation, TargetId

NOW = 1_767_225_600.0
RAW = TargetId("c1", "cosmos7-raw", "/cosmos7/raw")


class TestUsageHistory:
    """The observed rates the planner sizes with on a cold start: running sums, same answers as
    summing the window's increases sample by sample."""

    @staticmethod
    def brute_force(samples: list[tuple[float, int, int]], window: float) -> tuple[float, float]:
        last = samples[-1][0]
        kept = [s for s in samples if s[0] >= last - window]
        pairs = list(itertools.pairwise(kept))
        span = kept[-1][0] - kept[0][0]
        return (sum(max(0, b[1] - a[1]) for a, b in pairs) / span,
                sum(max(0, b[2] - a[2]) for a, b in pairs) / span)

    def test_running_sums_match_the_window_at_the_demo_interval(self) -> None:
        rng = random.Random(7)
        history = UsageHistory()  # resolution 300 s: 15-min samples are never merged
        samples: list[tuple[float, int, int]] = []
        used, files = 10 * TIB, 1000
        for i in range(400):  # four days of 15-minute polls, with nightly deletes
            used = max(0, used + rng.randint(-TIB // 2, TIB))
            files = max(0, files + rng.randint(-50, 100))
            samples.append((NOW + 900 * i, used, files))
            history.add(Observation(RAW, NOW + 900 * i, used, 100 * TIB, used_inodes=files))
            if i >= 1:
                rates = history.write_rates(RAW)
                expected = self.brute_force(samples, 86400.0)
                assert rates[Dimension.BYTES] == pytest.approx(expected[0], rel=1e-12)
                assert rates[Dimension.INODES] == pytest.approx(expected[1], rel=1e-12)
        (t0, b0, _), (t1, b1, _) = samples[-2:]
        assert history.latest_rates(RAW)[Dimension.BYTES] == max(0.0, (b1 - b0) / (t1 - t0))

    def test_frequent_samples_are_merged_without_losing_writes(self) -> None:
        history = UsageHistory()
        for i in range(3 * 1440):  # three days of 60 s polls writing 1 GB each
            history.add(Observation(RAW, NOW + 60 * i, i * 10**9, 100 * TIB))
        window = history._windows[RAW]
        assert len(window.entries) <= 300  # not 1,441
        span = window.entries[-1][0] - window.entries[0][0]
        assert 86400 - 360 <= span <= 86400
        assert history.write_rates(RAW)[Dimension.BYTES] == pytest.approx(10**9 / 60)
        assert Dimension.INODES not in history.write_rates(RAW)  # no inode counts observed
        assert history.latest_rates(RAW)[Dimension.BYTES] == pytest.approx(10**9 / 60)
