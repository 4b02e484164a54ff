"""Spikes clipped out of a rate history, level shifts kept.

A real rate has spikes (one EC2 hour at a thousand times the usual network-in) and level shifts
(a feed that moves to another host). A spike is what a running median does not follow: a step
further than `SPIKE_SIGMAS` robust standard deviations from the median of the `SPIKE_WINDOW`
steps around it is clipped to that bound. A level shift is what the median does follow: once
more than half of a window sits at the new level, the median is there too and nothing is
clipped, so a model fed the clipped history re-anchors on the new level within half a window.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from quotapilot.forecasting.hw.model import SHIFT_STEPS
from quotapilot.forecasting.resample import FloatArray

SPIKE_WINDOW = 7
"""Steps of the running median (odd; 7 hours at hourly steps: a burst shorter than half of it is
a spike, a change that lasts longer is a level)."""
SPIKE_SIGMAS = 6.0
"""How far from the running median, in robust standard deviations (1.4826 · MAD of the
deviations), a step is a spike. Not tuned on the backtest: a conservative Hampel threshold (3 is
usual to *flag* outliers; clipping should rarely touch ordinary noise)."""


def running_median(rates: FloatArray, window: int = SPIKE_WINDOW) -> FloatArray:
    """Median of the `window` - 1 neighbours of each step (the step itself left out, so a spike
    cannot pull its own reference; at the ends: the neighbours of the nearest full window)."""
    n = len(rates)
    if n < window:
        return np.full(n, float(np.median(rates)) if n else 0.0)
    half = window // 2
    windows = sliding_window_view(rates, window)
    medians = np.median(np.delete(windows, half, axis=1), axis=1)
    return np.concatenate((np.full(half, medians[0]), medians, np.full(half, medians[-1])))


def clip_spikes(rates: FloatArray, periods: tuple[int, ...] = ()) -> FloatArray:
    """`rates` with spikes clipped to the running median ± `SPIKE_SIGMAS` robust σ (a copy; the
    same values when nothing is a spike or the spread is too small to tell).

    A jump that is typical of its phase of a period (of `periods`, in steps: a day, a week) — the
    median jump at that phase over every cycle goes the same way and at least half as far — is
    the season (a nightly cleanup, a daily batch), not a spike, and is kept."""
    rates = np.asarray(rates, dtype=np.float64)
    if len(rates) < SPIKE_WINDOW:
        return rates.copy()
    median = running_median(rates)
    deviation = rates - median
    sigma = 1.4826 * float(np.median(np.abs(deviation)))
    if not sigma > 0.0:
        return rates.copy()
    bound = SPIKE_SIGMAS * sigma
    clipped = np.clip(rates, median - bound, median + bound)
    spikes = np.abs(deviation) > bound
    for period in periods:
        cycles = len(rates) // period if period > 0 else 0
        if cycles < 2:
            continue
        # the typical jump at each phase of the period, over every cycle seen
        typical = np.median(deviation[:cycles * period].reshape(cycles, period), axis=0)
        at = typical[np.arange(len(rates)) % period]
        seasonal = spikes & (at * deviation > 0.0) & (np.abs(at) > bound / 2)
        clipped[seasonal] = rates[seasonal]
    # The ends have neighbours on one side only: a reference from the nearest full window is off
    # on a steep season, and the last steps are the ones a forecast leans on. Left as they are.
    half = SPIKE_WINDOW // 2
    clipped[:half], clipped[-half:] = rates[:half], rates[-half:]
    return np.asarray(clipped, dtype=np.float64)


def raise_end_drops(rates: FloatArray, periods: tuple[int, ...] = ()) -> FloatArray:
    """`rates` with a one-off net delete in its last steps raised to the bound (a copy).

    `clip_spikes` leaves the last half window as it is: it has no neighbours after it. A delete
    or a counter reset there would be carried on as a rate: repeated every day by the seasonal
    naive candidate, extrapolated by a short level, continued by the error overlay (a reset three
    hours before a refit forecast zero growth for two weeks). So a last step that shrank the usage
    (a negative rate) and lies further below the median of the `SPIKE_WINDOW` - 1 steps before it
    than `SPIKE_SIGMAS` robust σ (of those trailing deviations over the history) is raised to that
    bound, unless it is typical of its phase of a period (a nightly cleanup: the season) or
    `SHIFT_STEPS` in a row did so (a lasting change, as the O(1) updates judge it). Usage keeps
    the drop: a forecast starts from the last observed usage. Only net deletes: a rate that falls
    but stays positive may be a real shift (holding it two more hours cost NAB's ec2_network_in
    1 d 1.22 → 1.32 on bench_forecast_phases.py), and a burst at the end warns early, not late."""
    rates = np.asarray(rates, dtype=np.float64)
    n, half = len(rates), SPIKE_WINDOW // 2
    out = rates.copy()
    if n < 2 * SPIKE_WINDOW:
        return out
    reference = np.full(n, np.nan)
    reference[SPIKE_WINDOW - 1:] = np.median(sliding_window_view(rates[:-1], SPIKE_WINDOW - 1), axis=1)
    deviation = rates - reference
    history = deviation[SPIKE_WINDOW - 1:n - half]
    sigma = 1.4826 * float(np.median(np.abs(history)))
    if not sigma > 0.0:
        return out
    bound = SPIKE_SIGMAS * sigma
    down = (np.nan_to_num(deviation, nan=0.0) < -bound) & (rates < 0.0)
    if down[-SHIFT_STEPS:].all():  # the drops that reach the end are a run: a lasting change
        return out
    for k in range(n - half, n):
        if down[k] and not _seasonal(deviation, k, periods, bound):
            out[k] = reference[k] - bound
    return out


def _seasonal(deviation: FloatArray, k: int, periods: tuple[int, ...], bound: float) -> bool:
    """Whether step `k`'s deviation is typical of its phase of one of `periods`: the median over
    the earlier cycles (two at least) goes the same way and at least half as far."""
    for period in periods:
        if period <= 0 or k - 2 * period < SPIKE_WINDOW - 1:
            continue
        earlier = deviation[np.arange(k - period, SPIKE_WINDOW - 2, -period)]
        if (typical := float(np.median(earlier))) * deviation[k] > 0.0 and abs(typical) > bound / 2:
            return True
    return False


BURST_DAYS = 14
"""Days of history the burst allowance reads (two weeks: both weekdays and weekends twice;
shorter histories: all they hold). Not tuned on the backtest."""
BURST_KNOTS_SECONDS: tuple[float, ...] = (6 * 3600.0, 86400.0)
"""Horizons the burst allowance is taken at (between them: linear; beyond the last: its mean
rate). No longer ones: of the windows of three or seven days in two weeks, a third or half hold
any one burst, so their median is not robust to it (a single 1000x hour of EC2 network-in made a
week's allowance 2.3 times the next three days' volume). Not tuned."""


def burst_allowance(spikes: FloatArray, step_seconds: float) -> tuple[float, ...]:
    """The volume the bursts typically add over each horizon of `BURST_KNOTS_SECONDS`: the median,
    over every window of that length in the last `BURST_DAYS` days, of the net clipped-off volume
    (`clip_spikes`: rates minus clipped rates) in it, never below 0 — () when there is none. A
    median, so that a rare huge burst (a news day) does not raise every forecast, while bursts that
    come in most windows of a horizon (half the volume of some real rates) are counted; short
    horizons then get little of it, as few of their windows hold a burst."""
    recent = spikes[-max(1, round(BURST_DAYS * 86400.0 / step_seconds)):]
    if not np.any(recent > 0.0):
        return ()
    cs = np.concatenate(([0.0], np.cumsum(recent)))
    out = [max(0.0, float(np.median(cs[h:] - cs[:-h]))) for h in _knot_steps(step_seconds) if h <= len(recent)]
    return tuple(out) if any(v > 0.0 for v in out) else ()


def _knot_steps(step_seconds: float) -> list[int]:
    """`BURST_KNOTS_SECONDS` in steps, each further than the one before (a step of a day or more
    makes the knots one)."""
    steps: list[int] = []
    for seconds in BURST_KNOTS_SECONDS:
        h = max(1, round(seconds / step_seconds))
        if not steps or h > steps[-1]:
            steps.append(h)
    return steps


def burst_path(allowance: tuple[float, ...], step_seconds: float, steps: int) -> FloatArray:
    """The cumulative burst allowance at 1 … `steps` steps ahead (`burst_allowance`'s knots joined
    linearly from 0, carried on at the last knot's mean rate)."""
    knots = np.array([0.0, *_knot_steps(step_seconds)[:len(allowance)]])
    values = np.array((0.0, *allowance))
    h = np.arange(1, steps + 1, dtype=np.float64)
    path = np.interp(h, knots, values)
    beyond = h > knots[-1]
    path[beyond] = values[-1] * h[beyond] / knots[-1]
    return np.maximum.accumulate(path)
