"""Review r14: resuming a quota through the API, with two clusters watched."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from api_fakes import TIB, FakeDaemon, Quota, api_client, auth, make_settings

from quotapilot.daemon.runtime.snapshot import Snapshot, frozen_map
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import OverrideStore

OTHER = "sim2"


@dataclass
class TwoClusters(FakeDaemon):
    """The fake's cluster "sim", and a second cluster "sim2" laid out the same (same quota names)."""

    @property
    def snapshot(self) -> Snapshot:
        one = super().snapshot
        (first,) = one.clusters.values()
        targets = {}
        for name, state in first.targets.items():
            target = replace(state.target, cluster=OTHER)
            targets[name] = replace(state, target=target, observation=replace(state.observation, target=target),
                                    forecasts=frozen_map({}))
        capacity = None if first.capacity is None else replace(first.capacity, cluster=OTHER)
        second = replace(first, name=OTHER, capacity=capacity, targets=frozen_map(targets))
        return replace(one, clusters=frozen_map({**one.clusters, OTHER: second}))


async def test_a_pause_on_another_cluster_is_kept_when_a_quota_of_the_same_name_is_resumed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    daemon = TwoClusters(settings=settings, db=Database(settings.store.path),
                         quotas=[Quota("cosmos7-raw", used=60 * TIB, hard=100 * TIB)])
    async with api_client(daemon) as client:
        for cluster in ("sim", OTHER):
            resp = await client.post(f"/api/v1/targets/cosmos7-raw/pause?cluster={cluster}", headers=auth(),
                                     json={"reason": f"{cluster}'s"})
            assert resp.status == 200, await resp.text()
        assert (await client.post("/api/v1/targets/cosmos7-raw/resume?cluster=sim", headers=auth())).status == 200
        other = await (await client.get(f"/api/v1/targets/cosmos7-raw?cluster={OTHER}")).json()
    assert [(o.cluster, o.target) for o in OverrideStore(daemon.db).active(daemon.clock.now())] == [
        (OTHER, "cosmos7-raw")]
    assert other["paused"] is True
