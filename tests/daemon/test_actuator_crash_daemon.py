"""End to end crash test: the real daemon (vastpy over verified HTTPS) against the simulator,
SIGKILLed between intent and PATCH and between PATCH and verify, then restarted on the same
store: the simulator's ground truth shows exactly one growth and the audit trail is complete.

The simulator runs in this test's event loop, so it outlives the daemon; the daemon runs in a
child process that kills itself (SIGKILL) at the named write-ahead checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.store.actions import query_actions
from quotapilot.daemon.store.db import Database

CHILD = """
import asyncio, json, os, signal, sys
from pathlib import Path
from quotapilot.daemon.runtime.wiring import StageWiring
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.settings import Settings

args = json.loads(sys.argv[1])

async def main():
    settings = Settings(
        clusters=[{"name": "sim", "address": args["address"], "token": args["token"], "ca_file": args["ca_file"]}],
        store={"path": args["store"]},
        policy={"mode": "enforce", "grow_at": 0.55, "target_utilization": 0.5, "cooldown_seconds": 3600},
        vast={"max_retries": 0})
    wiring = StageWiring()
    clock = VirtualClock(args["t"])
    async with Daemon(settings, clock, stages=wiring) as daemon:
        growth = wiring.built.growth
        await daemon.poll_once("sim")  # a first sample: growth waits for the next to confirm it
        clock.advance(1)
        if args["crash_at"]:
            def checkpoint(point):
                if point == args["crash_at"]:
                    os.kill(os.getpid(), signal.SIGKILL)
            growth.actuator.checkpoint = checkpoint
        ctx = await daemon.poll_once("sim")
        print(json.dumps([a.status.value for a in ctx.actions]))

asyncio.run(main())
"""


async def run_daemon(sim: SimulatorServer, store: Path, crash_at: str | None) -> tuple[int, str, str]:
    args = {"address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file), "store": str(store),
            "t": sim.clock.now(), "crash_at": crash_at}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def raw_limits(sim: SimulatorServer) -> list[int | None]:
    return [limit for _, limit in sim.engine.summary()["limits_over_time"]["/cosmos7/raw"]]


@pytest.mark.parametrize("point", ["intent", "patched"])
async def test_daemon_killed_mid_growth_grows_once(tmp_path: Path, point: str) -> None:
    clock = VirtualClock()
    store = tmp_path / "state.db"
    async with SimulatorServer("cosmos7", clock=clock, seed=0, port=0, state_dir=tmp_path / "sim") as sim:
        initial = raw_limits(sim)
        code, _, err = await run_daemon(sim, store, crash_at=point)
        assert code == -signal.SIGKILL, err[-2000:]
        assert len(raw_limits(sim)) == len(initial) + (0 if point == "intent" else 1)
        (row,) = [r for r in query_actions(Database(store)) if r["target"] == "cosmos7-raw"]
        assert row["status"] == point  # the write-ahead record survived SIGKILL

        clock.advance(60)
        code, _, err = await run_daemon(sim, store, crash_at=None)  # restart: reconcile, then plan
        assert code == 0, err[-2000:]
        clock.advance(60)
        code, _, err = await run_daemon(sim, store, crash_at=None)
        assert code == 0, err[-2000:]

        limits = raw_limits(sim)
        assert len(limits) == len(initial) + 1  # exactly one growth reached VMS
        assert limits[-1] is not None and initial[-1] is not None and limits[-1] > initial[-1]
        rows = [r for r in query_actions(Database(store)) if r["target"] == "cosmos7-raw"]
        statuses = [r["status"] for r in reversed(rows)]
        assert statuses == (["abandoned", "verified"] if point == "intent" else ["reconciled"])
        assert not [r for r in query_actions(Database(store)) if r["status"] in ("intent", "patched")]
