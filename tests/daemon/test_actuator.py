"""The growth stage: observe/enforce, write-ahead audit, re-read/verify, overrides, views, metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import pytest
from core_helpers import InstantClock
from prometheus_client import CollectorRegistry

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.runtime.cycle import CycleContext, DroppedSample, PollResult
from quotapilot.daemon.runtime.leadership import SoleLeadership
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.stages.actuator import Actuator
from quotapilot.daemon.stages.alerting import inputs_from_cycle
from quotapilot.daemon.stages.growth import GrowthStage
from quotapilot.daemon.stages.store import StoreStage
from quotapilot.daemon.store.actions import ActionStore, query_actions
from quotapilot.daemon.store.backend import StoreUnavailable
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.overrides import Override, OverrideStore
from quotapilot.daemon.vms.errors import VmsUnavailable
from quotapilot.daemon.vms.transport import VmsTransport
from quotapilot.daemon.vms.writer import VmsWriter
from quotapilot.forecasting.planner import TIB
from quotapilot.forecasting.types import (
    ActionStatus,
    ClusterCapacity,
    Decision,
    DecisionKind,
    Dimension,
    Observation,
    TargetId,
)

NOW = 1_767_225_600.0
RAW = TargetId("c1", "cosmos7-raw", "/cosmos7/raw")


class FakeVms:
    """Our own boundary, faked: the collector's write calls over an in-memory quota table."""

    def __init__(self) -> None:
        self.quotas: dict[int, dict[str, Any]] = {}
        self.views: list[dict[str, Any]] = []
        self.patches: list[tuple[int, dict[str, int]]] = []
        self.fail_patch: Exception | None = None
        self.apply_then_fail: Exception | None = None
        self.before_read: list[dict[str, Any]] = []  # changes applied at the next get_quota
        self.read_errors: list[Exception | None] = []  # raised by the next get_quota calls (None: answered)

    def add(self, quota_id: int, name: str, path: str, hard: int, used: int) -> None:
        self.quotas[quota_id] = {"id": quota_id, "name": name, "path": path, "hard_limit": hard,
                                 "soft_limit": int(hard * 0.9), "used_effective_capacity": used}

    async def get_quota(self, quota_id: int) -> dict[str, Any]:
        error = self.read_errors.pop(0) if self.read_errors else None
        if error is not None:
            raise error
        if self.before_read:
            self.quotas[quota_id].update(self.before_read.pop(0))
        return dict(self.quotas[quota_id])

    async def patch_quota(self, quota_id: int, **limits: int | None) -> dict[str, Any]:
        if self.fail_patch is not None:
            raise self.fail_patch
        changes = {k: v for k, v in limits.items() if v is not None}
        self.patches.append((quota_id, changes))
        self.quotas[quota_id].update(changes)
        if self.apply_then_fail is not None:  # applied, its answer lost
            raise self.apply_then_fail
        return dict(self.quotas[quota_id])

    async def list_quotas(self, path: str | None = None) -> list[dict[str, Any]]:
        return [q for q in self.quotas.values() if path is None or q["path"] == path]

    async def create_quota(self, name: str, path: str, hard_limit: int, soft_limit: int,
                           hard_limit_inodes: int | None = None) -> dict[str, Any]:
        quota_id = max(self.quotas, default=0) + 1
        self.add(quota_id, name, path, hard_limit, 0)
        return self.quotas[quota_id]

    async def list_views(self, path: str | None = None) -> list[dict[str, Any]]:
        return [v for v in self.views if path is None or v["path"] == path]

    async def create_view(self, path: str, name: str, policy_id: int,
                          protocols: list[str] | tuple[str, ...]) -> dict[str, Any]:
        view = {"id": len(self.views) + 1, "path": path, "name": name, "policy_id": policy_id}
        self.views.append(view)
        return view

    async def find_view_policy(self, name: str) -> dict[str, Any] | None:
        return {"id": 7, "name": name} if name == "default" else None


def make_settings(mode: str = "observe", **policy: Any) -> Settings:
    return Settings(clusters=({"name": "c1", "address": "vms", "token": "t"},),  # type: ignore[arg-type]
                    policy={"mode": mode, **policy})  # type: ignore[arg-type]


def poll(vms: FakeVms, t: float, **kw: Any) -> PollResult:
    observations = tuple(
        Observation(target=TargetId("c1", q["name"], q["path"]), t=t, used_bytes=q["used_effective_capacity"],
                    hard_limit_bytes=q["hard_limit"], soft_limit_bytes=q["soft_limit"],
                    used_inodes=q.get("used_inodes"), hard_limit_inodes=q.get("hard_limit_inodes"),
                    soft_limit_inodes=q.get("soft_limit_inodes"), quota_id=q["id"])
        for q in vms.quotas.values())
    capacity = ClusterCapacity("c1", t, usable_bytes=10_000 * TIB, used_bytes=1000 * TIB, free_bytes=9000 * TIB)
    return PollResult(cluster="c1", t=t, observations=observations, capacity=capacity, **kw)


class Harness:
    def __init__(self, tmp_path: Path, settings: Settings) -> None:
        self.clock = VirtualClock(NOW)
        self.db = Database(tmp_path / "state.db")
        self.vms = FakeVms()
        self.vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        self.stage = GrowthStage(settings, self.db, lambda cluster: self.vms, self.clock)

    async def cycle(self, **kw: Any) -> CycleContext:
        ctx = CycleContext(poll=poll(self.vms, self.clock.now(), **kw), now=self.clock.now())
        await self.stage.on_cycle(ctx)
        return ctx


class TestObserve:
    """Default mode: decide, record and report; never PATCH."""

    async def test_records_would_grow_once_per_cooldown(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("observe"))
        ctx = await h.cycle()
        assert [a.status for a in ctx.actions] == [ActionStatus.WOULD_GROW]
        assert h.vms.patches == []
        h.clock.advance(60)
        again = await h.cycle()
        assert [a.status for a in again.actions] == [ActionStatus.BLOCKED]  # cooldown
        statuses = [r["status"] for r in query_actions(h.db)]
        assert statuses == ["blocked", "would_grow"]
        h.clock.advance(60)
        await h.cycle()
        assert len(query_actions(h.db)) == 2  # a guard episode is recorded once

    async def test_a_cooldown_raises_no_alert_and_is_one_action(self, tmp_path: Path) -> None:
        """The stage's outcome of a cooldown block wins over its decision in the alert rules and
        raised `growth_blocked` (the README: a cooldown does not alert); and each cycle's outcome
        was a new last action, so the MQTT state was re-sent at every poll (SRE walkthrough)."""
        settings = make_settings("observe")
        h = Harness(tmp_path, settings)
        await h.cycle()
        h.clock.advance(60)
        blocked = await h.cycle()
        (raw,) = [t for t in inputs_from_cycle(blocked, settings).targets if t.target == RAW.name]
        assert [g.status for g in raw.growth] == ["none"]
        h.clock.advance(60)
        again = await h.cycle()
        assert [(a.status, a.t) for a in again.actions] == [(ActionStatus.BLOCKED, blocked.actions[0].t)]


    async def test_switching_to_enforce_acts_at_once(self, tmp_path: Path) -> None:
        observed = Harness(tmp_path, make_settings("observe"))
        assert (await observed.cycle()).actions[0].status == ActionStatus.WOULD_GROW
        observed.db.close()
        enforced = Harness(tmp_path, make_settings("enforce"))  # restart with mode = "enforce"
        enforced.clock.advance(60)
        assert (await enforced.cycle()).actions[0].status == ActionStatus.VERIFIED


class TestEnforce:
    """Write-ahead, re-read, PATCH, verify, audit."""

    async def test_grows_and_verifies(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        ctx = await h.cycle()
        (outcome,) = ctx.actions
        assert outcome.status == ActionStatus.VERIFIED
        ((_quota_id, changes),) = h.vms.patches
        assert changes["hard_limit"] == outcome.new_hard and outcome.new_hard is not None
        assert changes["soft_limit"] == int(changes["hard_limit"] * 0.9)
        (row,) = query_actions(h.db, target="/cosmos7/raw")
        assert (row["status"], row["mode"], row["old_hard"]) == ("verified", "enforce", 100 * TIB)
        assert ActionStore(h.db).totals() == (1, outcome.new_hard - 100 * TIB)

    async def test_the_last_action_is_recovered_after_a_restart(self, tmp_path: Path) -> None:
        """`status`, the API and the retained MQTT state read the last action from memory: after a
        restart they said none (the MQTT state was re-published with `last_action: null`) though the
        audit trail held the growth (SRE walkthrough). The first cycle reads it back."""
        h = Harness(tmp_path, make_settings("enforce"))
        (grown,) = (await h.cycle()).actions
        h.db.close()
        again = Harness(tmp_path, make_settings("enforce"))
        again.vms.quotas = h.vms.quotas
        again.clock.advance(60)
        ctx = await again.cycle()
        assert ctx.actions == []  # nothing new: the quota was just grown
        recovered = ctx.recovered[RAW]
        assert (recovered.status, recovered.new_hard, recovered.action_id) == (
            ActionStatus.VERIFIED, grown.new_hard, grown.action_id)
        again.clock.advance(60)
        assert (await again.cycle()).recovered == {}  # once, at the first cycle

    async def test_someone_else_changed_it(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.before_read.append({"hard_limit": 150 * TIB})
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.REPLANNED
        assert h.vms.patches == []
        assert query_actions(h.db)[0]["status"] == "replanned"

    async def test_refused_patch_is_failed_and_audited(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.fail_patch = PermanentError("400 from VMS: refused")
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.FAILED
        assert query_actions(h.db)[0]["status"] == "failed"


class TestQuotaIdentity:
    """Review r1 defect 2: the re-reads around the PATCH check that `GET /quotas/{id}/` answers for
    the quota planned for (its path, and its name where the answer has one), not just its hard
    limit. With one id listed for two quotas of equal limits (templated quotas), the growth planned
    for one was written to the other."""

    @staticmethod
    async def cycle_with(h: Harness, *observations: Observation) -> CycleContext:
        capacity = ClusterCapacity("c1", h.clock.now(), usable_bytes=10_000 * TIB, used_bytes=1000 * TIB,
                                   free_bytes=9000 * TIB)
        ctx = CycleContext(poll=PollResult(cluster="c1", t=h.clock.now(), observations=observations,
                                           capacity=capacity), now=h.clock.now())
        await h.stage.on_cycle(ctx)
        return ctx

    @staticmethod
    def raw_sample(h: Harness, target: TargetId = RAW, quota_id: int = 1) -> Observation:
        q = h.vms.quotas[1]
        return Observation(target=target, t=h.clock.now(), used_bytes=q["used_effective_capacity"],
                           hard_limit_bytes=q["hard_limit"], soft_limit_bytes=q["soft_limit"], quota_id=quota_id)

    async def test_growth_is_never_written_to_another_quota_under_its_id(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.add(2, "cosmos7-cold", "/cosmos7/cold", hard=100 * TIB, used=10 * TIB)  # same hard limit
        # the listing gave raw's record cold's id: the re-read of that id answers for cold
        (outcome,) = (await self.cycle_with(h, self.raw_sample(h, quota_id=2))).actions
        assert (outcome.status, h.vms.patches) == (ActionStatus.REPLANNED, [])
        (row,) = query_actions(h.db)
        assert row["status"] == "replanned" and "'/cosmos7/cold'" in row["reason"]

    async def test_a_reread_under_another_name_is_not_the_quota_planned_for(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.before_read.append({"name": "cosmos7-raw-old"})  # the re-read: same path, another name
        (outcome,) = (await h.cycle()).actions
        assert (outcome.status, h.vms.patches) == (ActionStatus.REPLANNED, [])

    async def test_another_tenants_quota_is_read_back_under_its_bare_name(self, tmp_path: Path) -> None:
        """A quota of another tenant is the target `<tenant>:<name>`; VMS names it `<name>`."""
        h = Harness(tmp_path, make_settings("enforce"))
        qualified = TargetId("c1", f"acme:{RAW.name}", RAW.path)
        (outcome,) = (await self.cycle_with(h, self.raw_sample(h, target=qualified))).actions
        assert outcome.status == ActionStatus.VERIFIED and len(h.vms.patches) == 1

    async def test_a_verify_answered_for_another_quota_is_a_verify_failure(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.before_read.extend([{}, {"path": "/cosmos7/elsewhere"}])  # the verify's read: another quota
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.VERIFY_FAILED and "'/cosmos7/elsewhere'" in outcome.reason


class TestExternalChange:
    """Issue 13 defect 4: a limit moved without an audited write of ours is detected, audited and
    alerted, never silently overwritten; growth waits for the next read and sizes from the new limit."""

    async def test_an_operator_change_is_audited_held_once_then_sized_from(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.add(2, "cosmos7-cold", "/cosmos7/cold", hard=100 * TIB, used=10 * TIB)  # needs nothing
        await h.cycle()
        h.vms.quotas[2].update(hard_limit=11 * TIB, soft_limit=10 * TIB)  # an operator shrinks it by hand
        h.clock.advance(60)
        ctx = await h.cycle()
        cold = [a for a in ctx.actions if a.target.name == "cosmos7-cold"]
        assert [(a.status, "external" in a.reason) for a in cold] == [(ActionStatus.BLOCKED, True)]
        assert [q for q, _ in h.vms.patches if q == 2] == []
        changed = [r for r in query_actions(h.db, target="cosmos7-cold") if r["status"] == "external_change"]
        assert [(r["old_hard"], r["new_hard"]) for r in changed] == [(100 * TIB, 11 * TIB)]
        h.clock.advance(60)
        await h.cycle()  # the next read confirms the new limit: growth sizes from it
        ((_, changes),) = [(q, c) for q, c in h.vms.patches if q == 2]
        grown = [r for r in query_actions(h.db, target="cosmos7-cold") if r["status"] == "verified"]
        assert [r["old_hard"] for r in grown] == [11 * TIB] and changes["hard_limit"] > 11 * TIB

    async def test_a_change_waits_for_the_poll_that_confirms_it(self, tmp_path: Path) -> None:
        """The collector marks a sample whose limit moved without a write of ours unconfirmed
        (`PollResult.unconfirmed`), and its alerts are held: the change is audited and held on the
        next poll, the one that confirms it (so `growth_blocked` pages), never on the first."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.add(2, "cosmos7-cold", "/cosmos7/cold", hard=100 * TIB, used=10 * TIB)
        await h.cycle()
        h.vms.quotas[2].update(hard_limit=11 * TIB, soft_limit=10 * TIB)
        statuses = []
        for unconfirmed in ({"cosmos7-cold"}, set()):
            h.clock.advance(60)
            ctx = await h.cycle(unconfirmed=frozenset(unconfirmed))
            statuses.append([a.status for a in ctx.actions if a.target.name == "cosmos7-cold"])
        assert statuses == [[], [ActionStatus.BLOCKED]]
        changed = [r for r in query_actions(h.db, target="cosmos7-cold") if r["status"] == "external_change"]
        assert [(r["old_hard"], r["new_hard"]) for r in changed] == [(100 * TIB, 11 * TIB)]

    async def test_a_limit_vms_said_once_is_no_change(self, tmp_path: Path) -> None:
        """A glitch (11 TB for one poll; the true limit after it, unconfirmed too) is not audited."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.add(2, "cosmos7-cold", "/cosmos7/cold", hard=100 * TIB, used=10 * TIB)
        await h.cycle()
        actions = []
        for hard, unconfirmed in ((11, {"cosmos7-cold"}), (100, {"cosmos7-cold"}), (100, set())):
            h.vms.quotas[2].update(hard_limit=hard * TIB, soft_limit=int(hard * TIB * 0.9))
            h.clock.advance(60)
            ctx = await h.cycle(unconfirmed=frozenset(unconfirmed))
            actions += [a for a in ctx.actions if a.target.name == "cosmos7-cold"]
        assert (actions, query_actions(h.db, target="cosmos7-cold")) == ([], [])

    async def test_one_found_while_settling_is_alerted_once_its_target_is_confirmed(self, tmp_path: Path) -> None:
        """After a restart every first sample is unconfirmed: an external change the actuator
        found settling an open row (audited on that row) is held back to the confirmed poll."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.fail_patch = TemporaryError("read timed out")
        assert [a.status for a in (await h.cycle()).actions] == [ActionStatus.UNKNOWN]
        h.vms.fail_patch = None
        h.vms.quotas[1].update(hard_limit=130 * TIB, soft_limit=117 * TIB)  # an operator's, not ours
        h.clock.advance(h.stage.actuator.landing_window_seconds() + 60)
        statuses = []
        for unconfirmed in ({RAW.name}, set(), set()):
            ctx = await h.cycle(unconfirmed=frozenset(unconfirmed))
            statuses.append([(a.status, a.action_id) for a in ctx.actions if a.status is ActionStatus.BLOCKED])
            h.clock.advance(60)
        assert statuses == [[], [(ActionStatus.BLOCKED, None)], []]
        assert [r["status"] for r in query_actions(h.db)] == ["external_change"]  # the settled row, once

    async def test_an_inode_change_found_while_settling_is_said_once_and_for_inodes(self, tmp_path: Path) -> None:
        """Review r1 defect 3: the actuator's external changes carry their dimension. One found
        settling an open *inode* growth was said (and held) as a change of the bytes limit — a
        spurious `growth_blocked` of bytes — and the growth stage audited the inode change again."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.quotas[1].update(used_effective_capacity=10 * TIB,  # bytes: nothing to do
                               used_inodes=900_000, hard_limit_inodes=1_000_000, soft_limit_inodes=900_000)
        # 1. an inode growth whose PATCH answer is lost (not applied): `unknown`, the quota frozen
        h.vms.fail_patch = TemporaryError("read timed out")
        first = await h.cycle()
        assert [(a.dimension, a.status) for a in first.actions] == [(Dimension.INODES, ActionStatus.UNKNOWN)]
        h.vms.fail_patch = None
        # 2. an operator raises the inode limit by hand; past the landing window the row is settled as
        #    an external change (the collector holds the moved limit for one poll: unconfirmed)
        h.vms.quotas[1].update(hard_limit_inodes=5_000_000, soft_limit_inodes=4_500_000)
        h.clock.advance(3600)
        await h.cycle(unconfirmed=frozenset({RAW.name}))
        # 3. the confirming poll: the change is said here, for inodes, once; the bytes limit never moved
        h.clock.advance(60)
        third = await h.cycle()
        said = [(a.dimension, a.status) for a in third.actions if a.status is ActionStatus.BLOCKED]
        rows = [(r["dimension"], r["status"]) for r in query_actions(h.db) if r["status"] == "external_change"]
        assert (said, rows) == ([(Dimension.INODES, ActionStatus.BLOCKED)], [("inodes", "external_change")])


class Toggled(SoleLeadership):
    """Leads its cluster or not, as the test says (a fleet's lease, won and lost)."""

    def __init__(self, leads: bool) -> None:
        super().__init__(["c1"])
        self.leads = leads

    def is_leader(self, cluster: str) -> bool:
        return self.leads


class Replica:
    """One instance's store and growth stages on a shared store and VMS, as the daemon runs them
    (the store stage records the leader's polls: what the growth stage recovers its baseline from)."""

    def __init__(self, db: Database, vms: FakeVms, clock: VirtualClock, *, leads: bool = True,
                 mode: str = "observe") -> None:
        self.leadership = Toggled(leads)
        self.clock = clock
        self.vms = vms
        self.store = StoreStage(ObservationStore(db, raw_retention_seconds=3 * 86400,
                                                 hourly_retention_seconds=30 * 86400), leadership=self.leadership)
        self.growth = GrowthStage(make_settings(mode), db, lambda cluster: vms, clock,
                                  leadership=self.leadership)

    async def cycle(self, unconfirmed: frozenset[str] = frozenset()) -> CycleContext:
        ctx = CycleContext(poll=poll(self.vms, self.clock.now(), unconfirmed=unconfirmed), now=self.clock.now())
        await self.store.on_cycle(ctx)
        await self.growth.on_cycle(ctx)
        return ctx


class Alternating:
    """Cycles of two replicas on one store, VMS and clock, as a fleet runs them: each cycle the
    second replica, then the first, then the clock moves on a minute."""

    def __init__(self, first: Replica, second: Replica, clock: VirtualClock) -> None:
        self.first, self.second, self.clock = first, second, clock

    async def __call__(self, count: int, unconfirmed: frozenset[str] = frozenset()) -> None:
        for _ in range(count):
            await self.second.cycle(unconfirmed)
            await self.first.cycle(unconfirmed)
            self.clock.advance(60)


def external_changes(db: Database) -> list[tuple[int, int]]:
    return [(r["old_hard"], r["new_hard"]) for r in query_actions(db) if r["status"] == "external_change"]


class TestTheBaselineAcrossRestartsAndTerms:
    """The hard limits last believed (`GrowthStage._last_hard`) are recovered from the store at the
    first cycle of a start, and of each term as the cluster's leader: between terms another leader
    judged (and audited) what changed."""

    async def test_a_change_another_leader_audited_is_not_audited_again_on_regaining_the_lead(
            self, tmp_path: Path) -> None:
        db, vms, clock = Database(tmp_path / "state.db"), FakeVms(), VirtualClock(NOW)
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=10 * TIB)
        first, second = Replica(db, vms, clock, leads=True), Replica(db, vms, clock, leads=False)
        cycles = Alternating(first, second, clock)

        await cycles(2)
        first.leadership.leads, second.leadership.leads = False, True
        await cycles(2)
        vms.quotas[1]["hard_limit"] = 120 * TIB  # an operator's: held once, then believed
        await cycles(1, frozenset({RAW.name}))
        await cycles(1)
        audited_by_second = external_changes(db)
        first.leadership.leads, second.leadership.leads = True, False  # handed back
        await cycles(2)
        once = [(100 * TIB, 120 * TIB)]
        assert (once, once) == (audited_by_second, external_changes(db))

    async def test_a_change_found_settling_just_before_losing_the_lead_is_not_said_again_on_regaining_it(
            self, tmp_path: Path) -> None:
        """The actuator settled a lost answer's row as an external change on a sample not confirmed
        yet, and the lead passed before the confirming poll: the new leader judged (and said) the
        change; a day later, back in the lead, this instance neither says it again nor holds a growth on it."""
        db, vms, clock = Database(tmp_path / "state.db"), FakeVms(), VirtualClock(NOW)
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        first = Replica(db, vms, clock, leads=True, mode="enforce")
        second = Replica(db, vms, clock, leads=False, mode="enforce")

        async def cycle(unconfirmed: frozenset[str] = frozenset()) -> list[ActionStatus]:
            await second.cycle(unconfirmed)
            ctx = await first.cycle(unconfirmed)
            clock.advance(60)
            return [a.status for a in ctx.actions]

        vms.fail_patch = TemporaryError("read timed out")
        statuses = [await cycle()]
        vms.fail_patch = None
        vms.quotas[1].update(hard_limit=130 * TIB, soft_limit=117 * TIB)  # an operator's, not ours
        clock.advance(first.growth.actuator.landing_window_seconds())
        statuses.append(await cycle(frozenset({RAW.name})))  # the row settled: said at the confirming poll
        first.leadership.leads, second.leadership.leads = False, True  # the lease passes before it
        for _ in range(2):
            await cycle()
        clock.advance(86400)
        vms.quotas[1]["used_effective_capacity"] = 125 * TIB
        first.leadership.leads, second.leadership.leads = True, False  # handed back a day later
        statuses.append(await cycle())
        expected = [[ActionStatus.UNKNOWN], [], [ActionStatus.VERIFIED]]
        assert expected == statuses

    async def test_a_change_found_settling_just_before_losing_the_lead_is_audited_once(
            self, tmp_path: Path) -> None:
        """The actuator settled a lost answer's row as an external change on a sample not confirmed
        yet, and the lead passed before the confirming poll: the new leader's replay of the store
        held that sample (never believed), yet the change is the one already audited, not another."""
        db, vms, clock = Database(tmp_path / "state.db"), FakeVms(), VirtualClock(NOW)
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        first = Replica(db, vms, clock, leads=True, mode="enforce")
        second = Replica(db, vms, clock, leads=False, mode="enforce")

        async def cycle(unconfirmed: frozenset[str] = frozenset()) -> None:
            await second.cycle(unconfirmed)
            await first.cycle(unconfirmed)
            clock.advance(60)

        vms.fail_patch = TemporaryError("read timed out")
        await cycle()
        vms.fail_patch = None
        vms.quotas[1].update(hard_limit=130 * TIB, soft_limit=117 * TIB)  # an operator's, not ours
        clock.advance(first.growth.actuator.landing_window_seconds())
        await cycle(frozenset({RAW.name}))  # the row settled as an external change on a held sample
        audited_by_first = external_changes(db)
        first.leadership.leads, second.leadership.leads = False, True  # the lease passes before it
        for _ in range(2):
            await cycle()
        assert (1, audited_by_first) == (len(audited_by_first), external_changes(db))

    async def test_a_change_held_before_a_restart_is_audited_though_the_first_cycle_after_it_failed(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The store stage wrote the first poll after the restart, and the growth stage failed on
        it (the daemon logs a stage's error and goes on): the baseline is still recovered from the
        samples before the restart, not from that poll."""
        db, vms, clock = Database(tmp_path / "state.db"), FakeVms(), VirtualClock(NOW)
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=10 * TIB)
        before = Replica(db, vms, clock)
        for _ in range(2):
            await before.cycle()
            clock.advance(60)
        vms.quotas[1]["hard_limit"] = 120 * TIB  # an operator's, seen once before the restart: held
        await before.cycle(frozenset({RAW.name}))
        clock.advance(60)
        after = Replica(db, vms, clock)
        active = after.growth.overrides.active
        failures = [StoreUnavailable("database is locked")]

        def fails_once(now: float) -> list[Override]:
            if failures:
                raise failures.pop()
            return active(now)

        monkeypatch.setattr(after.growth.overrides, "active", fails_once)
        with pytest.raises(StoreUnavailable):
            await after.cycle(frozenset({RAW.name}))  # the first sample after a restart: unconfirmed
        for _ in range(2):
            clock.advance(60)
            await after.cycle()
        expected = [(100 * TIB, 120 * TIB)]
        assert expected == external_changes(db)


class TestLostAnswer:
    """Issue 13 defect 1: a PATCH whose answer is lost ends in a re-read, never in a second growth."""

    async def test_applied_with_its_answer_lost_is_verified_by_the_reread(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.apply_then_fail = TemporaryError("connection dropped after sending")
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.VERIFIED
        (row,) = query_actions(h.db)
        assert (row["status"], row["detail"]["answer_lost"]) == ("verified", True)
        h.clock.advance(60)
        h.vms.apply_then_fail = None
        await h.cycle()  # inside the cooldown the verified growth started: not grown again
        assert len(h.vms.patches) == 1

    async def test_unknown_outcome_freezes_the_target_until_a_read_settles_it(self, tmp_path: Path) -> None:
        settings = make_settings("enforce")
        h = Harness(tmp_path, settings)
        h.vms.fail_patch = TemporaryError("read timed out")  # not applied (yet?): the re-read shows the old limit
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.UNKNOWN
        assert "frozen until a read settles it" in outcome.reason
        (row,) = query_actions(h.db)
        assert row["status"] == "unknown"
        h.vms.fail_patch = None
        h.clock.advance(60)  # the request could still land: held, not grown again
        (held,) = (await h.cycle()).actions
        assert (held.status, h.vms.patches) == (ActionStatus.BLOCKED, [])
        assert "unsettled" in query_actions(h.db)[0]["detail"]["guard"]
        h.clock.advance(h.stage.actuator.landing_window_seconds())  # no request can land any more
        (grown,) = (await h.cycle()).actions
        assert grown.status == ActionStatus.VERIFIED
        statuses = [r["status"] for r in reversed(query_actions(h.db))]
        assert statuses == ["abandoned", "blocked", "verified"]

    async def test_unknown_outcome_found_applied_later_is_reconciled(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.fail_patch = TemporaryError("read timed out")
        (outcome,) = (await h.cycle()).actions
        assert outcome.new_hard is not None
        h.vms.fail_patch = None
        h.vms.quotas[1]["hard_limit"] = outcome.new_hard  # the request landed after all
        h.clock.advance(60)
        await h.cycle()
        statuses = [r["status"] for r in reversed(query_actions(h.db))]
        assert statuses[0] == "reconciled"
        assert "external_change" not in statuses  # the limit moved by a write of ours, audited
        assert h.vms.patches == []  # and the cooldown it started holds the next growth

    async def test_a_refusal_after_an_applied_attempt_is_verified_by_the_reread(self, tmp_path: Path) -> None:
        """Review r1 defect 1: the transport's retry of an attempt applied with its answer lost can
        be refused (401: the token expired in between). Judged `failed` on the error alone, the
        growth VMS holds started no cooldown and was grown again at the next cycle."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.apply_then_fail = PermanentError("401 from VMS: token expired")
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.VERIFIED
        (row,) = query_actions(h.db)
        assert (row["status"], row["detail"]["answer_lost"]) == ("verified", False)
        h.vms.apply_then_fail = None
        h.clock.advance(60)
        await h.cycle()  # inside the cooldown the verified growth started: not grown again
        assert len(h.vms.patches) == 1

    async def test_a_refusal_whose_reread_is_unanswered_is_unknown_and_frozen(self, tmp_path: Path) -> None:
        """No read, no verdict: a refused PATCH whose re-read fails may have landed (an earlier
        attempt's), so it is `unknown` and the quota frozen until a read settles it."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.apply_then_fail = PermanentError("401 from VMS: token expired")
        h.vms.read_errors = [None, PermanentError("401 from VMS: token expired")]  # the re-read after the PATCH
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.UNKNOWN
        h.vms.apply_then_fail = None
        h.clock.advance(60)
        await h.cycle()  # the next read finds it applied: reconciled, counted as the growth it is
        assert [r["status"] for r in query_actions(h.db)] == ["reconciled"]
        assert len(h.vms.patches) == 1

    async def test_a_refusal_after_a_lost_answer_with_the_old_limit_is_unknown_and_frozen(
            self, tmp_path: Path) -> None:
        """Review r4 defect 3: the transport retried the PATCH after an attempt whose answer was
        lost, and the retry was refused (401). The re-read shows the old limit, but the lost
        attempt can still land: judged `failed`, the target was grown again at the next cycle —
        a second growth on top of the first when it landed. `unknown` and frozen instead, like a
        lost answer, until a read settles it."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.fail_patch = PermanentError("401 from VMS: token expired", after_lost_answer=True)
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.UNKNOWN and outcome.new_hard is not None
        (row,) = query_actions(h.db)
        assert (row["status"], row["detail"]["answer_lost"]) == ("unknown", True)
        h.vms.fail_patch = None
        h.clock.advance(60)  # the lost attempt can still land: held, not grown again
        (held,) = (await h.cycle()).actions
        assert (held.status, h.vms.patches) == (ActionStatus.BLOCKED, [])
        h.vms.quotas[1]["hard_limit"] = outcome.new_hard  # it lands
        h.clock.advance(60)
        await h.cycle()
        assert [r["status"] for r in reversed(query_actions(h.db))] == ["reconciled", "blocked"]
        assert h.vms.patches == []  # and the cooldown it started holds the next growth

    async def test_a_refusal_at_the_first_attempt_with_the_old_limit_is_failed(self, tmp_path: Path) -> None:
        """Nothing went out before the refusal: the old limit is the answer, the target free."""
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.fail_patch = PermanentError("401 from VMS: token expired")
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.FAILED
        (row,) = query_actions(h.db)
        assert row["status"] == "failed"
        assert h.stage.actuator.unsettled.get("c1", frozenset()) == frozenset()

    async def test_verify_failure(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.before_read.extend([{}, {"hard_limit": 100 * TIB}])  # second read: the PATCH did not stick
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.VERIFY_FAILED

    async def test_dropped_sample_blocks(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        ctx = await h.cycle(dropped=(DroppedSample("c1", RAW.name, "went_backwards"),))
        assert [a.status for a in ctx.actions] == [ActionStatus.BLOCKED]
        assert h.vms.patches == []

    async def test_failed_poll_does_nothing(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        ctx = CycleContext(poll=PollResult(cluster="c1", t=NOW, error="unreachable"), now=NOW)
        await h.stage.on_cycle(ctx)
        assert ctx.actions == [] and ctx.decisions == []


class TestLandingWindow:
    """Review r1 defect 4: whether a request of ours can still land is measured on the monotonic
    clock while the process that sent it lives (wall time only for a row an earlier process left):
    a wall-clock step must neither end the landing window early (a second PATCH while the first can
    still land) nor stretch it (a quota frozen for the length of the step)."""

    async def test_a_wall_clock_step_forward_does_not_end_it(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        window = h.stage.actuator.landing_window_seconds()
        h.vms.fail_patch = TemporaryError("read timed out")  # sent, answer lost, not (yet) applied
        (first,) = (await h.cycle()).actions
        assert first.status is ActionStatus.UNKNOWN
        h.vms.fail_patch = None
        h.clock.step_wall(3600)  # NTP steps the wall clock an hour forward
        h.clock.advance(min(60.0, window / 2))  # well inside the landing window on the monotonic clock
        (held,) = (await h.cycle()).actions
        # the first request can still land: its row stays open and the quota frozen, no second PATCH
        assert (held.status, h.vms.patches) == (ActionStatus.BLOCKED, [])
        assert [r["status"] for r in query_actions(h.db)] == ["blocked", "unknown"]

    async def test_a_wall_clock_step_back_does_not_stretch_it(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.fail_patch = TemporaryError("read timed out")
        assert [a.status for a in (await h.cycle()).actions] == [ActionStatus.UNKNOWN]
        h.vms.fail_patch = None
        h.clock.step_wall(-3600)  # an hour back
        h.clock.advance(h.stage.actuator.landing_window_seconds())  # no request can land any more
        (grown,) = (await h.cycle()).actions
        assert grown.status == ActionStatus.VERIFIED
        assert [r["status"] for r in reversed(query_actions(h.db))] == ["abandoned", "verified"]


class DeposedBeforeThePatch(SoleLeadership):
    """The lease is lost between the intent and the PATCH."""

    async def epoch_is_current(self, cluster: str) -> bool:
        return False


class StoreDownAtMark(ActionStore):
    """The store goes down after the intent: the next `failures` marks raise."""

    failures = 0

    def mark(self, action_id: int, status: str, now: float, reason: str | None = None, **detail: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("store down")
        super().mark(action_id, status, now, reason, **detail)


class TestSendTimes:
    """Review r4 defect 2: the actuator keeps, per open row of its own, the monotonic time its
    PATCH went out (the landing window is measured on it). An entry was dropped only when this
    process marked its row finished, so one leaked for every row finished elsewhere — a growth
    deposed before its PATCH (the new leader settles it), a row settled by another leader, a
    mark that raised (the store down) — for the life of the process."""

    @staticmethod
    def grow_decision() -> Decision:
        return Decision(RAW, Dimension.BYTES, DecisionKind.GROW, "r", NOW, current_used=80 * TIB,
                        current_hard=100 * TIB, new_hard=120 * TIB, new_soft=108 * TIB)

    async def test_a_growth_deposed_before_the_patch_keeps_nothing(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "state.db")
        actions = ActionStore(db)
        vms = FakeVms()
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        actuator = Actuator(make_settings("enforce"), actions, VirtualClock(NOW), DeposedBeforeThePatch(["c1"]))
        await actuator.grow(self.grow_decision(), 1, vms)
        assert vms.patches == []
        actions.mark(1, "abandoned", NOW + 300, "not applied")  # by the new leader
        assert actuator._sent_at == {}
        db.close()

    async def test_a_growth_deposed_before_the_patch_is_no_outcome_of_its_row(self, tmp_path: Path) -> None:
        """The row stays `intent` for the new leader to settle: an outcome `failed` under its id was
        published as that row's `result` event (`action-1/failed`, a status the row never had),
        and the new leader's reconcile published a second one."""
        db = Database(tmp_path / "state.db")
        actions = ActionStore(db)
        vms = FakeVms()
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        actuator = Actuator(make_settings("enforce"), actions, VirtualClock(NOW), DeposedBeforeThePatch(["c1"]))
        outcome = await actuator.grow(self.grow_decision(), 1, vms)
        assert (outcome.status, outcome.action_id) == (ActionStatus.FAILED, None)
        assert outcome.intent_committed  # its `intent` event is on disk with the row (review r13)
        assert actions.get(1).status == "intent"  # type: ignore[union-attr]
        db.close()

    async def test_a_row_settled_by_another_leader_is_forgotten_at_the_next_reconcile(
            self, tmp_path: Path) -> None:
        db = Database(tmp_path / "state.db")
        actions = ActionStore(db)
        vms = FakeVms()
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        actuator = Actuator(make_settings("enforce"), actions, VirtualClock(NOW), SoleLeadership(["c1"]))
        vms.fail_patch = TemporaryError("read timed out")
        outcome = await actuator.grow(self.grow_decision(), 1, vms)
        assert outcome.status is ActionStatus.UNKNOWN and outcome.action_id is not None
        # deposed; the new leader (another process, same store) settles the row; leader again
        actions.mark(outcome.action_id, "abandoned", NOW + 600, "not applied")
        assert await actuator.reconcile("c1", vms) == 0
        assert actuator._sent_at == {}
        db.close()

    async def test_a_mark_the_store_refused_is_settled_by_a_read_at_the_next_reconcile(
            self, tmp_path: Path) -> None:
        """The PATCH applied, then the store went down: the row stays at `intent`. The cluster is
        reconciled again at its next cycle (it had no open row before), which settles the row from
        VMS and keeps nothing of it."""
        db = Database(tmp_path / "state.db")
        actions = StoreDownAtMark(db)
        vms = FakeVms()
        vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=80 * TIB)
        actuator = Actuator(make_settings("enforce"), actions, VirtualClock(NOW), SoleLeadership(["c1"]))
        await actuator.reconcile("c1", vms)
        assert "c1" in actuator.reconciled
        actions.failures = 1
        with pytest.raises(StoreUnavailable):
            await actuator.grow(self.grow_decision(), 1, vms)
        assert "c1" not in actuator.reconciled  # the growth stage reconciles it at the next cycle
        assert await actuator.reconcile("c1", vms) == 1
        assert ([o.status for o in actuator.take_settled("c1")], actions.unfinished()) == \
            ([ActionStatus.RECONCILED], [])
        assert actuator._sent_at == {}
        assert "c1" in actuator.reconciled
        db.close()


class TestOverrides:
    """Pause/resume and the kill switch, stored so they survive restarts."""

    async def test_pause_survives_restart_and_resume_grows(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        OverrideStore(h.db).pause("/cosmos7/raw", now=NOW, reason="migration")
        h.db.close()
        h2 = Harness(tmp_path, make_settings("enforce"))  # a restart: same file
        (outcome,) = (await h2.cycle()).actions
        assert outcome.status == ActionStatus.PAUSED
        assert "migration" in outcome.reason
        registry = CollectorRegistry()
        registry.register(h2.stage.collector())
        labels = {"cluster": "c1", "target": RAW.name, "path": RAW.path, "kind": "quota", "tier": ""}
        assert registry.get_sample_value("quotapilot_target_paused", labels) == 1.0
        assert OverrideStore(h2.db).resume("/cosmos7/raw")
        (outcome,) = (await h2.cycle()).actions
        assert outcome.status == ActionStatus.VERIFIED
        assert registry.get_sample_value("quotapilot_target_paused", labels) == 0.0

    async def test_pause_until_expires(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        OverrideStore(h.db).pause(RAW.name, now=NOW, cluster="c1", until=NOW + 600)
        assert (await h.cycle()).actions[0].status == ActionStatus.PAUSED
        h.clock.advance(601)
        assert (await h.cycle()).actions[0].status == ActionStatus.VERIFIED

    async def test_kill_switch_stored_and_in_config(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        OverrideStore(h.db).engage_kill_switch(now=NOW, reason="incident 42")
        (outcome,) = (await h.cycle()).actions
        assert outcome.status == ActionStatus.PAUSED and "incident 42" in outcome.reason
        OverrideStore(h.db).release_kill_switch()
        configured = Harness(tmp_path / "b", make_settings("enforce", kill_switch=True))
        (outcome,) = (await configured.cycle()).actions
        assert outcome.status == ActionStatus.PAUSED
        assert configured.vms.patches == [] and h.vms.patches == []

    def test_pause_validation(self, tmp_path: Path) -> None:
        store = OverrideStore(Database(tmp_path / "s.db"))
        with pytest.raises(ValueError):
            store.pause("x", now=NOW, until=NOW - 1)
        with pytest.raises(ValueError):
            store.pause("*", now=NOW)


class TestReconcile:
    """Rows a crash left behind are settled from VMS, never re-applied."""

    async def test_settles_intent_and_patched_rows(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        h.vms.add(2, "cosmos7-processed", "/cosmos7/processed", hard=100 * TIB, used=10 * TIB)
        store = ActionStore(h.db)
        ctx = await h.cycle()  # grows raw
        raw_decision = ctx.decisions[-1] if ctx.decisions[-1].target == RAW else ctx.decisions[0]
        from dataclasses import replace
        interrupted = store.record(replace(raw_decision, current_hard=h.vms.quotas[1]["hard_limit"],
                                           new_hard=h.vms.quotas[1]["hard_limit"] + TIB),
                                   mode="enforce", status="intent", now=NOW, quota_id=1)
        processed = TargetId("c1", "cosmos7-processed", "/cosmos7/processed")  # a row names its quota's path
        applied = store.record(replace(raw_decision, target=processed, current_hard=50 * TIB, new_hard=100 * TIB),
                               mode="enforce", status="patched", now=NOW, quota_id=2)
        stage = GrowthStage(make_settings("enforce"), h.db, lambda c: h.vms, h.clock)
        # the applied one settles at once; the interrupted one not while its request could still land
        assert await stage.reconcile("c1") == 1
        assert [r.status for r in (store.get(interrupted), store.get(applied))] == ["intent", "reconciled"]
        assert stage.actuator.unsettled["c1"] == {1}
        h.clock.advance(stage.actuator.landing_window_seconds())
        assert await stage.reconcile("c1") == 1
        assert [r.status for r in (store.get(interrupted), store.get(applied))] == ["abandoned", "reconciled"]
        assert stage.actuator.unsettled["c1"] == set()
        assert store.unfinished() == []
        assert len(h.vms.patches) == 1


class TestViews:
    """Managed views: created with their quota in enforce mode, reported in observe mode."""

    async def test_enforce_creates_view_then_quota_once(self, tmp_path: Path) -> None:
        settings = Settings(clusters=({"name": "c1", "address": "vms", "token": "t"},),  # type: ignore[arg-type]
                            policy={"mode": "enforce"},  # type: ignore[arg-type]
                            views=({"path": "/cosmos7/new", "hard_limit_bytes": "20TiB"},))  # type: ignore[arg-type]
        h = Harness(tmp_path, settings)
        await h.cycle()
        assert [v["path"] for v in h.vms.views] == ["/cosmos7/new"]
        created = await h.vms.list_quotas(path="/cosmos7/new")
        assert [(q["name"], q["hard_limit"]) for q in created] == [("cosmos7-new", 20 * TIB)]
        assert await h.stage.ensure_view("c1", settings.views[0], h.vms) == "exists"
        await h.cycle()
        assert len(h.vms.views) == 1

    async def test_observe_reports_what_it_would_create(self, tmp_path: Path) -> None:
        settings = Settings(clusters=({"name": "c1", "address": "vms", "token": "t"},),  # type: ignore[arg-type]
                            views=({"path": "/cosmos7/new"},))  # type: ignore[arg-type]
        h = Harness(tmp_path, settings)
        await h.cycle()
        assert h.vms.views == []
        assert h.stage.view.views_would_create == ("c1:/cosmos7/new (view and quota)",)


MANAGED = "/jobs/managed"


class ResourceClient:
    """The part of a fake VMS client (what `client_factory` returns) that does not vary: `client[resource]`
    picks the resource the next `get` or `post` is of, and every POST is recorded in `posted` and
    answered with id 100. Subclasses answer `get`."""

    def __init__(self) -> None:
        self.posted: list[dict[str, Any]] = []
        self._resource = ""

    def __getitem__(self, resource: str) -> Self:
        self._resource = resource
        return self

    def post(self, **fields: Any) -> Any:
        self.posted.append({"resource": self._resource, **fields})
        return {"id": 100, **fields}


async def ensure_managed_view(client: ResourceClient, tmp_path: Path, executor: ThreadPoolExecutor,
                              vast: dict[str, Any]) -> tuple[str, VmsTransport]:
    """`Actuator.ensure_view` of the managed view (MANAGED, cluster c1, enforce mode) through a
    `VmsWriter` on a transport to `client` with these `[vast]` settings: what it did, and the transport."""
    clock = InstantClock()
    base = load_settings(None, clusters=[{"name": "c1", "address": "vms.invalid", "token": "t"}], vast=vast)
    transport = VmsTransport(base.clusters[0], base.vast, clock, executor, client_factory=lambda *_: client)
    settings = Settings(clusters=({"name": "c1", "address": "vms.invalid", "token": "t"},),  # type: ignore[arg-type]
                        policy={"mode": "enforce"},  # type: ignore[arg-type]
                        views=({"path": MANAGED},))  # type: ignore[arg-type]
    db = Database(tmp_path / "state.db")
    try:
        actuator = Actuator(settings, ActionStore(db), clock, SoleLeadership(["c1"]))
        return await actuator.ensure_view("c1", settings.views[0], VmsWriter(transport)), transport
    finally:
        db.close()


class BusyViews(ResourceClient):
    """A VMS client (what `client_factory` returns) on a busy cluster: after each page 1 of
    `views` is served the oldest view is deleted (a pipeline removing a finished job's view), so
    `count` moves under every listing and the pages shift back by one. The managed view exists
    the whole time. `filters_by_path`: `GET /views/?path=` answers the views on that path (as
    VMS and the simulator do); otherwise it is ignored."""

    def __init__(self, *, filters_by_path: bool) -> None:
        super().__init__()
        paths = ["/jobs/0", "/jobs/1", "/jobs/2", "/jobs/3", MANAGED, "/jobs/5", "/jobs/6", "/jobs/7"]
        self.views = [{"id": i, "name": p.strip("/").replace("/", "-"), "path": p} for i, p in enumerate(paths)]
        self.filters_by_path = filters_by_path
        self.view_requests: list[dict[str, Any]] = []

    def get(self, **params: Any) -> Any:
        if self._resource == "views":
            self.view_requests.append(params)
            page, size = params["page"], params["page_size"]
            views = [v for v in self.views if not self.filters_by_path or params.get("path") in (None, v["path"])]
            body = {"count": len(views), "next": "more" if page * size < len(views) else None,
                    "results": views[(page - 1) * size: page * size]}
            if page == 1:
                self.views.pop(0)
            return body
        if self._resource == "quotas":
            return {"count": 1, "next": None, "results": [{"id": 9, "name": "jobs-managed", "path": MANAGED}]}
        if self._resource == "viewpolicies":
            return {"count": 1, "next": None, "results": [{"id": 1, "name": "default"}]}
        raise AssertionError(self._resource)


class TestViewsOnABusyCluster:
    """Review r9 defect 1: a listing whose `count` still moved after two restarts is taken (for
    the poll, whose presence grace covers a quota a page shift hid), and the writer's listing
    of every view was taken alike: `ensure_view` concluded from what it lacked, and POSTed again
    the managed view the shift had hidden (a duplicate, or a refusal at every cycle). The
    writer's lookups decide writes: they look the view up by its path (one page) and take no
    listing that moved (`truncated`: `view.ensure_failed`, tried again next cycle)."""

    @staticmethod
    async def ensure_view(client: BusyViews, tmp_path: Path, executor: ThreadPoolExecutor) -> tuple[str, VmsTransport]:
        return await ensure_managed_view(client, tmp_path, executor,
                                         vast={"backoff_base_seconds": 1, "max_retries": 2, "page_size": 2})

    async def test_a_view_hidden_by_a_page_shift_is_not_created_again(
            self, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
        """A VMS that ignores the path filter answers the busy cluster's whole listing: it never
        holds still, and is not taken — no POST."""
        client = BusyViews(filters_by_path=False)
        with pytest.raises(VmsUnavailable) as info:
            await self.ensure_view(client, tmp_path, executor)
        assert info.value.reason == "truncated"
        assert client.posted == []
        assert [r["page"] for r in client.view_requests] == [1, 2] * 3  # two restarts, then given up

    async def test_a_managed_view_is_looked_up_by_its_path(
            self, tmp_path: Path, executor: ThreadPoolExecutor) -> None:
        """Filtered by path, the lookup is one page that the busy cluster's churn does not move."""
        client = BusyViews(filters_by_path=True)
        done, transport = await self.ensure_view(client, tmp_path, executor)
        assert (done, client.posted, transport.listings_unsettled) == ("exists", [], 0)
        assert client.view_requests == [{"page": 1, "page_size": 2, "path": MANAGED}]


class TestMetricsAndAudit:
    async def test_metrics_from_counters(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        (outcome,) = (await h.cycle()).actions
        registry = CollectorRegistry()
        registry.register(h.stage.collector())
        assert registry.get_sample_value("quotapilot_growth_decisions_total", {"result": "verified"}) == 1.0
        assert outcome.new_hard is not None
        assert registry.get_sample_value("quotapilot_growth_bytes_total") == outcome.new_hard - 100 * TIB
        assert registry.get_sample_value("quotapilot_mode", {"mode": "enforce"}) == 1.0
        assert registry.get_sample_value("quotapilot_mode", {"mode": "observe"}) == 0.0

    def test_query_actions_filters_and_pages(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "a.db")
        store = ActionStore(db)
        from quotapilot.forecasting.types import Decision, DecisionKind
        for i in range(5):
            decision = Decision(target=RAW, dimension=Dimension.BYTES, kind=DecisionKind.GROW, reason="r",
                                t=NOW + i, current_hard=i * TIB, new_hard=(i + 1) * TIB)
            store.record(decision, mode="enforce", status="verified", now=NOW + i, quota_id=1)
        page = query_actions(db, target=RAW.name, limit=2)
        assert [r["id"] for r in page] == [5, 4]
        assert page[0]["growth"] == TIB
        assert [r["id"] for r in query_actions(db, before_id=4, limit=2)] == [3, 2]
        assert query_actions(db, since=NOW + 4) == query_actions(db, limit=1)
        assert query_actions(db, cluster="other") == []


class TestRetention:
    async def test_old_finished_rows_and_expired_pauses_are_pruned(self, tmp_path: Path) -> None:
        from quotapilot.forecasting.types import Decision, DecisionKind
        h = Harness(tmp_path, make_settings("observe"))
        h.vms.quotas[1]["used_effective_capacity"] = 10 * TIB  # nothing to do this cycle
        grown = Decision(target=RAW, dimension=Dimension.BYTES, kind=DecisionKind.GROW, reason="r", t=0.0,
                         current_hard=TIB, new_hard=2 * TIB)
        store = ActionStore(h.db)
        store.record(grown, mode="enforce", status="verified", now=NOW - 500 * 86400, quota_id=1)
        recent = store.record(grown, mode="enforce", status="verified", now=NOW - 86400, quota_id=1)
        OverrideStore(h.db).pause("x", now=NOW - 10, until=NOW + 1)
        h.clock.advance(2)
        await h.cycle()
        assert [r["id"] for r in query_actions(h.db)] == [recent]
        assert OverrideStore(h.db).active(h.clock.now()) == []


class TestMovedQuotaSeries:
    """A quota re-created under its name at another path leaves no series of the old path behind
    (the 90-day soak found `quotapilot_target_paused` of a moved-then-deleted quota forever)."""

    def test_a_name_at_a_new_path_replaces_the_old_paths_pause_series(self, tmp_path: Path) -> None:
        h = Harness(tmp_path, make_settings("enforce"))
        stage = GrowthStage(make_settings("enforce"), h.db, lambda c: h.vms, h.clock)
        old = TargetId("c1", "churn-c", "/churn/c")
        moved = TargetId("c1", "churn-c", "/churn/d")
        other = TargetId("c1", "raw", "/raw")
        stage._replace_paused({old: False, other: True})
        stage._replace_paused({moved: False})
        assert stage.counters.paused == {moved: False, other: True}
