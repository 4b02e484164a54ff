"""The growth planner: trigger, sizing, guards, and its invariants (hypothesis)."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.daemon.settings import PolicyRules, Settings
from quotapilot.forecasting.planner import (
    TIB,
    CycleInput,
    GrowthPolicy,
    SeriesState,
    TargetInput,
    decide,
    grace_binds,
    net_of_overcommit,
    plan_cycle,
    plan_reactive_cycle,
)
from quotapilot.forecasting.types import (
    ClusterCapacity,
    Decision,
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
DAY = 86400.0
RAW = TargetId("c1", "cosmos7-raw", "/cosmos7/raw")


def linear_forecast(target: TargetId, used: float, rate_per_hour: float, band: float = 0.05,
                    hours: int = 14 * 24) -> SeriesForecast:
    """A straight-line forecast from `used` at NOW, p90 `band` above p50 (relative growth)."""
    times = tuple(NOW + (i + 1) * HOUR for i in range(hours))
    p50 = tuple(used + rate_per_hour * (i + 1) for i in range(hours))
    p90 = tuple(v + band * rate_per_hour * (i + 1) for i, v in enumerate(p50))
    p10 = tuple(v - band * rate_per_hour * (i + 1) for i, v in enumerate(p50))
    fc = Forecast(t0=NOW, step_seconds=HOUR, times=times, p10=p10, p50=p50, p90=p90, model="test")
    return SeriesForecast(target=target, dimension=Dimension.BYTES, t=NOW, limit=None, forecast=fc,
                          rate_per_second=rate_per_hour / HOUR)


def series(used: int, hard: int, rate_per_hour: float | None = None, **kw: object) -> SeriesState:
    forecast = linear_forecast(RAW, used, rate_per_hour) if rate_per_hour is not None else None
    return SeriesState(target=RAW, dimension=Dimension.BYTES, t=NOW, used=used, hard=hard,
                       soft=int(hard * 0.9), forecast=forecast, **kw)  # type: ignore[arg-type]


def quota(name: str, used: int, hard: int, t: float = NOW) -> Observation:
    return Observation(target=TargetId("c1", name, f"/{name}"), t=t, used_bytes=used,
                       hard_limit_bytes=hard, soft_limit_bytes=int(hard * 0.9))


def capacity(free: int, usable: int = 10_000 * TIB) -> ClusterCapacity:
    return ClusterCapacity(cluster="c1", t=NOW, usable_bytes=usable, used_bytes=usable - free, free_bytes=free)


class TestDecide:
    """One series: trigger and size."""

    def test_quiet_series_does_nothing(self) -> None:
        decision = decide(series(40 * TIB, 100 * TIB, rate_per_hour=0.01 * TIB), GrowthPolicy(), NOW)
        assert decision.kind == DecisionKind.NONE

    def test_upper_band_crossing_within_lead_time_grows(self) -> None:
        # 60 % now, +1 TiB/h: p90 reaches 75 % of 100 TiB in ~14 h < 24 h lead time
        decision = decide(series(60 * TIB, 100 * TIB, rate_per_hour=1 * TIB), GrowthPolicy(), NOW)
        assert decision.kind == DecisionKind.GROW
        assert decision.new_hard is not None and decision.new_soft is not None
        # sized so p90 at now + 7 d (60 + 168*1.05 ≈ 236 TiB) stays under 70 %
        assert decision.new_hard == 338 * TIB
        assert decision.new_soft == int(decision.new_hard * 0.9) or abs(decision.new_soft / decision.new_hard
                                                                         - 0.9) < 1e-9
        assert decision.urgency_seconds is not None and decision.urgency_seconds < 48 * HOUR

    def test_crossing_beyond_lead_time_waits(self) -> None:
        decision = decide(series(60 * TIB, 100 * TIB, rate_per_hour=0.3 * TIB), GrowthPolicy(), NOW)
        assert decision.kind == DecisionKind.NONE

    def test_at_grow_at_already_grows_even_if_flat(self) -> None:
        decision = decide(series(80 * TIB, 100 * TIB, rate_per_hour=0.0), GrowthPolicy(), NOW)
        assert decision.kind == DecisionKind.GROW
        assert decision.new_hard is not None and decision.new_hard >= 80 * TIB / 0.70

    def test_cold_start_is_reactive_from_observed_rate(self) -> None:
        policy = GrowthPolicy()
        below = decide(series(70 * TIB, 100 * TIB, recent_rate_per_second=TIB / HOUR), policy, NOW)
        assert below.kind == DecisionKind.NONE
        at = decide(series(76 * TIB, 100 * TIB, recent_rate_per_second=TIB / HOUR), policy, NOW)
        assert at.kind == DecisionKind.GROW
        assert "reactive" in at.reason
        assert at.new_hard == 349 * TIB  # (76 + 168) / 0.7 = 348.6 → 349

    def test_growth_is_capped_by_max_growth_and_max_hard(self) -> None:
        policy = GrowthPolicy(max_growth_bytes=50 * TIB, max_hard_limit_bytes=130 * TIB)
        decision = decide(series(60 * TIB, 100 * TIB, rate_per_hour=1 * TIB), policy, NOW)
        assert decision.new_hard == 130 * TIB
        at_ceiling = decide(series(90 * TIB, 130 * TIB, rate_per_hour=1 * TIB), policy, NOW)
        assert at_ceiling.kind == DecisionKind.BLOCKED
        assert at_ceiling.guard == "max_hard_limit"

    def test_reservations_count_as_demand(self) -> None:
        without = decide(series(50 * TIB, 100 * TIB, rate_per_hour=0.0), GrowthPolicy(), NOW)
        with_reservation = decide(series(50 * TIB, 100 * TIB, rate_per_hour=0.0, reserved=30 * TIB),
                                  GrowthPolicy(), NOW)
        assert without.kind == DecisionKind.NONE
        assert with_reservation.kind == DecisionKind.GROW

    def test_forecast_thrown_up_by_a_burst_is_capped_by_the_observed_rate(self) -> None:
        # forecast: +1 TiB/h; observed over the last day: 0.1 TiB/h → size with at most 2 x 0.1 TiB/h
        capped = decide(series(60 * TIB, 100 * TIB, rate_per_hour=1 * TIB, recent_rate_per_second=0.1 * TIB / HOUR),
                        GrowthPolicy(), NOW)
        assert capped.kind == DecisionKind.GROW
        assert capped.new_hard == 134 * TIB  # (60 + 2 * 0.1 * 168) / 0.7 = 133.7 → 134
        assert "capped by the observed rate" in capped.reason
        uncapped = decide(series(60 * TIB, 100 * TIB, rate_per_hour=1 * TIB, recent_rate_per_second=0.1 * TIB / HOUR),
                          GrowthPolicy(max_forecast_rate_ratio=0), NOW)
        assert uncapped.new_hard == 338 * TIB

    def test_rate_cap_is_a_policy_rule_set_globally_and_per_target(self) -> None:
        policy = Settings(policy={"max_forecast_rate_ratio": 3.0,  # type: ignore[arg-type]
                                  "overrides": [{"match": "/cosmos7/raw", "max_forecast_rate_ratio": 0}]}).policy
        assert PolicyRules().max_forecast_rate_ratio == GrowthPolicy().max_forecast_rate_ratio == 2.0
        assert GrowthPolicy.from_fields(policy.rules_for("other", "/other")).max_forecast_rate_ratio == 3.0
        raw = GrowthPolicy.from_fields(policy.rules_for(RAW.name, RAW.path))
        assert raw.max_forecast_rate_ratio == 0
        uncapped = decide(series(60 * TIB, 100 * TIB, rate_per_hour=1 * TIB,
                                 recent_rate_per_second=0.1 * TIB / HOUR), raw, NOW)
        assert uncapped.new_hard == 338 * TIB

    def test_oversized_quota_is_a_shrink_candidate_never_a_shrink(self) -> None:
        decision = decide(series(1 * TIB, 100 * TIB, rate_per_hour=0.0), GrowthPolicy(), NOW)
        assert decision.kind == DecisionKind.SHRINK_CANDIDATE
        assert decision.new_hard is None


class TestASoftLimitWithAGracePeriodBinds:
    """VAST refuses every write to a quota whose soft limit has been exceeded for longer than its
    grace period (`GRACE_EXPIRED`, ../shared/vast-api/README.md), below its hard limit. The planner
    triggered on the hard limit only: a soft limit at 80 % with a grace period and grow_at 0.85 let
    the quota sit between the two until the grace expired, then it was frozen — usage no longer
    rose, so no forecast crossed grow_at (growth-scenario review, 2026-12-05: 85,288 refused writes
    in 30 days, 7 days GRACE_EXPIRED). With a grace period, growth triggers no later than at the
    soft limit and is sized so that the soft limit (moved in proportion) holds the horizon's peak;
    without one the soft limit is a warning level only. A soft limit above grow_at and above the
    target utilization (cosmos7's 90 %) changes nothing."""

    def test_over_the_soft_limit_with_a_grace_period_it_grows_the_soft_limit_above_the_peak(self) -> None:
        state = replace(series(41 * TIB, 50 * TIB, rate_per_hour=TIB / 24), soft=40 * TIB, soft_binding=True)
        decision = decide(state, GrowthPolicy(grow_at=0.85), NOW)
        assert decision.kind is DecisionKind.GROW, decision.reason
        assert "the soft limit 40 TiB" in decision.reason
        assert decision.new_soft is not None and decision.new_hard is not None
        peak = 41 * TIB + 1.05 * 7 * TIB   # p90 over the week's horizon
        assert decision.new_soft >= peak * 0.99, (decision.new_soft / TIB, decision.new_hard / TIB)
        without = decide(replace(state, soft_binding=False), GrowthPolicy(grow_at=0.85), NOW)
        assert without.kind is DecisionKind.NONE   # 82 % of the hard limit, under grow_at

    def test_without_a_forecast_too(self) -> None:
        state = replace(series(41 * TIB, 50 * TIB), soft=40 * TIB, soft_binding=True,
                        recent_rate_per_second=TIB / 86400)
        decision = decide(state, GrowthPolicy(grow_at=0.85), NOW)
        assert decision.kind is DecisionKind.GROW and (decision.new_soft or 0) > 41 * TIB

    def test_a_soft_limit_above_grow_at_and_the_target_changes_nothing(self) -> None:
        plain = series(70 * TIB, 100 * TIB, rate_per_hour=TIB / 10)   # `series`' soft limit: 90 %
        for used in (70 * TIB, 80 * TIB):
            state = replace(plain, used=used, forecast=linear_forecast(RAW, used, TIB / 10))
            binding, plain_decision = (decide(s, GrowthPolicy(), NOW)
                                       for s in (replace(state, soft_binding=True), state))
            assert replace(binding, numbers=()) == replace(plain_decision, numbers=())

    @pytest.mark.parametrize(("grace", "binding"), [("6h", True), ("90m", True), ("30d", True), ("3600", True),
                                                    (None, False), ("", False), ("0", False), ("0s", False),
                                                    ("1 week", True)])
    def test_the_observations_grace_period_says_whether_it_binds(self, grace: str | None, binding: bool) -> None:
        obs = replace(quota("a", 10 * TIB, 100 * TIB), grace_period=grace, used_inodes=10,
                      hard_limit_inodes=1000, soft_limit_inodes=800)
        sides = TargetInput(observation=obs).series()
        assert [s.soft_binding for s in sides] == [binding, binding]   # (an unknown form: binds, to be safe)

    def test_a_soft_limit_at_or_above_the_hard_one_changes_nothing(self) -> None:
        plain = series(80 * TIB, 100 * TIB, rate_per_hour=1e6)
        for soft in (100 * TIB, 120 * TIB):
            state = replace(plain, soft=soft, soft_binding=True)
            assert decide(state, GrowthPolicy(grow_at=0.85), NOW) == decide(replace(state, soft_binding=False),
                                                                            GrowthPolicy(grow_at=0.85), NOW)


class TestGraceFormsAndReasonsInUnits:
    """Grace-period forms, and reasons in words people read (review of 2026-12-05's change: each test
    failed first on that change)."""

    # ------------------------------------------------------------------------ grace period formats
    @pytest.mark.parametrize("grace", ["00:00:00", "0 00:00:00", "0:00"])
    def test_a_zero_grace_period_in_the_vms_duration_format_does_not_bind(self, grace: str) -> None:
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
    def test_a_growth_sized_under_a_binding_soft_limit_does_not_say_it_was_sized_for_the_target(self) -> None:
        """With a binding soft limit at 50 % the growth is sized for 0.50 (the soft limit holds the
        peak: new_soft == peak), but the reason still reads "sized for 0.70 over the horizon"."""
        state = SeriesState(target=RAW, dimension=Dimension.BYTES, t=NOW, used=55 * TIB, hard=100 * TIB,
                            soft=50 * TIB, forecast=linear_forecast(RAW, 55 * TIB, TIB / 24), soft_binding=True)
        decision = decide(state, GrowthPolicy(), NOW)
        assert decision.kind is DecisionKind.GROW
        assert decision.new_hard is not None and math.isclose(decision.new_hard, 125 * TIB)  # sized for 0.50
        assert "sized for 0.70" not in decision.reason, decision.reason


    @pytest.mark.parametrize("amount", [1000 * 2**30, 1023 * 2**40, int(1023.9 * 1024)])
    def test_amounts_in_reasons_never_read_in_scientific_notation(self, amount: int) -> None:
        """`format_bytes` ('.3g') prints 999.5-1023.x of a unit as '1e+03 GiB' / '1.02e+03 TiB'; the
        change made it the wording of every reason ("needs 1e+03 TiB", "at max_hard_limit 1.02e+03 TiB")."""
        assert "e+" not in format_bytes(amount), format_bytes(amount)


    def test_the_max_hard_limit_reason_reads_as_a_number_people_read(self) -> None:
        state = SeriesState(target=RAW, dimension=Dimension.BYTES, t=NOW, used=900 * TIB, hard=1000 * TIB,
                            forecast=linear_forecast(RAW, 900 * TIB, TIB))
        decision = decide(state, GrowthPolicy(max_hard_limit_bytes=1000 * TIB), NOW)
        assert decision.kind is DecisionKind.BLOCKED and decision.guard == "max_hard_limit"
        assert "e+" not in decision.reason, decision.reason


class TestPlanCycle:
    """Guards across a cluster's cycle."""

    def cycle(self, *targets: TargetInput, free: int = 2000 * TIB, **kw: object) -> CycleInput:
        return CycleInput(now=NOW, targets=targets, capacity=capacity(free), **kw)  # type: ignore[arg-type]

    def hot(self, name: str, used: int = 80 * TIB, **kw: object) -> TargetInput:
        return TargetInput(observation=quota(name, used, 100 * TIB), **kw)  # type: ignore[arg-type]

    def test_grows_a_hot_quota(self) -> None:
        (decision,) = plan_cycle(self.cycle(self.hot("a")))
        assert decision.kind == DecisionKind.GROW

    def test_stale_and_dropped_data_block(self) -> None:
        stale = TargetInput(observation=quota("a", 80 * TIB, 100 * TIB, t=NOW - 3600))
        dropped = self.hot("b", dropped=True)
        decisions = plan_cycle(self.cycle(stale, dropped, stale_after_seconds=180))
        assert [d.guard for d in decisions] == ["stale", "dropped"]
        assert all(d.kind == DecisionKind.BLOCKED for d in decisions)

    def test_pause_and_kill_switch_block(self) -> None:
        (paused,) = plan_cycle(self.cycle(self.hot("a", paused_reason="maintenance")))
        assert paused.guard == "paused"
        (killed,) = plan_cycle(self.cycle(self.hot("a"), kill_switch_reason="incident"))
        assert killed.guard == "kill_switch"

    def test_cooldown_blocks_unless_the_limit_would_be_hit_first(self) -> None:
        recent = {Dimension.BYTES: NOW - 3600}
        (cooling,) = plan_cycle(self.cycle(self.hot("a", last_growth_at=recent)))
        assert cooling.guard == "cooldown"
        urgent = TargetInput(observation=quota("a", 80 * TIB, 100 * TIB), last_growth_at=recent,
                             recent_rate_per_second={Dimension.BYTES: 10 * TIB / HOUR})
        (bypassed,) = plan_cycle(self.cycle(urgent))
        assert bypassed.kind == DecisionKind.GROW
        assert "cooldown bypassed" in bypassed.reason

    def test_rate_limit_lets_the_most_urgent_through(self) -> None:
        calm = self.hot("a", used=76 * TIB)
        urgent = self.hot("b", used=95 * TIB, recent_rate_per_second={Dimension.BYTES: TIB / HOUR})
        decisions = {d.target.name: d for d in plan_cycle(self.cycle(calm, urgent, max_actions_per_hour=1))}
        assert decisions["b"].kind == DecisionKind.GROW
        assert decisions["a"].guard == "rate_limit"

    def test_a_more_urgent_would_grow_does_not_hold_an_enforced_growth(self) -> None:
        """Review r13: one budget for the cycle gave the slot to the more urgent observed target
        (a would-grow) and held the enforced one `rate_limit`, though preflight answered `grow` and
        "a would-grow never holds a real write". The real write is served first; it counts for the
        observed target, as the stage's re-check at acting finds it."""
        enforced = self.hot("a", used=76 * TIB)
        observed = self.hot("b", used=95 * TIB, recent_rate_per_second={Dimension.BYTES: TIB / HOUR},
                            enforced=False)
        decisions = {d.target.name: d for d in plan_cycle(self.cycle(enforced, observed, max_actions_per_hour=1))}
        assert decisions["a"].kind == DecisionKind.GROW
        assert decisions["b"].guard == "rate_limit"

    def test_a_more_urgent_would_grow_does_not_take_an_enforced_growths_room(self) -> None:
        enforced = self.hot("a", used=76 * TIB)
        observed = self.hot("b", used=95 * TIB, recent_rate_per_second={Dimension.BYTES: TIB / HOUR},
                            enforced=False)
        decisions = {d.target.name: d for d in plan_cycle(self.cycle(enforced, observed, free=1030 * TIB))}
        assert decisions["a"].kind == DecisionKind.GROW  # 30 TiB of room: the real write's
        assert decisions["b"].guard == "cluster_reserve"

    def test_would_grows_take_what_the_real_writes_leave(self) -> None:
        enforced = self.hot("a", used=76 * TIB)
        observed = [self.hot(name, used=95 * TIB, enforced=False) for name in ("b", "c")]
        cycle = self.cycle(enforced, *observed, max_actions_per_hour=2)
        assert [d.kind for d in plan_cycle(cycle)] == [DecisionKind.GROW, DecisionKind.GROW, DecisionKind.BLOCKED]

    def test_the_hours_would_grows_count_only_for_observed_targets(self) -> None:
        enforced, observed = self.hot("a"), self.hot("b", enforced=False)
        cycle = self.cycle(enforced, observed, max_actions_per_hour=1, actions_last_hour=0, all_actions_last_hour=1)
        decisions = {d.target.name: d for d in plan_cycle(cycle)}
        assert decisions["a"].kind == DecisionKind.GROW
        assert decisions["b"].guard == "rate_limit"

    def test_cluster_reserve_goes_to_the_most_urgent_and_blocks_the_rest(self) -> None:
        calm = self.hot("a", used=76 * TIB)
        urgent = self.hot("b", used=95 * TIB, recent_rate_per_second={Dimension.BYTES: TIB / HOUR})
        # 10 % of 10000 TiB reserved; 1000 + 30 TiB free → 30 TiB of room
        decisions = {d.target.name: d for d in plan_cycle(self.cycle(calm, urgent, free=1030 * TIB))}
        assert decisions["b"].kind == DecisionKind.GROW
        assert decisions["b"].guard == "cluster_reserve"  # trimmed to what fits
        assert decisions["b"].growth == 30 * TIB
        assert decisions["a"].kind == DecisionKind.BLOCKED
        assert decisions["a"].guard == "cluster_reserve"

    def test_reasons_read_in_units_an_on_call_engineer_reads(self) -> None:
        """SRE walkthrough (2026-12-05): a reason is what `growth_blocked`'s page and the audit say,
        and it read "cluster reserve: 0 bytes of room left this cycle, needs 16179488366592" and
        "p90 reaches grow_at in 123456s". Amounts are in binary units (files for inodes), times in
        days and hours; the exact figures stay in the decision's fields and `numbers`."""
        calm = self.hot("a", used=76 * TIB)
        urgent = self.hot("b", used=95 * TIB, recent_rate_per_second={Dimension.BYTES: TIB / HOUR})
        decisions = {d.target.name: d for d in plan_cycle(self.cycle(calm, urgent, free=1030 * TIB))}
        assert decisions["b"].reason.startswith("trimmed by the cluster reserve to +30 TiB; ")
        assert decisions["a"].reason.startswith("cluster reserve: 0 B of room left this cycle, needs ")
        obs = replace(quota("a", 10 * TIB, 100 * TIB), used_inodes=900_000, hard_limit_inodes=1_000_000)
        [inodes] = [d for d in plan_cycle(self.cycle(TargetInput(observation=obs, policy=GrowthPolicy(
            max_hard_limit_inodes=1_000_000)))) if d.dimension is Dimension.INODES]
        assert "at max_hard_limit 1,000,000 files" in inodes.reason
        for decision in [*decisions.values(), inodes]:
            assert not re.search(r"\d{7,}(?![\d,])", decision.reason), decision.reason

    def test_the_reserve_counts_logical_promises_at_the_pools_data_reduction(self) -> None:
        """Growth-scenario review (2026-12-05): quota limits and usage are logical bytes, the pool's
        usable and free are physical, and the guard subtracted the one from the other. On a pool
        reducing 2:1 whose quotas promise as many logical bytes as it has physical ones, every growth
        was blocked ("cluster reserve: 0 B of room") with the pool 36 % physically used, and the
        quotas filled (0 growths, 320,110 refused writes in 30 days). The promises count at the
        pool's reported DRR (logical / physical), and the room is handed out in logical bytes."""
        urgent = self.hot("b", used=95 * TIB, recent_rate_per_second={Dimension.BYTES: TIB / HOUR})
        pool = replace(capacity(free=644 * TIB, usable=1000 * TIB), quotas_allocated_bytes=1050 * TIB,
                       quotas_used_bytes=312 * TIB, drr=2.0)
        # physical: free 644 - unused promises 738 / 2 = 275, reserve 100: 175 TiB, 350 TiB logical
        def plan(pool: ClusterCapacity) -> Decision:
            [decision] = plan_cycle(CycleInput(now=NOW, targets=(urgent,), capacity=net_of_overcommit(pool),
                                               cluster_reserve_ratio=0.1))
            return decision
        decision = plan(pool)
        assert decision.kind is DecisionKind.GROW and decision.guard is None, decision.reason
        tight = replace(pool, free_bytes=480 * TIB)   # 480 - 369 - 100 = 11 TiB physical: 22 TiB logical
        trimmed = plan(tight)
        assert (trimmed.guard, trimmed.growth) == ("cluster_reserve", 22 * TIB), trimmed.reason
        for unknown in (None, 1.0, 0.5):   # no (or no useful) ratio: logical counts as physical, as before
            held = plan(replace(pool, drr=unknown))
            assert held.kind is DecisionKind.BLOCKED and held.guard == "cluster_reserve"

    def test_unknown_capacity_blocks_byte_growth(self) -> None:
        (decision,) = plan_cycle(CycleInput(now=NOW, targets=(self.hot("a"),), capacity=None))
        assert decision.guard == "cluster_reserve"

    def test_inodes_grow_on_their_own_limits(self) -> None:
        obs = replace(quota("a", 10 * TIB, 100 * TIB), used_inodes=900_000, hard_limit_inodes=1_000_000,
                      soft_limit_inodes=800_000)
        decisions = plan_cycle(self.cycle(TargetInput(observation=obs)))
        inode = next(d for d in decisions if d.dimension is Dimension.INODES)
        assert inode.kind == DecisionKind.GROW
        assert inode.new_hard is not None and inode.new_hard >= 2_000_000
        assert inode.new_soft == inode.new_hard * 8 // 10

    def test_a_quota_without_a_byte_limit_grows_only_its_inodes(self) -> None:
        """VMS's "no limit" (hard limit 0, read as None): no byte limit to grow, nor to size a
        "would grow" from — whatever its usage, its soft limit or the pool; its inode limit grows
        as any quota's, and the cluster reserve (a byte guard) does not hold it."""
        obs = Observation(target=TargetId("c1", "files-only", "/files-only"), t=NOW, used_bytes=900 * TIB,
                          hard_limit_bytes=None, soft_limit_bytes=80 * TIB, used_inodes=900_000,
                          hard_limit_inodes=1_000_000, soft_limit_inodes=800_000)
        target = TargetInput(observation=obs, recent_rate_per_second={Dimension.BYTES: TIB / HOUR},
                             forecasts={Dimension.BYTES: linear_forecast(obs.target, 900 * TIB, TIB)})
        for cycle in (self.cycle(target, free=0), CycleInput(now=NOW, targets=(target,), capacity=None)):
            (inode,) = plan_cycle(cycle)
            assert (inode.dimension, inode.kind) == (Dimension.INODES, DecisionKind.GROW)
            assert inode.new_hard is not None and inode.new_hard >= 2_000_000
        assert plan_reactive_cycle(CycleInput(now=NOW, targets=(target,), capacity=None)) == ()

    def test_a_quota_without_any_limit_has_no_decision(self) -> None:
        obs = Observation(target=TargetId("c1", "accounting", "/accounting"), t=NOW, used_bytes=900 * TIB,
                          hard_limit_bytes=None, used_inodes=900_000)
        assert plan_cycle(self.cycle(TargetInput(observation=obs))) == ()


class TestReactive:
    def test_adds_one_tib_at_ninety_percent(self) -> None:
        targets = (TargetInput(observation=quota("a", 89 * TIB, 100 * TIB)),
                   TargetInput(observation=quota("b", 90 * TIB, 100 * TIB)))
        decisions = plan_reactive_cycle(CycleInput(now=NOW, targets=targets, capacity=None))
        assert [d.kind for d in decisions] == [DecisionKind.NONE, DecisionKind.GROW]
        assert decisions[1].new_hard == 101 * TIB

    def test_moves_the_soft_limit_with_the_hard_one(self) -> None:
        """The README's baseline: the soft limit keeps its ratio to the hard limit (90 % here)."""
        (decision,) = plan_reactive_cycle(CycleInput(now=NOW, targets=(TargetInput(
            observation=quota("a", 95 * TIB, 100 * TIB)),), capacity=None))
        assert (decision.new_hard, decision.new_soft) == (101 * TIB, int(100 * TIB * 0.9) * 101 // 100)


class TestNeverBelowUsage:
    """A planned hard limit is never below current usage (VMS refuses it; issue 13 saw one sent).
    The VMS boundary drops `used` far above `hard` as implausible; this is the defence in depth."""

    def test_reactive_growth_over_usage_takes_the_tib_steps_it_needs(self) -> None:
        """1 TB hard, 14 TB used: +1 TiB is still below usage, so the baseline adds the whole TiB
        steps that clear it (it was blocked by `below_usage` at every cycle, and never grew)."""
        target = TargetInput(observation=quota("a", 14 * 10**12, 10**12))
        (decision,) = plan_reactive_cycle(CycleInput(now=NOW, targets=(target,), capacity=None))
        assert decision.kind == DecisionKind.GROW
        assert decision.new_hard is not None
        assert (decision.new_hard - 10**12) % TIB == 0
        assert decision.new_hard - TIB <= 14 * 10**12 < decision.new_hard

    def test_a_growth_trimmed_below_usage_by_the_reserve_is_blocked(self) -> None:
        over = TargetInput(observation=quota("a", 140 * TIB, 100 * TIB))
        # 10 % of 10000 TiB reserved; 1000 + 30 TiB free → 30 TiB of room: 130 TiB < 140 TiB used
        (decision,) = plan_cycle(CycleInput(now=NOW, targets=(over,), capacity=capacity(1030 * TIB)))
        assert decision.kind == DecisionKind.BLOCKED
        assert decision.guard == "below_usage"

    def test_a_growth_capped_below_usage_by_max_growth_is_blocked(self) -> None:
        policy = GrowthPolicy(max_growth_bytes=TIB)
        over = TargetInput(observation=quota("a", 140 * TIB, 100 * TIB), policy=policy)
        (decision,) = plan_cycle(CycleInput(now=NOW, targets=(over,), capacity=capacity(5000 * TIB)))
        assert decision.guard == "below_usage"


# ------------------------------------------------------------------------------ properties
policies = st.builds(
    GrowthPolicy,
    grow_at=st.floats(0.5, 0.95),
    target_utilization=st.floats(0.2, 0.49),
    lead_time_seconds=st.floats(0, 3 * DAY),
    horizon_seconds=st.floats(HOUR, 14 * DAY),
    step_bytes=st.sampled_from([1, 2**30, TIB]),
    min_growth_bytes=st.sampled_from([0, 2**30, TIB]),
    max_growth_bytes=st.sampled_from([TIB, 50 * TIB, 500 * TIB]),
    max_hard_limit_bytes=st.sampled_from([100 * TIB, 1000 * TIB, 10 * 2**50]),
    cooldown_seconds=st.floats(0, DAY),
)


class TestSoftLimit:
    """The new soft limit keeps its ratio to the new hard limit, never above it (review r11)."""

    def test_an_inode_soft_limit_above_the_hard_one_is_not_carried_over(self) -> None:
        """A soft limit above the hard one (validation drops such a sample; the planner does not
        rely on it): the new soft limit is the new hard limit, not the old soft limit."""
        obs = Observation(TargetId("c1", "q", "/q"), NOW, used_bytes=1 * TIB, hard_limit_bytes=100 * TIB,
                          used_inodes=900_000, hard_limit_inodes=1_000_000, soft_limit_inodes=5_000_000, quota_id=1)
        (decision,) = [d for d in plan_cycle(CycleInput(now=NOW, targets=(TargetInput(obs),), capacity=None))
                       if d.dimension is Dimension.INODES]
        assert decision.kind == DecisionKind.GROW
        assert (decision.new_hard, decision.new_soft) == (2_000_000, 2_000_000)

    @settings(max_examples=100, deadline=None)
    @given(st.integers(1, 400), st.integers(1, 10_000))
    def test_never_above_the_new_hard_limit(self, hard_tib: int, soft_permille: int) -> None:
        """Bytes, any soft-to-hard ratio up to 10: at most the new hard limit, and never below the
        old soft limit unless the new hard limit is."""
        hard = hard_tib * TIB
        soft = hard * soft_permille // 1000
        state = replace(series(hard, hard), soft=soft)  # full: grows
        decision = decide(state, GrowthPolicy(max_hard_limit_bytes=10_000 * TIB), NOW)
        assert decision.kind == DecisionKind.GROW
        assert decision.new_hard is not None and decision.new_soft is not None
        assert min(soft, decision.new_hard) <= decision.new_soft <= decision.new_hard


@st.composite
def target_inputs(draw: st.DrawFn, index: int, max_used_ratio: float = 1.2) -> TargetInput:
    hard = draw(st.integers(1, 2000)) * TIB // 4
    used = int(hard * draw(st.floats(0, max_used_ratio)))
    rate = draw(st.floats(0, 5)) * TIB / HOUR
    obs = Observation(target=TargetId("c1", f"q{index}", f"/q{index}"), t=NOW - draw(st.floats(0, 600)),
                      used_bytes=used, hard_limit_bytes=hard, soft_limit_bytes=draw(st.sampled_from([None, hard])))
    forecasts = {}
    if draw(st.booleans()):
        forecasts[Dimension.BYTES] = linear_forecast(obs.target, used, rate * HOUR * draw(st.floats(0, 2)),
                                                     band=draw(st.floats(0, 1)))
    last = draw(st.sampled_from([None, NOW - HOUR, NOW - 10 * HOUR]))
    return TargetInput(
        observation=obs, policy=draw(policies), forecasts=forecasts,
        recent_rate_per_second={Dimension.BYTES: rate},
        reserved_bytes=draw(st.sampled_from([0, TIB, 50 * TIB])),
        last_growth_at={} if last is None else {Dimension.BYTES: last},
        dropped=draw(st.booleans()) and draw(st.booleans()), enforced=draw(st.booleans()))


@st.composite
def cycles(draw: st.DrawFn, max_used_ratio: float = 1.2) -> CycleInput:
    n = draw(st.integers(0, 6))
    targets = tuple(draw(target_inputs(i, max_used_ratio)) for i in range(n))
    usable = draw(st.integers(100, 10_000)) * TIB
    free = int(usable * draw(st.floats(0, 1)))
    enforce_rows = draw(st.integers(0, 10))
    return CycleInput(now=NOW, targets=targets, capacity=capacity(free, usable),
                      cluster_reserve_ratio=draw(st.floats(0, 0.5)),
                      max_actions_per_hour=draw(st.integers(0, 10)), actions_last_hour=enforce_rows,
                      all_actions_last_hour=enforce_rows + draw(st.integers(0, 5)), stale_after_seconds=300)


class TestInvariants:
    """What must hold for any input."""

    @settings(max_examples=150, deadline=None)
    @given(cycles())
    def test_never_shrinks_never_exceeds_ceiling(self, cycle: CycleInput) -> None:
        policy_of = {t.observation.target: t.policy for t in cycle.targets}
        for decision in plan_cycle(cycle):
            if decision.kind is DecisionKind.GROW:
                assert decision.new_hard is not None and decision.current_hard is not None
                assert decision.new_hard > decision.current_hard
                assert decision.new_hard <= policy_of[decision.target].max_hard_limit_bytes
                if decision.new_soft is not None:
                    assert decision.current_soft is not None and decision.new_soft >= decision.current_soft
                    assert decision.new_soft <= decision.new_hard

    @settings(max_examples=150, deadline=None)
    @given(cycles())
    def test_cluster_reserve_holds_and_rate_limit_holds(self, cycle: CycleInput) -> None:
        decisions = plan_cycle(cycle)
        grown = [d for d in decisions if d.kind is DecisionKind.GROW]
        assert cycle.capacity is not None
        added = sum(d.growth for d in grown if d.dimension is Dimension.BYTES)
        if added:
            assert cycle.capacity.free_bytes - added >= cycle.cluster_reserve_ratio * cycle.capacity.usable_bytes
        enforced = {t.observation.target: t.enforced for t in cycle.targets}
        writes = [d for d in grown if enforced[d.target]]
        assert len(writes) <= max(0, cycle.max_actions_per_hour - cycle.actions_last_hour)
        assert cycle.all_actions_last_hour is not None
        assert len(grown) - len(writes) <= max(0, cycle.max_actions_per_hour - cycle.all_actions_last_hour
                                                - len(writes))

    @settings(max_examples=150, deadline=None)
    @given(cycles())
    def test_cooldown_respected(self, cycle: CycleInput) -> None:
        by_target = {t.observation.target: t for t in cycle.targets}
        for decision in plan_cycle(cycle):
            if decision.kind is not DecisionKind.GROW:
                continue
            target = by_target[decision.target]
            last = target.last_growth_at.get(decision.dimension)
            if last is not None and cycle.now < last + target.policy.cooldown_seconds:
                # only allowed when the limit would be hit before the cooldown ends
                assert decision.urgency_seconds is not None
                assert cycle.now + decision.urgency_seconds < last + target.policy.cooldown_seconds

    @settings(max_examples=60, deadline=None)
    @given(cycles())
    def test_deterministic_whatever_the_order(self, cycle: CycleInput) -> None:
        reordered = replace(cycle, targets=tuple(reversed(cycle.targets)))
        assert plan_cycle(cycle) == plan_cycle(reordered)

    @settings(max_examples=100, deadline=None)
    @given(cycles(), st.sampled_from(["kill", "pause", "stale"]))
    def test_held_targets_never_grow(self, cycle: CycleInput, hold: str) -> None:
        if hold == "kill":
            held = replace(cycle, kill_switch_reason="incident")
        elif hold == "pause":
            held = replace(cycle, targets=tuple(replace(t, paused_reason="ops") for t in cycle.targets))
        else:
            held = replace(cycle, stale_after_seconds=0.0, now=cycle.now + 1.0)
        assert not [d for d in plan_cycle(held) if d.kind is DecisionKind.GROW]
        assert not [d for d in plan_cycle(replace(cycle, targets=tuple(replace(t, dropped=True)
                                                                        for t in cycle.targets)))
                    if d.kind is DecisionKind.GROW]

    @settings(max_examples=200, deadline=None)
    @given(cycles(max_used_ratio=20.0))
    def test_a_planned_hard_limit_is_never_below_usage(self, cycle: CycleInput) -> None:
        """Whatever VMS reports (even usage many times the hard limit), neither planner plans a
        hard limit below current usage."""
        for decision in (*plan_cycle(cycle), *plan_reactive_cycle(cycle)):
            if decision.kind is DecisionKind.GROW:
                assert decision.new_hard is not None and decision.current_used is not None
                assert decision.new_hard >= decision.current_used
