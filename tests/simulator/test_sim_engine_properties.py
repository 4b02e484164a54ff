"""Invariants of the engine under arbitrary limits, patches and request timings (hypothesis)."""

from __future__ import annotations

import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotapilot.daemon.simulator import Engine, load_scenario

START = 1_767_225_600.0
TB = 10**12
HORIZON = 3 * 86400.0

advances = st.lists(st.floats(min_value=1.0, max_value=12 * 3600.0), min_size=1, max_size=30)
growths = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30)


@functools.cache
def unlimited_written(seed: int) -> float:
    """What raw offers over the horizon: everything is accepted when the limit is out of reach."""
    engine = Engine(load_scenario("cosmos7"), seed=seed, start=START)
    engine.patch_quota(1, {"hard_limit": 10**17, "soft_limit": 0})
    engine.advance_to(START + HORIZON)
    return float(engine.summary()["bytes_written_by_path"]["/cosmos7/raw"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from([0, 1]), steps=advances, grow_tb=growths)
def test_limits_hold_and_bytes_are_conserved(seed: int, steps: list[float], grow_tb: list[int]) -> None:
    """Usage never exceeds the hard limit; raw's written + refused bytes equal what it offered
    (offers do not depend on enforcement); utilization stays within [0, peak <= 1]."""
    engine = Engine(load_scenario("cosmos7"), seed=seed, start=START)
    t = START
    for i, dt in enumerate(steps):
        t = min(START + HORIZON, t + dt)
        engine.advance_to(t)
        for rec in engine.quotas.values():
            used, _ = engine.quota_usage(rec)
            assert used <= rec.hard_limit
        raw = engine.quotas[1]
        engine.patch_quota(1, {"hard_limit": raw.hard_limit + grow_tb[i % len(grow_tb)] * TB})
    engine.advance_to(START + HORIZON)
    summary = engine.summary()
    raw_total = summary["bytes_written_by_path"]["/cosmos7/raw"] + summary["bytes_refused_by_path"]["/cosmos7/raw"]
    assert abs(raw_total - unlimited_written(seed)) <= 2  # integer bytes, int() truncation of two sums
    assert 0.0 <= summary["mean_utilization"] <= summary["peak_utilization"] <= 1.0
    assert (summary["write_failures"] > 0) == (summary["bytes_refused"] > 0)
