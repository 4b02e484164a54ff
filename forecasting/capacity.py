"""Pool capacity planning: when a pool reaches its planning thresholds, when to order more, how much,
and what it costs.

Pure: a pool's `Forecast` (the one the forecaster already keeps for the cluster pool, or a
filesystem) and `now` in, a `PoolPlan` out. Quotas grow in seconds; a pool grows by buying disks,
which takes weeks. So the plan looks further than the forecaster does: each quantile path is
carried past the forecast's horizon up to `plan_horizon_seconds` at its own slope over the
forecast's last `EXTEND_WINDOW_SECONDS` (a whole number of weeks when the horizon allows, so the
daily and weekly cycles cancel out). The band widens as the paths' slopes differ.

Definitions (each has a test):
- threshold date: the first time a quantile path reaches `ratio × usable_bytes` (the p90 path,
  the pessimistic one, first); `now` when already there; None beyond the plan horizon.
- order-by date: the pessimistic (p90) date of the order threshold (the lowest planning
  threshold) minus `procurement_lead_time_seconds`; None without a lead time or a crossing.
  It may lie in the past: the order is overdue.
- order bytes: usable capacity to add so that the median (p50) usage at `now + plan_horizon`
  stays at the order threshold: `p50(now + horizon) / order_ratio - usable`, at least 0. The
  pool's usage is what VMS reports as used usable (physical) capacity, so data reduction is
  already in the forecast's growth; `order_logical_bytes` is what the expansion holds at the
  pool's current data-reduction ratio (DRR).
- cost: `price_per_tb` (once) and `price_per_tb_month` (recurring) per decimal TB (10**12
  bytes) of usable capacity, for the expansion and for the quota headroom granted (hard limits
  minus usage, logical, converted to usable bytes at the DRR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from quotapilot.forecasting.runway import runways_of_paths
from quotapilot.forecasting.types import QUANTILES, Forecast, Runway
from quotapilot.forecasting.words import format_bytes

DAY = 86400.0
TB = 10**12
"""Prices are per decimal terabyte, as storage is sold."""
DEFAULT_PLANNING_THRESHOLDS: tuple[float, ...] = (0.8, 0.9)
BAND_STEP_SECONDS = DAY
EXTEND_WINDOW_SECONDS = 7 * DAY
"""The slope a path is extended at is its mean slope over the forecast's last week (or its whole
span when shorter)."""


@dataclass(frozen=True, slots=True)
class CapacityPolicy:
    """What `[capacity]` configures."""

    thresholds: tuple[float, ...] = DEFAULT_PLANNING_THRESHOLDS
    procurement_lead_time_seconds: float | None = None
    plan_horizon_seconds: float = 365 * DAY
    price_per_tb: float | None = None
    price_per_tb_month: float | None = None

    def __post_init__(self) -> None:
        if not self.thresholds or any(not 0 < r <= 1 for r in self.thresholds):
            raise ValueError("thresholds must be ratios in (0, 1]")
        if self.plan_horizon_seconds <= 0:
            raise ValueError("plan_horizon_seconds must be > 0")

    @property
    def order_ratio(self) -> float:
        """The threshold an expansion must be installed before: the lowest planning threshold."""
        return min(self.thresholds)


@dataclass(frozen=True, slots=True)
class Cost:
    """Money, in the unit the prices are given in; None where that price is not configured."""

    expansion: float | None = None
    """Once: `order_bytes` at `price_per_tb`."""
    expansion_per_month: float | None = None
    """Recurring: `order_bytes` at `price_per_tb_month`."""
    headroom: float | None = None
    """Once: the quota headroom granted (in usable bytes) at `price_per_tb`."""
    headroom_per_month: float | None = None
    """Recurring: the quota headroom granted at `price_per_tb_month`."""


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """The capacity plan of one pool at `t`."""

    name: str
    kind: str
    """"cluster" (a VMS cluster's pool) or "filesystem"."""
    t: float
    usable_bytes: int
    used_bytes: int
    thresholds: tuple[Runway, ...]
    """One per planning threshold, ordered; `horizon_end` is `t + plan_horizon_seconds`."""
    horizon_end: float
    order_ratio: float
    order_by: float | None
    order_bytes: int | None
    """None when there is no forecast to size from."""
    order_logical_bytes: int | None = None
    drr: float | None = None
    headroom_bytes: int | None = None
    """Quota headroom granted (sum of hard limit minus usage, logical bytes); None for pools
    without quotas."""
    cost: Cost | None = None
    """None when no price is configured."""
    forecast_model: str | None = None
    """The model whose paths the plan extends (None: no forecast yet)."""
    provisional: bool = False
    """The forecast was the labelled stopgap (not enough history for the model)."""
    band: tuple[tuple[float, float, float, float], ...] = ()
    """The extended forecast as `(t, p10, p50, p90)` once a `BAND_STEP_SECONDS` from `t` to the
    plan horizon (what `quotapilot capacity --plot` draws)."""

    def threshold(self, ratio: float) -> Runway | None:
        for runway in self.thresholds:
            if abs(runway.threshold_ratio - ratio) < 1e-9:
                return runway
        return None


def extended_paths(forecast: Forecast, *, current_used: float, until: float,
                   window_seconds: float = EXTEND_WINDOW_SECONDS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The forecast's paths from `(forecast.t0, current_used)`, carried on linearly past their last
    point up to `until` at each path's slope over its last `window_seconds` (the p10 no steeper and
    the p90 no flatter than the median's); the extension keeps `p10 <= p50 <= p90` and never falls
    (a pool's usage forecast does not shrink into the future)."""
    times = np.concatenate(([forecast.t0], np.asarray(forecast.times, dtype=np.float64)))
    paths = {q: np.concatenate(([current_used], np.asarray(getattr(forecast, q), dtype=np.float64)))
             for q in QUANTILES}
    last = float(times[-1])
    if until <= last or len(times) < 2:
        return times, paths
    step = forecast.step_seconds if forecast.step_seconds > 0 else (last - float(times[0]))
    span = last - float(times[0])
    window = min(window_seconds, span)
    # the point `window` before the end, interpolated on each path
    start = last - window
    n_more = max(1, math.ceil((until - last) / step - 1e-9))
    more_t = last + step * np.arange(1, n_more + 1, dtype=np.float64)
    slopes = {q: max(0.0, (float(paths[q][-1]) - float(np.interp(start, times, paths[q]))) / window)
              if window > 0 else 0.0 for q in QUANTILES}
    # the band's edges go on at least as far apart as the median: a p10 path that was closing in
    # on the median (a band narrowing towards its end) would otherwise cross it and drag the
    # median's date onto its own
    slopes["p10"] = min(slopes["p10"], slopes["p50"])
    slopes["p90"] = max(slopes["p90"], slopes["p50"])
    out_paths: dict[str, np.ndarray] = {}
    for q in QUANTILES:
        out_paths[q] = np.concatenate((paths[q], float(paths[q][-1]) + slopes[q] * (more_t - last)))
    out_paths["p50"] = np.maximum(out_paths["p50"], out_paths["p10"])
    out_paths["p90"] = np.maximum(out_paths["p90"], out_paths["p50"])
    return np.concatenate((times, more_t)), out_paths


def plan_pool(*, name: str, kind: str, now: float, usable_bytes: int, used_bytes: int,
              forecast: Forecast | None, policy: CapacityPolicy, drr: float | None = None,
              headroom_bytes: int | None = None, provisional: bool = False) -> PoolPlan:
    """The capacity plan of one pool (see the module docstring for every definition)."""
    horizon_end = now + policy.plan_horizon_seconds
    ratios = tuple(sorted(policy.thresholds))
    order_ratio = policy.order_ratio
    if forecast is None or usable_bytes <= 0:
        thresholds = tuple(
            Runway(threshold_ratio=r, p10=now, p50=now, p90=now, horizon_end=horizon_end)
            if usable_bytes > 0 and used_bytes >= r * usable_bytes
            else Runway(threshold_ratio=r, p10=None, p50=None, p90=None, horizon_end=horizon_end)
            for r in ratios)
        already = thresholds[0].p90 if thresholds else None
        order_by = (already - policy.procurement_lead_time_seconds
                    if already is not None and policy.procurement_lead_time_seconds is not None else None)
        return PoolPlan(name=name, kind=kind, t=now, usable_bytes=usable_bytes, used_bytes=used_bytes,
                        thresholds=thresholds, horizon_end=horizon_end, order_ratio=order_ratio,
                        order_by=order_by, order_bytes=None, drr=drr, headroom_bytes=headroom_bytes,
                        cost=_cost(policy, None, headroom_bytes, drr), provisional=provisional)
    times, paths = extended_paths(forecast, current_used=float(used_bytes), until=horizon_end)
    # crossings after the plan horizon count as "beyond": cut the paths there
    keep = times <= horizon_end + 1e-6
    times_cut = times[keep]
    paths_cut = {q: p[keep] for q, p in paths.items()}
    if float(times_cut[-1]) < horizon_end:
        times_cut = np.append(times_cut, horizon_end)
        paths_cut = {q: np.append(paths_cut[q], np.interp(horizon_end, times, paths[q])) for q in QUANTILES}
    runways = runways_of_paths(times_cut, paths_cut, limit=float(usable_bytes), thresholds=ratios, now=now)
    thresholds = tuple(Runway(threshold_ratio=w.threshold_ratio, p10=w.p10, p50=w.p50, p90=w.p90,
                              horizon_end=horizon_end) for w in runways)
    order_crossing = next((w.p90 for w in thresholds if abs(w.threshold_ratio - order_ratio) < 1e-9), None)
    order_by = None
    if order_crossing is not None and policy.procurement_lead_time_seconds is not None:
        order_by = order_crossing - policy.procurement_lead_time_seconds
    needed_usable = float(np.interp(horizon_end, times, paths["p50"])) / order_ratio
    order_bytes = max(0, math.ceil(needed_usable - usable_bytes))
    order_logical = None if drr is None else math.ceil(order_bytes * drr)
    band_t = np.arange(now, horizon_end + 1e-6, BAND_STEP_SECONDS, dtype=np.float64)
    band_levels = [np.interp(band_t, times, paths[q]) for q in QUANTILES]
    band = tuple((float(t), float(lo), float(mid), float(hi))
                 for t, lo, mid, hi in zip(band_t, *band_levels, strict=True))
    return PoolPlan(name=name, kind=kind, t=now, usable_bytes=usable_bytes, used_bytes=used_bytes,
                    thresholds=thresholds, horizon_end=horizon_end, order_ratio=order_ratio,
                    order_by=order_by, order_bytes=order_bytes, order_logical_bytes=order_logical,
                    drr=drr, headroom_bytes=headroom_bytes,
                    cost=_cost(policy, order_bytes, headroom_bytes, drr),
                    forecast_model=forecast.model, provisional=provisional, band=band)


def _cost(policy: CapacityPolicy, order_bytes: int | None, headroom_bytes: int | None,
          drr: float | None) -> Cost | None:
    if policy.price_per_tb is None and policy.price_per_tb_month is None:
        return None
    headroom_usable = None
    if headroom_bytes is not None:
        headroom_usable = headroom_bytes / drr if drr else float(headroom_bytes)

    def priced(n_bytes: float | None, price: float | None) -> float | None:
        if n_bytes is None or price is None:
            return None
        return round(n_bytes / TB * price, 2)

    return Cost(expansion=priced(order_bytes, policy.price_per_tb),
                expansion_per_month=priced(order_bytes, policy.price_per_tb_month),
                headroom=priced(headroom_usable, policy.price_per_tb),
                headroom_per_month=priced(headroom_usable, policy.price_per_tb_month))


def quota_headroom(pairs: Sequence[tuple[int, int | None]]) -> int:
    """Headroom granted by quotas: the sum of `hard_limit - used` over (used, hard_limit) pairs
    with a limit (a quota over its limit grants nothing, it does not subtract)."""
    return sum(max(0, hard - used) for used, hard in pairs if hard)


@dataclass(frozen=True, slots=True)
class GrowthRecommendation:
    """How much a filesystem should grow, and why (the numbers behind it)."""

    grow_bytes: int
    new_size_bytes: int
    reason: str
    wanted_size_bytes: int = 0
    """The size the forecast asks for, before `max_growth_bytes` and `max_hard_limit_bytes`."""
    guard: str | None = None
    """`max_hard_limit` when the ceiling leaves no room to grow (`grow_bytes` 0): blocked, as the
    planner blocks a quota's growth (the same guard name)."""


def filesystem_growth(*, used_bytes: int, size_bytes: int, forecast: Forecast | None, now: float,
                      grow_at: float, target_utilization: float, lead_time_seconds: float,
                      horizon_seconds: float, step_bytes: int, min_growth_bytes: int, max_growth_bytes: int,
                      max_hard_limit_bytes: int) -> GrowthRecommendation | None:
    """A filesystem's growth, by the quota rule: due when usage is at `grow_at` of its size or the
    pessimistic (p90) path reaches it within `lead_time_seconds`; sized so that the p90 path stays
    under `target_utilization` until now + `horizon_seconds` (the forecast's last level where the
    horizon is beyond it), rounded up to `step_bytes`, at least `min_growth_bytes`; then at most
    `max_growth_bytes` per action and a new size of at most `max_hard_limit_bytes` (as a quota's
    in `planner.decide`; the reason says it was capped). A size already at or above the ceiling cannot
    grow: `guard` is `max_hard_limit`. None: not due."""
    if size_bytes <= 0:
        return None
    trigger = grow_at * size_bytes
    ahead = _level(forecast, now + lead_time_seconds, float(used_bytes))
    if used_bytes < trigger and ahead < trigger:
        return None
    needed = _level(forecast, now + horizon_seconds, float(used_bytes)) / target_utilization
    steps = max(1, math.ceil((needed - size_bytes) / step_bytes)) if step_bytes > 0 else 1
    wanted = max(min_growth_bytes, steps * step_bytes)
    grow = max(0, min(wanted, max_growth_bytes, max_hard_limit_bytes - size_bytes))
    why = (f"at {used_bytes / size_bytes:.0%} of its size" if used_bytes >= trigger else
           f"the p90 forecast reaches {grow_at:.0%} within {lead_time_seconds / 3600:g} h")
    if grow <= 0:
        return GrowthRecommendation(grow_bytes=0, new_size_bytes=size_bytes, wanted_size_bytes=size_bytes + wanted,
                                    guard="max_hard_limit",
                                    reason=f"at max_hard_limit {format_bytes(max_hard_limit_bytes)}: cannot grow; "
                                           f"{why}")
    sizing = f"keep p90 under {target_utilization:.0%} for {horizon_seconds / 3600:g} h"
    sized = (f"+{format_bytes(grow)} to {sizing}" if grow == wanted else
             f"+{format_bytes(grow)} (capped by max_growth_bytes / max_hard_limit_bytes: +{format_bytes(wanted)} "
             f"would {sizing})")
    return GrowthRecommendation(grow_bytes=grow, new_size_bytes=size_bytes + grow,
                                wanted_size_bytes=size_bytes + wanted, reason=f"{why}; {sized}")


def _level(forecast: Forecast | None, t: float, fallback: float) -> float:
    """The pessimistic (p90) level at `t`, the forecast's last where `t` is beyond it."""
    if forecast is None or not len(forecast.times):
        return fallback
    level = forecast.at(t, "p90")
    return float(forecast.p90[-1]) if level is None else max(level, fallback)
