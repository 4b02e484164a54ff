"""The outbox shared by a fleet, on both backends: each row claimed by one instance at a time,
the dedup key unchanged, a dead claimer's rows taken over, the latest state of an alert winning
across instances; overrides seen by every instance."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import pytest
from store_helpers import OpenStore

from quotapilot.alerts.dispatcher import Dispatcher, OutboxEntry
from quotapilot.alerts.errors import SinkTimeout
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.outbox import AsyncOutbox, OutboxStore
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.daemon.store.postgres import PostgresDatabase
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


ALERT = "c1/raw/utilization"


def note(seq: int, status: str, t: float) -> OutboxEntry:
    """One notification of the alert `ALERT` for the webhook (`seq` orders them)."""
    key = f"{ALERT}:1:{status}"
    return OutboxEntry(sink="webhook", alert_id=ALERT, dedup_key=key, status=status,
                       payload={"id": ALERT, "dedup_key": key, "status": status, "sequence": seq},
                       created_at=t, next_attempt_at=t)


class TestLatestStateWinsAcrossInstances:
    """The dispatcher's promise — per-alert order, the latest state winning (a resolve supersedes
    the fire it ends) — held within one instance only: claims were per ROW, so while instance A
    had an alert's `firing` row in flight, instance B claimed and delivered its newer `resolved`;
    A's send then failed, its row went back for a retry and nothing superseded it any more (the
    resolve was no longer pending): the receiver ended with the alert firing after it resolved.
    Claims are now per alert, and a row with a newer row of its alert in any state is never sent."""

    def test_an_alert_in_flight_on_one_instance_is_not_claimed_by_another(self, open_store: OpenStore) -> None:
        """Guards the per-alert claim: B takes none of an alert's rows while A has one of them
        claimed, and all of them once A's claim is over (marked, or lapsed)."""
        shared_only(open_store)
        now = [T0]
        a = OutboxStore(open_store(), claimer="a", claim_seconds=60, wall_clock=lambda: now[0])
        b = OutboxStore(open_store(), claimer="b", claim_seconds=60, wall_clock=lambda: now[0])
        a.enqueue([note(1, "firing", T0), entry(7)])
        assert [row.status for row in a.pending("webhook", 1)] == ["firing"]  # in flight on a
        b.enqueue([note(2, "resolved", T0 + 1)])
        assert [row.payload["n"] for row in b.pending("webhook", 10, T0 + 1)] == [7]  # other alerts go on
        now[0] += 60  # a died with the fire in flight: its claim lapses
        assert [row.status for row in b.pending("webhook", 10, T0 + 1) if row.alert_id == ALERT] == [
            "firing", "resolved"]

    def test_rows_of_one_alert_are_never_split_between_concurrent_claimers(self, open_store: OpenStore) -> None:
        """Guards the claim lock: two instances claiming at the same instant (SKIP LOCKED alone let
        each lock part of an alert's rows, so each sent a different state of it at once)."""
        shared_only(open_store)
        a, b = OutboxStore(open_store(), claimer="a"), OutboxStore(open_store(), claimer="b")
        for round_ in range(6):
            a.enqueue([OutboxEntry(sink="webhook", alert_id=f"c1/t{n}/utilization",
                                   dedup_key=f"{round_}/{n}:{status}", status=status, payload={"n": n},
                                   created_at=T0, next_attempt_at=T0)
                       for status in ("firing", "resolved") for n in range(300)])
            barrier = threading.Barrier(2)
            got: dict[str, set[str]] = {}
            threads = [threading.Thread(target=claim_at_once, args=(store, barrier, got)) for store in (a, b)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            split = sorted(got["a"] & got["b"])
            assert not split, f"round {round_}: {len(split)} alerts split between a and b, e.g. {split[:3]}"
            for store in (a, b):
                store.mark_delivered([row.row_id for row in store.pending("webhook", 1000)], T0)

    def test_a_failed_send_with_a_newer_row_delivered_is_superseded_not_retried(
            self, open_store: OpenStore) -> None:
        """Guards `mark_retry`: a fire whose send failed after its resolve was delivered (by
        another instance, or after a lapsed claim) is superseded — never sent after the resolve."""
        store = OutboxStore(open_store(), claimer="a", wall_clock=lambda: T0 + 2)
        store.enqueue([note(1, "firing", T0)])
        [fire] = store.pending("webhook", 10, T0)
        store.enqueue([note(2, "resolved", T0 + 1)])
        resolve = next(row for row in store.history(ALERT) if row["status"] == "resolved")
        store.mark_delivered([resolve["id"]], T0 + 1)
        store.mark_retry([fire.row_id], "no answer within 10 s", next_attempt_at=T0 + 5)
        assert store.pending("webhook", 10, T0 + 5, retries=True) == []
        assert store.pending_counts() == {}
        assert [(row["status"], row["superseded_at"] is not None) for row in store.history(ALERT)] == [
            ("firing", True), ("resolved", False)]

    def test_the_sweep_supersedes_rows_with_a_newer_row_in_any_state(self, open_store: OpenStore) -> None:
        """Guards `supersede_older` (run after an outage): a newer row delivered makes an older
        pending one stale, not only a newer pending one; the newest pending row stays."""
        store = OutboxStore(open_store(), claimer="a")
        store.enqueue([note(1, "firing", T0), note(2, "resolved", T0 + 1)])
        resolve = next(row for row in store.history(ALERT) if row["status"] == "resolved")
        store.mark_delivered([resolve["id"]], T0 + 1)
        store.enqueue([entry(7)])
        assert store.supersede_older("webhook", T0 + 2) == 1
        assert [row.payload["n"] for row in store.pending("webhook", 10)] == [7]

    async def test_a_resolve_delivered_by_one_instance_is_not_overtaken_by_a_stale_fire_of_another(
            self, pg_url: str) -> None:
        """The fleet end to end: A's send of the fire hangs, the alert resolves, B's worker
        passes, A's send times out and is retried: the receiver ends with the resolve."""
        clock = VirtualClock(T0)
        fleet = TwoInstances(pg_url, clock)
        try:
            await fleet.start()
            a, b = fleet.a, fleet.b
            await a.outbox.enqueue([note(1, "firing", T0)])
            a.sink.stall_next = True
            pass_a = fleet.in_background(a.dispatcher._pass(a.sink))  # A claims the fire; its send hangs
            await asyncio.wait_for(a.sink.in_flight.wait(), 10)

            clock.advance(1)
            await b.outbox.enqueue([note(2, "resolved", T0 + 1)])  # the alert resolves
            await b.dispatcher._pass(b.sink)  # B's worker delivers what it can claim

            a.sink.gate.set()  # A's send times out: its row goes back for a retry
            await asyncio.wait_for(pass_a, 10)

            clock.advance(5)  # A's retry is due
            await a.dispatcher._pass(a.sink)
            await b.dispatcher._pass(b.sink)
        finally:
            await fleet.close()
        assert fleet.receiver.arrived, "nothing was delivered"
        assert fleet.receiver.arrived[-1] == "resolved", (
            f"the receiver was told {fleet.receiver.arrived}: the stale fire overtook the resolve")

    async def test_a_resolve_left_for_the_instance_with_the_fire_in_flight_is_sent_at_once(
            self, pg_url: str) -> None:
        """Guards the dispatcher's second look: B left the resolve alone (A had the fire in flight);
        A's send succeeds, and A's worker passes again at once instead of an idle period later."""
        clock = VirtualClock(T0)
        fleet = TwoInstances(pg_url, clock)
        try:
            await fleet.start()
            a, b = fleet.a, fleet.b
            await a.outbox.enqueue([note(1, "firing", T0)])
            a.sink.stall_next, a.sink.times_out = True, False
            pass_a = fleet.in_background(a.dispatcher._pass(a.sink))
            await asyncio.wait_for(a.sink.in_flight.wait(), 10)
            await b.outbox.enqueue([note(2, "resolved", T0)])
            await b.dispatcher._pass(b.sink)
            assert fleet.receiver.arrived == []  # B does not overtake A's fire
            a.sink.gate.set()  # A's send arrives
            wait_seconds = await asyncio.wait_for(pass_a, 10)
            assert wait_seconds == 0.0
            await a.dispatcher._pass(a.sink)
        finally:
            await fleet.close()
        assert fleet.receiver.arrived == ["firing", "resolved"]


def claim_at_once(store: OutboxStore, barrier: threading.Barrier, got: dict[str, set[str]]) -> None:
    """Claim as the other claimer does (both released by `barrier`); the alerts claimed go to `got`."""
    barrier.wait()
    got[store.claimer] = {row.alert_id for row in store.pending("webhook", 1000)}


class Receiver:
    """What the one webhook receiver of the fleet has been told, in arrival order."""

    def __init__(self) -> None:
        self.arrived: list[str] = []


class InstanceSink:
    """One instance's view of the shared receiver; with `stall_next`, the next send hangs until
    `gate` is set, then times out (a slow receiver, a dropped connection) — or, with `times_out`
    False, arrives."""

    publishes_state = False

    def __init__(self, receiver: Receiver) -> None:
        self.name = "webhook"
        self.receiver = receiver
        self.stall_next = False
        self.times_out = True
        self.gate = asyncio.Event()
        self.in_flight = asyncio.Event()

    async def send(self, payload: Mapping[str, Any]) -> None:
        if self.stall_next:
            self.stall_next = False
            self.in_flight.set()
            await self.gate.wait()
            if self.times_out:
                raise SinkTimeout(self.name, "no answer within 10 s")
        self.receiver.arrived.append(str(payload["status"]))

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None


class Instance:
    """One instance of the fleet: its own connection to the shared outbox, its dispatcher, its sink."""

    def __init__(self, name: str, pg_url: str, clock: VirtualClock, receiver: Receiver) -> None:
        self.db = PostgresDatabase(pg_url)
        self.outbox = AsyncOutbox(OutboxStore(self.db, claimer=name, wall_clock=clock.now))
        self.sink = InstanceSink(receiver)
        self.dispatcher = Dispatcher(self.outbox, [self.sink], now=clock.now, sleep=clock.sleep,
                                     monotonic=clock.monotonic, backoff=lambda attempt, retry_after: 5.0)


class TwoInstances:
    """Instances A and B of a fleet on one PostgreSQL outbox and one receiver."""

    def __init__(self, pg_url: str, clock: VirtualClock) -> None:
        self.receiver = Receiver()
        self.a = Instance("a", pg_url, clock, self.receiver)
        self.b = Instance("b", pg_url, clock, self.receiver)
        self._background: list[asyncio.Task[float]] = []

    def in_background(self, one_pass: Coroutine[Any, Any, float]) -> asyncio.Task[float]:
        """A pass that runs while the test goes on (its send held), ended by `close()` at the latest."""
        task = asyncio.create_task(one_pass, name="pass")
        self._background.append(task)
        return task

    async def start(self) -> None:
        """Both have been running: their dispatchers' first pass (the start-up backlog) is done."""
        for instance in (self.a, self.b):
            await instance.dispatcher._pass(instance.sink)

    async def close(self) -> None:
        for instance in (self.a, self.b):
            instance.sink.gate.set()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.a.db.close()
        self.b.db.close()


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
