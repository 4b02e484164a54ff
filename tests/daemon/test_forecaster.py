"""The forecaster stage on hand-made cycles, and its Prometheus collector."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.settings import ForecastSettings
from quotapilot.daemon.stages.forecast import ForecastStage
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
