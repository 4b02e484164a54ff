"""The outbox shared by a fleet, on both backends: each row claimed by one instance at a time,
the dedup key unchanged, a dead claimer's rows taken over; overrides seen by every instance."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from store_helpers import OpenStore

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.outbox import OutboxStore
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import TargetId

T0 = 1_767_225_600.0


def entry(n: int, sink: str = "webhook") -> OutboxEntry:
    return OutboxEntry(sink=sink, alert_id=f"c1/t{n}/utilization", dedup_key=f"c1/t{n}/utilization:1:firing",
                       status="firing", payload={"n": n}, created_at=T0, next_attempt_at=T0)


def shared_only(open_store: OpenStore) -> OpenStore:
    if open_store().dialect != "postgres":
        pytest.skip("SQLite serves one instance by construction: its claims are trivial (see the next test)")
    return open_store


class TestClaims:
    def test_two_claimers_never_get_the_same_row(self, open_store: OpenStore) -> None:
        """Two instances drain 60 rows concurrently, 4 at a time: every row once, none twice."""
        shared_only(open_store)
        first = OutboxStore(open_store(), claimer="a")
        first.enqueue([entry(n) for n in range(60)])
        claimers = [first, OutboxStore(open_store(), claimer="b")]
        got: dict[str, list[int]] = {"a": [], "b": []}
        barrier = threading.Barrier(2)

        def drain(store: OutboxStore) -> None:
            barrier.wait()
            while rows := store.pending("webhook", 4):
                got[store.claimer].extend(row.row_id for row in rows)
                store.mark_delivered([row.row_id for row in rows], T0)

        threads = [threading.Thread(target=drain, args=(store,)) for store in claimers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not set(got["a"]) & set(got["b"])
        assert sorted(got["a"] + got["b"]) == sorted(set(got["a"] + got["b"]))
        assert len(got["a"]) + len(got["b"]) == 60
        assert first.pending_counts() == {}

    def test_instances_in_one_process_are_distinct_claimers(self, open_store: OpenStore) -> None:
        """The duplicate of bench_failover's 30-day run (alerts_duplicated=1; traced in --quick:
        one dedup key POSTed by a, b and c at the same instant): claimers defaulted to host/pid,
        so instances sharing a process (the bench, tests; containers with one host name, pid 1)
        each took the others' claims for their own and sent the same row. Each outbox store is
        a claimer of its own."""
        shared_only(open_store)
        first, second = OutboxStore(open_store()), OutboxStore(open_store())
        first.enqueue([entry(1)])
        assert [row.dedup_key for row in first.pending("webhook", 10)] == ["c1/t1/utilization:1:firing"]
        assert second.pending("webhook", 10) == []  # claimed by the first: not sent twice
        assert first.claimer != second.claimer

    def test_claimed_rows_are_not_handed_to_another_until_the_claim_lapses(self, open_store: OpenStore) -> None:
        shared_only(open_store)
        now = [T0]
        a = OutboxStore(open_store(), claimer="a", claim_seconds=60, wall_clock=lambda: now[0])
        b = OutboxStore(open_store(), claimer="b", claim_seconds=60, wall_clock=lambda: now[0])
        a.enqueue([entry(1), entry(2)])
        assert [row.payload["n"] for row in a.pending("webhook", 10)] == [1, 2]
        assert b.pending("webhook", 10) == []
        assert [row.payload["n"] for row in a.pending("webhook", 10)] == [1, 2]  # still a's on its next pass
        now[0] += 60  # a died without marking them: its claim lapses
        assert [row.payload["n"] for row in b.pending("webhook", 10)] == [1, 2]
        assert a.pending("webhook", 10) == []

    def test_a_failed_send_gives_the_row_back_until_its_next_attempt(self, open_store: OpenStore) -> None:
        """A row whose send failed waits for its retry unclaimed: when its instance is killed while
        backing off, another instance sends it at the next attempt, not a whole claim later."""
        shared_only(open_store)
        now = [T0]
        a = OutboxStore(open_store(), claimer="a", claim_seconds=60, wall_clock=lambda: now[0])
        b = OutboxStore(open_store(), claimer="b", claim_seconds=60, wall_clock=lambda: now[0])
        a.enqueue([entry(1)])
        [row] = a.pending("webhook", 10)
        a.mark_retry([row.row_id], "503 from the receiver", next_attempt_at=T0 + 5)
        now[0] += 5  # a is killed while it backs off; the retry is due
        assert [(r.payload["n"], r.attempts) for r in b.pending("webhook", 10)] == [(1, 1)]
        assert a.pending("webhook", 10) == []  # b's claim now

    def test_sqlite_restart_takes_over_a_killed_predecessors_rows_at_once(self, tmp_path: Path) -> None:
        before = OutboxStore(Database(tmp_path / "s.db"), claimer="old-pid")
        before.enqueue([entry(1)])
        assert len(before.pending("webhook", 10)) == 1  # claimed, then the process is killed
        after = OutboxStore(Database(tmp_path / "s.db"), claimer="new-pid")
        assert [row.payload["n"] for row in after.pending("webhook", 10)] == [1]

    def test_same_alert_enqueued_by_two_instances_is_one_row(self, open_store: OpenStore) -> None:
        a, b = OutboxStore(open_store(), claimer="a"), OutboxStore(open_store(), claimer="b")
        assert a.enqueue([entry(1), entry(1, sink="mqtt")]) == 2
        assert b.enqueue([entry(1)]) == 0
        assert a.pending_counts() == {"webhook": 1, "mqtt": 1}


class TestDueRowsFirst:
    def test_rows_held_for_later_are_not_fetched_nor_claimed(self, open_store: OpenStore) -> None:
        """Both backends: a batch of rows held for a quiet window used to fill `pending()` and
        hide the due row behind it; only alerts with a row due are fetched (and, on PostgreSQL,
        claimed: the held rows stay free for whoever sends them when they are due)."""
        store = OutboxStore(open_store(), claimer="a")
        held = [OutboxEntry(sink="webhook", alert_id=f"c1/h{n}/utilization", dedup_key=f"h{n}",
                            status="firing", payload={"n": n}, created_at=T0, next_attempt_at=T0 + 3600)
                for n in range(3)]
        store.enqueue([*held, entry(9)])
        assert [row.payload["n"] for row in store.pending("webhook", 3, T0)] == [9]
        assert [row.payload["n"] for row in store.pending("webhook", 3, T0 + 3600)] == [0, 1, 2]
        store.mark_retry([store.pending("webhook", 1, T0)[0].row_id], "down", T0 + 60)
        assert store.pending("webhook", 10, T0) == []
        assert [row.payload["n"] for row in store.pending("webhook", 10, T0, retries=True)] == [9]


class TestOverridesAreShared:
    def test_a_pause_on_one_instance_is_seen_by_another_at_once(self, open_store: OpenStore) -> None:
        a, b = OverrideStore(open_store()), OverrideStore(open_store())
        a.pause("raw", now=T0, cluster="c1", reason="maintenance")
        [seen] = b.active(T0 + 1)
        assert seen.applies_to(TargetId("c1", "raw", "/raw"))
        a.engage_kill_switch(now=T0 + 2)
        assert b.active(T0 + 3)[0].is_kill_switch
        assert b.release_kill_switch()
        assert [o.target for o in a.active(T0 + 4)] == ["raw"]
