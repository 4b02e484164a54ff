"""Which pauses made by a bare name are moved to another tenant's qualified target name
(`stages.bare_names.plan_pauses`), and which policy overrides are named as matching nothing
(`unmatched_overrides`). End to end, against the simulator: test_vms_tenants.py."""

from __future__ import annotations

from quotapilot.daemon.runtime.cycle import DroppedSample, PollResult
from quotapilot.daemon.settings import PolicyOverride
from quotapilot.daemon.stages.bare_names import PauseMove, PauseNotMoved, plan_pauses, unmatched_overrides
from quotapilot.daemon.store.overrides import ANY, Override
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
        assert ([PauseMove(pause("projects"), "acme:projects", already_paused=False)], []) == (moves, not_moved)

    def test_a_pause_under_the_new_name_already_is_kept(self) -> None:
        moves, _ = plan_pauses([pause("projects"), pause("acme:projects")], ACME_ONLY, "c1", sole_cluster=True)
        assert [PauseMove(pause("projects"), "acme:projects", already_paused=True)] == moves

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
        assert [PauseMove(every, "acme:projects", already_paused=False)] == alone
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
