"""Review r14: two quotas swapping names, their renames confirmed at different polls."""

from __future__ import annotations

from pathlib import Path

from quotapilot.daemon.runtime.cycle import PollResult
from quotapilot.daemon.stages.renames import RenamedPauses
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

T0 = 1_767_225_600.0


def _obs(name: str, quota_id: int, path: str) -> Observation:
    return Observation(TargetId("c1", name, path, TargetKind.QUOTA), T0, 1, 10, None, None, None, quota_id=quota_id)


async def test_a_pause_of_each_quota_is_kept_when_a_swap_of_names_is_confirmed_one_poll_apart(
        tmp_path: Path) -> None:
    """id 1 "a" (paused, indefinitely) and id 2 "b" (paused for an hour through the API) swap
    names; id 2's new sample is confirmed one poll after id 1's (its usage did not agree yet, or
    its hard limit moved: `PollResult.unconfirmed`). Each pause must end on its own quota."""
    store = OverrideStore(Database(tmp_path / "state.db"))
    renames = RenamedPauses(store, lambda cluster, before: [], sole_cluster=True)
    await renames.on_poll(PollResult("c1", T0, (_obs("a", 1, "/p1"), _obs("b", 2, "/p2"))), T0, stored_before=T0)
    store.pause("a", now=T0, cluster="c1", reason="id 1's")
    store.pause("b", now=T0, cluster="c1", until=T0 + 3600, reason="id 2's")
    swapped = (_obs("b", 1, "/p1"), _obs("a", 2, "/p2"))
    await renames.on_poll(PollResult("c1", T0, swapped, unconfirmed=frozenset({"a"})), T0, stored_before=T0)
    await renames.on_poll(PollResult("c1", T0, swapped), T0, stored_before=T0)
    assert {o.target: o.reason for o in store.active(T0)} == {"b": "id 1's", "a": "id 2's"}
