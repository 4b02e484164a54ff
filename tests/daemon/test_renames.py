"""`stages.renames`: the name each quota (VMS id, path) was last confirmed under, and its pauses
moved to the new one."""

from __future__ import annotations

from pathlib import Path

from quotapilot.daemon.runtime.cycle import PollResult
from quotapilot.daemon.stages.renames import QuotaNames, Rename, RenamedPauses
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import ANY, OverrideStore
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

T0 = 1_767_225_600.0


def listed(name: str, *, quota_id: int = 7, path: str = "/raw", unconfirmed: bool = False) -> PollResult:
    obs = Observation(TargetId("c1", name, path, TargetKind.QUOTA), T0, 1, 10, None, None, None, quota_id=quota_id)
    return PollResult("c1", T0, (obs,), unconfirmed=frozenset({name}) if unconfirmed else frozenset())


class TestQuotaNames:
    def test_a_rename_is_said_at_the_confirmed_sample_once(self) -> None:
        names = QuotaNames()
        assert names.renamed(listed("raw")) == []
        assert names.renamed(listed("raw-2027", unconfirmed=True)) == []
        assert [Rename("c1", 7, "/raw", "raw", "raw-2027")] == names.renamed(listed("raw-2027"))
        assert names.renamed(listed("raw-2027")) == []

    def test_another_quota_under_the_name_is_no_rename(self) -> None:
        """Another VMS id (or path): another quota; its pause is not the first one's."""
        names = QuotaNames()
        names.renamed(listed("raw"))
        assert names.renamed(listed("raw-2027", quota_id=8)) == []
        assert names.renamed(listed("raw-2027", path="/raw2")) == []


class TestRenamedPauses:
    async def test_a_pause_of_every_cluster_moves_only_when_one_is_watched(self, tmp_path: Path) -> None:
        """On another cluster the old name may be another quota's."""
        store = OverrideStore(Database(tmp_path / "state.db"))
        store.pause("raw", now=T0, cluster=ANY, reason="all")
        renames = RenamedPauses(store, lambda cluster: [], sole_cluster=False)
        for poll in (listed("raw"), listed("raw-2027")):
            await renames.on_poll(poll, T0)
        assert [(o.cluster, o.target) for o in store.active(T0)] == [(ANY, "raw")]
