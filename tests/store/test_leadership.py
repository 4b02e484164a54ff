"""The leadership loop (daemon/runtime/leadership.py) on both backends, on a virtual clock:
one leader per cluster, failover after the lease runs out, store down → no leader, hand-over on
a clean exit, metrics and roles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from store_helpers import OpenStore
from structlog.testing import capture_logs

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.leadership import LeaseLeadership, SoleLeadership
from quotapilot.daemon.store.actions import ActionStore, FencedOut
from quotapilot.daemon.store.backend import Backend, Params, Row, StoreUnavailable, Transaction
from quotapilot.daemon.store.leases import LeaseStore
from quotapilot.forecasting.types import Decision, DecisionKind, Dimension, TargetId

CLUSTERS = ["c1", "c2"]


def instance(backend: Backend, clock: VirtualClock, name: str) -> LeaseLeadership:
    return LeaseLeadership(LeaseStore(backend), CLUSTERS, clock, instance_name=name, lease_seconds=15,
                           renew_seconds=5)


class Unplugged:
    """A backend whose database can be made unreachable (our own boundary: the store protocol)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.down = False

    @property
    def schema_version(self) -> int:
        return self.inner.schema_version

    def describe(self) -> str:
        return self.inner.describe()

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL at test unavailable")

    def transaction(self) -> AbstractContextManager[Transaction]:
        self._check()
        return self.inner.transaction()

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        self._check()
        return self.inner.query(sql, params)

    def checkpoint(self) -> None: ...

    def close(self) -> None:
        self.inner.close()


def grow() -> Decision:
    return Decision(target=TargetId("c1", "raw", "/raw"), dimension=Dimension.BYTES, kind=DecisionKind.GROW,
                    reason="r", t=0.0, current_hard=100, new_hard=200)


class TestLeaseLeadership:
    async def test_first_instance_leads_the_other_stands_by(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        a, b = instance(open_store(), clock, "a"), instance(open_store(), clock, "b")
        with capture_logs() as logs:
            await a.step()
            await b.step()
        assert [(r.cluster, r.leader, r.epoch) for r in a.roles()] == [("c1", True, 1), ("c2", True, 1)]
        assert [(r.cluster, r.leader, r.epoch) for r in b.roles()] == [("c1", False, None), ("c2", False, None)]
        assert [e["event"] for e in logs] == ["leadership.gained", "leadership.gained"]

    async def test_standby_takes_over_when_the_leader_stops_renewing(self, open_store: OpenStore) -> None:
        """a is killed (it simply never renews again): within one lease plus one renewal, b leads
        under epoch 2, and a's fence — should it wake up — is refused by the store."""
        clock = VirtualClock()
        a_store = open_store()
        a, b = instance(a_store, clock, "a"), instance(open_store(), clock, "b")
        await a.step()
        await b.step()
        old = a.fence("c1")
        waited = 0.0
        while not b.is_leader("c1"):
            clock.advance(5)
            waited += 5
            await b.step()
        assert waited <= 15 + 5
        assert (b.epoch("c1"), b.epoch("c2")) == (2, 2)
        assert not a.is_leader("c1")  # its local estimate ran out before b could take over
        with pytest.raises(FencedOut):
            ActionStore(a_store).record(grow(), mode="enforce", status="intent", now=clock.now(), quota_id=1,
                                        fence=old)
        assert not await a.epoch_is_current("c1")

    async def test_not_leading_gives_a_fence_the_store_refuses(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        backend = open_store()
        a, b = instance(backend, clock, "a"), instance(open_store(), clock, "b")
        await a.step()
        await b.step()
        with pytest.raises(FencedOut):
            ActionStore(backend).record(grow(), mode="enforce", status="intent", now=clock.now(), quota_id=1,
                                        fence=b.fence("c1"))

    async def test_store_down_drops_leadership_at_once_and_it_comes_back(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        plug = Unplugged(open_store())
        a = instance(plug, clock, "a")
        await a.step()
        assert a.is_leader("c1")
        plug.down = True
        with capture_logs() as logs:
            await a.step()
            assert not a.is_leader("c1") and not a.is_leader("c2")
            assert not await a.epoch_is_current("c1")
            await a.step()  # still down: logged once, not per attempt
            plug.down = False
            clock.advance(5)
            await a.step()
        events = [e["event"] for e in logs]
        assert events.count("lease_store.failed") == 1
        assert events.count("leadership.lost") == 2
        assert "lease_store.recovered" in events
        assert a.is_leader("c1") and a.epoch("c1") == 1  # nobody else took it: same holder, same epoch

    async def test_clean_exit_hands_over_at_once(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        a, b = instance(open_store(), clock, "a"), instance(open_store(), clock, "b")
        task = asyncio.create_task(a.run(), name="leases-a")
        await until(lambda: a.is_leader("c1") and a.is_leader("c2"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await b.step()  # no waiting for the expiry
        assert (b.epoch("c1"), b.epoch("c2")) == (2, 2)

    async def test_metrics(self, open_store: OpenStore) -> None:
        clock = VirtualClock()
        a, b = instance(open_store(), clock, "a"), instance(open_store(), clock, "b")
        await a.step()
        await b.step()
        leader, standby = CollectorRegistry(), CollectorRegistry()
        leader.register(a.collector())
        standby.register(b.collector())
        assert leader.get_sample_value("quotapilot_leader", {"cluster": "c1"}) == 1.0
        assert leader.get_sample_value("quotapilot_lease_epoch", {"cluster": "c1"}) == 1.0
        assert standby.get_sample_value("quotapilot_leader", {"cluster": "c1"}) == 0.0
        assert standby.get_sample_value("quotapilot_lease_epoch", {"cluster": "c1"}) is None


class TestSoleLeadership:
    async def test_single_instance_always_leads_unfenced(self) -> None:
        sole = SoleLeadership(CLUSTERS, holder="h")
        assert sole.is_leader("c1") and sole.epoch("c1") == 0 and sole.fence("c1") is None
        assert await sole.epoch_is_current("c2")
        registry = CollectorRegistry()
        registry.register(sole.collector())
        assert registry.get_sample_value("quotapilot_leader", {"cluster": "c2"}) == 1.0
        assert [r.as_json()["role"] for r in sole.roles()] == ["leader", "leader"]


async def until(condition: Callable[[], Any], attempts: int = 2000) -> None:
    """Let the event loop (and the store's worker threads) run until `condition` holds."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.005)  # a thread's round trip to the database, not simulated time
    raise AssertionError("condition never held")
