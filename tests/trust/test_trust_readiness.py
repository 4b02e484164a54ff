"""Issue 13, defect 9: readiness with one VMS down, and an empty cluster listing as a failure."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from trust_helpers import TrustClock, settings_for

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer


@pytest.mark.xfail(strict=True, reason="issue 13 defect 9: an empty GET /clusters/ counts as a good poll: "
                                       "/healthz stays green while every growth is blocked")
async def test_an_empty_cluster_listing_makes_health_fail(trust: SimulatorServer, clock: TrustClock,
                                                          store: Path) -> None:
    settings = settings_for(trust, store=store, policy={"mode": "observe"})
    async with Daemon(settings, clock) as daemon:
        await daemon.poll_once("sim")
        assert daemon.health()[0]
        trust.faults.add("empty", path="clusters")  # VMS lists no cluster from now on
        bound = settings.poll.stale_after_intervals * settings.poll.interval_seconds
        for _ in range(int(bound // 60) + 2):
            clock.advance(60)
            await daemon.poll_once("sim")
        healthy, report = daemon.health()
    assert not healthy, report


@pytest.mark.xfail(strict=True, reason="issue 13 defect 9: READY waits for every cluster: one VMS down at "
                                       "boot holds readiness for all")
async def test_ready_once_one_cluster_is_polled(trust: SimulatorServer, clock: TrustClock, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
        async with SimulatorServer("cosmos7", clock=clock, state_dir=tmp_path / "down") as down:
            settings = settings_for(trust, down, store=tmp_path / "state.db", policy={"mode": "observe"},
                                    vast={"max_retries": 0})
        # the second VMS is down (its server closed) when the daemon boots
        async with Daemon(settings, clock) as daemon:
            await daemon.poll_once("sim")
            await daemon.poll_once("sim2")
            messages = []
            while True:
                try:
                    messages.append(listener.recv(4096).decode())
                except BlockingIOError:
                    break
    assert any("READY=1" in m for m in messages)
