"""Vanished targets, found from good polls (issue 13 defect 6)."""

from __future__ import annotations

from quotapilot.daemon.runtime.cycle import DroppedSample, PollResult
from quotapilot.daemon.stages.presence import TargetPresence
from quotapilot.forecasting.types import Observation, TargetId

HOT = TargetId("c1", "hot", "/hot")
COLD = TargetId("c1", "cold", "/cold")


def poll(*targets: TargetId, error: str | None = None, dropped: tuple[str, ...] = ()) -> PollResult:
    return PollResult(cluster="c1", t=0.0, observations=tuple(Observation(t, 0.0, 1, 10) for t in targets),
                      dropped=tuple(DroppedSample("c1", name, "went_backwards") for name in dropped), error=error)


class TestTargetPresence:
    def test_removed_once_after_the_grace_period(self) -> None:
        presence = TargetPresence(grace_seconds=3600)
        assert presence.removed(poll(HOT, COLD), 0.0) == []
        assert presence.removed(poll(COLD), 3599.0) == []
        assert presence.removed(poll(COLD), 3600.0) == [("hot", "/hot")]
        assert presence.removed(poll(COLD), 7200.0) == []  # reported once

    def test_failed_polls_and_dropped_samples_prove_nothing(self) -> None:
        presence = TargetPresence(grace_seconds=60)
        presence.removed(poll(HOT), 0.0)
        assert presence.removed(poll(error="unreachable"), 600.0) == []
        assert presence.removed(poll(dropped=("hot",)), 700.0) == []
        assert presence.removed(poll(HOT), 800.0) == []

    def test_a_known_target_never_listed_gets_its_grace_from_now(self) -> None:
        presence = TargetPresence(grace_seconds=60)
        assert presence.removed(poll(COLD), 1000.0, known=[("gone", "")]) == []
        assert presence.removed(poll(COLD), 1060.0, known=[("gone", "")]) == [("gone", "")]
