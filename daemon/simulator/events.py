"""A scenario's timed events and fault rules, put on the simulator's timeline.

Quota churn (`create_quota`, `delete_quota`, `rename_quota`, `recreate_quota`) is written to the
engine with source `scenario`; `operator_patch` with source `operator` (a human grows or shrinks a
quota: the daemon must notice a limit it did not set); `clock_step` moves the simulated VMS's wall
clock and calls the `on_clock_step` hooks (a soak steps the daemon's wall clock with it). An event
that cannot apply (its quota is gone, a name is taken) is logged as `simulator.event_skipped` and
counted, never raised: it runs inside some request's handling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.simulator.engine import Engine, EngineError
from quotapilot.daemon.simulator.faults import Faults
from quotapilot.daemon.simulator.scenario import EventSpec

log = get_logger(__name__)


@dataclass(slots=True)
class EventLog:
    """What the scenario's events did so far (part of the ground truth)."""

    applied: list[tuple[float, str, str]] = field(default_factory=list)
    skipped: list[tuple[float, str, str]] = field(default_factory=list)
    removed_names: list[tuple[float, str, str]] = field(default_factory=list)
    """(t, quota name, path) of every quota the events deleted or renamed away."""


def install(engine: Engine, faults: Faults, on_clock_step: Callable[[float], None]) -> EventLog:
    """Schedule the engine's scenario events on its timeline and add its fault rules."""
    log_ = EventLog()
    origin = engine.origin
    for event in engine.scenario.events:
        engine.schedule(origin + event.at_seconds, _runner(engine, event, on_clock_step, log_))
    for spec in engine.scenario.faults:
        options: dict[str, Any] = {k: dict(v) if k == "values" else v for k, v in spec.options}
        faults.add(spec.kind, start=None if spec.start_seconds is None else origin + spec.start_seconds,
                   end=None if spec.end_seconds is None else origin + spec.end_seconds, **options)
    return log_


def _runner(engine: Engine, event: EventSpec, on_clock_step: Callable[[float], None],
            log_: EventLog) -> Callable[[], None]:
    def run() -> None:
        what = f"{event.action} {event.path or ''}".strip()
        try:
            _apply(engine, event, on_clock_step, log_)
        except (EngineError, LookupError) as exc:
            log_.skipped.append((engine.now, what, str(exc)))
            log.warning("simulator.event_skipped", scenario_event=what, error=str(exc))
            return
        log_.applied.append((engine.now, what, ""))
        log.info("simulator.event_applied", scenario_event=what)
    return run


def _apply(engine: Engine, event: EventSpec, on_clock_step: Callable[[float], None], log_: EventLog) -> None:
    if event.action == "clock_step":
        on_clock_step(event.seconds)
        return
    assert event.path is not None
    if event.action == "create_quota":
        assert event.name is not None
        engine.create_quota(name=event.name, path=event.path, hard_limit=event.hard_limit_bytes or 0,
                            soft_limit=event.soft_limit_bytes or 0, source="scenario",
                            tenant_id=engine.tenant(event.tenant))
        return
    record = engine.quota_by_path(event.path)
    if record is None:
        raise LookupError(f"no quota on {event.path}")
    if event.action == "delete_quota":
        engine.delete_quota(record.id, source="scenario")
        log_.removed_names.append((engine.now, record.name, record.path))
    elif event.action == "rename_quota":
        assert event.new_name is not None
        old = record.name
        engine.patch_quota(record.id, {"name": event.new_name}, source="scenario")
        log_.removed_names.append((engine.now, old, record.path))
    elif event.action == "recreate_quota":
        assert event.new_path is not None
        name, hard, soft = record.name, record.hard_limit, record.soft_limit
        engine.delete_quota(record.id, source="scenario")
        log_.removed_names.append((engine.now, name, record.path))
        engine.create_quota(name=name, path=event.new_path, hard_limit=hard, soft_limit=soft, source="scenario",
                            tenant_id=record.tenant_id)
    elif event.action == "operator_patch":
        if event.factor is not None:
            used = int(engine.quota_usage(record)[0])
            hard = max(int(record.hard_limit * event.factor), used + 1) if record.hard_limit else 0
            ratio = record.soft_limit / record.hard_limit if record.hard_limit else 1.0
            changes = {"hard_limit": hard, "soft_limit": int(hard * ratio)}
        else:
            changes = {"hard_limit": event.hard_limit_bytes or 0}
            if event.soft_limit_bytes is not None:
                changes["soft_limit"] = event.soft_limit_bytes
            elif record.soft_limit > changes["hard_limit"] > 0:
                changes["soft_limit"] = changes["hard_limit"]
        engine.patch_quota(record.id, changes, source="operator")
