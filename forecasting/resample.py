"""Irregular (t, used) samples → a regular grid of ingest-rate increments.

The models forecast the **rate** (bytes added per step; deletes make it negative), not the level.
Samples arrive whenever the poller ran; the grid is aligned to multiples of `step_seconds` since
the epoch, so a step always covers the same hour of the day and the seasonal models see a stable
phase. The cumulative usage is interpolated linearly at each grid boundary and differenced, which
keeps the total exact: a gap (missed polls, a daemon restart) spreads the bytes written during it
evenly over the steps it covers instead of inventing or losing any.

`resample` does this for a whole history at once (vectorised, for refits and the CLI);
`StepAccumulator` does the same one sample at a time (O(1) per sample between refits). Both give
identical increments for the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class RateSeries:
    """Complete steps of a history: `rates[k]` is the increment over
    `[start + k*step, start + (k+1)*step)`. The open step after the last complete one is
    `[end, end + step)`; the last sample `(last_t, last_used)` lies in it (or on `end`)."""

    start: float
    step_seconds: float
    rates: FloatArray
    last_t: float
    last_used: float
    end_level: float | None = None
    """Usage interpolated at `end` (None when no boundary lies within the samples)."""

    @property
    def end(self) -> float:
        """Start of the open step: where a model that consumed every rate stands."""
        return self.start + len(self.rates) * self.step_seconds


def clean_samples(samples: Sequence[tuple[float, float]]) -> tuple[FloatArray, FloatArray]:
    """Sorted by time, non-finite values dropped, duplicate timestamps keep the last value."""
    if not samples:
        return np.empty(0), np.empty(0)
    arr = np.asarray(samples, dtype=np.float64).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(axis=1)]
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    if len(arr) > 1:
        keep = np.ones(len(arr), dtype=bool)
        keep[:-1] = arr[1:, 0] != arr[:-1, 0]
        arr = arr[keep]
    return arr[:, 0].copy(), arr[:, 1].copy()


def first_boundary(t: float, step_seconds: float) -> float:
    """The first grid boundary at or after `t`."""
    return math.ceil(t / step_seconds) * step_seconds


def resample(samples: Sequence[tuple[float, float]], step_seconds: float) -> RateSeries | None:
    """All complete steps between the first and the last sample; None when there are no samples."""
    times, used = clean_samples(samples)
    if len(times) == 0:
        return None
    start = first_boundary(float(times[0]), step_seconds)
    n_bounds = math.floor((float(times[-1]) - start) / step_seconds) + 1
    if n_bounds < 1:
        return RateSeries(start=start, step_seconds=step_seconds, rates=np.empty(0),
                          last_t=float(times[-1]), last_used=float(used[-1]))
    bounds = start + step_seconds * np.arange(n_bounds, dtype=np.float64)
    level = np.interp(bounds, times, used)
    return RateSeries(start=start, step_seconds=step_seconds, rates=np.diff(level),
                      last_t=float(times[-1]), last_used=float(used[-1]), end_level=float(level[-1]))


@dataclass(slots=True)
class StepAccumulator:
    """Turns samples into completed step increments as they arrive.

    `open_start` is the start of the step being filled; `open_level` the (interpolated) usage at
    it, None until the first boundary has been passed (the part of a step before the first sample
    is unknown, so it is not emitted, exactly as `resample` does).
    """

    step_seconds: float
    last_t: float | None = None
    last_used: float | None = None
    open_start: float | None = None
    open_level: float | None = None

    @classmethod
    def after(cls, series: RateSeries) -> StepAccumulator:
        """The accumulator positioned where `resample` left off."""
        return cls(step_seconds=series.step_seconds, last_t=series.last_t, last_used=series.last_used,
                   open_start=series.end, open_level=series.end_level)

    def add(self, t: float, used: float) -> list[float]:
        """Feed one sample; returns the increments of the steps it completed (often none).

        Samples at or before the last one are ignored (the collector drops time going backwards).
        """
        if not (math.isfinite(t) and math.isfinite(used)):
            return []
        if self.last_t is None or self.last_used is None:
            self.last_t, self.last_used = t, used
            self.open_start = first_boundary(t, self.step_seconds)
            self.open_level = used if self.open_start == t else None
            return []
        if t <= self.last_t:
            return []
        assert self.open_start is not None
        out: list[float] = []
        boundary = self.open_start + self.step_seconds if self.open_level is not None else self.open_start
        t0, u0 = self.last_t, self.last_used
        slope = (used - u0) / (t - t0)
        while boundary <= t:
            level = u0 + slope * (boundary - t0)
            if self.open_level is not None:
                out.append(level - self.open_level)
            self.open_start = boundary
            self.open_level = level
            boundary += self.step_seconds
        self.last_t, self.last_used = t, used
        return out
