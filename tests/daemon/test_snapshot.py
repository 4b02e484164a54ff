"""How one cycle moves a cluster's part of the snapshot: new values replace old, missing ones
are kept, refused samples keep the last good observation flagged, vanished quotas go."""

from __future__ import annotations

from quotapilot.daemon.runtime.cycle import CycleContext, DroppedSample, PollResult
from quotapilot.daemon.runtime.snapshot import ClusterState, HistogramState, PollHealth, apply_cycle
from quotapilot.forecasting.types import (
    ActionOutcome,
    ActionStatus,
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
    TargetKind,
)

RAW = TargetId("c", "raw", "/raw")
TEMP = TargetId("c", "temp", "/temp")
POOL = TargetId("c", "pool", "/", TargetKind.POOL)


def cycle(t: float, *observations: Observation, dropped: tuple[DroppedSample, ...] = (),
          error: str | None = None, rates: dict[str, float] | None = None) -> CycleContext:
    capacity = None if error else ClusterCapacity("c", t, 1000, 400, 600)
    return CycleContext(PollResult("c", t, observations=observations, capacity=capacity, dropped=dropped,
                                   error=error, duration_seconds=0.3, ingest_rates=rates or {}), now=t)


def obs(target: TargetId, t: float, used: int) -> Observation:
    return Observation(target, t, used, 100)


def step(previous: ClusterState, ctx: CycleContext) -> ClusterState:
    return apply_cycle(previous, ctx, health=PollHealth(last_success_t=ctx.now), samples_dropped_total={},
                       poll_errors_total={}, requests_total=3, listings_unsettled_total=1)


class TestApplyCycle:
    def test_observations_rates_and_what_stages_added(self) -> None:
        ctx = cycle(60, obs(RAW, 60, 10), obs(TEMP, 60, 5), obs(POOL, 60, 400), rates={"raw": 2.0})
        forecast = SeriesForecast(RAW, Dimension.BYTES, 60, 100, None, reason="cold start")
        decision = Decision(RAW, Dimension.BYTES, DecisionKind.NONE, "fine", 60)
        action = ActionOutcome(RAW, Dimension.BYTES, ActionStatus.WOULD_GROW, 60, "observe")
        ctx.forecasts[(RAW, Dimension.BYTES)] = forecast
        ctx.decisions.append(decision)
        ctx.actions.append(action)
        state = step(ClusterState("c"), ctx)
        raw = state.targets["raw"]
        assert (raw.observation, raw.ingest_rate_bytes_per_second) == (obs(RAW, 60, 10), 2.0)
        assert ({Dimension.BYTES: forecast}, {Dimension.BYTES: decision}) == (dict(raw.forecasts),
                                                                              dict(raw.decisions))
        assert raw.last_action == action
        assert {"raw", "temp"} == set(state.targets)
        assert state.pool is not None and state.pool.observation.used_bytes == 400  # type: ignore[union-attr]
        assert (state.poll_duration.count, state.requests_total, state.listings_unsettled_total) == (1, 3, 1)

        later = step(state, cycle(120, obs(RAW, 120, 12), obs(TEMP, 120, 6), rates={"raw": 2.0 / 60}))
        raw = later.targets["raw"]
        assert raw.observation.used_bytes == 12  # type: ignore[union-attr]
        assert {Dimension.BYTES: forecast} == dict(raw.forecasts)  # kept: no new forecast this cycle
        assert raw.last_action == action
        assert later.targets["temp"].ingest_rate_bytes_per_second is None

    def test_refused_sample_keeps_the_last_good_one_flagged(self) -> None:
        state = step(ClusterState("c"), cycle(60, obs(RAW, 60, 10), obs(TEMP, 60, 5)))
        drop = DroppedSample("c", "temp", "went_backwards", "5 -> 0")
        state = step(state, cycle(120, obs(RAW, 120, 11), dropped=(drop,)))
        temp = state.targets["temp"]
        assert temp.dropped == drop and temp.observation == obs(TEMP, 60, 5)
        assert temp.data_age_seconds(120) == 60
        state = step(state, cycle(180, obs(RAW, 180, 12), obs(TEMP, 180, 0)))
        assert state.targets["temp"].dropped is None

    def test_vanished_quota_goes_failed_poll_keeps_everything(self) -> None:
        state = step(ClusterState("c"), cycle(60, obs(RAW, 60, 10), obs(TEMP, 60, 5)))
        state = step(state, cycle(120, obs(RAW, 120, 11)))
        assert {"raw"} == set(state.targets)
        failed = step(state, cycle(180, error="connection: refused"))
        assert failed.targets is state.targets and failed.capacity == state.capacity
        assert failed.poll_duration.count == 3


class TestHistogramState:
    def test_buckets_are_cumulative(self) -> None:
        histogram = HistogramState().observe(0.01).observe(0.3).observe(500)
        buckets = dict(histogram.cumulative())
        assert (buckets["0.05"], buckets["0.1"], buckets["0.5"], buckets["+Inf"]) == (1, 1, 2, 3)
        assert histogram.count == 3 and histogram.total == 500.31
