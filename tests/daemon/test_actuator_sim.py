"""The growth stage inside the real daemon, against the simulator (vastpy over verified HTTPS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.wiring import StageWiring
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.store.actions import query_actions
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import ActionStatus

NEW_VIEW = {"path": "/cosmos7/calibration", "policy": "cosmos7-default", "hard_limit_bytes": "5TB",
            "protocols": ["NFS"]}


def settings_for(sim: SimulatorServer, tmp_path: Path, mode: str, **extra: Any) -> Settings:
    return Settings(
        clusters=({"name": "sim", "address": sim.address, "token": sim.token,  # type: ignore[arg-type]
                   "ca_file": str(sim.ca_file)},),
        store={"path": tmp_path / "state.db"},  # type: ignore[arg-type]
        policy={"mode": mode, "grow_at": 0.45, "target_utilization": 0.4},  # type: ignore[arg-type]
        **extra)


class TestAgainstTheSimulator:
    async def test_enforce_grows_and_creates_managed_views(self, tmp_path: Path) -> None:
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim:
            settings = settings_for(sim, tmp_path, "enforce", views=(NEW_VIEW,))
            async with Daemon(settings, clock) as daemon:
                await daemon.poll_once("sim")  # first samples: growth waits for the next to confirm them
                clock.advance(60)
                ctx = await daemon.poll_once("sim")
                assert daemon.snapshot.mode == "enforce"
            grown = {a.target.name: a for a in ctx.actions}
            assert grown["cosmos7-raw"].status == ActionStatus.VERIFIED
            truth = sim.engine.summary()
            assert truth["quotas"]["/cosmos7/raw"]["hard_limit"] == grown["cosmos7-raw"].new_hard
            assert truth["quotas"]["/cosmos7/calibration"]["hard_limit"] == 5 * 10**12
            assert any(v.path == "/cosmos7/calibration" for v in sim.engine.views.values())

    async def test_observe_changes_nothing_and_pause_holds(self, tmp_path: Path) -> None:
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim:
            before = sim.engine.summary()["quotas"]
            settings = settings_for(sim, tmp_path, "observe", views=(NEW_VIEW,))
            wiring = StageWiring()
            async with Daemon(settings, clock, stages=wiring) as daemon:
                OverrideStore(daemon.db).pause("/cosmos7/processed", now=clock.now(), reason="reprocessing")
                await daemon.poll_once("sim")  # first samples: growth waits for the next to confirm them
                ctx = await daemon.poll_once("sim")  # (at the same time: usage compared unchanged below)
                assert wiring.built.growth.view.views_would_create == ("sim:/cosmos7/calibration (view and quota)",)
                statuses = {r["target"]: r["status"] for r in query_actions(daemon.db)}
            assert statuses == {"cosmos7-raw": "would_grow", "cosmos7-processed": "paused"}
            assert {a.target.name: a.status for a in ctx.actions}["cosmos7-processed"] == ActionStatus.PAUSED
            assert sim.engine.summary()["quotas"] == before
