"""Helpers shared by the alert tests: settings with our sinks, hand-made poll cycles."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.stages.alerting import AlertingStage
from quotapilot.daemon.store.db import Database
from quotapilot.forecasting.types import Observation, TargetId

T0 = 1_767_225_600.0
LIMIT = 10 * 2**40


def alert_settings(db_path: Path, *, mqtt_port: int | None = None, webhook_url: str | None = None,
                   webhook_format: str = "json", **alerts: Any) -> Settings:
    section: dict[str, Any] = {"retry_backoffs_seconds": (1, 2, 5), **alerts}
    if mqtt_port is not None:
        section["mqtt"] = {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "qp", "timeout_seconds": 2}
    if webhook_url is not None:
        section["webhooks"] = [{"url": webhook_url, "format": webhook_format, "timeout_seconds": 2}]
    return load_settings(None, alerts=section, store={"path": db_path},
                         daemon={"shutdown_timeout_seconds": 1})


def cycle(now: float, usage: Mapping[str, float], *, cluster: str = "c1",
          error: str | None = None) -> CycleContext:
    """One poll of `cluster`: each quota `name` at `usage[name]` of a 10 TiB hard limit."""
    observations = () if error else tuple(
        Observation(TargetId(cluster, name, f"/{cluster}/{name}"), now, int(ratio * LIMIT), LIMIT)
        for name, ratio in usage.items())
    return CycleContext(poll=PollResult(cluster, now, observations=observations, error=error), now=now)


@contextlib.asynccontextmanager
async def running(stage: AlertingStage) -> AsyncIterator[asyncio.Event]:
    """Run the stage's delivery task; stop (and flush) on exit."""
    stopping = asyncio.Event()
    task = asyncio.create_task(stage.run(stopping), name="alerting")
    try:
        yield stopping
    finally:
        stopping.set()
        try:
            await asyncio.wait_for(task, timeout=5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def make_stage(settings: Settings, clock: VirtualClock) -> AlertingStage:
    return AlertingStage(settings, Database(settings.store.path), clock)
