"""Grace-period forms, and reasons in words people read (review of 2026-12-05's change: each test failed
first on that change)."""

from __future__ import annotations

import math

import pytest

from quotapilot.forecasting.planner import TIB, GrowthPolicy, SeriesState, TargetInput, decide, grace_binds
from quotapilot.forecasting.types import (
    DecisionKind,
    Dimension,
    Forecast,
    Observation,
    SeriesForecast,
    TargetId,
)
from quotapilot.forecasting.words import format_bytes

NOW = 1_767_225_600.0
HOUR = 3600.0
RAW = TargetId("c1", "cosmos7-raw", "/cosmos7/raw")


def linear(used: float, rate_per_hour: float, hours: int = 14 * 24) -> SeriesForecast:
    times = tuple(NOW + (i + 1) * HOUR for i in range(hours))
    p50 = tuple(used + rate_per_hour * (i + 1) for i in range(hours))
    p90 = tuple(v + 0.05 * rate_per_hour * (i + 1) for i, v in enumerate(p50))
    p10 = tuple(v - 0.05 * rate_per_hour * (i + 1) for i, v in enumerate(p50))
    fc = Forecast(t0=NOW, step_seconds=HOUR, times=times, p10=p10, p50=p50, p90=p90, model="test")
    return SeriesForecast(target=RAW, dimension=Dimension.BYTES, t=NOW, limit=None, forecast=fc,
                          rate_per_second=rate_per_hour / HOUR)


# ------------------------------------------------------------------------ grace period formats
@pytest.mark.parametrize("grace", ["00:00:00", "0 00:00:00", "0:00"])
def test_a_zero_grace_period_in_the_vms_duration_format_does_not_bind(grace: str) -> None:
    """vms-openapi.json documents `grace_period` as "[DD] [HH:[MM:]]ss" (user/group quotas, and
    Django's DurationField renders a quota's that way): a zero period in that form is "no grace
    period", a warning-only soft limit. `grace_binds` falls to its "unknown form binds" branch
    (float("00:00:00") raises), so a quota whose soft limit only warns grows at the soft limit."""
    assert grace_binds(grace) is False
    obs = Observation(target=RAW, t=NOW, used_bytes=10 * TIB, hard_limit_bytes=100 * TIB,
                      soft_limit_bytes=50 * TIB, grace_period=grace)
    [side] = TargetInput(observation=obs).series()
    assert side.binding_soft is None


# ------------------------------------------------------------------------ reasons that mislead
def test_a_growth_sized_under_a_binding_soft_limit_does_not_say_it_was_sized_for_the_target() -> None:
    """With a binding soft limit at 50 % the growth is sized for 0.50 (the soft limit holds the
    peak: new_soft == peak), but the reason still reads "sized for 0.70 over the horizon"."""
    state = SeriesState(target=RAW, dimension=Dimension.BYTES, t=NOW, used=55 * TIB, hard=100 * TIB,
                        soft=50 * TIB, forecast=linear(55 * TIB, TIB / 24), soft_binding=True)
    decision = decide(state, GrowthPolicy(), NOW)
    assert decision.kind is DecisionKind.GROW
    assert decision.new_hard is not None and math.isclose(decision.new_hard, 125 * TIB)  # sized for 0.50
    assert "sized for 0.70" not in decision.reason, decision.reason


@pytest.mark.parametrize("amount", [1000 * 2**30, 1023 * 2**40, int(1023.9 * 1024)])
def test_amounts_in_reasons_never_read_in_scientific_notation(amount: int) -> None:
    """`format_bytes` ('.3g') prints 999.5-1023.x of a unit as '1e+03 GiB' / '1.02e+03 TiB'; the
    change made it the wording of every reason ("needs 1e+03 TiB", "at max_hard_limit 1.02e+03 TiB")."""
    assert "e+" not in format_bytes(amount), format_bytes(amount)


def test_the_max_hard_limit_reason_reads_as_a_number_people_read() -> None:
    state = SeriesState(target=RAW, dimension=Dimension.BYTES, t=NOW, used=900 * TIB, hard=1000 * TIB,
                        forecast=linear(900 * TIB, TIB))
    decision = decide(state, GrowthPolicy(max_hard_limit_bytes=1000 * TIB), NOW)
    assert decision.kind is DecisionKind.BLOCKED and decision.guard == "max_hard_limit"
    assert "e+" not in decision.reason, decision.reason
