"""The growth stage's global `max_actions_per_hour` across modes (review r11): every real write
counts, whichever mode the global policy is in; a would-grow counts only for a target observed."""

from __future__ import annotations

from pathlib import Path

from test_actuator import NOW, RAW, Harness, make_settings

from quotapilot.daemon.store.actions import ActionStore, query_actions
from quotapilot.forecasting.planner import TIB
from quotapilot.forecasting.types import ActionStatus, Decision, DecisionKind, Dimension, TargetId

PROCESSED = TargetId("c1", "cosmos7-processed", "/cosmos7/processed")


def would_grow(h: Harness, target: TargetId, quota_id: int, t: float) -> None:
    """A would-grow row of observe mode, as the stage records one."""
    decision = Decision(target, Dimension.BYTES, DecisionKind.GROW, "would grow", t, current_used=80 * TIB,
                        current_hard=100 * TIB, new_hard=120 * TIB)
    ActionStore(h.db).record(decision, mode="observe", status="would_grow", now=t, quota_id=quota_id)


class TestRateLimitAcrossModes:
    """The limit is on writes to VMS: an override's growths in enforce mode are writes like any."""

    async def test_enforce_override_growths_count_under_a_global_observe_mode(self, tmp_path: Path) -> None:
        """Global observe, `/cosmos7/*` enforced, one action per hour: one PATCH in the hour, the
        other quota held by the rate limit (the limit counted only observe rows: two PATCHes)."""
        settings = make_settings("observe", max_actions_per_hour=1,
                                 overrides=[{"match": "/cosmos7/*", "mode": "enforce"}])
        h = Harness(tmp_path, settings)  # quota 1: cosmos7-raw at 80 %
        h.vms.add(2, PROCESSED.name, PROCESSED.path, hard=100 * TIB, used=80 * TIB)
        first = await h.cycle()
        assert sorted([ActionStatus.BLOCKED, ActionStatus.VERIFIED]) == sorted(a.status for a in first.actions)
        for _ in range(2):
            h.clock.advance(60)
            await h.cycle()
        written = [(r["target"], r["mode"]) for r in query_actions(h.db) if r["status"] == "verified"]
        assert len(h.vms.patches) == 1, written

    async def test_would_grows_do_not_hold_a_real_write(self, tmp_path: Path) -> None:
        """Global enforce, `/cosmos7/processed` observed: its would-grow of the hour does not take
        the enforced quota's only slot."""
        settings = make_settings("enforce", max_actions_per_hour=1,
                                 overrides=[{"match": PROCESSED.path, "mode": "observe"}])
        h = Harness(tmp_path, settings)
        would_grow(h, PROCESSED, 2, NOW - 600)
        ctx = await h.cycle()
        assert [(a.target, a.status) for a in ctx.actions] == [(RAW, ActionStatus.VERIFIED)]

    async def test_a_would_grow_in_the_same_cycle_does_not_hold_a_real_write(self, tmp_path: Path) -> None:
        """Review r13: the planner's one budget for the cycle went to the observed quota first
        (`cosmos7-processed` sorts before `cosmos7-raw` at equal urgency): the enforced quota was
        held `rate_limit` while preflight answered `grow`. Its PATCH is made now, and the would-grow
        is held by it (as enforce would meet the limit)."""
        settings = make_settings("enforce", max_actions_per_hour=1,
                                 overrides=[{"match": PROCESSED.path, "mode": "observe"}])
        h = Harness(tmp_path, settings)  # quota 1: cosmos7-raw at 80 %, enforced
        h.vms.add(2, PROCESSED.name, PROCESSED.path, hard=100 * TIB, used=80 * TIB)  # observed
        ctx = await h.cycle()
        outcomes = {a.target: a for a in ctx.actions}
        statuses = {target: outcome.status for target, outcome in outcomes.items()}
        assert statuses == {RAW: ActionStatus.VERIFIED, PROCESSED: ActionStatus.BLOCKED}
        assert outcomes[PROCESSED].reason.startswith("rate limit: 1 actions per hour;")  # the planner's
        assert len(h.vms.patches) == 1

    async def test_observe_mode_counts_would_grows(self, tmp_path: Path) -> None:
        """Global observe: a would-grow of the hour takes the slot, as the write would in enforce."""
        h = Harness(tmp_path, make_settings("observe", max_actions_per_hour=1))
        would_grow(h, PROCESSED, 2, NOW - 600)
        ctx = await h.cycle()
        assert [
            (a.target, a.status, a.reason[:10]) for a in ctx.actions] == [(RAW, ActionStatus.BLOCKED, "rate limit")]
