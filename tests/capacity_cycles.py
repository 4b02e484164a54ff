"""Shared by the capacity tests (tests/daemon) and the fleet's (tests/store): a cluster pool's cycle
with a forecast, and an alert sink that records the conditions it is handed."""

from __future__ import annotations

from collections.abc import Sequence

from quotapilot.alerts.model import Condition
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.forecasting.types import (
    POOL_TARGET,
    ClusterCapacity,
    Dimension,
    Forecast,
    Observation,
    SeriesForecast,
    StepTimes,
    TargetId,
    TargetKind,
)

T0 = 1_767_571_200.0
DAY = 86400.0
HOUR = 3600.0
TB = 10**12
POOL = TargetId("c1", POOL_TARGET, "/", TargetKind.POOL)
QUOTA = TargetId("c1", "raw", "/raw")


def pool_cycle(*, used: int, usable: int, rate_per_day: float, now: float = T0,
               drr: float | None = 1.5) -> CycleContext:
    """A cycle whose pool is forecast to grow at `rate_per_day` (p10 half, p90 double), with one
    quota of 10 TB hard limit, 4 TB used."""
    n = 14 * 24
    paths = [[used + rate_per_day * factor / DAY * HOUR * k for k in range(1, n + 1)] for factor in (0.5, 1, 2)]
    forecast = Forecast(t0=now, step_seconds=HOUR, times=StepTimes(now, HOUR, n), p10=paths[0], p50=paths[1],
                        p90=paths[2], model="test")
    capacity = ClusterCapacity(cluster="c1", t=now, usable_bytes=usable, used_bytes=used, free_bytes=usable - used,
                               drr=drr)
    observations = (Observation(POOL, now, used, usable), Observation(QUOTA, now, 4 * TB, 10 * TB))
    ctx = CycleContext(poll=PollResult(cluster="c1", t=now, observations=observations, capacity=capacity), now=now)
    ctx.forecasts[(POOL, Dimension.BYTES)] = SeriesForecast(target=POOL, dimension=Dimension.BYTES, t=now,
                                                            limit=float(usable), forecast=forecast)
    return ctx


class RecordingAlerts:
    """The capacity stage's `raise_alerts`, recording what it is handed."""

    def __init__(self) -> None:
        self.conditions: list[Condition] = []

    async def __call__(self, conditions: Sequence[Condition]) -> int:
        self.conditions.extend(conditions)
        return len(conditions)
