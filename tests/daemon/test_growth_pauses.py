"""The growth stage honours a pause across a rename of its quota (review r11, r13)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs
from test_actuator import NOW, RAW, Harness, make_settings, poll

from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import ActionStatus


class TestPauseAcrossARename:
    """A quota renamed in VMS keeps its VMS id and path: the same quota (DESIGN's identity rule)."""

    async def renamed(self, h: Harness) -> list[str]:
        """Renames the quota in VMS, then two cycles (the renamed sample, confirmed by the next):
        the statuses of their actions."""
        h.vms.quotas[1]["name"] = "cosmos7-raw-2027"
        statuses = []
        for _ in range(2):
            h.clock.advance(60)
            statuses += [a.status.value for a in (await h.cycle()).actions]
        return statuses

    async def test_a_pause_by_name_follows_the_renamed_quota(self, tmp_path: Path) -> None:
        """Stored by the name, as `POST /api/v1/targets/{ref}/pause` stores it: moved to the new
        name at the confirmed poll (`override.renamed`, once), so nothing is written (review r13:
        it stayed with the old name and the renamed quota was grown)."""
        h = Harness(tmp_path, make_settings("enforce"))
        OverrideStore(h.db).pause(RAW.name, now=NOW, cluster="c1", reason="migration")
        assert (await h.cycle()).actions[0].status == ActionStatus.PAUSED
        with capture_logs() as logs:
            statuses = await self.renamed(h)
            h.clock.advance(60)
            await h.cycle()
        assert h.vms.patches == [], statuses
        assert [(e["old_target"], e["target"], e["reason"]) for e in logs if e["event"] == "override.renamed"] == [
            (RAW.name, "cosmos7-raw-2027", "migration")]
        assert [o.target for o in OverrideStore(h.db).active(h.clock.now())] == ["cosmos7-raw-2027"]

    async def test_a_pause_by_name_made_before_a_restart_follows_a_rename_while_down(self, tmp_path: Path) -> None:
        """Renamed while the daemon was down: the name it was last confirmed under is read from
        the stored samples at the cluster's first poll, and the pause moved all the same."""
        h = Harness(tmp_path, make_settings("enforce"))
        ObservationStore(h.db, raw_retention_seconds=86400, hourly_retention_seconds=86400).write_poll(
            poll(h.vms, NOW - 60).observations)  # what the store stage wrote before the restart
        OverrideStore(h.db).pause(RAW.name, now=NOW, cluster="c1", reason="migration")
        statuses = await self.renamed(h)
        assert h.vms.patches == [], statuses
        assert [o.target for o in OverrideStore(h.db).active(h.clock.now())] == ["cosmos7-raw-2027"]

    async def test_a_pause_by_path_holds_the_renamed_quota(self, tmp_path: Path) -> None:
        """Stored by the path (as 88b95cb's API stored it): it holds the quota under any name."""
        h = Harness(tmp_path, make_settings("enforce"))
        OverrideStore(h.db).pause(RAW.path, now=NOW, cluster="c1", reason="migration")
        assert (await h.cycle()).actions[0].status == ActionStatus.PAUSED
        statuses = await self.renamed(h)
        assert h.vms.patches == [], statuses
