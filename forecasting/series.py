"""One series (a target's bytes or inodes) learnt incrementally, refitted now and then.

`SeriesModel` is plain, picklable state: the step accumulator, a bounded history of step rates,
the fitted model and its current state. Each new sample costs O(1) (plus one Holt-Winters update
per completed step). A refit is a pure function of a `RefitRequest` (`run_refit`), so the daemon
can run many of them in a process pool and hand the results back with `apply_refit`, which
replays the steps that arrived while the fit ran.

Refits happen when there is none yet, when the history has grown into a richer model (2 days →
daily season, 2 weeks → weekly), on schedule, and when the one-step error drifts well above what
the fit saw.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from quotapilot.forecasting.hw import (
    MIN_STEPS,
    FittedModel,
    ModelState,
    fit_rates,
    predict_next,
    preferred_kind,
    update,
)
from quotapilot.forecasting.resample import FloatArray, StepAccumulator, clean_samples, resample
from quotapilot.forecasting.runway import DEFAULT_THRESHOLDS, cumulative_paths
from quotapilot.forecasting.stopgap import Stopgap, stopgap_forecast
from quotapilot.forecasting.types import Forecast, Runway

_DRIFT_WEIGHT = 1.0 / 24.0
STOPGAP_SAMPLES = 256
"""Raw samples kept for the stopgap line until the first fit (then dropped)."""


class RateHistory:
    """The last `maxlen` step rates, oldest first, in an `array('d')` (8 bytes a rate; a deque of
    floats costs 32, ~43 KB per series at 8 weeks hourly, ×20,000 series). Appends are amortised
    O(1): the oldest rates are cut in chunks of `maxlen // 8`."""

    __slots__ = ("_buf", "_maxlen", "_slack")

    def __init__(self, maxlen: int) -> None:
        self._buf = array("d")
        self._maxlen = maxlen
        self._slack = max(1, maxlen // 8)

    def append(self, rate: float) -> None:
        self._buf.append(rate)
        if len(self._buf) > self._maxlen + self._slack:
            del self._buf[:len(self._buf) - self._maxlen]

    def extend(self, rates: Iterable[float]) -> None:
        self._buf.extend(rates)
        if len(self._buf) > self._maxlen:
            del self._buf[:len(self._buf) - self._maxlen]

    def __len__(self) -> int:
        return min(len(self._buf), self._maxlen)

    def __iter__(self) -> Iterator[float]:
        return iter(self._buf[len(self._buf) - len(self):])

    def last(self, n: int) -> list[float]:
        """The newest `n` rates, oldest first."""
        return self._buf[len(self._buf) - min(n, len(self)):].tolist() if n > 0 else []

    def to_numpy(self) -> FloatArray:
        return np.frombuffer(self._buf, dtype=np.float64)[len(self._buf) - len(self):].copy()


class RecentSamples:
    """The last `maxlen` raw samples `(t, used)`, oldest first, interleaved in one `array('d')`
    (16 bytes a sample; a deque of tuples costs ~110, ~28 KB per young series)."""

    __slots__ = ("_buf", "_maxlen")

    def __init__(self, maxlen: int) -> None:
        self._buf = array("d")
        self._maxlen = maxlen

    def append(self, t: float, used: float) -> None:
        self._buf.append(t)
        self._buf.append(used)
        self._trim()

    def extend(self, times: Iterable[float], used: Iterable[float]) -> None:
        for t, u in zip(times, used, strict=True):
            self._buf.append(t)
            self._buf.append(u)
        self._trim()

    def _trim(self) -> None:
        excess = len(self._buf) - 2 * self._maxlen
        if excess > 2 * max(1, self._maxlen // 8) or (excess > 0 and self._maxlen < 8):
            del self._buf[:excess]

    def clear(self) -> None:
        del self._buf[:]

    def __len__(self) -> int:
        return min(len(self._buf) // 2, self._maxlen)

    def as_array(self) -> FloatArray:
        """Shape (n, 2): times in column 0, used in column 1."""
        start = len(self._buf) - 2 * len(self)
        return np.frombuffer(self._buf, dtype=np.float64)[start:].reshape(-1, 2).copy()


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """How series are modelled (the daemon builds it from `[forecast]` settings)."""

    step_seconds: float = 3600.0
    horizon_seconds: float = 14 * 86400.0
    max_history_steps: int = 8 * 168
    refit_interval_seconds: float = 6 * 3600.0
    drift_ratio: float = 4.0
    """Refit when the smoothed squared one-step error exceeds this many times the fit's."""
    drift_min_steps: int = 6
    seed: int = 0
    use_brute: bool = False
    stopgap_min_span_seconds: float = 1.0
    """Before the first fit, two samples at least this far apart give a stopgap line (as
    `predict_linear` needs two samples); 0 would divide by nothing."""

    @property
    def horizon_steps(self) -> int:
        return math.ceil(self.horizon_seconds / self.step_seconds - 1e-9) + 1


@dataclass(frozen=True, slots=True, eq=False)
class RefitRequest:
    """Everything a refit needs, small and picklable (sent to pool workers)."""

    rates: FloatArray
    steps_seen: int
    step_seconds: float
    horizon_steps: int
    seed: int = 0
    use_brute: bool = False


def run_refit(request: RefitRequest) -> FittedModel | None:
    """Pure and top-level, so a `ProcessPoolExecutor` can run it."""
    return fit_rates(request.rates, step_seconds=request.step_seconds, horizon_steps=request.horizon_steps,
                     seed=request.seed, use_brute=request.use_brute)


@dataclass(frozen=True, slots=True)
class SeriesOutlook:
    """What one series says now: the forecast and runways, or why there is none."""

    forecast: Forecast | None
    runways: tuple[Runway, ...]
    rate_per_second: float | None
    reason: str | None
    current_used: float | None
    provisional: Stopgap | None = None
    """With `forecast` None: the labelled stopgap line (`stopgap`), when the samples allow one."""


class SeriesModel:
    """Incremental state of one series. Not thread-safe; owned by one caller."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config or ModelConfig()
        self.accumulator = StepAccumulator(self.config.step_seconds)
        self.rates = RateHistory(self.config.max_history_steps)
        self.steps_seen = 0
        self.fitted: FittedModel | None = None
        self.state: ModelState | None = None
        self.fitted_at: float | None = None
        self.failed_at: float | None = None
        """When the last refit gave no model (None, or raised where it ran): none is tried again
        for `refit_interval_seconds`, whatever the reason, so a series whose fit fails does not
        pay (and log) a failed fit every cycle."""
        self.fitted_steps_seen = 0
        self.error_ewma = 0.0
        self.recent = RecentSamples(STOPGAP_SAMPLES)
        """Raw samples for the stopgap line; emptied once a model is fitted."""

    @classmethod
    def from_samples(cls, samples: Sequence[tuple[float, float]], config: ModelConfig | None = None
                     ) -> SeriesModel:
        """Warm start from a history (vectorised resample; no fit yet)."""
        model = cls(config)
        series = resample(samples, model.config.step_seconds)
        if series is None:
            return model
        times, used = clean_samples(samples[-STOPGAP_SAMPLES:])
        model.recent.extend(times.tolist(), used.tolist())
        model.accumulator = StepAccumulator.after(series)
        model.rates.extend(series.rates.tolist())
        model.steps_seen = len(series.rates)
        return model

    # ---------------------------------------------------------------------------- samples
    @property
    def last_t(self) -> float | None:
        return self.accumulator.last_t

    @property
    def last_used(self) -> float | None:
        return self.accumulator.last_used

    def add_sample(self, t: float, used: float) -> int:
        """Feed one sample; returns how many steps it completed."""
        before = self.accumulator.last_t
        completed = self.accumulator.add(t, used)
        if self.fitted is None and self.accumulator.last_t != before:
            self.recent.append(t, used)
        for rate in completed:
            self._consume(rate)
        return len(completed)

    def _consume(self, rate: float) -> None:
        self.rates.append(rate)
        self.steps_seen += 1
        if self.fitted is not None and self.state is not None:
            error = update(self.fitted.params, self.state, rate)
            self.error_ewma += _DRIFT_WEIGHT * (error * error - self.error_ewma)

    # ------------------------------------------------------------------------------ refits
    def refit_reason(self, now: float) -> str | None:
        """Why this series should be refitted now (None: it need not be)."""
        kind_now = preferred_kind(len(self.rates), self.config.step_seconds)
        if kind_now is None:
            return None
        if self.failed_at is not None and now - self.failed_at < self.config.refit_interval_seconds:
            return None
        if self.fitted is None or self.fitted_at is None:
            return "initial"
        if kind_now != preferred_kind(self.fitted.n_steps, self.config.step_seconds):
            return "more_history"
        if now - self.fitted_at >= self.config.refit_interval_seconds:
            return "schedule"
        if self.steps_seen - self.fitted_steps_seen >= self.config.drift_min_steps and self._drifted():
            return "drift"
        return None

    def _drifted(self) -> bool:
        assert self.fitted is not None
        expected = self.fitted.sigma**2
        if expected <= 0.0:
            scale = max((abs(r) for r in self.rates), default=0.0)
            return self.error_ewma > (1e-9 * max(scale, 1.0)) ** 2
        return self.error_ewma > self.config.drift_ratio * expected

    def refit_request(self) -> RefitRequest:
        return RefitRequest(rates=self.rates.to_numpy(),
                            steps_seen=self.steps_seen, step_seconds=self.config.step_seconds,
                            horizon_steps=self.config.horizon_steps, seed=self.config.seed,
                            use_brute=self.config.use_brute)

    def apply_refit(self, request: RefitRequest, fitted: FittedModel | None, now: float) -> None:
        """Adopt a fit of `request`, replaying the steps that arrived since it was taken; `None`
        (the refit gave no model, or raised) keeps the current fit and backs off (`failed_at`)."""
        self.fitted_at = now
        if fitted is None:
            self.failed_at = now
            return
        self.failed_at = None
        state = fitted.state.copy()
        missed = self.steps_seen - request.steps_seen
        if missed > 0:
            for rate in self.rates.last(missed):
                update(fitted.params, state, rate)
        self.fitted, self.state = fitted, state
        self.recent.clear()
        self.fitted_steps_seen = self.steps_seen
        self.error_ewma = fitted.sigma**2

    def refit(self, now: float) -> FittedModel | None:
        """Refit in this process (the CLI, tests, `workers = 0`)."""
        request = self.refit_request()
        fitted = run_refit(request)
        self.apply_refit(request, fitted, now)
        return fitted

    # --------------------------------------------------------------------------- outlook
    def outlook(self, now: float, *, limit: float | None,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> SeriesOutlook:
        """The forecast from the last sample, its runways against `limit`, or why there is none."""
        last_t, last_used = self.accumulator.last_t, self.accumulator.last_used
        if self.fitted is None or self.state is None or last_t is None or last_used is None:
            reason = (f"insufficient history: {len(self.rates)} complete steps of "
                      f"{self.config.step_seconds:g} s, need {MIN_STEPS}")
            if preferred_kind(len(self.rates), self.config.step_seconds) is not None:
                reason = "not fitted yet"
            stopgap = stopgap_forecast(self.recent.as_array(), now=now, step_seconds=self.config.step_seconds,
                                       horizon_seconds=self.config.horizon_seconds, limit=limit,
                                       min_span_seconds=self.config.stopgap_min_span_seconds,
                                       thresholds=thresholds, detail=reason)
            return SeriesOutlook(None, (), None, reason, last_used, stopgap)
        assert self.accumulator.open_start is not None
        paths = cumulative_paths(self.fitted, self.state, open_start=self.accumulator.open_start,
                                 last_t=last_t, last_used=last_used, horizon_seconds=self.config.horizon_seconds)
        forecast = paths.forecast
        rate = predict_next(self.fitted.params, self.state) / self.config.step_seconds
        if not (math.isfinite(rate) and all(np.isfinite(path).all() for path in (paths.p10, paths.p50, paths.p90))):
            # an overflow the fit's own fallbacks let through (the band's squared residuals at 1e155
            # bytes): no forecast, rather than NaN paths that crash whatever prints or compares them
            reason = f"non-finite forecast: {forecast.model}" + (f" ({forecast.fallback})" if forecast.fallback else "")
            return SeriesOutlook(None, (), None, reason, last_used)
        ways = paths.runways(limit=limit, thresholds=thresholds, now=now)
        return SeriesOutlook(forecast, ways, rate, forecast.fallback, last_used)


def forecast_samples(samples: Sequence[tuple[float, float]], *, limit: float | None,
                     thresholds: Sequence[float] = DEFAULT_THRESHOLDS, config: ModelConfig | None = None,
                     now: float | None = None) -> tuple[SeriesModel, SeriesOutlook]:
    """One-shot: fit a history and forecast from its last sample (the CLI and backtests)."""
    model = SeriesModel.from_samples(samples, config)
    at = now if now is not None else (model.last_t if model.last_t is not None else 0.0)
    model.refit(at)
    return model, model.outlook(at, limit=limit, thresholds=thresholds)
