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

import argparse
import asyncio
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector as PrometheusCollector

from quotapilot.daemon import __version__
from quotapilot.daemon.actuator import GrowthStage
from quotapilot.daemon.alerting import AlertingStage
from quotapilot.daemon.clock import Clock, SystemClock
from quotapilot.daemon.collector import Collector
from quotapilot.daemon.cycle import CycleContext, Stage
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.forecaster import ForecastStage
from quotapilot.daemon.http import HttpServer
from quotapilot.daemon.logs import configure_logging, get_logger
from quotapilot.daemon.metrics import GuardedCollector, SnapshotCollector, TargetCollector, TargetText
from quotapilot.daemon.poller import Poller, PollerState
from quotapilot.daemon.sdnotify import Notifier
from quotapilot.daemon.settings import Settings, load_settings, systemd_notify_environment
from quotapilot.daemon.snapshot import (
    ClusterState,
    Snapshot,
    apply_cycle,
    empty_snapshot,
    frozen_map,
)
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.supervisor import Supervisor, TaskFactory, sleep_unless

log = get_logger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0


# ------------------------------------------------------------------------------ the store stage
class StoreStage:
    """First stage: the poll's validated samples into SQLite, one transaction per poll; retention
    pruning once an hour (of the daemon's clock)."""

    name = "store"

    def __init__(self, store: ObservationStore) -> None:
        self.store = store
        self._last_prune: float | None = None

    def _write(self, ctx: CycleContext) -> None:
        self.store.write_poll(ctx.poll.observations)
        if self._last_prune is None or ctx.now - self._last_prune >= PRUNE_INTERVAL_SECONDS:
            self._last_prune = ctx.now
            self.store.prune(ctx.now)

    async def on_cycle(self, ctx: CycleContext) -> None:
        if ctx.poll.ok and ctx.poll.observations:
            await asyncio.to_thread(self._write, ctx)


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
    return stages


def build_collectors(daemon: Daemon) -> list[PrometheusCollector]:
    """Extra Prometheus collectors (besides the core's), each reading immutable state in
    `collect()`. Each owner adds theirs with a one-line edit."""
    collectors: list[PrometheusCollector] = []
    collectors.extend(s.collector() for s in daemon.stages if isinstance(s, ForecastStage))  # FORECAST (issue 4)
    collectors.extend(s.metrics() for s in daemon.stages if isinstance(s, GrowthStage))  # GROWTH (issue 5)
    collectors.extend(s.collector() for s in daemon.stages if isinstance(s, AlertingStage))  # ALERTS (issue 6)
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


# ------------------------------------------------------------------------------ commands
def validate_for_run(settings: Settings) -> None:
    """What the settings model cannot check alone: at least one cluster, secret files that can
    be read and are not empty, a `ca_file` that is a PEM CA bundle. Raises `ConfigError` naming
    the field."""
    if not settings.clusters:
        raise ConfigError("clusters", "at least one [[clusters]] table is required")
    for i, cluster in enumerate(settings.clusters):
        for field in ("token_file", "password_file"):
            if getattr(cluster, field) is None:
                continue
            try:
                secret = cluster.resolved_token() if field == "token_file" else cluster.resolved_password()
            except OSError as exc:
                raise ConfigError(f"clusters.{i}.{field}", f"cannot be read: {exc}") from None
            if not secret:
                raise ConfigError(f"clusters.{i}.{field}", "is empty")
        if cluster.ca_file is not None and not cluster.insecure_skip_tls_verify:
            # a CA that cannot verify anything would fail every poll's TLS check: refuse it now
            try:
                ssl.create_default_context(cafile=cluster.resolved_ca_file())
            except ssl.SSLError as exc:
                raise ConfigError(f"clusters.{i}.ca_file",
                                  f"not a PEM CA bundle ({exc.reason or exc})") from None
            except OSError as exc:
                raise ConfigError(f"clusters.{i}.ca_file", f"cannot be read: {exc.strerror or exc}") from None


def _print_config_error(exc: ConfigError, as_json: bool) -> None:
    problems = exc.problems
    if as_json:
        print(json.dumps({"valid": False, "field": exc.field, "reason": exc.reason,
                          "problems": [{"field": p.field, "reason": p.reason} for p in problems]}))
        return
    print(f"quotapilot: invalid configuration: {exc.field}: {exc.reason}", file=sys.stderr)
    for problem in problems[1:]:
        print(f"  also: {problem.field}: {problem.reason}", file=sys.stderr)


def config_summary(settings: Settings) -> dict[str, Any]:
    """What a configuration means, with every secret masked."""
    clusters = []
    for cluster in settings.clusters:
        if cluster.token is not None:
            auth = "token (inline, ****)"
        elif cluster.token_file is not None:
            auth = f"token_file {cluster.token_file}"
        else:
            auth = f"user {cluster.user} + " + (f"password_file {cluster.password_file}"
                                                if cluster.password_file else "password (inline, ****)")
        if cluster.insecure_skip_tls_verify:
            tls = "NOT VERIFIED (insecure_skip_tls_verify)"
        elif cluster.ca_file is not None:
            tls = f"verified with ca_file {cluster.ca_file}"
        else:
            tls = "verified with the system trust store"
        clusters.append({"name": cluster.name, "address": cluster.address, "auth": auth, "tls": tls,
                         "tenant": cluster.tenant})
    alerts = settings.alerts
    return {
        "version": __version__,
        "clusters": clusters,
        "poll": {"interval_seconds": settings.poll.interval_seconds,
                 "stale_after_seconds": settings.poll.stale_after_intervals * settings.poll.interval_seconds},
        "vast": {"request_timeout_seconds": settings.vast.request_timeout_seconds,
                 "max_retries": settings.vast.max_retries, "page_size": settings.vast.page_size,
                 "threads": settings.vast.threads},
        "http": {"listen": settings.http.listen,
                 "write_token": "set (****)" if (settings.http.write_token or settings.http.write_token_file)
                 else "not set (write endpoints refused)"},
        "store": {"path": str(settings.store.path),
                  "raw_retention_seconds": settings.store.raw_retention_seconds,
                  "hourly_retention_seconds": settings.store.hourly_retention_seconds},
        "policy": {"mode": settings.policy.mode, "overrides": len(settings.policy.overrides),
                   "kill_switch": settings.policy.kill_switch},
        "alerts": {"mqtt": alerts.mqtt.host if alerts.mqtt else None,
                   "webhooks": [w.name or w.url.split("?")[0] for w in alerts.webhooks],
                   "routes": len(alerts.routes)},
        "views": [v.path for v in settings.views],
        "shutdown_timeout_seconds": settings.daemon.shutdown_timeout_seconds,
    }


def config_warnings(settings: Settings) -> list[str]:
    warnings = [f"clusters.{i}.insecure_skip_tls_verify: the certificate of {c.address} is NOT verified; "
                "anyone on the path can read the token and change quotas"
                for i, c in enumerate(settings.clusters) if c.insecure_skip_tls_verify]
    if settings.http.host not in ("127.0.0.1", "localhost", "::1") and \
            settings.http.resolved_write_token() is None:
        warnings.append(f"http.listen: {settings.http.listen} is not loopback and no write token is set")
    return warnings


def _print_summary(summary: Mapping[str, Any], warnings: list[str]) -> None:
    lines = [f"configuration valid (quotapilot {summary['version']})"]
    for cluster in summary["clusters"]:
        lines.append(f"  cluster {cluster['name']}: {cluster['address']}, {cluster['auth']}, TLS {cluster['tls']}")
    poll = summary["poll"]
    lines.append(f"  poll: every {poll['interval_seconds']:g}s, stale after {poll['stale_after_seconds']:g}s")
    lines.append(f"  http: {summary['http']['listen']}, write token {summary['http']['write_token']}")
    lines.append(f"  store: {summary['store']['path']}")
    policy = summary["policy"]
    lines.append(f"  policy: mode {policy['mode']}, {policy['overrides']} override(s)"
                 + (", KILL SWITCH ON" if policy["kill_switch"] else ""))
    alerts = summary["alerts"]
    lines.append(f"  alerts: mqtt {alerts['mqtt'] or 'off'}, webhooks {len(alerts['webhooks'])},"
                 f" routes {alerts['routes']}")
    if summary["views"]:
        lines.append(f"  managed views: {', '.join(summary['views'])}")
    print("\n".join(lines))
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)


def _settings_to_run(config: Path | None, as_json: bool) -> Settings | None:
    """The settings, checked as `run` needs them; None once the problem is printed (exit 2)."""
    try:
        settings = load_settings(config)
        validate_for_run(settings)
    except ConfigError as exc:
        _print_config_error(exc, as_json)
        return None
    return settings


def cmd_check_config(args: argparse.Namespace) -> int:
    """`quotapilot check-config`: exit 0 with a summary, or 2 naming the offending field."""
    as_json = bool(getattr(args, "json", False))
    settings = _settings_to_run(args.config, as_json)
    if settings is None:
        return 2
    summary = config_summary(settings)
    warnings = config_warnings(settings)
    if as_json:
        print(json.dumps({"valid": True, "summary": summary, "warnings": warnings}))
    else:
        _print_summary(summary, warnings)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """`quotapilot run`: the daemon, until SIGTERM/SIGINT (then exit 0 within the shutdown bound)."""
    settings = _settings_to_run(args.config, False)
    if settings is None:
        return 2
    configure_logging(settings.log.level, settings.log.format)
    for warning in config_warnings(settings):
        log.warning("config.doubtful", problem=warning)
    code = asyncio.run(_run(settings))
    _exit_now_if_requests_hang(code)
    return code


async def _run(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    try:
        async with Daemon(settings) as daemon:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, daemon.stop)
            try:
                await daemon.run()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    except OSError as exc:
        log.error("daemon.failed", error=str(exc))
        return 1
    return 0


def _exit_now_if_requests_hang(code: int) -> None:
    """A vastpy request blocked in a pool thread would make the interpreter wait for it at exit
    (up to the request timeout). Idle pool threads end at once; if one is still busy after a
    moment, the store is already flushed, so exit without waiting for it."""
    deadline = time.monotonic() + 0.5
    for thread in [t for t in threading.enumerate() if t.name.startswith("vms")]:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.name.startswith("vms") and t.is_alive() for t in threading.enumerate()):
        log.warning("requests.abandoned")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
