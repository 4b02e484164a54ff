"""The one place that builds every stage, each with explicit collaborators (never the Daemon).

The daemon opens the resources (store, VMS collectors, supervisor) and hands them over as
`Collaborators`; `build_stages` builds the cycle's stages from them, in order, and returns them
as `WiredStages` (the ordered list the daemon runs, plus the named stages the demo and tests
read). The daemon then registers each stage generically (`StageParts.of`: its tasks, its
Prometheus collector, open/close) — nothing here writes back into the daemon.

A new stage is one line in `build_stages`:

    stages.append(MyStage(deps.settings.my_group, deps.clock, MyStore(deps.db)))

Options that change a stage's behaviour (the demo's reactive baseline planner, test sinks) are
arguments of `build_stages`, passed through a `StageWiring` the daemon is given:

    wiring = StageWiring(planner=plan_reactive_cycle)
    async with Daemon(settings, clock, stages=wiring) as daemon:
        wiring.built.growth.view ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from quotapilot.alerts.dispatcher import Sink
from quotapilot.alerts.rules import TaskHealth
from quotapilot.daemon.clock import Clock
from quotapilot.daemon.events import EventStage, leadership_event
from quotapilot.daemon.fs.alerts import FilesystemAlertStage
from quotapilot.daemon.fs.growth import FilesystemGrowthStage
from quotapilot.daemon.history.importer import HistoryBackedLoader
from quotapilot.daemon.runtime.cycle import Stage
from quotapilot.daemon.runtime.leadership import ChangeListener, Leadership, LeadershipChange
from quotapilot.daemon.runtime.supervisor import Supervisor
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.stages.actuator import QuotaWriter
from quotapilot.daemon.stages.alerting import AlertingStage, AlertTransitions
from quotapilot.daemon.stages.capacity import CapacityStage
from quotapilot.daemon.stages.forecast import ForecastStage, History
from quotapilot.daemon.stages.growth import DecisionEvents, GrowthStage, Planner
from quotapilot.daemon.stages.store import StoreStage
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.outbox import AsyncOutbox, OutboxStore
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.daemon.store.reservations import ReservationStore
from quotapilot.forecasting.planner import plan_cycle
from quotapilot.forecasting.series import ModelConfig
from quotapilot.forecasting.types import TargetId


@dataclass(frozen=True, slots=True)
class Collaborators:
    """What the opened daemon hands to the stages it builds."""

    settings: Settings
    clock: Clock
    db: Backend
    observations: ObservationStore
    writers: Mapping[str, QuotaWriter]
    """Per cluster name: its VMS write side (`vms.writer.VmsWriter`, the poller's `.writer`)."""
    supervisor: Supervisor
    """Whose task crashes become `daemon` alerts (read-only here: tasks are registered by the daemon)."""
    leadership: Leadership | None = None
    """Which clusters this instance leads (a fleet on PostgreSQL); None: alone, it leads them all."""


@dataclass(frozen=True, slots=True)
class WiredStages:
    """What `build_stages` built: `stages` in cycle order, and the named ones."""

    stages: tuple[Stage, ...]
    forecast: ForecastStage
    growth: GrowthStage
    alerting: AlertingStage
    capacity: CapacityStage
    events: EventStage


def forecast_stage(deps: Collaborators) -> ForecastStage:
    """The forecaster, warm-started from the store's observation history; with `[history]
    prometheus_url`, a target with too little local history is first imported from Prometheus."""
    clock, observations = deps.clock, deps.observations
    reach = deps.settings.forecast.step_seconds * ModelConfig().max_history_steps
    if deps.settings.history.prometheus_url is not None:
        loader: Callable[[TargetId], History] = HistoryBackedLoader(deps.settings, observations, clock,
                                                                    reach_seconds=reach)
        return ForecastStage(deps.settings.forecast, clock, history_loader=loader)

    def load(target: TargetId) -> History:
        return observations.history(target, since=clock.now() - reach)

    return ForecastStage(deps.settings.forecast, clock, history_loader=load)


def growth_stage(deps: Collaborators, *, planner: Planner = plan_cycle,
                 events: DecisionEvents | None = None) -> GrowthStage:
    """The growth stage, with the pre-flight API's active reservations as extra demand (and
    marked `expired` past their TTL, once per cycle); `events`: the events stage, whose `intent`
    and `blocked` events are committed with the audit rows."""
    writers = deps.writers
    reservations = ReservationStore(deps.db)
    return GrowthStage(deps.settings, deps.db, lambda cluster: writers[cluster], deps.clock,
                       planner=planner, reserved_totals=reservations.active_totals,
                       expire_reservations=reservations.expire, leadership=deps.leadership, events=events)


def alerting_stage(deps: Collaborators, *, sinks: Sequence[Sink] | None = None,
                   transitions: AlertTransitions | None = None) -> AlertingStage:
    """The alerting stage; the supervisor's crashed tasks become `daemon` alerts; `transitions`:
    the events stage, whose `alert` events are committed with the alert states."""
    supervisor = deps.supervisor
    return AlertingStage(deps.settings, deps.db, deps.clock, sinks=sinks,
                         task_health=lambda: task_health(supervisor),
                         leadership=deps.leadership, transitions=transitions)


def task_health(supervisor: Supervisor) -> list[TaskHealth]:
    """The supervised tasks as the `daemon` alert sees them: crashed, still running but failing
    (a task that reported so through `Supervisor.status`), or running."""
    crashes = supervisor.crashes
    return [TaskHealth(name, True, crashes[name].error, crashes[name].still_running) if name in crashes
            else TaskHealth(name, False) for name in supervisor.task_names]


def build_stages(deps: Collaborators, *, planner: Planner = plan_cycle,
                 sinks: Sequence[Sink] | None = None) -> WiredStages:
    """The cycle's stages, in order: store → forecaster → growth → alerting (+ one line per new stage).

    `planner`: the growth planner (the demo's `--policy reactive` passes the baseline);
    `sinks`: the alert sinks (None: the configured ones)."""
    settings, clock = deps.settings, deps.clock
    events = EventStage(settings.events, clock, AsyncOutbox(OutboxStore(deps.db)), audit=ActionStore(deps.db),
                        mode=lambda: settings.policy.mode)
    forecast = forecast_stage(deps)
    growth = growth_stage(deps, planner=planner, events=events)
    alerting = alerting_stage(deps, sinks=sinks, transitions=events)
    capacity = CapacityStage(settings.capacity, clock, raise_alerts=alerting.raise_conditions,
                             leadership=deps.leadership)
    if deps.leadership is not None:
        deps.leadership.subscribe(announcer(alerting, events))
    stages: list[Stage] = [StoreStage(deps.observations, leadership=deps.leadership), forecast, growth]
    # a new stage that runs before alerting: one line here, e.g. stages.append(X(deps.settings.x, deps.clock, deps.db))
    stages.append(FilesystemGrowthStage(settings, clock, ActionStore(deps.db), overrides=OverrideStore(deps.db),
                                        events=events))  # command or advice
    stages.append(alerting)
    stages.append(capacity)  # after alerting: it raises the "order capacity by" alert through it
    stages.append(FilesystemAlertStage(settings, alerting.raise_conditions))  # per-tier thresholds, unreachable
    stages.append(events)  # last: the cycle's action outcomes as `result` events (the rest is committed earlier)
    return WiredStages(tuple(stages), forecast=forecast, growth=growth, alerting=alerting, capacity=capacity,
                       events=events)


def announcer(alerting: AlertingStage, events: EventStage) -> ChangeListener:
    """A leadership this instance gained: an info alert and a `leadership` event, both with the
    dedup key `leadership/<cluster>@<epoch>` (delivered once across the fleet)."""
    async def announce(change: LeadershipChange) -> None:
        await alerting.announce(change)
        await events.publish_now(change.t, [leadership_event(change)])
    return announce


class StageWiring:
    """`build_stages` with options, as the daemon's stage builder; remembers what it built."""

    def __init__(self, *, planner: Planner = plan_cycle, sinks: Sequence[Sink] | None = None) -> None:
        self.planner = planner
        self.sinks = sinks
        self._built: WiredStages | None = None

    def __call__(self, deps: Collaborators) -> Sequence[Stage]:
        self._built = build_stages(deps, planner=self.planner, sinks=self.sinks)
        return self._built.stages

    @property
    def built(self) -> WiredStages:
        if self._built is None:
            raise RuntimeError("no stages built yet: the daemon builds them when entered")
        return self._built
