"""Synthetic series for the forecasting tests."""

from __future__ import annotations

import math
from collections.abc import Callable

T0 = 1_767_571_200.0  # 2026-01-05T00:00:00Z, a Monday, on the hour


def cumulative(rate_per_second: Callable[[float], float], hours: float, *, every_seconds: float = 900.0,
               start_used: float = 1e12, t0: float = T0) -> list[tuple[float, float]]:
    """Samples of a usage growing at `rate_per_second(t)`, every `every_seconds`."""
    out = []
    used = start_used
    for k in range(int(hours * 3600 / every_seconds)):
        t = t0 + k * every_seconds
        used += rate_per_second(t) * every_seconds
        out.append((t, used))
    return out


def daily(mean: float, amplitude: float = 0.8) -> Callable[[float], float]:
    return lambda t: mean * (1 + amplitude * math.sin(2 * math.pi * ((t % 86400) / 86400)))
