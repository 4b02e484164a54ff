"""The forecaster stage on hand-made cycles, and its Prometheus collector."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

import quotapilot.daemon.stages.forecast as forecast_module
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, DroppedSample, PollResult
from quotapilot.daemon.settings import ForecastSettings
from quotapilot.daemon.stages.forecast import ForecastStage
from quotapilot.daemon.stages.presence import REMOVED_TARGET_GRACE_SECONDS
from quotapilot.forecasting.series import RefitRequest, run_refit
from quotapilot.forecasting.types import POOL_TARGET, Dimension, Observation, TargetId, TargetKind

T0 = 1_767_571_200.0
RAW = TargetId("sim", "cosmos7-raw", "/cosmos7/raw")
POOL = TargetId("sim", POOL_TARGET, "/", TargetKind.POOL)
RATE = 1e7  # bytes per second


def settings(**overrides: object) -> ForecastSettings:
    values: dict[str, object] = {"workers": 0, "horizon_seconds": 7 * 86400.0, **overrides}
    return ForecastSettings(**values)  # type: ignore[arg-type]


def poll(t: float) -> PollResult:
    used = int(1e12 + RATE * (t - T0))
    return PollResult(cluster="sim", t=t, observations=(
        Observation(RAW, t, used, hard_limit_bytes=int(used + RATE * 48 * 3600 + RATE * (T0 + 30 * 3600 - t)),
                    used_inodes=int((t - T0) * 10), hard_limit_inodes=10**9),
        Observation(POOL, t, 5 * used, hard_limit_bytes=10**16),
    ))


async def run_cycles(stage: ForecastStage, clock: VirtualClock, hours: float) -> CycleContext:
    ctx = CycleContext(poll=poll(clock.now()), now=clock.now())
    for _ in range(int(hours * 4)):
        ctx = CycleContext(poll=poll(clock.now()), now=clock.now())
        await stage.on_cycle(ctx)
        clock.advance(900)
    return ctx


class TestForecastStage:
    """Each observation yields a SeriesForecast per dimension; refits follow the history."""

    async def test_forecasts_every_series(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        ctx = await run_cycles(stage, clock, 30)
        assert {(RAW, Dimension.BYTES), (RAW, Dimension.INODES), (POOL, Dimension.BYTES)} == set(ctx.forecasts)
        raw = ctx.forecasts[(RAW, Dimension.BYTES)]
        assert raw.forecast is not None and raw.rate_per_second is not None
        assert abs(raw.rate_per_second - RATE) < 1e-3 * RATE
        full = raw.runway(1.0)
        assert full is not None and full.p50 is not None
        assert abs(full.p50 - ctx.now - 48 * 3600 - (T0 + 30 * 3600 - ctx.now)) < 3600

    async def test_too_early_says_why(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        ctx = await run_cycles(stage, clock, 1)
        raw = ctx.forecasts[(RAW, Dimension.BYTES)]
        assert raw.forecast is None and raw.reason is not None and "insufficient" in raw.reason

    async def test_failed_poll_is_skipped(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        ctx = CycleContext(poll=PollResult(cluster="sim", t=T0, error="unreachable"), now=T0)
        await stage.on_cycle(ctx)
        assert ctx.forecasts == {}

    async def test_warm_start_from_history(self) -> None:
        clock = VirtualClock(T0 + 40 * 3600)
        asked: list[TargetId] = []

        def history(target: TargetId) -> list[tuple[float, int, int | None]]:
            asked.append(target)
            return [(T0 + k * 3600.0, int(1e12 + RATE * k * 3600), k * 36000) for k in range(40)]

        stage = ForecastStage(settings(), clock, history_loader=history)
        ctx = CycleContext(poll=poll(clock.now()), now=clock.now())
        await stage.on_cycle(ctx)
        raw = ctx.forecasts[(RAW, Dimension.BYTES)]
        assert raw.forecast is not None, raw.reason
        assert RAW in asked

    async def test_refits_off_the_loop_are_adopted(self) -> None:
        clock = VirtualClock(T0)
        with ThreadPoolExecutor(max_workers=1) as pool:
            stage = ForecastStage(settings(workers=1), clock, executor=pool)
            await run_cycles(stage, clock, 6)
            await stage.drain()
            ctx = CycleContext(poll=poll(clock.now()), now=clock.now())
            await stage.on_cycle(ctx)
            assert ctx.forecasts[(RAW, Dimension.BYTES)].forecast is not None
            await stage.close()


class TestForecastCollector:
    """The collector exports runways, forecast levels, fit times and fallbacks from the view."""

    async def test_metrics(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        ctx = await run_cycles(stage, clock, 30)
        registry = CollectorRegistry()
        registry.register(stage.collector())
        labels = {"cluster": "sim", "target": "cosmos7-raw", "path": "/cosmos7/raw", "kind": "quota", "tier": ""}
        runway = registry.get_sample_value("quotapilot_target_runway_seconds",
                                           {**labels, "threshold": "1.0", "quantile": "0.1"})
        assert runway is not None and abs(runway - (48 * 3600 + T0 + 30 * 3600 - ctx.now)) < 3600
        used_1h = registry.get_sample_value("quotapilot_target_forecast_used_bytes",
                                            {**labels, "horizon": "1h", "quantile": "0.5"})
        assert used_1h is not None and used_1h > 1e12
        pool_labels = {"cluster": "sim", "target": "pool", "path": "/", "kind": "pool", "tier": ""}
        pool = registry.get_sample_value("quotapilot_target_forecast_used_bytes",
                                         {**pool_labels, "horizon": "7d", "quantile": "0.9"})
        assert pool is not None
        # the pool never fills within the horizon: no runway sample rather than +Inf
        assert registry.get_sample_value("quotapilot_target_runway_seconds",
                                         {**pool_labels, "threshold": "1.0", "quantile": "0.5"}) is None
        fits = registry.get_sample_value("quotapilot_forecast_fit_seconds_count", {})
        assert fits is not None and fits >= 3
        assert registry.get_sample_value("quotapilot_forecast_fallbacks_total", {"reason": "constant_rate"}) >= 1
        # a reason that never happened is there from 0
        assert registry.get_sample_value("quotapilot_forecast_fallbacks_total", {"reason": "non_finite"}) == 0.0

    async def test_summary_quantiles_are_ordered(self) -> None:
        """The `quantile` label is numeric (Prometheus' summary convention): the forecast level's
        0.9 is the pessimistic path, and the runway's 0.1 (it crosses first)."""
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        await run_cycles(stage, clock, 30)
        registry = CollectorRegistry()
        registry.register(stage.collector())
        labels = {"cluster": "sim", "target": "cosmos7-raw", "path": "/cosmos7/raw", "kind": "quota", "tier": ""}

        def runway(q: str) -> float | None:
            return registry.get_sample_value("quotapilot_target_runway_seconds",
                                             {**labels, "threshold": "1.0", "quantile": q})

        def used(q: str) -> float | None:
            return registry.get_sample_value("quotapilot_target_forecast_used_bytes",
                                             {**labels, "horizon": "24h", "quantile": q})

        r10, r50, r90 = runway("0.1"), runway("0.5"), runway("0.9")
        u10, u50, u90 = used("0.1"), used("0.5"), used("0.9")
        assert r10 is not None and r50 is not None and r90 is not None and r10 <= r50 <= r90
        assert u10 is not None and u50 is not None and u90 is not None and u10 <= u50 <= u90
        types = {family.name: family.type for family in registry.collect()}
        assert types["quotapilot_target_runway_seconds"] == "summary"
        assert types["quotapilot_target_forecast_used_bytes"] == "summary"

    async def test_text_fast_path_matches_the_families(self) -> None:
        """/metrics takes the two big summaries from `render_text()` and the rest from
        `collect_rest()`: together exactly what `collect()` yields, parsed by Prometheus' parser."""
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        await run_cycles(stage, clock, 30)
        collector = stage.collector()

        def samples(families: Iterable[Metric]) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
            return {(s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples}

        text = collector.render_text()
        assert text is collector.render_text()  # kept until the view is replaced
        fast = samples(text_string_to_metric_families(text)) | samples(collector.collect_rest())
        everything = samples(collector.collect())
        assert {s[0] for s in everything} >= {"quotapilot_target_runway_seconds",
                                              "quotapilot_forecast_fit_seconds_count"}
        assert everything == fast
        assert {f.name for f in text_string_to_metric_families(text)} == {
            "quotapilot_target_runway_seconds", "quotapilot_target_forecast_used_bytes"}

    async def test_young_series_get_a_labelled_stopgap(self) -> None:
        """Two polls minutes apart: no model yet (nothing acts), but the metrics show the stopgap
        line and count the fallback once."""
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock)
        for _ in range(3):
            ctx = CycleContext(poll=poll(clock.now()), now=clock.now())
            await stage.on_cycle(ctx)
            clock.advance(60)
        raw = ctx.forecasts[(RAW, Dimension.BYTES)]
        assert raw.forecast is None and raw.runways == () and raw.rate_per_second is None
        assert raw.provisional is not None and raw.provisional.model == "predict_linear"
        assert raw.provisional.fallback is not None and raw.provisional.fallback.startswith("below_min_history")
        registry = CollectorRegistry()
        registry.register(stage.collector())
        labels = {"cluster": "sim", "target": "cosmos7-raw", "path": "/cosmos7/raw", "kind": "quota", "tier": ""}
        median = registry.get_sample_value("quotapilot_target_runway_seconds",
                                           {**labels, "threshold": "1.0", "quantile": "0.5"})
        expected = 48 * 3600 + T0 + 30 * 3600 - ctx.now
        assert median is not None and abs(median - expected) < 0.01 * expected
        assert registry.get_sample_value("quotapilot_target_forecast_used_bytes",
                                         {**labels, "horizon": "7d", "quantile": "0.9"}) is not None
        # raw bytes, raw inodes, pool: one each, not one per cycle
        assert registry.get_sample_value("quotapilot_forecast_fallbacks_total",
                                         {"reason": "below_min_history"}) == 3.0


# ------------------------------------------------------------- several targets, warm-started
GOOD = TargetId("sim", "good", "/good")
BAD = TargetId("sim", "bad", "/bad")
SCRATCH = TargetId("sim", "scratch", "/scratch")
OTHER = TargetId("other", "raw", "/raw")
History = list[tuple[float, int, int | None]]


def used_at(t: float) -> int:
    """Every target of these tests grows at RATE; their histories end where their polls begin."""
    return int(1e12 + RATE * (t - T0 + 60 * 3600))


def history_of(hours: float) -> History:
    """`hours` of history up to T0, every 15 minutes."""
    start = T0 - hours * 3600
    return [(start + i * 900.0, used_at(start + i * 900.0), None) for i in range(int(hours * 4) + 1)]


def warm(hours: dict[TargetId, float]) -> Callable[[TargetId], History]:
    return lambda target: history_of(hours.get(target, 40.0))


def poll_of(t: float, *targets: TargetId, limit: int = 10**15, dropped: tuple[TargetId, ...] = ()) -> PollResult:
    """A good poll of cluster "sim" (or of the first target's cluster) listing `targets`, and
    refusing the samples of `dropped`."""
    cluster = (targets or dropped or (GOOD,))[0].cluster
    return PollResult(cluster=cluster, t=t,
                      observations=tuple(Observation(target, t, used_at(t), limit) for target in targets),
                      dropped=tuple(DroppedSample(cluster, target.name, "went_backwards") for target in dropped))


def fit_errors(stage: ForecastStage) -> float | None:
    registry = CollectorRegistry()
    registry.register(stage.collector())
    return registry.get_sample_value("quotapilot_forecast_fallbacks_total", {"reason": "fit_error"})


def runway_targets(stage: ForecastStage) -> set[str]:
    return {sample.labels["target"] for family in stage.collector().collect()
            if family.name == "quotapilot_target_runway_seconds" for sample in family.samples}


class TestRefitRaising:
    """A refit that raises fails its own series only: the others are fitted, it keeps what it had
    (here: no model), backs off a refit interval and is logged and counted as `fit_error`."""

    @pytest.fixture
    def refits_of_bad(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        """Refits of series with ≥ 60 steps (BAD's 60 h history; GOOD has 40) raise as statsmodels
        does on a bad array; the list collects their lengths."""
        real = run_refit
        calls: list[int] = []

        def flaky(request: RefitRequest) -> Any:
            if len(request.rates) >= 60:
                calls.append(len(request.rates))
                raise ValueError("array must not contain infs or NaNs")
            return real(request)

        monkeypatch.setattr(forecast_module, "run_refit", flaky)
        return calls

    async def test_one_failing_series_does_not_fail_the_cycle(self, refits_of_bad: list[int]) -> None:
        """workers = 0: the exception escaped `on_cycle`, so no series had a forecast that cycle."""
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock, history_loader=warm({BAD: 60.0}))
        ctx = CycleContext(poll=poll_of(T0, GOOD, BAD), now=T0)
        with capture_logs() as logs:
            await stage.on_cycle(ctx)
        good, bad = ctx.forecasts[(GOOD, Dimension.BYTES)], ctx.forecasts[(BAD, Dimension.BYTES)]
        assert good.forecast is not None
        assert bad.forecast is None and refits_of_bad == [60]
        assert fit_errors(stage) == 1.0
        failed = [entry for entry in logs if entry.get("reason") == "fit_error"]
        assert [(e["event"], e["log_level"], e["target"], e["detail"]) for e in failed] == [
            ("forecast.fallback", "warning", "sim/bad", "ValueError: array must not contain infs or NaNs")]

    async def test_a_failing_series_backs_off_a_refit_interval(self, refits_of_bad: list[int]) -> None:
        """Not a failed fit (and a log line, and a count) every cycle: the next try is a refit
        interval later."""
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock, history_loader=warm({BAD: 60.0}))
        interval = stage.settings.refit_interval_seconds
        now = T0
        while now < T0 + interval:
            await stage.on_cycle(CycleContext(poll=poll_of(now, GOOD, BAD), now=now))
            now += 900
            clock.advance(900)
        assert len(refits_of_bad) == 1
        await stage.on_cycle(CycleContext(poll=poll_of(now, GOOD, BAD), now=now))
        assert len(refits_of_bad) == 2
        assert fit_errors(stage) == 2.0

    async def test_the_rest_of_a_pool_batch_is_adopted(self, refits_of_bad: list[int]) -> None:
        """With a pool, the whole batch of up to 32 series failed with the one exception."""
        clock = VirtualClock(T0)
        with ThreadPoolExecutor(max_workers=1) as pool:
            stage = ForecastStage(settings(workers=1), clock, executor=pool, history_loader=warm({BAD: 60.0}))
            await stage.on_cycle(CycleContext(poll=poll_of(T0, GOOD, BAD), now=T0))
            await stage.drain(60)
            clock.advance(60)
            ctx = CycleContext(poll=poll_of(T0 + 60, GOOD, BAD), now=T0 + 60)
            await stage.on_cycle(ctx)
            await stage.close()
        assert ctx.forecasts[(GOOD, Dimension.BYTES)].forecast is not None
        assert ctx.forecasts[(BAD, Dimension.BYTES)].forecast is None
        assert (refits_of_bad, fit_errors(stage)) == ([60], 1.0)


def pool_workers() -> list[int]:
    """Pids of the processes the forkserver (our child) started: the refit pool's workers."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        cmdlines[int(entry.name)] = cmd
    servers = [pid for pid, ppid in parents.items() if ppid == os.getpid() and "forkserver" in cmdlines[pid]]
    return [pid for pid, ppid in parents.items() if ppid in servers]


class RefusingExecutor(Executor):
    """A pool passed in that broke (a worker died): every submit raises."""

    def __init__(self) -> None:
        self.submits = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submits += 1
        raise BrokenProcessPool("A child process terminated abruptly, the process pool is not usable anymore")


class TestBrokenPool:
    """A refit worker killed (the OOM killer) breaks a process pool for good: the stage must not
    keep it, raise out of `on_cycle`, nor leave the series it held pending (never refit, never
    evicted)."""

    async def test_the_stage_recovers_from_a_killed_worker(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(workers=1), clock, history_loader=warm({}))
        try:
            with capture_logs() as logs:
                await stage.on_cycle(CycleContext(poll=poll_of(T0, GOOD), now=T0))  # the first refit: to the pool
                workers = pool_workers()
                assert workers, "the pool has a worker"
                for pid in workers:
                    os.kill(pid, signal.SIGKILL)
                await stage.drain(60)  # the batch in flight fails: BrokenProcessPool
                fits_before = stage.view.fit_seconds.count
                for hour in (7, 14, 21):  # a refit is due each time
                    now = T0 + hour * 3600
                    clock.advance(now - clock.now())
                    ctx = CycleContext(poll=poll_of(now, GOOD), now=now)
                    await stage.on_cycle(ctx)
                    await stage.drain(60)
            assert stage.view.fit_seconds.count > fits_before
            assert ctx.forecasts[(GOOD, Dimension.BYTES)].forecast is not None
            assert [entry["event"] for entry in logs if entry["event"].startswith("forecast.pool")] == [
                "forecast.pool_broken", "forecast.pool_recovered"]
        finally:
            await stage.close()

    async def test_a_broken_pool_passed_in_fails_no_cycle(self) -> None:
        """The stage cannot replace a pool it does not own: each cycle tries again (the series
        were not left pending), publishes its forecasts, and the break is logged once."""
        clock = VirtualClock(T0)
        pool = RefusingExecutor()
        stage = ForecastStage(settings(workers=1), clock, executor=pool, history_loader=warm({}))
        with capture_logs() as logs:
            for minute in range(3):
                now = T0 + minute * 60
                clock.advance(now - clock.now())
                ctx = CycleContext(poll=poll_of(now, GOOD, BAD), now=now)
                await stage.on_cycle(ctx)
                assert {(GOOD, Dimension.BYTES), (BAD, Dimension.BYTES)} == set(ctx.forecasts)
        assert pool.submits == 3
        assert sum(entry["event"] == "forecast.pool_broken" for entry in logs) == 1


class TestVanishedTargets:
    """The view publishes what each cluster's last good poll listed: a deleted quota's runway must
    not keep the shipped `QuotapilotRunwayShort` rule firing after the quota is gone."""

    async def test_runway_series_of_a_deleted_quota_go_away(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock, history_loader=warm({}))
        limit = used_at(T0) + int(RATE * 12 * 3600)  # full in ~12 h: a runway under a day
        await stage.on_cycle(CycleContext(poll=poll_of(T0, SCRATCH, GOOD, limit=limit), now=T0))
        assert {"scratch", "good"} == runway_targets(stage)
        now = T0
        while now < T0 + REMOVED_TARGET_GRACE_SECONDS + 3600:  # every later poll lists only `good`
            now += 300
            clock.advance(300)
            await stage.on_cycle(CycleContext(poll=poll_of(now, GOOD, limit=limit), now=now))
            assert {"good"} == runway_targets(stage)

    async def test_a_dropped_sample_keeps_the_target_published(self) -> None:
        """A refused sample says the target is still there (as the snapshot keeps it)."""
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock, history_loader=warm({}))
        limit = used_at(T0) + int(RATE * 12 * 3600)
        await stage.on_cycle(CycleContext(poll=poll_of(T0, SCRATCH, GOOD, limit=limit), now=T0))
        clock.advance(300)
        await stage.on_cycle(CycleContext(poll=poll_of(T0 + 300, GOOD, limit=limit, dropped=(SCRATCH,)),
                                          now=T0 + 300))
        assert {"scratch", "good"} == runway_targets(stage)

    async def test_another_clusters_poll_keeps_them(self) -> None:
        clock = VirtualClock(T0)
        stage = ForecastStage(settings(), clock, history_loader=warm({}))
        limit = used_at(T0) + int(RATE * 12 * 3600)
        await stage.on_cycle(CycleContext(poll=poll_of(T0, GOOD, limit=limit), now=T0))
        clock.advance(30)
        await stage.on_cycle(CycleContext(poll=poll_of(T0 + 30, OTHER, limit=limit), now=T0 + 30))
        assert {("sim", "good"), ("other", "raw")} == {
            (sample.labels["cluster"], sample.labels["target"]) for family in stage.collector().collect()
            if family.name == "quotapilot_target_runway_seconds" for sample in family.samples}

    async def test_a_target_that_comes_back_resumes_its_model(self) -> None:
        """Within the eviction time (two refit intervals) the model is kept: no new warm start,
        no new fit, published again at its first poll."""
        clock = VirtualClock(T0)
        loads: list[TargetId] = []

        def loader(target: TargetId) -> History:
            loads.append(target)
            return history_of(40.0)

        stage = ForecastStage(settings(), clock, history_loader=loader)
        limit = used_at(T0) + int(RATE * 12 * 3600)
        await stage.on_cycle(CycleContext(poll=poll_of(T0, SCRATCH, GOOD, limit=limit), now=T0))
        fits = stage.view.fit_seconds.count
        for now in (T0 + 300, T0 + 600):
            clock.advance(300)
            await stage.on_cycle(CycleContext(poll=poll_of(now, GOOD, limit=limit), now=now))
        assert {"good"} == runway_targets(stage)
        clock.advance(300)
        ctx = CycleContext(poll=poll_of(T0 + 900, SCRATCH, GOOD, limit=limit), now=T0 + 900)
        await stage.on_cycle(ctx)
        assert {"scratch", "good"} == runway_targets(stage)
        assert ctx.forecasts[(SCRATCH, Dimension.BYTES)].forecast is not None
        assert ([SCRATCH, GOOD], fits) == (loads, stage.view.fit_seconds.count)
