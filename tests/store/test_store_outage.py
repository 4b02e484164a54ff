"""PostgreSQL unavailable, for real: the throwaway PostgreSQL server refuses the test's database
(connections terminated, new ones refused: `ALLOW_CONNECTIONS false`) under a leading daemon
(against the simulator, on a virtual clock), then accepts it again. The leader stops
writing at once (no lease, no write), keeps polling and serving metrics and `/healthz`, logs the
outage once, and takes its lease back by itself when the database returns — then it acts again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from store_helpers import Outage
from structlog.testing import capture_logs

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.leadership import LeaseLeadership
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.forecasting.types import ActionStatus

LEASE, RENEW = 15.0, 5.0


def settings_for(sim: SimulatorServer, tmp_path: Path, url: str) -> Settings:
    return Settings(
        clusters=({"name": "sim", "address": sim.address, "token": sim.token,  # type: ignore[arg-type]
                   "ca_file": str(sim.ca_file)},),
        store={"url": url, "instance_name": "a", "path": tmp_path / "a.db",  # type: ignore[arg-type]
               "lease_seconds": LEASE, "lease_renew_seconds": RENEW, "connect_timeout_seconds": 0.5},
        policy={"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4})  # type: ignore[arg-type]


class TestPostgresOutage:
    async def test_leader_stops_writing_keeps_polling_and_comes_back(
            self, tmp_path: Path, database: tuple[str, Outage]) -> None:
        pg_url, outage = database
        clock = VirtualClock()
        async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim, \
                Daemon(settings_for(sim, tmp_path, pg_url), clock) as daemon:
            leadership = daemon.leadership
            assert isinstance(leadership, LeaseLeadership)
            await leadership.step()
            assert leadership.is_leader("sim")
            limits = sim.engine.summary()["quotas"]
            outage.begin()
            try:
                with capture_logs() as logs:
                    await leadership.step()  # the renewal fails: leadership dropped at once
                    assert not leadership.is_leader("sim")
                    ctx = await daemon.poll_once("sim")  # still polls VMS…
                    assert ctx.poll.ok and ctx.poll.observations
                    assert ctx.actions == []  # …but writes nothing
                    clock.advance(RENEW)
                    await leadership.step()  # still down: not logged again
                    await daemon.poll_once("sim")
                assert sim.engine.summary()["quotas"] == limits
                events = [e["event"] for e in logs]
                assert events.count("lease_store.failed") == 1
                assert events.count("leadership.lost") == 1
                # metrics and health are served from memory meanwhile
                assert daemon.registry.get_sample_value("quotapilot_leader", {"cluster": "sim"}) == 0.0
                assert "quotapilot_leader" in daemon.exposition.render().decode()
                _, report = daemon.health()
                assert report["clusters"]["sim"]["ok"] and report["leadership"][0]["role"] == "standby"
            finally:
                outage.end()
            clock.advance(RENEW)
            with capture_logs() as logs:
                for _ in range(100):  # back by itself once the pool has reconnected (its backoff is
                    await leadership.step()  # real time, ~1 s: the wait is for the server, not simulated)
                    if leadership.is_leader("sim"):
                        break
                    await asyncio.sleep(0.1)
            assert leadership.is_leader("sim") and leadership.epoch("sim") == 1  # nobody took it: same epoch
            assert "lease_store.recovered" in [e["event"] for e in logs]
            grown = await daemon.poll_once("sim")
            assert ActionStatus.VERIFIED in {a.status for a in grown.actions}
            assert sim.engine.summary()["quotas"] != limits
