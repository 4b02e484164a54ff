"""`quotapilot demo`: the embedded default — the built-in VMS simulator and the real daemon against
it, in one asyncio process, in enforce mode, simulated time fast-forwarded.

The simulator (HTTPS on loopback, its own CA, verified by vastpy) and the daemon share one
`VirtualClock`; the demo advances it one poll interval at a time (15 simulated minutes) and runs
`daemon.poll_once`, so 30 simulated days take a minute or two. The daemon's `/metrics` is served
on a free loopback port while it runs, and its supervised tasks (alert delivery) run alongside; at
the end they are drained before the summary is printed.

`--policy reactive` wires the growth stage with the baseline planner (+1 TiB at 90 %) through the
same builder as the daemon (`runtime.wiring.StageWiring`); nothing else changes.
Figures in the summary come from the simulator's ground truth (write failures, utilization of the
hard limits) and the daemon's audit trail (growth actions, bytes added).

`--warm-start` gives the daemon 28 days of history before its first poll, so the live view shows
runways from the first cycle: the scenario's pre-history (`history.trace.scenario_prehistory`: the
same ingest model and seed, ending exactly at the simulator's initial usage) is written as
quotapilot's own metrics to an OpenMetrics file, served by a temporary `prometheus` backfilled
with `promtool` (or, without the binaries, by an in-process stand-in answering `query_range` from
that file: `history.local`), and imported through the daemon's own `[history]` warm start — the
path `quotapilot run` takes. The server is stopped when the demo ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.settings import read_config_file
from quotapilot.daemon.units import format_bytes, format_duration, format_limit
from quotapilot.forecasting.types import Dimension, TargetKind

if TYPE_CHECKING:
    from quotapilot.daemon.runtime.cycle import CycleContext
    from quotapilot.forecasting.types import ActionOutcome, TargetId

DAY = 86400.0
POLL_INTERVAL_SECONDS = 900.0
"""Simulated time between two polls of the demo (the daemon's `poll.interval_seconds`)."""

WARM_START_DAYS = 28.0
"""How much history `--warm-start` pre-generates (the `[history] lookback` default)."""
WARM_START_STEP_SECONDS = 300.0
"""The pre-generated history's sample interval (a typical scrape-derived resolution)."""

WarmStart = Literal["auto", "prometheus", "builtin"]

DEMO_POLICY: dict[str, Any] = {
    "mode": "enforce",
    "grow_at": 0.85,
    "target_utilization": 0.75,
    "warning_at": 0.88,
    "critical_at": 0.93,
    "lead_time_seconds": 6 * 3600.0,
    "horizon_seconds": 2 * DAY,
    "step_bytes": 2**40,
    "min_growth_bytes": 2**40,
    "cooldown_seconds": 6 * 3600.0,
}
"""The demo's growth policy: the product's defaults with a shorter horizon (3 days instead of 7),
so that a month-long 10x ramp is grown in steps a reader can follow, and utilization stays high."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    days: float = 30.0
    scenario: str = "cosmos7"
    policy: str = "quotapilot"
    seed: int = 0
    config: Path | None = None
    poll_interval_seconds: float = POLL_INTERVAL_SECONDS
    warm_start: WarmStart | None = None
    """Serve 28 days of pre-history from a temporary Prometheus (`prometheus`), the in-process
    stand-in (`builtin`) or whichever is available (`auto`), and warm-start from it; None: cold."""
    state_dir: Path | None = None
    """Where the simulator's state and the daemon's store (`state.db`, with the audit trail and
    the outbox) are kept after the run; None: a temporary directory, removed at the end."""


@dataclass(slots=True)
class ViewRow:
    """One line of the live view."""

    name: str
    used: int
    hard: int | None
    runway_seconds: float | None
    last_action: str


@dataclass(slots=True)
class Frame:
    """What the live view shows after one poll."""

    t: float
    elapsed_days: float
    days: float
    rows: list[ViewRow] = field(default_factory=list)
    growth_actions: int = 0
    metrics_url: str = ""
    history_note: str = ""


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def demo_settings_data(*, cluster: str, address: str, token: str, ca_file: Path, store: Path,
                       config: Path | None, poll_interval_seconds: float,
                       prometheus_url: str | None = None) -> dict[str, Any]:
    """The demo's configuration, with the user's `--config` sections layered over it (its
    `[[clusters]]`, `[store]` and `[http]` are the demo's own, and so is `[history]
    prometheus_url` with `--warm-start`)."""
    data: dict[str, Any] = {
        "clusters": [{"name": cluster, "address": address, "token": token, "ca_file": str(ca_file)}],
        "poll": {"interval_seconds": poll_interval_seconds, "jitter_ratio": 0.0},
        "policy": dict(DEMO_POLICY),
        "http": {"listen": "127.0.0.1:0"},
        "store": {"path": str(store)},
        "vast": {"max_retries": 2, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2},
        "forecast": {"workers": 0},  # refits in-process: deterministic, and no pool to start
    }
    if config is not None:
        user = read_config_file(config)
        for own in ("clusters", "store", "http"):
            user.pop(own, None)
        user_policy = user.get("policy")
        if isinstance(user_policy, dict):
            user_policy.pop("mode", None)  # the demo is the enforce-mode showcase
        data = _deep_merge(data, user)
    if prometheus_url is not None:
        history = {"prometheus_url": prometheus_url, "lookback": WARM_START_DAYS * DAY, "source": "quotapilot",
                   "start_timeout_seconds": 120.0}
        data["history"] = {**data.get("history", {}), **history}
    return data


@dataclass(slots=True)
class WarmStartHistory:
    """Where the demo's pre-history is served, and what the daemon imported from it."""

    kind: str
    url: str
    samples_served: int
    import_summary: dict[str, Any] | None = None


@contextlib.asynccontextmanager
async def serve_prehistory(scenario: str, *, start: float, seed: int, workdir: Path,
                           kind: WarmStart) -> AsyncIterator[WarmStartHistory]:
    """The scenario's 28 days before `start` as an OpenMetrics file under `workdir`, served by a
    temporary Prometheus or the in-process stand-in until the context exits."""
    from quotapilot.daemon.history.local import history_server
    from quotapilot.daemon.history.trace import openmetrics_text, scenario_prehistory

    traces = await asyncio.to_thread(scenario_prehistory, scenario, start=start, days=WARM_START_DAYS,
                                     interval_seconds=WARM_START_STEP_SECONDS, seed=seed)
    source = workdir / "prehistory.om"
    await asyncio.to_thread(source.write_text, openmetrics_text(traces))
    (workdir / "prometheus").mkdir(exist_ok=True)
    async with history_server(source, workdir / "prometheus", kind) as server:
        yield WarmStartHistory(server.kind, server.url, sum(len(t.times) for t in traces))


async def run_demo(options: DemoOptions, *, on_frame: Callable[[Frame], None] | None = None) -> dict[str, Any]:
    """Run the demo; return the summary (the `--json` object)."""
    from quotapilot.daemon.clock import VirtualClock
    from quotapilot.daemon.history.importer import warm_start_from_history
    from quotapilot.daemon.runtime.daemon import Daemon
    from quotapilot.daemon.runtime.wiring import StageWiring
    from quotapilot.daemon.settings import load_settings
    from quotapilot.daemon.simulator import SimulatorServer
    from quotapilot.daemon.store.actions import ActionStore
    from quotapilot.forecasting.planner import plan_cycle, plan_reactive_cycle
    from quotapilot.forecasting.replay import simulator_by_path

    started = time.monotonic()
    clock = VirtualClock()
    workdir = options.state_dir or Path(tempfile.mkdtemp(prefix="quotapilot-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        async with contextlib.AsyncExitStack() as servers:
            sim = await servers.enter_async_context(SimulatorServer(
                options.scenario, clock=clock, seed=options.seed, port=0, state_dir=workdir / "sim"))
            prehistory: WarmStartHistory | None = None
            if options.warm_start is not None:
                prehistory = await servers.enter_async_context(serve_prehistory(
                    options.scenario, start=clock.now(), seed=options.seed, workdir=workdir,
                    kind=options.warm_start))
            cluster = sim.scenario.cluster.name
            settings = load_settings(None, **demo_settings_data(
                cluster=cluster, address=sim.address, token=sim.token, ca_file=sim.ca_file,
                store=workdir / "state.db", config=options.config,
                poll_interval_seconds=options.poll_interval_seconds,
                prometheus_url=prehistory.url if prehistory is not None else None))
            wiring = StageWiring(planner=plan_reactive_cycle if options.policy == "reactive" else plan_cycle)
            async with Daemon(settings, clock, stages=wiring) as daemon:
                stages = wiring.built
                last_actions: dict[TargetId, ActionOutcome] = {}
                history_note = ""
                if prehistory is not None:  # what `quotapilot run` does before its first cycle
                    imported = await warm_start_from_history(settings, daemon.observations, clock,
                                                             daemon.supervisor.add)
                    prehistory.import_summary = imported.as_dict() if imported is not None else None
                    history_note = (f"warm start: {WARM_START_DAYS:g} days from {prehistory.kind} "
                                    f"{prehistory.url}" if imported is not None else
                                    f"warm start failed ({prehistory.kind} {prehistory.url}): cold")
                await daemon.http.start()
                metrics_url = f"http://127.0.0.1:{daemon.http.port}/metrics"
                tasks = asyncio.create_task(daemon.supervisor.run(), name="demo:supervisor")
                try:
                    end = clock.now() + options.days * DAY
                    start = clock.now()
                    actions = ActionStore(daemon.db)
                    while True:
                        ctx = await clock.run(daemon.poll_once(cluster))  # its retries advance the clock
                        last_actions.update((action.target, action) for action in ctx.actions)
                        if on_frame is not None:
                            frame = _frame(ctx, last_actions, start, options.days, metrics_url,
                                           await asyncio.to_thread(actions.totals))
                            frame.history_note = history_note
                            on_frame(frame)
                        if clock.now() >= end:
                            break
                        await clock.advance_and_settle(min(options.poll_interval_seconds, end - clock.now()))
                    sim.engine.advance_to(clock.now())
                    for drain in (stages.forecast.drain, stages.alerting.drain):  # refits, deliveries in flight
                        await drain(10.0)
                finally:
                    daemon.supervisor.stop()
                    await tasks
                growth_actions, bytes_added = await asyncio.to_thread(actions.totals)
                alerts = stages.alerting.view.evaluated.raised
            truth = sim.engine.summary()
    finally:
        if options.state_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "write_failures": int(truth["write_failures"]),
        "growth_actions": growth_actions,
        "bytes_added": bytes_added,
        "mean_utilization": round(float(truth["mean_utilization"]), 4),
        "peak_utilization": round(float(truth["peak_utilization"]), 4),
        "alerts": alerts,
        "days": round(float(truth["simulated_days"]), 3),
        "policy": options.policy,
        "scenario": truth["scenario"],
        "seed": options.seed,
        "bytes_refused": int(truth["bytes_refused"]),
        "mean_utilization_by_path": {p: round(v, 4) for p, v in truth["mean_utilization_by_path"].items()},
        "by_path": simulator_by_path(truth),
        "final_hard_limits": {p: q["hard_limit"] for p, q in truth["quotas"].items()},
        "warm_start": None if prehistory is None else {
            "history_server": prehistory.kind, "samples_served": prehistory.samples_served,
            "import": prehistory.import_summary},
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def _frame(ctx: CycleContext, last_actions: Mapping[TargetId, ActionOutcome], start: float, days: float,
           metrics_url: str, totals: tuple[int, int]) -> Frame:
    frame = Frame(t=ctx.now, elapsed_days=(ctx.now - start) / DAY, days=days, metrics_url=metrics_url,
                  growth_actions=totals[0])
    for obs in ctx.poll.observations:
        if obs.target.kind is not TargetKind.QUOTA:
            continue
        forecast = ctx.forecasts.get((obs.target, Dimension.BYTES))
        runway = forecast.runway(1.0) if forecast is not None else None
        runway_seconds = None
        if runway is not None and runway.p50 is not None:
            runway_seconds = max(0.0, runway.p50 - ctx.now)
        last = last_actions.get(obs.target)
        last_text = "—"
        if last is not None:
            age = format_duration(ctx.now - last.t)
            if last.new_hard is not None and last.status.value in ("verified", "would_grow"):
                last_text = f"{last.status.value} → {format_limit(last.new_hard, last.dimension.value)} ({age} ago)"
            else:
                last_text = f"{last.status.value} ({age} ago)"
        frame.rows.append(ViewRow(obs.target.name, obs.used_bytes, obs.hard_limit_bytes, runway_seconds, last_text))
    return frame


class LiveView:
    """The terminal view: redrawn in place, at most a few times per second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last_draw = 0.0
        self._lines = 0

    def __call__(self, frame: Frame) -> None:
        now = time.monotonic()
        if now - self._last_draw < 0.2 and frame.elapsed_days < frame.days:
            return
        self._last_draw = now
        width = 30
        done = min(1.0, frame.elapsed_days / frame.days) if frame.days else 1.0
        bar = "█" * int(done * width) + "░" * (width - int(done * width))
        lines = [f"quotapilot demo  {bar} day {frame.elapsed_days:5.1f}/{frame.days:g}   "
                 f"growth actions {frame.growth_actions}   metrics {frame.metrics_url}"]
        lines += [frame.history_note, ""] if frame.history_note else [""]
        lines.append(f"{'view':<22}{'used':>12}{'limit':>12}{'util':>7}{'runway':>10}  last action")
        for row in frame.rows:
            util = f"{row.used / row.hard:6.0%}" if row.hard else "     –"
            runway = format_duration(row.runway_seconds) if row.runway_seconds is not None else "–"
            lines.append(f"{row.name:<22}{format_bytes(row.used):>12}"
                         f"{format_bytes(row.hard) if row.hard else '–':>12}{util:>7}{runway:>10}  {row.last_action}")
        if self._lines:
            self.out.write(f"\x1b[{self._lines}F")
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self._lines = len(lines)


def format_summary(report: dict[str, Any]) -> str:
    lines = [
        f"quotapilot demo: {report['scenario']}, {report['days']:g} simulated "
        f"{'day' if report['days'] == 1 else 'days'}, policy {report['policy']}"
        f" ({report['wall_seconds']:g} s)",
        f"  write failures      {report['write_failures']}",
        f"  growth actions      {report['growth_actions']}",
        f"  bytes added         {format_bytes(report['bytes_added'])}",
        f"  mean utilization    {report['mean_utilization']:.1%} of the hard limits",
        f"  peak utilization    {report['peak_utilization']:.1%}",
        f"  alerts raised       {report['alerts']}",
    ]
    warm = report.get("warm_start")
    if warm is not None:
        imported = warm["import"]
        lines.append(f"  warm start          {warm['history_server']}: " + (
            f"{imported['samples_imported']} hourly samples of {len(imported['targets_matched'])} targets imported"
            if imported is not None else "failed, started cold"))
    for path, limit in sorted(report["final_hard_limits"].items()):
        util = report["mean_utilization_by_path"].get(path, 0.0)
        lines.append(f"  {path:<22} hard limit now {format_bytes(limit or 0):>10}, mean utilization {util:.0%}")
    return "\n".join(lines)


async def _until_stopped(demo: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """`demo`, with SIGTERM handled like Ctrl-C (under `asyncio.run`): the task is cancelled, so
    the daemon, the simulator and a `--warm-start` Prometheus are closed on the way out."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await demo
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def cmd_demo(args: argparse.Namespace) -> int:
    """`quotapilot demo [--days N] [--scenario S] [--policy quotapilot|reactive] [--seed N]
    [--config FILE] [--warm-start [auto|prometheus|builtin]] [--json]`."""
    from quotapilot.daemon.logs import configure_logging

    if args.days <= 0:
        print("quotapilot demo: --days must be > 0", file=sys.stderr)
        return 2
    live = sys.stdout.isatty() and not args.json
    configure_logging("error" if live else "warning", "auto")
    options = DemoOptions(days=args.days, scenario=args.scenario, policy=args.policy, seed=args.seed,
                          config=args.config, warm_start=args.warm_start)
    try:
        report = asyncio.run(_until_stopped(run_demo(options, on_frame=LiveView(sys.stdout) if live else None)))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM: everything is torn down
        print("quotapilot demo: interrupted", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"quotapilot demo: {exc.field}: {exc.reason}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # --warm-start: the history server would not start
        print(f"quotapilot demo: --warm-start: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(format_summary(report))
    return 0
