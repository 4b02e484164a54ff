"""The growth stage honours a pause across a rename of its quota (review r11)."""

from __future__ import annotations

from pathlib import Path

from test_actuator import NOW, RAW, Harness, make_settings

from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import ActionStatus


class TestPauseAcrossARename:
    """A quota renamed in VMS keeps its VMS id and path: the same quota (DESIGN's identity rule)."""

    async def test_a_pause_by_path_holds_the_renamed_quota(self, tmp_path: Path) -> None:
        """Stored by the path, as `POST /api/v1/targets/{ref}/pause` stores it: still paused once
        VMS renames the quota (the renamed sample confirmed by the next), so nothing is written."""
        h = Harness(tmp_path, make_settings("enforce"))
        OverrideStore(h.db).pause(RAW.path, now=NOW, cluster="c1", reason="migration")
        assert (await h.cycle()).actions[0].status == ActionStatus.PAUSED
        h.vms.quotas[1]["name"] = "cosmos7-raw-2027"
        statuses = []
        for _ in range(2):
            h.clock.advance(60)
            statuses += [a.status.value for a in (await h.cycle()).actions]
        assert h.vms.patches == [], statuses
