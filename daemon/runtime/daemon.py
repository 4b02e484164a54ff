"""The daemon: composition of store, collectors, stages, supervisor and HTTP; `quotapilot run` and
`quotapilot check-config`.

    async with Daemon(settings, clock) as daemon:   # opens store, collectors, thread pool; no loops
        ctx = await daemon.poll_once("cosmos")       # exactly one cycle: poll + every stage, in order
        await daemon.run()                           # pollers, HTTP, extra tasks until stop()

One poll cycle of one cluster: the collector produces a `PollResult`; the stages from
`build_stages()` run in order on a `CycleContext` (store → forecaster → growth → alerting); the
context then becomes the cluster's part of a new immutable `Snapshot` (`daemon.snapshot`), which
`/metrics`, `/healthz` and `/api/v1` read. Stages run on failed polls too (`ctx.poll.ok` is
False) so alerting can see the outage. Stages are isolated: one that raises is logged (on the
transition) and counted in `quotapilot_stage_errors_total`, and the later stages still run on
what the context holds (growth without forecasts goes reactive; alerting still sees the poll).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector as PrometheusCollector

from quotapilot.daemon import __version__
from quotapilot.daemon.clock import Clock, SystemClock
from quotapilot.daemon.events import EventStage
from quotapilot.daemon.fs.alerts import FilesystemAlertStage
from quotapilot.daemon.fs.collector import FilesystemCollector
from quotapilot.daemon.fs.growth import FilesystemGrowthStage
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.http.metrics import GuardedCollector, SnapshotCollector, TargetCollector, TargetText
from quotapilot.daemon.http.server import HttpServer
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import CycleContext, Stage
from quotapilot.daemon.runtime.poller import Poller, PollerState
from quotapilot.daemon.runtime.sdnotify import Notifier
from quotapilot.daemon.runtime.snapshot import (
    ClusterState,
    Snapshot,
    apply_cycle,
    empty_snapshot,
    frozen_map,
)
from quotapilot.daemon.runtime.supervisor import Supervisor, TaskFactory, sleep_unless
from quotapilot.daemon.settings import Settings, systemd_notify_environment
from quotapilot.daemon.stages.alerting import AlertingStage
from quotapilot.daemon.stages.capacity import CapacityStage
from quotapilot.daemon.stages.forecast import ForecastStage
from quotapilot.daemon.stages.growth import GrowthStage
from quotapilot.daemon.stages.store import StoreStage
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.outbox import OutboxStore
from quotapilot.daemon.vms.collector import Collector

log = get_logger(__name__)



def build_stages(daemon: Daemon) -> list[Stage]:
    """The cycle's stages, in order. Each owner adds theirs with a one-line edit.

    A stage is built with the daemon (`daemon.settings`, `.clock`, `.db`, `.collectors`,
    `.observations`, `.snapshot`), may register background tasks with `daemon.add_task(name, fn)`
    and report the growth mode with `daemon.set_mode(mode)`. Optional
    `async open()` runs when the daemon is entered, `async close()` when it exits (reverse order).
    """
    stages: list[Stage] = [StoreStage(daemon.observations)]
    stages.append(ForecastStage.for_daemon(daemon))              # FORECAST (issue 4)
    stages.append(GrowthStage.for_daemon(daemon))                # GROWTH (issue 5)
    stages.append(AlertingStage.for_daemon(daemon))              # ALERTS (issue 6)
    alerting = cast(AlertingStage, stages[-1])
    stages.append(CapacityStage(daemon.settings.capacity, daemon.clock,  # CAPACITY (issue 18), after alerting
                                raise_alerts=alerting.raise_conditions))
    stages.append(EventStage(daemon.settings.events, daemon.clock, OutboxStore(daemon.db),  # EVENTS (issue 18), last
                             alert_states=alerting.states, mode=lambda: daemon.snapshot.mode))
    stages.insert(-1, FilesystemAlertStage(daemon.settings, alerting.raise_conditions))  # FILESYSTEMS (issue 18)
    stages.insert(stages.index(alerting), FilesystemGrowthStage(daemon.settings, daemon.clock, ActionStore(daemon.db)))
    daemon.add_task("events", cast(EventStage, stages[-1]).run)
    return stages


def build_collectors(daemon: Daemon) -> list[PrometheusCollector]:
    """Extra Prometheus collectors (besides the core's), each reading immutable state in
    `collect()`. Each owner adds theirs with a one-line edit."""
    collectors: list[PrometheusCollector] = []
    collectors.extend(s.collector() for s in daemon.stages if isinstance(s, ForecastStage))  # FORECAST (issue 4)
    collectors.extend(s.metrics() for s in daemon.stages if isinstance(s, GrowthStage))  # GROWTH (issue 5)
    collectors.extend(s.collector() for s in daemon.stages if isinstance(s, AlertingStage))  # ALERTS (issue 6)
    collectors.extend(s.collector() for s in daemon.stages if isinstance(s, CapacityStage))  # CAPACITY (issue 18)
    collectors.extend(s.collector() for s in daemon.stages if isinstance(s, EventStage))  # EVENTS (issue 18)
    collectors.extend(c.metrics() for c in daemon.collectors.values() if isinstance(c, FilesystemCollector))  # FS (18)
    return collectors


# ------------------------------------------------------------------------------ the daemon
class Daemon:
    """quotapilot's runtime. `async with` opens resources; `run()` runs loops; `poll_once()` one cycle."""

    def __init__(self, settings: Settings, clock: Clock | None = None, *,
                 stages: list[Stage] | Callable[[Daemon], list[Stage]] | None = None,
                 rng: random.Random | None = None) -> None:
        """`stages`: None for `build_stages()`; a list; or a function of the opened daemon
        returning the list (for stages that need the store, e.g. `lambda d: [StoreStage(...)]`)."""
        self.settings = settings
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.rng = rng or random.Random()
        self._stages_override = stages
        self.stages: list[Stage] = []
        self.collectors: dict[str, Collector] = {}
        self.poll_state: dict[str, PollerState] = {c.name: PollerState(c.name) for c in settings.clusters}
        self.supervisor = Supervisor(shutdown_timeout_seconds=settings.daemon.shutdown_timeout_seconds)
        self.registry = CollectorRegistry()
        """Every metric of the daemon (fresh per daemon): `registry.get_sample_value(...)`."""
        self.exposition_registry = CollectorRegistry()
        """The same minus the per-target families, which /metrics renders as text (`target_text`,
        `text_renderers`)."""
        self.target_text = TargetText()
        self.text_renderers: list[GuardedCollector] = []
        """Collectors whose big families /metrics takes as ready text (`RendersText`)."""
        socket_path, watchdog_usec = systemd_notify_environment()
        self.notifier = Notifier(socket_path, watchdog_usec=watchdog_usec)
        self.http = HttpServer(self)
        self._snapshot = empty_snapshot(self.clock.now(), tuple(self.poll_state))
        self._stage_errors: Counter[str] = Counter()
        self._stage_seconds: defaultdict[str, float] = defaultdict(float)
        self._stage_failing: dict[tuple[str, str], str] = {}
        self._pollers: dict[str, Poller] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._db: Database | None = None
        self._observations: ObservationStore | None = None
        self._entered = False

    # -------------------------------------------------------------- resources
    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("Daemon is not open: use `async with Daemon(...)`")
        return self._db

    @property
    def observations(self) -> ObservationStore:
        if self._observations is None:
            raise RuntimeError("Daemon is not open: use `async with Daemon(...)`")
        return self._observations

    @property
    def snapshot(self) -> Snapshot:
        """The latest immutable snapshot."""
        return self._snapshot

    @property
    def http_port(self) -> int | None:
        """The port the HTTP server is bound to (useful with `listen = "127.0.0.1:0"`)."""
        return self.http.port

    async def __aenter__(self) -> Daemon:
        if self._entered:
            raise RuntimeError("a Daemon can be entered only once")
        self._entered = True
        settings = self.settings
        self._db = await asyncio.to_thread(Database, settings.store.path)
        self._observations = ObservationStore(
            self._db, raw_retention_seconds=settings.store.raw_retention_seconds,
            hourly_retention_seconds=settings.store.hourly_retention_seconds)
        self._executor = ThreadPoolExecutor(max_workers=settings.vast.threads, thread_name_prefix="vms")
        try:
            for cluster in settings.clusters:
                collector = Collector(cluster, settings.vast, settings.poll, self.clock, self._executor,
                                      rng=random.Random(self.rng.random()),
                                      stopping=self.supervisor.stopping)
                collector.log_tls_mode()
                self.collectors[cluster.name] = collector
            if settings.filesystems:  # FILESYSTEMS (issue 18): statvfs targets, cycled as a pseudo-cluster
                self.collectors[FILESYSTEM_CLUSTER] = FilesystemCollector(  # type: ignore[assignment]  # the Collector's polling contract
                    settings.filesystems, settings.filesystem, self.clock)
                self.poll_state[FILESYSTEM_CLUSTER] = PollerState(FILESYSTEM_CLUSTER)
            if self._stages_override is None:
                self.stages = build_stages(self)
            elif callable(self._stages_override):
                self.stages = list(self._stages_override(self))
            else:
                self.stages = list(self._stages_override)
            for stage in self.stages:
                opener = getattr(stage, "open", None)
                if opener is not None:
                    await opener()
            self.registry.register(TargetCollector(lambda: self._snapshot))
            guarded = [GuardedCollector(extra) for extra in build_collectors(self)]
            core = SnapshotCollector(lambda: self._snapshot, lambda: self.supervisor.crashes,
                                     lambda: {g.name: g.errors for g in guarded if g.errors})
            for metric_collector in (core, *guarded):
                self.registry.register(metric_collector)
            self.exposition_registry.register(core)
            for extra in guarded:
                self.exposition_registry.register(extra.rest() if extra.renders_text else extra)
            self.text_renderers = [extra for extra in guarded if extra.renders_text]
        except BaseException:
            await self._close()
            raise
        log.info("daemon.opened", clusters=list(self.collectors), store=str(settings.store.path),
                 stages=[s.name for s in self.stages], version=__version__)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.shield(self._close())

    async def _close(self) -> None:
        for stage in reversed(self.stages):
            closer = getattr(stage, "close", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    log.error("stage.close_failed", stage=stage.name, exc_info=True)
        await self.http.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(_flush_and_close, db)
            log.info("store.flushed", path=str(db.path))

    # -------------------------------------------------------------- for stages
    def add_task(self, name: str, factory: TaskFactory) -> None:
        """Register a supervised background task, started by `run()` (see `Supervisor.add`)."""
        self.supervisor.add(name, factory)

    def set_mode(self, mode: str) -> None:
        """The growth stage reports "observe" / "enforce" (shown in /healthz and the snapshot)."""
        self._snapshot = replace(self._snapshot, mode=mode)

    # -------------------------------------------------------------- one cycle
    async def poll_once(self, cluster: str) -> CycleContext:
        """Poll `cluster` once, run every stage in order, publish the new snapshot."""
        collector = self.collectors[cluster]
        state = self.poll_state[cluster]
        poll = await collector.poll()
        if poll.ok:
            state.record_success(poll.t, poll.duration_seconds)
        else:
            state.record_failure(poll.t, poll.error or "unknown", poll.duration_seconds)
        ctx = CycleContext(poll=poll, now=self.clock.now())
        for stage in self.stages:
            started = time.perf_counter()
            try:
                await stage.on_cycle(ctx)
            except Exception as exc:
                self._stage_errors[stage.name] += 1
                failure = f"{type(exc).__name__}: {exc}"
                if self._stage_failing.get((stage.name, cluster)) != failure:  # log transitions only
                    self._stage_failing[(stage.name, cluster)] = failure
                    log.error("stage.failed", stage=stage.name, cluster=cluster, exc_info=True)
            else:
                if self._stage_failing.pop((stage.name, cluster), None) is not None:
                    log.info("stage.recovered", stage=stage.name, cluster=cluster)
            finally:
                self._stage_seconds[stage.name] += time.perf_counter() - started
        self._publish_cycle(cluster, ctx, state, collector)
        if poll.ok and all(s.last_success_t is not None for s in self.poll_state.values()):
            self.notifier.ready()  # once every cluster has been polled successfully (sent once)
        return ctx

    def _publish_cycle(self, cluster: str, ctx: CycleContext, state: PollerState,
                       collector: Collector) -> None:
        previous = self._snapshot
        cluster_state = apply_cycle(
            previous.clusters.get(cluster, ClusterState(cluster)), ctx, health=state.frozen(),
            samples_dropped_total=collector.dropped_total,
            poll_errors_total=collector.poll_errors_total, requests_total=collector.requests_made)
        self._snapshot = replace(
            previous, t=ctx.now, clusters=frozen_map({**previous.clusters, cluster: cluster_state}),
            stage_errors_total=frozen_map(self._stage_errors),
            stage_seconds_total=frozen_map(self._stage_seconds))

    # -------------------------------------------------------------- health
    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, report) for /healthz: every cluster polled successfully within
        `stale_after_intervals` intervals, and no supervised task crashed."""
        now = self.clock.now()
        poll = self.settings.poll
        bound = poll.stale_after_intervals * poll.interval_seconds
        reasons: list[str] = []
        clusters: dict[str, Any] = {}
        for name, state in self.poll_state.items():
            age = state.age_seconds(now)
            fresh = age is not None and age <= bound
            if age is None:
                reasons.append(f"{name}: no successful poll yet"
                               + (f" ({state.last_error})" if state.last_error else ""))
            elif not fresh:
                reasons.append(f"{name}: last successful poll {age:.0f}s ago (bound {bound:.0f}s)"
                               + (f": {state.last_error}" if state.last_error else ""))
            clusters[name] = {
                "ok": fresh, "last_success_age_seconds": None if age is None else round(age, 3),
                "consecutive_failures": state.consecutive_failures, "last_error": state.last_error,
            }
        crashes = self.supervisor.crashes
        for crash in crashes.values():
            reasons.append(f"task {crash.name} crashed: {crash.error}")
        report: dict[str, Any] = {
            "status": "ok" if not reasons else "unhealthy",
            "reasons": reasons,
            "clusters": clusters,
            "crashed_tasks": {name: crash.error for name, crash in crashes.items()},
            "version": __version__,
        }
        if self._snapshot.mode is not None:
            report["mode"] = self._snapshot.mode
        return not reasons, report

    # -------------------------------------------------------------- the loops
    async def run(self) -> None:
        """Serve HTTP, poll every cluster and run registered tasks until `stop()`; then drain
        (bounded by `daemon.shutdown_timeout_seconds`), cancel, close the HTTP server."""
        if self._db is None:
            raise RuntimeError("Daemon is not open: use `async with Daemon(...)`")
        await self.http.start()
        log.info("daemon.started", listen=f"{self.settings.http.host}:{self.http.port}",
                 interval_seconds=self.settings.poll.interval_seconds)
        for name in self.collectors:
            poller = Poller(self.poll_state[name], _cycle_of(self, name), self.clock,
                            interval_seconds=self.settings.poll.interval_seconds,
                            jitter_ratio=self.settings.poll.jitter_ratio,
                            rng=random.Random(self.rng.random()))
            self._pollers[name] = poller
            self.supervisor.add(f"poller:{name}", poller.run)
        self.supervisor.add("http", self._serve_http)
        interval = self.notifier.watchdog_interval_seconds
        if interval is not None:
            self.supervisor.add("watchdog", _watchdog(self.notifier, interval))
        await self.supervisor.run(teardown=self._after_run)
        log.info("daemon.stopped")

    def request_cycle(self, cluster: str) -> bool:
        """Run `cluster`'s next cycle now rather than at its next tick (the pipeline API calls it
        after granting a reservation that needs growth). Never stacks: requests coalesce into
        one cycle after the one in flight, and the tick schedule stays. False when no poller runs
        (`run()` not started: `poll_once()` users drive cycles themselves)."""
        if cluster not in self.poll_state:
            raise ValueError(f"unknown cluster {cluster!r}")
        poller = self._pollers.get(cluster)
        if poller is None or self.supervisor.stopping.is_set():
            return False
        poller.wakeup.set()
        log.info("cycle.requested", cluster=cluster)
        return True

    def stop(self) -> None:
        """Begin a graceful stop (safe to call from a signal handler, idempotent)."""
        if not self.supervisor.stopping.is_set():
            self.notifier.stopping()
        self.supervisor.stop()

    async def _serve_http(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        await self.http.close()

    async def _after_run(self) -> None:
        await self.http.close()
        if self._db is not None:
            await asyncio.to_thread(self._db.checkpoint)


def _cycle_of(daemon: Daemon, cluster: str) -> Any:
    async def cycle() -> None:
        await daemon.poll_once(cluster)
    return cycle


def _watchdog(notifier: Notifier, interval: float) -> TaskFactory:
    async def ping(stopping: asyncio.Event) -> None:
        clock = SystemClock()  # systemd's watchdog is real time, whatever the daemon's clock
        while True:
            notifier.watchdog()
            if not await sleep_unless(clock, interval, stopping):
                return
    return ping


def _flush_and_close(db: Database) -> None:
    db.checkpoint()
    db.close()


