"""The audit trail's queries on both backends (the growth stage's questions to it)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.daemon.store.actions import ActionRecord, ActionStore, FencedOut
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.leases import LeaseStore
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
        assert not actions.audited_write("c1", 7, 200, Dimension.INODES)  # a bytes limit is no inode limit

    def test_a_quota_without_an_id(self, backend: Backend) -> None:
        actions = ActionStore(backend)
        actions.record(grow(200), mode="enforce", status="verified", now=T0, quota_id=None)
        assert actions.audited_write("c1", None, 200)
        assert not actions.audited_write("c1", 7, 200)

    def test_every_limit_written_to_a_cluster_in_one_read(self, backend: Backend) -> None:
        """What a recovery of the baseline asks of each moved limit (`audited_write`), for every
        quota, limit and dimension of a cluster in one read."""
        actions = ActionStore(backend)
        for new_hard, quota_id, mode, status in ((200, 7, "enforce", "verified"), (200, 7, "enforce", "failed"),
                                                 (300, None, "enforce", "unknown"), (400, 7, "observe", "would_grow"),
                                                 (500, 7, "enforce", "external_change")):
            actions.record(grow(new_hard), mode=mode, status=status, now=T0, quota_id=quota_id)
        inodes = replace(grow(600), dimension=Dimension.INODES)
        actions.record(inodes, mode="enforce", status="verified", now=T0, quota_id=7)
        expected = {(7, Dimension.BYTES, 200), (None, Dimension.BYTES, 300), (7, Dimension.INODES, 600)}
        assert (expected, set()) == (actions.written_limits("c1"), actions.written_limits("c2"))


    def test_the_latest_external_change_of_each_limit_in_one_read(self, backend: Backend) -> None:
        """What a recovery of the baseline counts as already said: per quota and dimension, the
        limit of the latest `external_change` — the one the actuator found (`live_hard`) on a lost
        answer's row, which asked for `new_hard`."""
        actions = ActionStore(backend)
        actions.record(grow(500), mode="enforce", status="external_change", now=T0, quota_id=7)
        actions.record(grow(600), mode="observe", status="external_change", now=T0 + 1, quota_id=7)
        lost = actions.record(grow(700), mode="enforce", status="unknown", now=T0, quota_id=8)
        actions.mark(lost, "external_change", T0 + 2, "limit is now 800", live_hard=800)
        actions.record(replace(grow(900), dimension=Dimension.INODES), mode="enforce", status="external_change",
                       now=T0, quota_id=7)
        actions.record(grow(1000), mode="enforce", status="verified", now=T0, quota_id=9)
        expected = {(7, Dimension.BYTES, 600), (8, Dimension.BYTES, 800), (7, Dimension.INODES, 900)}
        assert (expected, set()) == (actions.audited_external_limits("c1"), actions.audited_external_limits("c2"))

def intent_entry(sink: str) -> OutboxEntry:
    event_id = f"c1/raw/bytes/intent@{T0:.3f}"
    return OutboxEntry(sink=sink, alert_id=f"event:{event_id}", dedup_key=event_id, status="intent",
                       payload={"id": event_id, "type": "intent"}, created_at=T0, next_attempt_at=T0)


class TestDecisionEventsWithTheRow:
    """A decision's event is enqueued in its audit row's transaction: both are stored, or neither."""

    def test_the_row_and_its_event_are_stored_together(self, backend: Backend) -> None:
        entries = [intent_entry("events-mqtt"), intent_entry("events-webhook-0")]
        action_id = ActionStore(backend).record(grow(200), mode="enforce", status="intent", now=T0, quota_id=7,
                                                events=entries)
        assert [r["status"] for r in backend.query("SELECT status FROM actions WHERE id = ?", (action_id,))] == [
            "intent"]
        assert [(r["sink"], r["status"]) for r in backend.query("SELECT sink, status FROM outbox ORDER BY id")] == [
            ("events-mqtt", "intent"), ("events-webhook-0", "intent")]

    def test_a_fenced_out_intent_enqueues_no_event(self, backend: Backend) -> None:
        """A deposed leader's intent is refused, and the event that would have announced it with it."""
        fence = LeaseStore(backend).acquire("c1", "a", now=T0, ttl_seconds=15.0)
        with pytest.raises(FencedOut):
            ActionStore(backend).record(grow(200), mode="enforce", status="intent", now=T0 + 15.0, quota_id=7,
                                        fence=fence, events=[intent_entry("events-webhook-0")])
        assert backend.query("SELECT COUNT(*) FROM actions")[0][0] == 0
        assert backend.query("SELECT COUNT(*) FROM outbox")[0][0] == 0

    def test_a_rows_own_result_event_is_made_from_the_row_as_stored(self, backend: Backend) -> None:
        """An `external_change` row is an outcome when written: its `result` event's id is the row's,
        so it is made (in the row's transaction) from the row as stored, as the replay at start makes it."""
        def result_entries(record: ActionRecord) -> list[OutboxEntry]:
            event_id = f"action-{record.id}/{record.status}"
            return [OutboxEntry(sink="events-mqtt", alert_id=f"event:{event_id}", dedup_key=event_id, status="result",
                                payload={"id": event_id, "new_hard": record.new_hard}, created_at=record.updated_at,
                                next_attempt_at=record.updated_at)]

        action_id = ActionStore(backend).record(grow(200), mode="observe", status="external_change", now=T0,
                                                quota_id=7, result_events=result_entries)
        assert [(r["dedup_key"], r["status"]) for r in backend.query("SELECT dedup_key, status FROM outbox")] == [
            (f"action-{action_id}/external_change", "result")]
