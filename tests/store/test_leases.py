"""Leases per VMS cluster and fencing of the audit trail, on both backends.

A lease is taken, renewed and given up in single statements; the epoch goes up on every change
of holder; an intent is recorded only under the current epoch (a deposed leader is refused).
"""

from __future__ import annotations

import threading

import pytest
from store_helpers import OpenStore

from quotapilot.daemon.store.actions import ActionStore, Fence, FencedOut
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.leases import Lease, LeaseStore
from quotapilot.forecasting.types import Decision, DecisionKind, Dimension, TargetId

T0 = 1_767_225_600.0
TTL = 15.0
RAW = TargetId("c1", "raw", "/raw")


def grow(target: TargetId = RAW) -> Decision:
    return Decision(target=target, dimension=Dimension.BYTES, kind=DecisionKind.GROW, reason="p90 crosses 0.75",
                    t=T0, current_used=80, current_hard=100, current_soft=90, new_hard=200, new_soft=180)


class TestLease:
    """One holder at a time; the epoch is the count of holders so far."""

    def test_first_taker_gets_epoch_1_and_others_wait(self, backend: Backend) -> None:
        leases = LeaseStore(backend)
        assert leases.acquire("c1", "a", now=T0, ttl_seconds=TTL) == Fence("a", 1)
        assert leases.acquire("c1", "b", now=T0 + 1, ttl_seconds=TTL) is None
        assert leases.all() == [Lease("c1", "a", 1, T0 + TTL)]

    def test_renewal_extends_and_keeps_the_epoch(self, backend: Backend) -> None:
        leases = LeaseStore(backend)
        leases.acquire("c1", "a", now=T0, ttl_seconds=TTL)
        assert leases.acquire("c1", "a", now=T0 + 5, ttl_seconds=TTL) == Fence("a", 1)
        assert leases.acquire("c1", "b", now=T0 + TTL + 1, ttl_seconds=TTL) is None  # renewed: still a's
        assert leases.all() == [Lease("c1", "a", 1, T0 + 5 + TTL)]

    def test_expired_lease_goes_to_the_next_taker_with_a_new_epoch(self, backend: Backend) -> None:
        leases = LeaseStore(backend)
        leases.acquire("c1", "a", now=T0, ttl_seconds=TTL)
        assert leases.acquire("c1", "b", now=T0 + TTL, ttl_seconds=TTL) == Fence("b", 2)
        assert leases.acquire("c1", "a", now=T0 + TTL + 1, ttl_seconds=TTL) is None
        assert not leases.is_current("c1", Fence("a", 1), now=T0 + TTL + 1)
        assert leases.is_current("c1", Fence("b", 2), now=T0 + TTL + 1)

    def test_release_hands_over_at_once(self, backend: Backend) -> None:
        leases = LeaseStore(backend)
        fence = leases.acquire("c1", "a", now=T0, ttl_seconds=TTL)
        assert fence is not None
        assert leases.release(fence, "c1", now=T0 + 1)
        assert not leases.is_current("c1", fence, now=T0 + 1)
        assert leases.acquire("c1", "b", now=T0 + 1, ttl_seconds=TTL) == Fence("b", 2)
        assert not leases.release(fence, "c1", now=T0 + 2)  # not ours any more: nothing changes
        assert leases.is_current("c1", Fence("b", 2), now=T0 + 2)

    def test_clusters_are_independent(self, backend: Backend) -> None:
        leases = LeaseStore(backend)
        assert leases.acquire("c1", "a", now=T0, ttl_seconds=TTL) == Fence("a", 1)
        assert leases.acquire("c2", "b", now=T0, ttl_seconds=TTL) == Fence("b", 1)
        assert [(lease.cluster, lease.holder) for lease in leases.all()] == [("c1", "a"), ("c2", "b")]

    def test_racing_instances_never_both_win(self, open_store: OpenStore) -> None:
        """Eight instances (own connections) take the same fresh leases at the same instant."""
        stores = [LeaseStore(open_store()) for _ in range(8)]
        for round_ in range(10):
            cluster = f"race{round_}"
            barrier = threading.Barrier(len(stores))
            won: list[str] = []

            def take(store: LeaseStore, holder: str, cluster: str = cluster,
                     barrier: threading.Barrier = barrier, won: list[str] = won) -> None:
                barrier.wait()
                if store.acquire(cluster, holder, now=T0, ttl_seconds=TTL) is not None:
                    won.append(holder)

            threads = [threading.Thread(target=take, args=(s, f"i{n}")) for n, s in enumerate(stores)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len(won) == 1, won


class TestFencing:
    """Every intent carries its epoch; only the current one is recorded."""

    def test_intent_under_the_current_lease_is_recorded_with_its_epoch(self, backend: Backend) -> None:
        fence = LeaseStore(backend).acquire("c1", "a", now=T0, ttl_seconds=TTL)
        actions = ActionStore(backend)
        action_id = actions.record(grow(), mode="enforce", status="intent", now=T0 + 1, quota_id=7, fence=fence)
        record = actions.get(action_id)
        assert record is not None
        assert (record.status, record.epoch, record.new_hard) == ("intent", 1, 200)

    def test_deposed_holder_is_refused_after_a_newer_holder_took_the_lease(self, open_store: OpenStore) -> None:
        """a leads under epoch 1, stalls (a GC pause, SIGSTOP) past its expiry; b takes the lease
        and records; a wakes up and tries to record under epoch 1: refused, nothing written."""
        a_store, b_store = open_store(), open_store()
        old = LeaseStore(a_store).acquire("c1", "a", now=T0, ttl_seconds=TTL)
        assert old is not None
        new = LeaseStore(b_store).acquire("c1", "b", now=T0 + TTL + 1, ttl_seconds=TTL)
        assert new == Fence("b", 2)
        ActionStore(b_store).record(grow(), mode="enforce", status="intent", now=T0 + TTL + 2, quota_id=7, fence=new)
        with pytest.raises(FencedOut, match="epoch 1"):
            ActionStore(a_store).record(grow(), mode="enforce", status="intent", now=T0 + TTL + 3, quota_id=7,
                                        fence=old)
        assert [(r["status"], r["epoch"]) for r in a_store.query("SELECT status, epoch FROM actions")] == [
            ("intent", 2)]
        assert not LeaseStore(a_store).is_current("c1", old, now=T0 + TTL + 3)  # the re-check before a PATCH

    def test_expired_lease_is_refused_even_with_no_successor(self, backend: Backend) -> None:
        fence = LeaseStore(backend).acquire("c1", "a", now=T0, ttl_seconds=TTL)
        with pytest.raises(FencedOut):
            ActionStore(backend).record(grow(), mode="enforce", status="intent", now=T0 + TTL, quota_id=7,
                                        fence=fence)
        assert backend.query("SELECT COUNT(*) FROM actions")[0][0] == 0

    def test_unfenced_record_carries_epoch_0(self, backend: Backend) -> None:
        """The single SQLite instance leads alone and records without a lease."""
        actions = ActionStore(backend)
        record = actions.get(actions.record(grow(), mode="observe", status="would_grow", now=T0, quota_id=7))
        assert record is not None
        assert record.epoch == 0
