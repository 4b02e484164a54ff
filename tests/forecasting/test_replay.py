"""The replay engine: the real series model and planner over a trace, on the trace's own clock."""

from __future__ import annotations

import itertools
import math

import pytest

from quotapilot.forecasting.planner import REACTIVE_GROWTH_BYTES, GrowthPolicy
from quotapilot.forecasting.replay import (
    PolicyRun,
    ReplayError,
    ReplaySettings,
    TargetReplay,
    TargetTrace,
    combined_summary,
    replay_report,
    replay_target,
    simulator_by_path,
)

TIB = 2**40
T0 = 1_767_225_600.0
HOUR = 3600.0


def ramp(days: float, *, start_tib: float, tib_per_day: float, step: float = HOUR,
         diurnal: float = 0.5) -> tuple[list[float], list[int]]:
    """A growing usage with a day/night cycle in its write rate (the shape the model learns)."""
    n = int(days * 86400 / step)
    times = [T0 + i * step for i in range(n)]
    used, level = [], start_tib * TIB
    for t in times:
        used.append(int(level))
        phase = 2 * math.pi * ((t - T0) % 86400) / 86400
        level += tib_per_day * TIB * step / 86400 * (1 + diurnal * math.sin(phase))
    return times, used


@pytest.fixture(scope="module")
def result() -> TargetReplay:
    times, used = ramp(6, start_tib=10, tib_per_day=48)
    return replay_target(TargetTrace("raw", times, used, initial_hard_limit_bytes=16 * TIB))


class TestFastRamp:
    """A quota growing 2 TiB an hour on hourly samples: the baseline's +1 TiB cannot keep up."""

    def test_quotapilot_has_no_write_failures(self, result: TargetReplay) -> None:
        assert result.quotapilot.write_failures == 0
        assert result.quotapilot.growth_actions > 0

    def test_reactive_baseline_fails(self, result: TargetReplay) -> None:
        assert result.reactive.write_failures > 10
        used_at = dict(zip(result.reactive.times, result.reactive.used_bytes, strict=True))
        for growth in result.reactive.growths:  # +1 TiB; over the limit, the 1 TiB steps that clear usage
            over = max(0, used_at[growth.t] - growth.old_hard)
            assert growth.bytes_added == (over // REACTIVE_GROWTH_BYTES + 1) * REACTIVE_GROWTH_BYTES

    def test_limits_only_grow_and_growths_match_limit_changes(self, result: TargetReplay) -> None:
        limits = result.quotapilot.hard_limits
        assert all(b >= a for a, b in itertools.pairwise(limits))
        assert limits[-1] - limits[0] <= result.quotapilot.bytes_added
        assert result.quotapilot.bytes_added == sum(g.new_hard - g.old_hard for g in result.quotapilot.growths)

    def test_bands_recorded_once_the_model_is_fitted(self, result: TargetReplay) -> None:
        assert result.bands
        assert all(b.p10 <= b.p50 <= b.p90 for b in result.bands)
        assert all(b.at == b.t + GrowthPolicy().lead_time_seconds for b in result.bands)

    def test_deterministic(self, result: TargetReplay) -> None:
        times, used = ramp(6, start_tib=10, tib_per_day=48)
        again = replay_target(TargetTrace("raw", times, used, initial_hard_limit_bytes=16 * TIB))
        assert result.quotapilot.hard_limits == again.quotapilot.hard_limits
        assert result.reactive.hard_limits == again.reactive.hard_limits


class TestScoring:
    """A sample is scored against the limit in place before the policy acts on it."""

    def test_jump_over_the_limit_is_one_failure_then_grown(self) -> None:
        times = [T0 + i * HOUR for i in range(6)]
        used = [10 * TIB, 10 * TIB, 30 * TIB, 30 * TIB, 30 * TIB, 30 * TIB]
        result = replay_target(TargetTrace("q", times, used, initial_hard_limit_bytes=20 * TIB))
        assert result.quotapilot.write_failures == 1
        assert result.quotapilot.first_failure_at() == times[2]
        assert result.quotapilot.hard_limits[3] > 30 * TIB

    def test_usage_over_the_limit_grows_under_both_policies(self) -> None:
        """Usage 10 TiB over the limit (a recorded over-limit quota): each policy counts the
        failure and grows past usage at once. The baseline's +1 TiB alone stays below usage (VMS
        refuses it), so it was blocked at every sample and never grew: 6 failures of 6."""
        times = [T0 + i * HOUR for i in range(6)]
        used = [30 * TIB] * 6
        result = replay_target(TargetTrace("q", times, used, hard_limits=[20 * TIB] * 6))
        for run in (result.quotapilot, result.reactive):
            assert run.write_failures == 1
            assert run.growths[0].t == times[0]
            assert run.hard_limits[1] > 30 * TIB
        first = result.reactive.growths[0]
        assert (first.old_hard, first.new_hard) == (20 * TIB, 31 * TIB)  # whole 1 TiB steps past usage

    def test_reactive_moves_the_soft_limit_with_the_hard(self) -> None:
        times = [T0 + i * HOUR for i in range(4)]
        used = [19 * TIB] * 4
        trace = TargetTrace("q", times, used, initial_hard_limit_bytes=20 * TIB,
                            initial_soft_limit_bytes=18 * TIB)
        result = replay_target(trace)
        first = result.reactive.growths[0]
        assert (first.old_hard, first.new_hard) == (20 * TIB, 21 * TIB)
        assert result.reactive.hard_limits[1] == 21 * TIB

    def test_recorded_limits_give_near_misses(self) -> None:
        times = [T0 + i * HOUR for i in range(4)]
        used = [90, 96, 100, 101]
        result = replay_target(TargetTrace("q", times, used, hard_limits=[100, 100, 100, 200]))
        assert result.recorded is not None
        assert result.recorded.near_misses == 2  # 96 and 100 against 100 (101 against 200 is not)
        assert result.recorded.write_failures == 0
        assert result.recorded.growth_actions == 1

    def test_initial_limit_default_is_one_and_a_quarter_first_usage(self) -> None:
        trace = TargetTrace("q", [T0, T0 + HOUR], [8 * TIB, 8 * TIB])
        assert trace.starting_hard_limit() == 10 * TIB
        assert replay_target(trace).quotapilot.hard_limits[0] == 10 * TIB

    def test_policy_is_the_one_given(self) -> None:
        times, used = ramp(4, start_tib=10, tib_per_day=10)
        big_steps = GrowthPolicy(step_bytes=50 * TIB, min_growth_bytes=50 * TIB)
        result = replay_target(TargetTrace("q", times, used, initial_hard_limit_bytes=12 * TIB),
                               ReplaySettings(policy=big_steps))
        assert result.quotapilot.growths
        assert all(g.bytes_added >= 50 * TIB for g in result.quotapilot.growths)
        default = replay_target(TargetTrace("q", times, used, initial_hard_limit_bytes=12 * TIB))
        assert any(g.bytes_added < 50 * TIB for g in default.quotapilot.growths)


class TestBadTraces:
    @pytest.mark.parametrize(("trace", "problem"), [
        (TargetTrace("a", [T0], [1]), "at least 2 samples"),
        (TargetTrace("b", [T0, T0], [1, 2]), "timestamps must increase"),
        (TargetTrace("c", [T0, T0 + 1], [1, -2]), "negative"),
        (TargetTrace("d", [T0, T0 + 1], [1, 2], hard_limits=[1]), "different lengths"),
        (TargetTrace("e", [T0, T0 + 1], [0, 0]), "initial hard limit"),
    ])
    def test_rejected_with_the_target_named(self, trace: TargetTrace, problem: str) -> None:
        with pytest.raises(ReplayError, match=problem) as info:
            replay_target(trace)
        assert str(info.value).startswith(trace.name + ":")


class TestFromSamples:
    """`TargetTrace.from_samples`: the one reading of missing limits that `replay --csv` and
    `replay --prometheus` share."""

    def test_a_missing_limit_is_the_one_before_and_zero_is_a_value(self) -> None:
        trace = TargetTrace.from_samples("q", [T0 + i for i in range(6)], [1] * 6, [None, 5, None, 0, None, 7],
                                         initial_limit=9)
        assert (trace.hard_limits, trace.initial_hard_limit_bytes) == ([None, 5, 5, 0, 0, 7], 9)

    @pytest.mark.parametrize(("hards", "expected"), [
        ([5, None], ([5, 5], None)), ([0, 5], ([0, 5], 9)), ([None, None], (None, 9))])
    def test_the_initial_limit_only_where_the_first_sample_has_none(
            self, hards: list[int | None], expected: tuple[list[int] | None, int | None]) -> None:
        trace = TargetTrace.from_samples("q", [T0, T0 + 1], [1, 1], hards, initial_limit=9)
        assert expected == (trace.hard_limits, trace.initial_hard_limit_bytes)


class TestTotals:
    def test_mean_utilization_is_capacity_weighted_per_time(self) -> None:
        a = PolicyRun((1.0, 2.0), (50, 50), (100, 100))
        b = PolicyRun((1.0, 2.0), (10, 290), (300, 300))
        totals = combined_summary([a, b])
        # t=1: 60/400, t=2: 340/400
        assert pytest.approx((60 / 400 + 340 / 400) / 2, abs=1e-4) == totals["mean_utilization"]
        assert pytest.approx(290 / 300, abs=1e-4) == totals["peak_utilization"]

    def test_report_shape(self) -> None:
        times, used = ramp(3, start_tib=10, tib_per_day=5)
        report = replay_report([replay_target(TargetTrace("x", times, used))])
        for part in (report["quotapilot"], report["reactive"],
                     report["targets"]["x"]["quotapilot"], report["targets"]["x"]["reactive"]):  # type: ignore[index]
            assert {"write_failures", "growth_actions", "bytes_added", "mean_utilization",
                    "peak_utilization"} <= set(part)


class TestSimulatorByPath:
    """`demo --json` `by_path`: the replay's figures per view, from the simulator's ground truth."""

    def test_raises_counted_from_the_limit_history(self) -> None:
        truth = {
            "limits_over_time": {"/a": [(0.0, 10), (5.0, 15), (9.0, 25)], "/b": [(0.0, 7)],
                                 "/c": [(0.0, 5), (3.0, None), (4.0, 8)]},
            "write_failures_by_path": {"/a": 0, "/b": 3},
            "mean_utilization_by_path": {"/a": 0.512345, "/b": 0.9},
            "peak_utilization_by_path": {"/a": 0.8, "/b": 1.2},
        }
        by_path = simulator_by_path(truth)
        assert by_path["/a"] == {"write_failures": 0, "growth_actions": 2, "bytes_added": 15,
                                 "mean_utilization": 0.5123, "peak_utilization": 0.8}
        assert by_path["/b"]["growth_actions"] == 0
        assert by_path["/b"]["write_failures"] == 3
        assert by_path["/c"]["growth_actions"] == 0  # a deleted and re-created quota is not a growth
