"""The audit trail's queries on both backends (the growth stage's questions to it)."""

from __future__ import annotations

from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.backend import Backend
from quotapilot.forecasting.types import Decision, DecisionKind, Dimension, TargetId

T0 = 1_767_225_600.0
RAW = TargetId("c1", "raw", "/raw")


def grow(new_hard: int) -> Decision:
    return Decision(target=RAW, dimension=Dimension.BYTES, kind=DecisionKind.GROW, reason="p90 crosses 0.75",
                    t=T0, current_used=80, current_hard=100, current_soft=90, new_hard=new_hard)


class TestAuditedWrite:
    """Was a hard limit ours? (a limit moved to anything else was moved by someone else)"""

    def test_a_limit_we_wrote_is_ours_by_quota_id(self, backend: Backend) -> None:
        actions = ActionStore(backend)
        actions.record(grow(200), mode="enforce", status="verified", now=T0, quota_id=7)
        assert actions.audited_write("c1", 7, 200)
        assert not actions.audited_write("c1", 7, 300)  # another limit: someone else's
        assert not actions.audited_write("c1", 8, 200)  # another quota
        assert not actions.audited_write("c1", None, 200)

    def test_a_quota_without_an_id(self, backend: Backend) -> None:
        actions = ActionStore(backend)
        actions.record(grow(200), mode="enforce", status="verified", now=T0, quota_id=None)
        assert actions.audited_write("c1", None, 200)
        assert not actions.audited_write("c1", 7, 200)
