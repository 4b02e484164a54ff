"""Crash tests of the decision events: a SIGKILL between a stage that made something durable (an
alert state, an audit row) and the events stage that turns it into events, then a restart on the
same store. The events arrive after the restart (at least once; a duplicate has the same id).

The killed life runs in a child process that SIGKILLs itself (no cleanup, no flush) right after
the durable write, before `EventStage.on_cycle` of that cycle; the restart runs here.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.supervisor import Supervisor
from quotapilot.daemon.runtime.wiring import Collaborators, WiredStages, build_stages
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.forecasting.types import Observation, TargetId

T0 = 1_767_225_600.0
EVENT_SINK = "events-webhook-0"


def crash_settings(db_path: Path) -> Settings:
    """One event receiver (never reached: delivery is not under test), the built-in log sink."""
    return load_settings(None, store={"path": db_path},
                         events={"webhooks": [{"url": "http://127.0.0.1:9/events"}]})


def wired(db_path: Path, t: float) -> tuple[Database, WiredStages]:
    """The stages as the daemon builds them, on the store at `db_path`."""
    settings = crash_settings(db_path)
    db = Database(db_path)
    deps = Collaborators(settings=settings, clock=VirtualClock(t), db=db, observations=ObservationStore(
        db, raw_retention_seconds=86400.0, hourly_retention_seconds=86400.0),
                         writers={}, supervisor=Supervisor(shutdown_timeout_seconds=1))
    return db, build_stages(deps)


def cycle(now: float, usage: dict[str, float]) -> CycleContext:
    """One poll of c1: each quota `name` at `usage[name]` of a 10 TiB hard limit."""
    limit = 10 * 2**40
    return CycleContext(poll=PollResult("c1", now, observations=tuple(
        Observation(TargetId("c1", name, f"/c1/{name}"), now, int(ratio * limit), limit)
        for name, ratio in usage.items())), now=now)


def event_rows(db: Database) -> list[dict[str, Any]]:
    return [{"dedup_key": r["dedup_key"], "type": r["status"], **json.loads(r["payload"])}
            for r in db.query("SELECT dedup_key, status, payload FROM outbox WHERE sink = ? ORDER BY id",
                              (EVENT_SINK,))]


async def killed_after_alerting(workdir: Path) -> None:
    """The killed life: the alerting stage commits a firing alert, then SIGKILL."""
    _, stages = wired(workdir / "state.db", T0)
    await stages.events.open()
    await stages.alerting.on_cycle(cycle(T0, {"a": 0.95}))
    signal.raise_signal(signal.SIGKILL)


async def killed_after_audit(workdir: Path) -> None:
    """The killed life: a growth is PATCHed, verified and audited, then SIGKILL (the crash test's
    quota, in enforce mode)."""
    from test_actuator_crash import one_cycle

    _, stages = wired(workdir / "state.db", T0)
    await stages.events.open()
    await one_cycle(workdir, T0)
    signal.raise_signal(signal.SIGKILL)


CHILD = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_events_crash
asyncio.run(test_events_crash.{life}(Path({workdir!r})))
print("survived")
"""


async def run_killed(life: str, workdir: Path) -> None:
    code = CHILD.format(tests=str(Path(__file__).parent), life=life, workdir=str(workdir))
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "survived" not in child.stdout


class TestSigkillBetweenStages:
    """What a stage made durable before the kill is an event after the restart."""

    async def test_an_alert_committed_before_the_kill_is_an_event(self, tmp_path: Path) -> None:
        """Before: the restarted events stage took the firing alert on disk as its baseline, and the
        `fired` event was never enqueued."""
        await run_killed("killed_after_alerting", tmp_path)
        db, stages = wired(tmp_path / "state.db", T0 + 60)
        try:
            await stages.events.open()
            for minute in (1, 2, 3):
                ctx = cycle(T0 + 60 * minute, {"a": 0.95})
                await stages.alerting.on_cycle(ctx)
                await stages.events.on_cycle(ctx)
            alerts = [row for row in event_rows(db) if row["type"] == "alert"]
            assert [(row["dedup_key"], row["data"]["transition"]) for row in alerts] == [
                ("c1/a/utilization#1", "fired")]
        finally:
            db.close()

    async def test_an_action_audited_before_the_kill_is_a_result_event(self, tmp_path: Path) -> None:
        """Before: `result` events came only from the cycle's in-memory outcomes, so the audit row
        of the killed cycle never became one."""
        (tmp_path / "vms.json").write_text(json.dumps({
            "quota": {"id": 1, "path": "/cosmos7/raw", "hard_limit": 100 * 2**40, "soft_limit": 90 * 2**40,
                      "used": 80 * 2**40},
            "patches": 0}))
        await run_killed("killed_after_audit", tmp_path)
        [audit] = db_rows(tmp_path / "state.db", "SELECT id, status FROM actions")
        assert audit["status"] == "verified"

        db, stages = wired(tmp_path / "state.db", T0 + 60)
        try:
            await stages.events.open()
            results = [row for row in event_rows(db) if row["type"] == "result"]
            assert [(row["dedup_key"], row["data"]["action_id"], row["data"]["status"]) for row in results] == [
                (f"action-{audit['id']}/verified", audit["id"], "verified")]
            # a second restart replays the same ids: the outbox keeps one row each
            db2, again = wired(tmp_path / "state.db", T0 + 120)
            await again.events.open()
            db2.close()
            assert [row["dedup_key"] for row in event_rows(db) if row["type"] == "result"] == [
                f"action-{audit['id']}/verified"]
        finally:
            db.close()


def db_rows(path: Path, sql: str) -> list[Any]:
    db = Database(path)
    try:
        return db.query(sql)
    finally:
        db.close()
