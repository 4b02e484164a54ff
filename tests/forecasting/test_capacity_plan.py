"""Pool capacity planning: threshold dates with a band, order-by date, order size, cost."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotapilot.forecasting.capacity import (
    DAY,
    TB,
    CapacityPolicy,
    GrowthRecommendation,
    extended_paths,
    filesystem_growth,
    plan_pool,
    quota_headroom,
)
from quotapilot.forecasting.types import Forecast, StepTimes

T0 = 1_767_571_200.0
HOUR = 3600.0


def linear_forecast(*, used: float, rates: tuple[float, float, float], horizon_days: float = 14.0,
                    t0: float = T0) -> Forecast:
    """Straight paths from `used` at the per-second `rates` (p10, p50, p90), hourly for the horizon."""
    n = int(horizon_days * 24)
    times = StepTimes(t0, HOUR, n)
    p10, p50, p90 = ([used + rate * HOUR * k for k in range(1, n + 1)] for rate in rates)
    return Forecast(t0=t0, step_seconds=HOUR, times=times, p10=p10, p50=p50, p90=p90, model="test")


class TestThresholdDates:
    """Each planning threshold gets a date per quantile path, within the plan horizon."""

    def test_dates_inside_the_forecast_are_the_exact_crossings(self) -> None:
        # 1000 TB usable, 700 TB used, +10/20/40 TB a day: 0.8 (800 TB) is 100 TB away
        usable, used = 1000 * TB, 700 * TB
        forecast = linear_forecast(used=used, rates=(10 * TB / DAY, 20 * TB / DAY, 40 * TB / DAY))
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=usable, used_bytes=used,
                         forecast=forecast, policy=CapacityPolicy())
        at80 = plan.threshold(0.8)
        assert at80 is not None
        assert at80.p90 == pytest.approx(T0 + 2.5 * DAY)
        assert at80.p50 == pytest.approx(T0 + 5 * DAY)
        assert at80.p10 == pytest.approx(T0 + 10 * DAY)

    def test_dates_beyond_the_forecast_come_from_the_extended_paths(self) -> None:
        # 0.9 (900 TB) is 200 TB away: 20 days at p50, past the 14-day forecast
        usable, used = 1000 * TB, 700 * TB
        forecast = linear_forecast(used=used, rates=(10 * TB / DAY, 10 * TB / DAY, 10 * TB / DAY))
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=usable, used_bytes=used,
                         forecast=forecast, policy=CapacityPolicy())
        at90 = plan.threshold(0.9)
        assert at90 is not None and at90.p50 is not None
        assert at90.p50 == pytest.approx(T0 + 20 * DAY, abs=HOUR)

    def test_beyond_the_plan_horizon_is_none(self) -> None:
        usable, used = 1000 * TB, 100 * TB
        forecast = linear_forecast(used=used, rates=(0.0, 1 * TB / DAY, 1 * TB / DAY))
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=usable, used_bytes=used,
                         forecast=forecast, policy=CapacityPolicy(plan_horizon_seconds=365 * DAY))
        assert [w.p50 for w in plan.thresholds] == [None, None]  # 700 TB away at 1 TB/day
        assert plan.horizon_end == T0 + 365 * DAY

    def test_already_above_is_now(self) -> None:
        forecast = linear_forecast(used=850 * TB, rates=(0.0, 0.0, 0.0))
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=850 * TB,
                         forecast=forecast, policy=CapacityPolicy())
        at80 = plan.threshold(0.8)
        assert at80 is not None and (at80.p10, at80.p50, at80.p90) == (T0, T0, T0)


class TestOrder:
    """The order-by date and the capacity to order."""

    def test_order_by_is_the_pessimistic_date_minus_the_lead_time(self) -> None:
        usable, used = 1000 * TB, 500 * TB
        forecast = linear_forecast(used=used, rates=(2 * TB / DAY, 3 * TB / DAY, 5 * TB / DAY))
        policy = CapacityPolicy(procurement_lead_time_seconds=56 * DAY)
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=usable, used_bytes=used,
                         forecast=forecast, policy=policy)
        at80 = plan.threshold(0.8)
        assert at80 is not None and at80.p90 is not None
        assert at80.p90 == pytest.approx(T0 + 60 * DAY, abs=HOUR)  # 300 TB at 5 TB/day
        assert plan.order_by == pytest.approx(at80.p90 - 56 * DAY)

    def test_no_lead_time_no_order_by(self) -> None:
        forecast = linear_forecast(used=500 * TB, rates=(5 * TB / DAY,) * 3)
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=500 * TB,
                         forecast=forecast, policy=CapacityPolicy())
        assert plan.order_by is None

    def test_order_bytes_keep_the_median_path_at_the_order_threshold_for_the_horizon(self) -> None:
        # p50 +2 TB/day for 365 days: 500 + 730 = 1230 TB; at 0.8 that needs 1537.5 TB usable
        forecast = linear_forecast(used=500 * TB, rates=(1 * TB / DAY, 2 * TB / DAY, 4 * TB / DAY))
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=500 * TB,
                         forecast=forecast, policy=CapacityPolicy(), drr=1.5)
        assert plan.order_bytes is not None
        assert plan.order_bytes == pytest.approx(537.5 * TB, rel=1e-3)
        assert plan.order_logical_bytes == math.ceil(plan.order_bytes * 1.5)

    def test_enough_capacity_orders_nothing(self) -> None:
        forecast = linear_forecast(used=100 * TB, rates=(0.0, 0.0, 0.0))
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=100 * TB,
                         forecast=forecast, policy=CapacityPolicy())
        assert plan.order_bytes == 0

    def test_without_a_forecast_nothing_is_sized(self) -> None:
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=100 * TB,
                         forecast=None, policy=CapacityPolicy(procurement_lead_time_seconds=DAY))
        assert (plan.order_bytes, plan.order_by) == (None, None)
        assert [w.p50 for w in plan.thresholds] == [None, None]


class TestCost:
    """Prices per decimal TB, once and per month, for the expansion and the quota headroom."""

    def test_cost_of_expansion_and_headroom(self) -> None:
        forecast = linear_forecast(used=500 * TB, rates=(2 * TB / DAY,) * 3)
        policy = CapacityPolicy(price_per_tb=100.0, price_per_tb_month=5.0)
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=500 * TB,
                         forecast=forecast, policy=policy, drr=2.0, headroom_bytes=40 * TB)
        assert plan.cost is not None and plan.order_bytes is not None
        assert plan.cost.expansion == pytest.approx(plan.order_bytes / TB * 100.0, abs=0.01)
        assert plan.cost.expansion_per_month == pytest.approx(plan.order_bytes / TB * 5.0, abs=0.01)
        # 40 TB logical headroom at DRR 2 occupies 20 TB usable
        assert (plan.cost.headroom, plan.cost.headroom_per_month) == (2000.0, 100.0)

    def test_no_price_no_cost(self) -> None:
        forecast = linear_forecast(used=500 * TB, rates=(2 * TB / DAY,) * 3)
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=500 * TB,
                         forecast=forecast, policy=CapacityPolicy())
        assert plan.cost is None

    def test_quota_headroom_ignores_overfull_and_unlimited_quotas(self) -> None:
        assert quota_headroom([(10, 30), (50, 40), (5, None)]) == 20


class TestPolicy:
    def test_thresholds_must_be_ratios(self) -> None:
        with pytest.raises(ValueError, match="thresholds"):
            CapacityPolicy(thresholds=(0.8, 1.2))


class TestExtension:
    """The extended paths keep their order and never fall."""

    @given(rates=st.tuples(*(st.floats(0, 1e9) for _ in range(3))),
           extra_days=st.floats(1, 700))
    def test_extension_keeps_the_band_ordered_and_rising(self, rates: tuple[float, float, float],
                                                          extra_days: float) -> None:
        low, mid, high = sorted(rates)
        forecast = linear_forecast(used=1e12, rates=(low, mid, high), horizon_days=3)
        until = T0 + 3 * DAY + extra_days * DAY
        times, paths = extended_paths(forecast, current_used=1e12, until=until)
        assert float(times[-1]) >= until
        assert (paths["p10"] <= paths["p50"]).all() and (paths["p50"] <= paths["p90"]).all()
        for q in ("p10", "p50", "p90"):
            assert (paths[q][1:] >= paths[q][:-1] - 1e-3).all()

    def test_a_steeper_low_path_does_not_drag_the_median_date_onto_it(self) -> None:
        """A p10 path that closes in on the median over the forecast (a band narrowing towards its
        end) must not be carried on at its own, steeper slope: within days it would pass the
        median, which would then be lifted onto it, and the median's date would be the p10 date."""
        n = 14 * 24
        times = StepTimes(T0, HOUR, n)
        used = 100 * TB
        p50 = [used + 10 * TB / DAY * HOUR * k for k in range(1, n + 1)]
        p90 = [used + 20 * TB / DAY * HOUR * k for k in range(1, n + 1)]
        gap = [30 * TB * (1 - 0.9 * k / n) for k in range(1, n + 1)]  # 30 TB below at first, 3 TB by day 14
        p10 = [m - g for m, g in zip(p50, gap, strict=True)]
        forecast = Forecast(t0=T0, step_seconds=HOUR, times=times, p10=p10, p50=p50, p90=p90, model="test")
        plan = plan_pool(name="c", kind="cluster", now=T0, usable_bytes=10_000 * TB, used_bytes=int(used),
                         forecast=forecast, policy=CapacityPolicy(plan_horizon_seconds=3 * 365 * DAY))
        at80 = plan.threshold(0.8)
        assert at80 is not None and at80.p50 is not None and at80.p10 is not None and at80.p90 is not None
        assert at80.p50 == pytest.approx(T0 + 790 * DAY, abs=DAY)   # 7.9 PB at the median's 10 TB a day
        assert at80.p90 < at80.p50 < at80.p10
        _, paths = extended_paths(forecast, current_used=used, until=T0 + 800 * DAY)
        assert (paths["p10"] < paths["p50"]).all() or (paths["p10"][1:] < paths["p50"][1:]).all()


TIB = 2**40


class TestFilesystemGrowthBounds:
    """A filesystem's growth obeys `max_growth_bytes` and `max_hard_limit_bytes` as a quota's does
    (`planner.decide`): capped, it still grows and says so; at the ceiling it is blocked with the
    planner's guard name `max_hard_limit`."""

    @staticmethod
    def grow(*, used: int, size: int, max_growth: int = 500 * TIB,
             ceiling: int = 2**53) -> GrowthRecommendation | None:
        return filesystem_growth(used_bytes=used, size_bytes=size, forecast=None, now=T0, grow_at=0.75,
                                 target_utilization=0.70, lead_time_seconds=DAY, horizon_seconds=7 * DAY,
                                 step_bytes=TIB, min_growth_bytes=TIB, max_growth_bytes=max_growth,
                                 max_hard_limit_bytes=ceiling)

    def test_uncapped(self) -> None:
        found = self.grow(used=80 * TIB, size=100 * TIB)   # 80 / 0.7 = 114.3 → +15 TiB
        assert found is not None
        assert (found.grow_bytes, found.new_size_bytes, found.guard) == (15 * TIB, 115 * TIB, None)
        assert "capped" not in found.reason

    def test_max_growth_caps_each_action(self) -> None:
        found = self.grow(used=80 * TIB, size=100 * TIB, max_growth=2 * TIB)
        assert found is not None
        assert (found.grow_bytes, found.new_size_bytes, found.wanted_size_bytes) == (2 * TIB, 102 * TIB, 115 * TIB)
        assert "capped" in found.reason and found.guard is None

    def test_the_ceiling_caps_the_new_size(self) -> None:
        found = self.grow(used=80 * TIB, size=100 * TIB, ceiling=101 * TIB)
        assert found is not None
        assert (found.grow_bytes, found.new_size_bytes, found.guard) == (TIB, 101 * TIB, None)

    @pytest.mark.parametrize("ceiling", [100 * TIB, 90 * TIB])
    def test_at_or_above_the_ceiling_is_blocked(self, ceiling: int) -> None:
        found = self.grow(used=80 * TIB, size=100 * TIB, ceiling=ceiling)
        assert found is not None
        assert (found.grow_bytes, found.new_size_bytes, found.guard) == (0, 100 * TIB, "max_hard_limit")

    @given(used=st.integers(0, 10**15), size=st.integers(1, 10**15), max_growth=st.integers(1, 10**15),
           ceiling=st.integers(1, 2 * 10**15))
    def test_never_beyond_either_bound(self, used: int, size: int, max_growth: int, ceiling: int) -> None:
        found = self.grow(used=used, size=size, max_growth=max_growth, ceiling=ceiling)
        if found is None:
            return
        assert 0 <= found.grow_bytes <= max_growth
        assert found.new_size_bytes == size + found.grow_bytes
        assert found.new_size_bytes <= max(size, ceiling)
        assert (found.guard == "max_hard_limit") == (found.grow_bytes == 0)
