"""Every object the simulator returns validates against the (trimmed) VMS component schemas."""

from __future__ import annotations

from pathlib import Path

import vastpy
from sim_helpers import call, client_for, schema_errors

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import SimulatorServer

TB = 10**12


class TestSchemas:
    async def test_cluster(self, client: vastpy.VASTClient) -> None:
        for cluster in await call(client.clusters.get):
            assert schema_errors(cluster, "Cluster") == []

    async def test_quotas_in_every_state(self, clock: VirtualClock, client: vastpy.VASTClient) -> None:
        clock.advance(3 * 86400)  # without growth cosmos7's quotas fill up
        quotas = await call(client.quotas.get)
        assert any(q["state"] == "HARD_EXCEEDED" for q in quotas)
        for quota in quotas:
            assert schema_errors(quota, "Quota") == []

    async def test_created_and_benchmark_quotas(self, clock: VirtualClock, tmp_path: Path) -> None:
        async with SimulatorServer("cosmos7", clock=clock, extra_quotas=5, state_dir=tmp_path) as sim:
            client = client_for(sim)
            created = await call(client.quotas.post, name="new", path="/new", hard_limit=TB, soft_limit=TB // 2,
                                 grace_period="90m")
            page = await call(client.quotas.get, page_size=100)
        assert page["count"] == 9
        for quota in [created, *page["results"]]:
            assert schema_errors(quota, "Quota") == []

    async def test_views_and_policies(self, client: vastpy.VASTClient) -> None:
        policy = (await call(client.viewpolicies.get))[0]
        created = await call(client.views.post, path="/made", policy_id=policy["id"])
        for view in [created, *await call(client.views.get)]:
            assert schema_errors(view, "View") == []
        for policy in await call(client.viewpolicies.get):
            assert schema_errors(policy, "ViewPolicy") == []

    async def test_monitor_data(self, clock: VirtualClock, client: vastpy.VASTClient) -> None:
        clock.advance(600)
        answer = await call(client.monitors.ad_hoc_query.get, object_type="cluster", time_frame="10m")
        assert len(answer["data"]) == 10
        assert schema_errors(answer, "MonitorData") == []
