"""The daemon: opens the resources (store, VMS collectors, thread pool, supervisor, HTTP), has the
stages built by `runtime/wiring.py`, registers them generically, and runs the cycle.

    async with Daemon(settings, clock) as daemon:   # opens store, collectors, thread pool; no loops
        ctx = await daemon.poll_once("cosmos")       # exactly one cycle: poll + every stage, in order
        await daemon.run()                           # pollers, HTTP, stage tasks until stop()

One poll cycle of one cluster: the collector produces a `PollResult`; the stages from
`build_stages()` (wiring) run in order on a `CycleContext` (store → forecaster → growth →
alerting); the context then becomes the cluster's part of a new immutable `Snapshot`
(`daemon.snapshot`), which `/metrics`, `/healthz` and `/api/v1` read. Stages run on failed polls
too (`ctx.poll.ok` is False) so alerting can see the outage. Stages are isolated: one that raises
is logged (on the transition) and counted in `quotapilot_stage_errors_total`, and the later stages
still run on what the context holds (growth without forecasts goes reactive; alerting still sees
the poll).

Each stage is registered from its `StageParts` (runtime/cycle.py): its background tasks go to the
supervisor, its Prometheus collector (guarded) to the registries, `open()`/`close()` run on entry
and exit. No stage ever holds the daemon.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from types import TracebackType

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector as PrometheusCollector

from quotapilot.daemon import __version__
from quotapilot.daemon.clock import Clock, SystemClock
from quotapilot.daemon.fs.collector import FilesystemCollector
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.http.metrics import Exposition, GuardedCollector, SnapshotCollector, TargetCollector
from quotapilot.daemon.http.server import HttpServer
from quotapilot.daemon.logs import TransitionLog, get_logger
from quotapilot.daemon.runtime.cycle import CycleContext, Stage, StageParts
from quotapilot.daemon.runtime.health import HealthReport, health_report
from quotapilot.daemon.runtime.leadership import Leadership, build_leadership
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
from quotapilot.daemon.runtime.wiring import Collaborators, build_stages
from quotapilot.daemon.settings import Settings, systemd_notify_environment
from quotapilot.daemon.stages.capacity import CapacityStage, CapacityView
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.open import open_backend
from quotapilot.daemon.vms.collector import VmsPoller

log = get_logger(__name__)

StageBuilder = Callable[[Collaborators], Sequence[Stage]]
"""Builds the cycle's stages from the opened daemon's collaborators (`wiring.StageWiring` is one)."""


def default_stages(deps: Collaborators) -> Sequence[Stage]:
    """The production stages: `wiring.build_stages` with the configured policy and sinks."""
    return build_stages(deps).stages


ClusterSource = VmsPoller | FilesystemCollector
"""What a poller cycles: a VMS cluster, or the configured filesystems (one pseudo-cluster)."""


# ------------------------------------------------------------------------------ the daemon
class Daemon:
    """quotapilot's runtime. `async with` opens resources; `run()` runs loops; `poll_once()` one cycle."""

    def __init__(self, settings: Settings, clock: Clock | None = None, *,
                 stages: Sequence[Stage] | StageBuilder | None = None,
                 rng: random.Random | None = None) -> None:
        """`stages`: None for `wiring.build_stages`; a list; or a builder taking the opened daemon's
        `Collaborators` (for stages that need the store, e.g. `lambda deps: [StoreStage(deps.observations)]`)."""
        self.settings = settings
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.rng = rng or random.Random()
        self._stages_override = stages
        self.stages: list[Stage] = []
        self.collectors: dict[str, ClusterSource] = {}
        self.poll_state: dict[str, PollerState] = {c.name: PollerState(c.name) for c in settings.clusters}
        self.supervisor = Supervisor(shutdown_timeout_seconds=settings.daemon.shutdown_timeout_seconds)
        self.registry = CollectorRegistry()
        """Every metric of the daemon (fresh per daemon): `registry.get_sample_value(...)`."""
        self.exposition = Exposition(lambda: self._snapshot, CollectorRegistry())
        """The /metrics body: the same metrics, the per-target and other big families rendered as text."""
        socket_path, watchdog_usec = systemd_notify_environment()
        self.notifier = Notifier(socket_path, watchdog_usec=watchdog_usec)
        self.http = HttpServer(settings.http, lambda: self.exposition.render(), self.health, api=self,
                               capacity=self._capacity_view)
        self._capacity: CapacityStage | None = None
        self._snapshot = replace(empty_snapshot(self.clock.now(), tuple(self.poll_state)),
                                 mode=settings.policy.mode)
        self._stage_errors: Counter[str] = Counter()
        self._stage_seconds: defaultdict[str, float] = defaultdict(float)
        self._stage_failures = TransitionLog(log, "stage", failed_level="error")
        self._closers: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._pollers: dict[str, Poller] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._db: Backend | None = None
        self.leadership: Leadership | None = None
        """FLEET (issue 15): who leads which cluster; built when the daemon is entered."""
        self._observations: ObservationStore | None = None
        self._entered = False

    # -------------------------------------------------------------- resources
    @property
    def db(self) -> Backend:
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
        self._db = await asyncio.to_thread(open_backend, settings.store)
        self.leadership = build_leadership(settings, self._db, self.clock, self.supervisor)  # FLEET (issue 15)
        self._observations = ObservationStore(
            self._db, raw_retention_seconds=settings.store.raw_retention_seconds,
            hourly_retention_seconds=settings.store.hourly_retention_seconds)
        self._executor = ThreadPoolExecutor(max_workers=settings.vast.threads, thread_name_prefix="vms")
        try:
            for cluster in settings.clusters:
                collector = VmsPoller(cluster, settings.vast, settings.poll, self.clock, self._executor,
                                      rng=random.Random(self.rng.random()),
                                      stopping=self.supervisor.stopping)
                collector.log_tls_mode()
                self.collectors[cluster.name] = collector
            writers = {name: source.writer for name, source in self.collectors.items() if isinstance(source, VmsPoller)}
            stage_collectors: list[PrometheusCollector] = [self.leadership.collector()]
            if settings.filesystems:  # statvfs targets, cycled as a pseudo-cluster through the same stages
                audit = ActionStore(self._db)
                filesystems = FilesystemCollector(  # a size our command moved is believed at once
                    settings.filesystems, settings.filesystem, self.clock,
                    grown_since=lambda name, since: audit.growth_started_since(FILESYSTEM_CLUSTER, name, since))
                self.collectors[FILESYSTEM_CLUSTER] = filesystems
                self.poll_state[FILESYSTEM_CLUSTER] = PollerState(FILESYSTEM_CLUSTER)
                stage_collectors.append(filesystems.metrics())
            deps = Collaborators(settings=settings, clock=self.clock, db=self._db, observations=self._observations,
                                 writers=writers, supervisor=self.supervisor, leadership=self.leadership)
            if self._stages_override is None:
                wired = build_stages(deps)
                self._capacity = wired.capacity
                self.stages = list(wired.stages)
            else:
                builder = self._stages_override
                self.stages = list(builder(deps) if callable(builder) else builder)
            parts = [StageParts.of(stage) for stage in self.stages]
            for part in parts:
                for name, factory in part.tasks.items():
                    self.supervisor.add(name, factory)
                self._closers.append((part.stage.name, part.close))
                await part.open()
            self._register_metrics([*(part.collector for part in parts if part.collector is not None),
                                    *stage_collectors])
        except BaseException:
            await self._close()
            raise
        log.info("daemon.opened", clusters=list(self.collectors), store=self.db.describe(),
                 stages=[s.name for s in self.stages], version=__version__)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.shield(self._close())

    def _register_metrics(self, stage_collectors: Sequence[PrometheusCollector]) -> None:
        self.registry.register(TargetCollector(lambda: self._snapshot))
        guarded = [GuardedCollector(extra) for extra in stage_collectors]
        core = SnapshotCollector(lambda: self._snapshot, lambda: self.supervisor.crashes,
                                 lambda: {g.name: g.errors for g in guarded if g.errors})
        for metric_collector in (core, *guarded):
            self.registry.register(metric_collector)
        exposition_registry = CollectorRegistry()
        exposition_registry.register(core)
        for extra in guarded:
            exposition_registry.register(extra.rest() if extra.renders_text else extra)
        self.exposition = Exposition(lambda: self._snapshot, exposition_registry,
                                     [extra for extra in guarded if extra.renders_text])

    async def _close(self) -> None:
        for name, closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.error("stage.close_failed", stage=name, exc_info=True)
        await self.http.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(_flush_and_close, db)
            log.info("store.flushed", path=db.describe())

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
                self._stage_failures.failed((stage.name, cluster), f"{type(exc).__name__}: {exc}",
                                            exc_info=True, stage=stage.name, cluster=cluster)
            else:
                self._stage_failures.ok((stage.name, cluster), stage=stage.name, cluster=cluster)
            finally:
                self._stage_seconds[stage.name] += time.perf_counter() - started
        self._publish_cycle(cluster, ctx, state, collector)
        if poll.ok:
            # READY once any cluster has been polled successfully (sent once): one VMS down at boot
            # must not hold protection back from the others (its poller keeps retrying; /healthz shows it)
            self.notifier.ready()
        return ctx

    def _publish_cycle(self, cluster: str, ctx: CycleContext, state: PollerState,
                       collector: ClusterSource) -> None:
        previous = self._snapshot
        cluster_state = apply_cycle(
            previous.clusters.get(cluster, ClusterState(cluster)), ctx, health=state.frozen(),
            samples_dropped_total=collector.dropped_total,
            poll_errors_total=collector.poll_errors_total, requests_total=collector.requests_made,
            listings_unsettled_total=collector.listings_unsettled)
        self._snapshot = replace(
            previous, t=ctx.now, clusters=frozen_map({**previous.clusters, cluster: cluster_state}),
            stage_errors_total=frozen_map(self._stage_errors),
            stage_seconds_total=frozen_map(self._stage_seconds))

    # -------------------------------------------------------------- health
    def _capacity_view(self) -> CapacityView | None:
        """The capacity plan `/api/v1/capacity` serves (None until the stage has planned)."""
        return None if self._capacity is None else self._capacity.view

    def health(self) -> HealthReport:
        """(healthy, report) for /healthz (see `runtime/health.py`)."""
        healthy, report = health_report({name: state.frozen() for name, state in self.poll_state.items()},
                                        self.supervisor.crashes, self.settings.poll, now=self.clock.now(),
                                        mode=self._snapshot.mode,
                                        store_outage=self._db.outage() if self._db is not None else None)
        # FLEET (issue 15): this instance's role per cluster (leader / standby, lease epoch)
        report["leadership"] = [role.as_json() for role in self.leadership.roles()] if self.leadership else []
        return healthy, report

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


def _cycle_of(daemon: Daemon, cluster: str) -> Callable[[], Awaitable[None]]:
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


def _flush_and_close(db: Backend) -> None:
    db.checkpoint()
    db.close()


