"""The forecaster stage: one incremental model per series, refits off the event loop, metrics.

Every cycle, each observation updates its series (a quota's bytes; its inodes when it has an inode
limit; the cluster pool against usable capacity) in O(1) and puts a `SeriesForecast` into
`ctx.forecasts`. Refits (`quotapilot.forecasting.series.run_refit`, pure) are due when a series
has none yet, has grown into a richer model, on `refit_interval_seconds` and on drift. With
`workers > 0` they run in batches in a `ProcessPoolExecutor` and are adopted at a later cycle
(replaying the steps that arrived meanwhile), so the loop never waits on statsmodels; with
`workers = 0` they run in-process at once (tests, the demo: deterministic).

A refit that raises fails its own series only (`timed_refits`): the series keeps its fit, backs
off for a refit interval (`SeriesModel.apply_refit`) and counts as a `fit_error` fallback. A pool
worker killed (the OOM killer) breaks a `ProcessPoolExecutor` for good: the stage drops a pool it
owns (logged once) and the next cycle starts a new one; the batches it lost are retried then.

The view publishes the series of the targets each cluster's last good poll listed (observed, or
whose sample was dropped: still present, as the snapshot treats them). A target that vanishes
leaves the metrics at once; its model is kept until `_evict` (two refit intervals), so one that
comes back within that time resumes where it was.

A new series can warm-start from the store (`history_loader`, run in a thread). Scheduling uses
the injected clock; fit durations are CPU time measured where the fit ran.

`ForecastCollector` exports the latest results from an immutable `ForecastView`. A runway that is
not within the horizon has no `quotapilot_target_runway_seconds` sample (absent rather than +Inf,
so `min()`/`<` alert expressions and dashboards need no special case). Inode series are in
`ctx.forecasts` and the API; the metrics carry the bytes series (quotas and pools) only, which
keeps the documented label set.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.http.metrics import escape_label_value, extra_target_labels, format_sample_value
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.snapshot import HistogramState
from quotapilot.daemon.settings import ForecastSettings
from quotapilot.forecasting.hw import FallbackReason, FittedModel
from quotapilot.forecasting.series import ModelConfig, RefitRequest, SeriesModel, run_refit
from quotapilot.forecasting.types import (
    POOL_TARGET,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
    TargetKind,
)

log = get_logger(__name__)

History = list[tuple[float, int, int | None]]
HistoryLoader = Callable[[TargetId], History]
"""`(target) -> [(t, used_bytes, used_inodes), ...]` oldest first (the store's `history`)."""

SeriesKey = tuple[TargetId, Dimension]

FIT_SECONDS_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
NO_FITS = HistogramState(FIT_SECONDS_BUCKETS, (0,) * (len(FIT_SECONDS_BUCKETS) + 1))
"""`quotapilot_forecast_fit_seconds` before the first refit."""
METRIC_HORIZONS: tuple[tuple[str, float], ...] = (("1h", 3600.0), ("24h", 86400.0), ("7d", 7 * 86400.0))
REFIT_BATCH = 32
"""Refits per pool task: amortises pickling and IPC over several series."""
YIELD_EVERY = 500
"""Series per slice of a cycle's outlook work before giving the event loop a turn."""


class RefitOutcome(NamedTuple):
    """One request's result as it comes back from where it ran (picklable)."""

    fitted: FittedModel | None
    seconds: float
    """CPU seconds the refit took, measured where it ran."""
    error: str | None = None
    """`ExceptionType: message` (at most 200 characters) when the refit raised (then `fitted` is None)."""


def timed_refits(requests: Sequence[RefitRequest]) -> list[RefitOutcome]:
    """Run refits, each with its CPU seconds (top-level so pool workers can import it). A refit
    that raises is that series' outcome, not the batch's: one bad series must not cost the
    others their fits."""
    out = []
    for request in requests:
        started = time.perf_counter()
        try:
            fitted = run_refit(request)
        except Exception as exc:  # whatever statsmodels or numpy raise on one series' data
            error = f"{type(exc).__name__}: {exc}"[:200]  # a log field, not a dump of the array
            out.append(RefitOutcome(None, time.perf_counter() - started, error))
            continue
        out.append(RefitOutcome(fitted, time.perf_counter() - started))
    return out


@dataclass(frozen=True, slots=True)
class ForecastView:
    """What the collector reads: immutable, replaced as a whole after each cycle."""

    t: float
    forecasts: Mapping[SeriesKey, SeriesForecast] = field(default_factory=lambda: MappingProxyType({}))
    fit_seconds: HistogramState = NO_FITS
    fallbacks: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(slots=True)
class _Series:
    model: SeriesModel
    last_seen: float
    pending: bool = False
    on_stopgap: bool = False
    """Its metrics come from the stopgap line (counted and logged once when that starts)."""
    latest: SeriesForecast | None = None
    """Its forecast at the last cycle that reported it (what the view publishes)."""
    listed: bool = True
    """Its cluster's last good poll listed its target (observed, or its sample dropped): only
    then does the view publish it."""


class ForecastStage:
    """The `forecaster` stage (runs after `store`, before `growth`)."""

    name = "forecaster"

    def __init__(self, settings: ForecastSettings, clock: Clock, *,
                 history_loader: HistoryLoader | None = None, executor: Executor | None = None) -> None:
        """`executor`: where refits run when `settings.workers > 0` (default: a process pool of that
        size, created on first use); pass one to share or to test."""
        self.settings = settings
        self.clock = clock
        self.history_loader = history_loader
        self.config = ModelConfig(step_seconds=settings.step_seconds, horizon_seconds=settings.horizon_seconds,
                                  refit_interval_seconds=settings.refit_interval_seconds)
        self.thresholds = tuple(sorted(settings.thresholds))
        self._executor = executor
        self._owns_executor = False
        self._pool_broken = False
        """A broken pool was logged and no batch has come back from a pool since (log once)."""
        self._series: dict[SeriesKey, _Series] = {}
        self._inflight: set[asyncio.Future[None]] = set()
        self._fit_seconds = NO_FITS
        self._fallbacks: Counter[str] = Counter()
        self.view = ForecastView(t=clock.now())

    def collector(self) -> ForecastCollector:
        return ForecastCollector(lambda: self.view)

    async def close(self) -> None:
        for future in list(self._inflight):
            future.cancel()
        if self._executor is not None and self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (the demo's contract: drain(timeout))
        """Wait for the refits in flight and adopt them (tests; the demo), for up to `timeout`
        seconds (`TimeoutError` then)."""
        async with asyncio.timeout(timeout):
            while self._inflight:
                await asyncio.gather(*list(self._inflight), return_exceptions=True)

    # --------------------------------------------------------------------------- the cycle
    async def on_cycle(self, ctx: CycleContext) -> None:
        if not ctx.poll.ok:
            return
        now = ctx.now
        samples = list(_series_samples(ctx.poll.observations))
        new_keys = [key for key, *_ in samples if key not in self._series]
        if new_keys:
            for key, model in zip(new_keys, await self._new_models(new_keys), strict=True):
                self._series[key] = _Series(model, last_seen=now)
        for key, t, used, _ in samples:
            series = self._series[key]
            series.model.add_sample(t, used)
            series.last_seen = now
        self._mark_listed(ctx.poll, {key for key, *_ in samples})
        await self._schedule_refits(now)
        for done, (key, _, _, limit) in enumerate(samples, start=1):
            result = self._outlook(key, limit, now)
            self._series[key].latest = result
            ctx.forecasts[key] = result
            if done % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # ~100 µs a series: let /metrics and other clusters run
        self._evict(now)
        self._publish(now)

    async def _new_models(self, keys: Sequence[SeriesKey]) -> list[SeriesModel]:
        """Models for series seen for the first time, warm-started from the store when possible
        (all of a cycle's reads in one worker thread: SQLite must not block the loop)."""
        loader = self.history_loader
        if loader is None:
            return [SeriesModel(self.config) for _ in keys]
        return await asyncio.to_thread(self._warm_models, loader, keys)

    def _warm_models(self, loader: HistoryLoader, keys: Sequence[SeriesKey]) -> list[SeriesModel]:
        """One history read per target: a quota's bytes and inode series share it."""
        histories = {target: _read_history(loader, target) for target in dict.fromkeys(t for t, _ in keys)}
        return [self._warm_model(histories[target], dimension) for target, dimension in keys]

    def _warm_model(self, points: History | None, dimension: Dimension) -> SeriesModel:
        if points is None:
            return SeriesModel(self.config)
        if dimension is Dimension.INODES:
            samples = [(t, float(inodes)) for t, _, inodes in points if inodes is not None]
        else:
            samples = [(t, float(used)) for t, used, _ in points]
        return SeriesModel.from_samples(samples, self.config)

    def _outlook(self, key: SeriesKey, limit: float | None, now: float) -> SeriesForecast:
        target, dimension = key
        series = self._series[key]
        outlook = series.model.outlook(now, limit=limit, thresholds=self.thresholds)
        stopgap = outlook.provisional
        if stopgap is not None and not series.on_stopgap:
            self._fallbacks[str(FallbackReason.BELOW_MIN_HISTORY)] += 1
            log.info("forecast.fallback", target=target.key, dimension=str(dimension),
                     model=stopgap.forecast.model, reason=str(FallbackReason.BELOW_MIN_HISTORY),
                     detail=outlook.reason)
        series.on_stopgap = stopgap is not None
        return SeriesForecast(target=target, dimension=dimension, t=now, limit=limit,
                              forecast=outlook.forecast, runways=outlook.runways,
                              rate_per_second=outlook.rate_per_second, reason=outlook.reason,
                              provisional=None if stopgap is None else stopgap.forecast,
                              provisional_runways=() if stopgap is None else stopgap.runways)

    # ----------------------------------------------------------------------------- refits
    async def _schedule_refits(self, now: float) -> None:
        due: list[tuple[SeriesKey, RefitRequest]] = []
        for key, series in self._series.items():
            if series.pending or not series.listed:  # a vanished target's model waits, unfitted
                continue
            reason = series.model.refit_reason(now)
            if reason is not None:
                due.append((key, series.model.refit_request()))
        if not due:
            return
        if self.settings.workers == 0 and self._executor is None:
            self._adopt(due, timed_refits([request for _, request in due]), now)
            return
        executor = self._pool()
        loop = asyncio.get_running_loop()
        for start in range(0, len(due), REFIT_BATCH):
            batch = due[start:start + REFIT_BATCH]
            try:
                future = loop.run_in_executor(executor, timed_refits, [request for _, request in batch])
            except BrokenProcessPool as exc:  # it broke since the last batch came back
                self._pool_broke(executor, exc)
                return  # this batch and the rest: not pending, due again next cycle
            for key, _ in batch:
                self._series[key].pending = True
            task = asyncio.ensure_future(self._await_batch(executor, batch, future))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _await_batch(self, executor: Executor, batch: list[tuple[SeriesKey, RefitRequest]],
                           future: asyncio.Future[list[RefitOutcome]]) -> None:
        try:
            results = await future
        except asyncio.CancelledError:
            self._release(batch)
            raise
        except BrokenProcessPool as exc:  # a worker died (the OOM killer): every batch in flight fails
            self._release(batch)
            self._pool_broke(executor, exc)
            return
        except Exception as exc:  # e.g. a request that would not pickle: retry next cycle
            self._release(batch)
            log.error("forecast.refit_failed", series=len(batch), error=repr(exc))
            return
        if self._pool_broken and executor is self._executor:
            self._pool_broken = False
            log.info("forecast.pool_recovered")
        self._adopt(batch, results, self.clock.now())

    def _release(self, batch: Sequence[tuple[SeriesKey, RefitRequest]]) -> None:
        """A batch that came back without results: its series are due again at the next cycle."""
        for key, _ in batch:
            series = self._series.get(key)
            if series is not None:
                series.pending = False

    def _adopt(self, batch: Sequence[tuple[SeriesKey, RefitRequest]],
               results: Sequence[RefitOutcome], now: float) -> None:
        for (key, request), (fitted, seconds, error) in zip(batch, results, strict=True):
            self._fit_seconds = self._fit_seconds.observe(seconds)
            series = self._series.get(key)
            if series is None:
                continue
            series.pending = False
            series.model.apply_refit(request, fitted, now)  # None: keeps its fit, backs off
            if error is not None:
                reason = str(FallbackReason.FIT_ERROR)
                self._fallbacks[reason] += 1
                kept = series.model.fitted
                log.warning("forecast.fallback", target=key[0].key, dimension=str(key[1]),
                            model=None if kept is None else kept.model_name, reason=reason, detail=error)
            elif fitted is not None and fitted.fallback is not None:
                self._fallbacks[str(fitted.fallback)] += 1
                log.info("forecast.fallback", target=key[0].key, dimension=str(key[1]),
                         model=fitted.model_name, reason=str(fitted.fallback), detail=fitted.fallback_detail)

    def _pool(self) -> Executor:
        if self._executor is None:
            # forkserver: the daemon has threads (VMS pool, SQLite), which fork must not copy.
            self._executor = ProcessPoolExecutor(max_workers=max(1, self.settings.workers),
                                                 mp_context=multiprocessing.get_context("forkserver"))
            self._owns_executor = True
        return self._executor

    def _pool_broke(self, executor: Executor, exc: BrokenProcessPool) -> None:
        """`executor` refuses all work from now on. One the stage owns is shut down and dropped,
        so the next cycle starts a new one; one passed in is its owner's to replace (until then
        every cycle's submit fails at once and the series keep their fits)."""
        if executor is not self._executor:
            return  # an older pool, dropped already: another of its batches failing
        if self._owns_executor:
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if not self._pool_broken:
            self._pool_broken = True
            log.error("forecast.pool_broken", error=repr(exc), replaced=self._owns_executor)

    # ------------------------------------------------------------------------- bookkeeping
    def _mark_listed(self, poll: PollResult, fed: set[SeriesKey]) -> None:
        """Which of `poll.cluster`'s series the view publishes: those fed this cycle, and those of
        a target whose sample was dropped (present, its last forecast kept, as in the snapshot)."""
        dropped = {sample.target for sample in poll.dropped}
        for key, series in self._series.items():
            if key[0].cluster == poll.cluster:
                series.listed = key in fed or key[0].name in dropped

    def _evict(self, now: float) -> None:
        """Forget series nobody has reported for two refit intervals (deleted quotas)."""
        horizon = 2 * self.settings.refit_interval_seconds
        stale = [key for key, series in self._series.items()
                 if now - series.last_seen > horizon and not series.pending]
        for key in stale:
            del self._series[key]

    def _publish(self, now: float) -> None:
        latest = {key: series.latest for key, series in self._series.items()
                  if series.latest is not None and series.listed}
        self.view = ForecastView(t=now, forecasts=MappingProxyType(latest),
                                 fit_seconds=self._fit_seconds,
                                 fallbacks=MappingProxyType(dict(self._fallbacks)))


def _read_history(loader: HistoryLoader, target: TargetId) -> History | None:
    try:
        return loader(target)
    except Exception as exc:  # a warm start is an optimisation: start cold rather than fail the cycle
        log.warning("forecast.warm_start_failed", target=target.key, error=str(exc))
        return None


def _series_samples(observations: Sequence[Observation]) -> Iterator[tuple[SeriesKey, float, float, float | None]]:
    """(key, t, value, limit) of every series an observation feeds."""
    for obs in observations:
        limit = float(obs.hard_limit_bytes) if obs.hard_limit_bytes else None
        yield (obs.target, Dimension.BYTES), obs.t, float(obs.used_bytes), limit
        if obs.used_inodes is not None and obs.hard_limit_inodes:
            yield (obs.target, Dimension.INODES), obs.t, float(obs.used_inodes), float(obs.hard_limit_inodes)


# ---------------------------------------------------------------------------------- metrics
RUNWAY_METRIC = "quotapilot_target_runway_seconds"
FORECAST_USED_METRIC = "quotapilot_target_forecast_used_bytes"
USED_QUANTILE_LABELS: dict[str, str] = {"p10": "0.1", "p50": "0.5", "p90": "0.9"}
"""Usage path → the `quantile` label of the forecast level (the same quantile)."""
RUNWAY_QUANTILE_LABELS: dict[str, str] = {"p10": "0.9", "p50": "0.5", "p90": "0.1"}
"""Usage path → the `quantile` label of its runway: the p90 usage path crosses first, so its
crossing time is the 10th percentile of the runway (the pessimistic one)."""


def threshold_label(ratio: float) -> str:
    return str(float(ratio))


RUNWAY_HELP = (
    "Seconds from now until usage crosses threshold x the hard limit (pool: usable capacity), "
    "as quantiles of the runway: 0.1 is the pessimistic one (the p90 usage path), 0.5 the "
    "median, 0.9 the optimistic one; 0 when already above; no sample when not within the "
    "forecast horizon.")
FORECAST_USED_HELP = "Forecast used bytes at now + horizon, as quantiles (0.9 is the pessimistic path)."


class ForecastCollector:
    """Prometheus families from the stage's latest `ForecastView` (no IO, no mutation).

    `collect()` yields every family (registries, tests). `/metrics` takes the two per-target
    summaries (~90,000 samples at 10,000 quotas) from `render_text()` instead — rendered straight
    to exposition text and kept until the view is replaced, as the core does for its per-target
    gauges — and the small rest from `collect_rest()`."""

    def __init__(self, view: Callable[[], ForecastView]) -> None:
        self._view = view
        self._text: tuple[ForecastView, str] | None = None

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        view = self._view()
        yield from _summary_families(view)
        yield from _rest_families(view)

    def collect_rest(self) -> Iterator[Metric]:
        return _rest_families(self._view())

    def render_text(self) -> str:
        view = self._view()
        cached = self._text
        if cached is None or cached[0] is not view:
            cached = (view, _summaries_text(view))
            self._text = cached
        return cached[1]


Labels = tuple[tuple[str, str], ...]


def _summary_samples(view: ForecastView) -> Iterator[tuple[str, Labels, Labels, float]]:
    """(metric, target labels, other labels, value) of the per-target summaries: runway and
    forecast level (bytes only: the inode forecasts stay inside the daemon, which keeps the
    documented label set)."""
    for (target, dimension), series in sorted(view.forecasts.items(), key=lambda kv: _sort_key(kv[0])):
        if dimension is not Dimension.BYTES:
            continue
        base = (("cluster", target.cluster), ("path", target.path),
                ("target", target.name if target.kind is not TargetKind.POOL else POOL_TARGET),
                *extra_target_labels(target).items())
        for way in series.runways or series.provisional_runways:
            threshold = threshold_label(way.threshold_ratio)
            for path_quantile, runway_quantile in RUNWAY_QUANTILE_LABELS.items():
                when = getattr(way, path_quantile)
                if when is not None:
                    yield (RUNWAY_METRIC, base, (("threshold", threshold), ("quantile", runway_quantile)),
                           max(0.0, when - series.t))
        forecast = series.forecast or series.provisional
        if forecast is None:
            continue
        for label, ahead in METRIC_HORIZONS:
            for path_quantile, used_quantile in USED_QUANTILE_LABELS.items():
                value = forecast.at(series.t + ahead, path_quantile)
                if value is not None:
                    yield FORECAST_USED_METRIC, base, (("horizon", label), ("quantile", used_quantile)), value


def _summary_families(view: ForecastView) -> Iterator[Metric]:
    # Summaries (quantiles, no _sum/_count): Prometheus reserves the `quantile` label for them.
    families = {RUNWAY_METRIC: Metric(RUNWAY_METRIC, RUNWAY_HELP, "summary"),
                FORECAST_USED_METRIC: Metric(FORECAST_USED_METRIC, FORECAST_USED_HELP, "summary")}
    for metric, base, extra, value in _summary_samples(view):
        families[metric].add_sample(metric, dict(base + extra), value)
    yield from families.values()


def _label_text(labels: Labels) -> str:
    return ",".join(f'{key}="{escape_label_value(value)}"' for key, value in labels)


def _summaries_text(view: ForecastView) -> str:
    """The same two families as `_summary_families`, as Prometheus text."""
    lines: dict[str, list[str]] = {RUNWAY_METRIC: [], FORECAST_USED_METRIC: []}
    prefix_of: dict[Labels, str] = {}
    extra_text: dict[Labels, str] = {}
    for metric, base, extra, value in _summary_samples(view):
        prefix = prefix_of.get(base)
        if prefix is None:
            prefix = prefix_of[base] = _label_text(base)
        tail = extra_text.get(extra)
        if tail is None:
            tail = extra_text[extra] = _label_text(extra)
        lines[metric].append(f"{metric}{{{prefix},{tail}}} {format_sample_value(value)}\n")
    return "".join(
        f"# HELP {metric} {help_text}\n# TYPE {metric} summary\n" + "".join(lines[metric])
        for metric, help_text in ((RUNWAY_METRIC, RUNWAY_HELP), (FORECAST_USED_METRIC, FORECAST_USED_HELP)))


def _rest_families(view: ForecastView) -> Iterator[Metric]:
    fit = HistogramMetricFamily("quotapilot_forecast_fit_seconds",
                                "CPU seconds per model refit (where it ran).")
    fit.add_metric([], [(le, float(n)) for le, n in view.fit_seconds.cumulative()], view.fit_seconds.total)
    yield fit
    fallbacks = CounterMetricFamily("quotapilot_forecast_fallbacks",
                                    "Refits that used a simpler model than preferred, by reason.",
                                    labels=["reason"])
    # every reason from 0, so `increase()` sees the first one
    counts = {str(reason): 0 for reason in FallbackReason} | dict(view.fallbacks)
    for reason, count in sorted(counts.items()):
        fallbacks.add_metric([reason], float(count))
    yield fallbacks


def _sort_key(key: SeriesKey) -> tuple[str, str, str]:
    return key[0].cluster, key[0].name, str(key[1])
