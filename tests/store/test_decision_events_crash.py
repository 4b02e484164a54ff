"""Crash tests of the `intent` and `blocked` decision events, on both stores (SQLite on disk and a
throwaway PostgreSQL): a SIGKILL after the growth stage audited a growth's intent and a guard's
block, before the events stage of that cycle ran; a restart on the same store delivers both events
to a real HTTP receiver, once each, with the ids the killed life would have sent.

As in tests/daemon/test_events_crash.py, the killed life runs in a child process that SIGKILLs
itself (no cleanup, no flush) at the chosen point; the restart runs here. VMS is faked at our own
boundary by a JSON file, so it outlives the child.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from alert_receivers import Receiver
from store_helpers import NO_PG_CTL, PG_CTL

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.runtime.supervisor import Supervisor
from quotapilot.daemon.runtime.wiring import Collaborators, WiredStages, build_stages
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.open import open_backend
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import ClusterCapacity, Observation, TargetId

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "deploy" / "events.schema.json").read_text())
T0 = 1_767_225_600.0
TIB = 2**40
PAUSED = TargetId("c1", "a", "/c1/a")
"""Paused by hand: its growth is a `blocked` decision (guard `paused`), audited once."""
GROWN = TargetId("c1", "b", "/c1/b")
"""Grows in enforce mode: its `intent` is audited (the write-ahead row) before the PATCH."""


class FileVms:
    """The growth stage's VMS write calls over a JSON file of quotas by id."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, Any]]:
        quotas: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        return quotas

    async def get_quota(self, quota_id: int) -> dict[str, Any]:
        return dict(self.load()[str(quota_id)])

    async def patch_quota(self, quota_id: int, **limits: int | None) -> dict[str, Any]:
        quotas = self.load()
        quotas[str(quota_id)].update({k: v for k, v in limits.items() if v is not None})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(quotas))
        os.replace(tmp, self.path)
        return dict(quotas[str(quota_id)])

    async def list_quotas(self, path: str | None = None) -> list[dict[str, Any]]:
        return list(self.load().values())

    async def create_quota(self, *args: Any, **kw: Any) -> dict[str, Any]:
        raise AssertionError("not used")

    async def list_views(self) -> list[dict[str, Any]]:
        return []

    async def create_view(self, *args: Any, **kw: Any) -> dict[str, Any]:
        raise AssertionError("not used")

    async def find_view_policy(self, name: str) -> dict[str, Any] | None:
        return None


def crash_settings(workdir: Path) -> Settings:
    """Enforce mode, one event receiver; the store as `store.json` in `workdir` says (either backend)."""
    spec = json.loads((workdir / "store.json").read_text())
    return load_settings(None, clusters=[{"name": "c1", "address": "vms", "token": "t"}], store=spec["store"],
                         policy={"mode": "enforce"}, forecast={"workers": 0},
                         events={"webhooks": [{"url": spec["hook"]}]})


def wired(workdir: Path, t: float) -> tuple[Backend, WiredStages]:
    """The stages as the daemon builds them, on the test's store, VMS in `workdir/vms.json`."""
    settings = crash_settings(workdir)
    db = open_backend(settings.store)
    observations = ObservationStore(db, raw_retention_seconds=86400.0, hourly_retention_seconds=86400.0)
    deps = Collaborators(settings=settings, clock=VirtualClock(t), db=db, observations=observations,
                         writers={"c1": FileVms(workdir / "vms.json")},
                         supervisor=Supervisor(shutdown_timeout_seconds=1))
    return db, build_stages(deps)


def cycle(workdir: Path, now: float) -> CycleContext:
    """One poll of c1: both quotas as VMS holds them (at 80 % of a 100 TiB hard limit: growth wanted)."""
    quotas = FileVms(workdir / "vms.json").load()
    observations = tuple(
        Observation(target, now, quotas[str(quota_id)]["used"], quotas[str(quota_id)]["hard_limit"],
                    quotas[str(quota_id)]["soft_limit"], quota_id=quota_id)
        for quota_id, target in ((1, PAUSED), (2, GROWN)))
    capacity = ClusterCapacity("c1", now, usable_bytes=10_000 * TIB, used_bytes=0, free_bytes=10_000 * TIB)
    return CycleContext(poll=PollResult("c1", now, observations=observations, capacity=capacity), now=now)


async def killed(workdir: Path, point: str) -> None:
    """The killed life: one cycle through every stage before the events stage, SIGKILLed at `point`
    — `intent` (the actuator's write-ahead row of b is committed, its PATCH not sent) or `events`
    (b grown and verified, a's block audited; the events stage of the cycle never runs)."""
    _, stages = wired(workdir, T0)
    if point == "intent":
        def checkpoint(name: str) -> None:
            if name == "intent":
                signal.raise_signal(signal.SIGKILL)
        stages.growth.actuator.checkpoint = checkpoint  # type: ignore[method-assign]
    await stages.events.open()
    ctx = cycle(workdir, T0)
    for stage in stages.stages:
        if stage is stages.events:
            break
        await stage.on_cycle(ctx)
    signal.raise_signal(signal.SIGKILL)


CHILD = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
sys.path.insert(0, {store_tests!r})
import test_decision_events_crash
asyncio.run(test_decision_events_crash.killed(Path({workdir!r}), {point!r}))
print("survived")
"""


async def run_killed(workdir: Path, point: str) -> None:
    here = Path(__file__).parent
    code = CHILD.format(tests=str(here.parent), store_tests=str(here), workdir=str(workdir), point=point)
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert "survived" not in child.stdout


async def deliver_after_restart(workdir: Path, receiver: Receiver) -> list[dict[str, Any]]:
    """The restart: the events stage opens on the same store and delivers until the outbox is empty."""
    db, stages = wired(workdir, T0 + 60)
    try:
        await stages.events.open()
        stopping = asyncio.Event()
        delivery = asyncio.create_task(stages.events.run(stopping), name="test:events")
        try:
            assert await stages.events.drain(10.0)
        finally:
            stopping.set()
            await delivery
    finally:
        db.close()
    bodies: list[dict[str, Any]] = receiver.bodies()
    return bodies


def audit_statuses(workdir: Path) -> dict[str, str]:
    """What the killed life audited: quota name → status of its row."""
    db = open_backend(crash_settings(workdir).store)
    try:
        return {row["target"]: row["status"] for row in db.query("SELECT target, status FROM actions ORDER BY id")}
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "postgres"])
def workdir(request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver) -> Path:
    """The killed life's and the restart's common ground: the store (a SQLite file, or a database of
    its own on the session's throwaway PostgreSQL), the event receiver, the VMS file; a is paused."""
    store: dict[str, Any] = {"path": str(tmp_path / "state.db")}
    if request.param == "postgres":
        if PG_CTL is None:
            pytest.skip(NO_PG_CTL)
        store["url"] = request.getfixturevalue("pg_url")
    (tmp_path / "store.json").write_text(json.dumps({"store": store, "hook": receiver.url}))
    (tmp_path / "vms.json").write_text(json.dumps({
        str(quota_id): {"id": quota_id, "path": target.path, "hard_limit": 100 * TIB, "soft_limit": 90 * TIB,
                        "used": 80 * TIB}
        for quota_id, target in ((1, PAUSED), (2, GROWN))}))
    db = open_backend(crash_settings(tmp_path).store)
    try:
        OverrideStore(db).pause(PAUSED.name, now=T0 - 60, cluster=PAUSED.cluster, reason="maintenance")
    finally:
        db.close()
    return tmp_path


class TestSigkillAfterTheGrowthStage:
    """An intent and a block the growth stage audited before the kill are events after the restart."""

    @pytest.mark.parametrize("point", ["intent", "events"])
    async def test_the_audited_intent_and_block_reach_the_receiver(self, workdir: Path, receiver: Receiver,
                                                                 point: str) -> None:
        """Before: both were built in memory by the events stage, which the kill never reached; the
        restart replayed `result` events only, so a consumer never saw that b was to grow nor that a
        was held."""
        await run_killed(workdir, point)
        assert audit_statuses(workdir) == {"a": "paused", "b": "intent" if point == "intent" else "verified"}
        bodies = await deliver_after_restart(workdir, receiver)

        for body in bodies:
            jsonschema.validate(body, SCHEMA)
        decisions = sorted((b["type"], b["id"]) for b in bodies if b["type"] in ("intent", "blocked"))
        assert decisions == [("blocked", f"c1/a/bytes/blocked@{T0:.3f}"), ("intent", f"c1/b/bytes/intent@{T0:.3f}")]
        by_type = {b["type"]: b for b in bodies if b["type"] in ("intent", "blocked")}
        assert (by_type["blocked"]["path"], by_type["blocked"]["data"]["guard"]) == ("/c1/a", "paused")
        intent = by_type["intent"]
        assert (intent["path"], intent["data"]["mode"], intent["data"]["old_hard"]) == ("/c1/b", "enforce", 100 * TIB)
        assert intent["data"]["new_hard"] > 100 * TIB
        assert len(bodies) == len({b["id"] for b in bodies})  # each event once
