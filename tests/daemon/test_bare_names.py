"""Which pauses made by a bare name are moved to another tenant's qualified target name
(`stages.bare_names.plan_pauses`), and which policy overrides are named as matching nothing
(`unmatched_overrides`). End to end, against the simulator: test_vms_tenants.py."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quotapilot.daemon.runtime.cycle import DroppedSample, PollResult
from quotapilot.daemon.settings import PolicyOverride
from quotapilot.daemon.stages import bare_names
from quotapilot.daemon.stages.bare_names import (
    BareNameUpgrade,
    PauseMove,
    PauseNotMoved,
    plan_pauses,
    unmatched_overrides,
)
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import ANY, Override, OverrideStore
from quotapilot.forecasting.types import Observation, TargetId

T0 = 1_767_225_600.0


def pause(target: str, cluster: str = "c1") -> Override:
    return Override(cluster, target, None, "held", T0)


KILL_SWITCH = Override(ANY, ANY, None, "", T0)
ACME_ONLY = {"projects": ("acme:projects",)}


class TestPlanPauses:
    """A pause by a bare name moves only when the name means one other tenant's quota."""

    def test_a_name_one_other_tenants_quota_has_moves(self) -> None:
        moves, not_moved = plan_pauses([pause("projects")], ACME_ONLY, "c1", sole_cluster=False)
        assert ([PauseMove(pause("projects"), "acme:projects")], []) == (moves, not_moved)

    def test_a_pause_under_the_new_name_already_still_moves(self) -> None:
        """Which of the two is kept is the store's to say (`OverrideStore.rename`: the longer)."""
        moves, _ = plan_pauses([pause("projects"), pause("acme:projects")], ACME_ONLY, "c1", sole_cluster=True)
        assert [PauseMove(pause("projects"), "acme:projects")] == moves

    def test_names_paths_and_other_clusters_pauses_are_left_alone(self) -> None:
        pauses = [KILL_SWITCH, pause("raw"), pause("/acme/projects"), pause("acme:projects"),
                  pause("projects", cluster="c2")]
        assert plan_pauses(pauses, ACME_ONLY, "c1", sole_cluster=False) == ([], [])

    def test_a_name_a_home_quota_has_stays(self) -> None:
        names = {"projects": ("projects", "acme:projects")}
        assert ([], [PauseNotMoved(pause("projects"), ("projects", "acme:projects"), "projects",
                                   "a home quota has the name (before 0198d09 the other tenants' quota of "
                                   "that name was not watched)")]) == plan_pauses(
            [pause("projects")], names, "c1", sole_cluster=True)

    def test_a_name_several_tenants_have_stays(self) -> None:
        names = {"projects": ("acme:projects", "beta:projects")}
        moves, not_moved = plan_pauses([pause("projects")], names, "c1", sole_cluster=True)
        expected = ([], [(("acme:projects", "beta:projects"), None)])
        assert expected == (moves, [(n.candidates, n.applies_to) for n in not_moved])

    def test_a_pause_of_every_cluster_moves_when_there_is_one_cluster(self) -> None:
        every = pause("projects", cluster=ANY)
        alone, _ = plan_pauses([every], ACME_ONLY, "c1", sole_cluster=True)
        moves, not_moved = plan_pauses([every], ACME_ONLY, "c1", sole_cluster=False)
        assert [PauseMove(every, "acme:projects")] == alone
        expected = ([], [("projects", ("acme:projects",), None)])
        assert expected == (moves, [(n.pause.target, n.candidates, n.applies_to) for n in not_moved])


def observed(name: str, path: str) -> Observation:
    return Observation(TargetId("c1", name, path), T0, 1, 10)


class TestUnmatchedOverrides:
    """A policy override is named when it matches no quota, only the bare name of another tenant's."""

    def test_only_an_override_matching_nothing_but_a_bare_name_is_named(self) -> None:
        poll = PollResult("c1", T0, observations=(observed("raw", "/default/raw"),
                                                  observed("acme:projects", "/acme/projects"),
                                                  observed("acme:proj2", "/acme/proj2")),
                          bare_names={"projects": ("acme:projects",), "proj2": ("acme:proj2",)})
        overrides = [PolicyOverride(match=m) for m in ("projects", "proj*", "raw", "acme:*", "/acme/*", "nothing")]
        expected = [("projects", ("acme:projects",)), ("proj*", ("acme:proj2", "acme:projects"))]
        assert expected == [(o.match, candidates) for o, candidates in unmatched_overrides(overrides, poll)]

    def test_an_override_of_a_home_quota_dropped_this_poll_is_not_named(self) -> None:
        poll = PollResult("c1", T0, observations=(observed("acme:projects", "/acme/projects"),),
                          dropped=(DroppedSample("c1", "projects", "went_backwards"),),
                          bare_names={"projects": ("projects", "acme:projects")})
        assert unmatched_overrides([PolicyOverride(match="projects")], poll) == []


class TestBareNameUpgrade:
    """At each poll: pauses moved (in one store transaction each), policy overrides named."""

    async def test_the_move_logs_the_pause_kept(self, tmp_path: Path) -> None:
        """The new name's own pause had expired (not pruned yet): no pause, so not `already_paused`,
        and the quota is held by the one moved."""
        db = Database(tmp_path / "state.db")
        store = OverrideStore(db)
        store.pause("acme:projects", now=T0, cluster="c1", until=T0 + 60, reason="expired")
        store.pause("projects", now=T0, cluster="c1", reason="tenant migration")
        poll = PollResult("c1", T0 + 120, observations=(observed("acme:projects", "/acme/projects"),),
                          bare_names=ACME_ONLY)
        with capture_logs() as logs:
            await BareNameUpgrade(store, [], sole_cluster=True).on_poll(poll, T0 + 120)
        moved = [(e["target"], e["already_paused"], e["paused_until"], e["reason"])
                 for e in logs if e["event"] == "override.migrated"]
        expected = ([("acme:projects", False, None, "tenant migration")], [("acme:projects", None)])
        assert expected == (moved, [(o.target, o.paused_until) for o in store.active(T0 + 120)])
        db.close()

    async def test_policy_overrides_are_matched_again_only_when_the_bare_names_change(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Matching every override against every quota costs 0.2 s of the event loop at 10,000
        quotas: done when the cluster's bare names change, not at every poll."""
        calls: list[float] = []

        def counted(overrides: Iterable[PolicyOverride],
                    poll: PollResult) -> list[tuple[PolicyOverride, tuple[str, ...]]]:
            calls.append(poll.t)
            return unmatched_overrides(overrides, poll)

        monkeypatch.setattr(bare_names, "unmatched_overrides", counted)
        db = Database(tmp_path / "state.db")
        upgrade = BareNameUpgrade(OverrideStore(db), [PolicyOverride(match="proj*")], sole_cluster=True)
        acme = (observed("acme:projects", "/acme/projects"),)
        both = (*acme, observed("beta:proj2", "/beta/proj2"))
        with capture_logs() as logs:
            for t, observations, names in ((T0, acme, ACME_ONLY), (T0 + 60, acme, dict(ACME_ONLY)),
                                           (T0 + 120, both, {**ACME_ONLY, "proj2": ("beta:proj2",)})):
                await upgrade.on_poll(PollResult("c1", t, observations=observations, bare_names=names), t)
        unmatched = [e["candidates"] for e in logs if e["event"] == "policy.override_unmatched"]
        expected_calls = ([T0, T0 + 120], [["acme:projects"], ["acme:projects", "beta:proj2"]])
        assert expected_calls == (calls, unmatched)
        db.close()
