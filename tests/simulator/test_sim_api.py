"""The VMS REST surface, seen through the real vastpy client over verified HTTPS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import urllib3
import vastpy
from sim_helpers import call, client_for, schema_errors, write_scenario

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import SimulatorServer

TB = 10**12


class TestListing:
    """GET lists, paging, filters."""

    async def test_clusters_and_quotas_of_cosmos7(self, client: vastpy.VASTClient) -> None:
        clusters = await call(client.clusters.get)
        quotas = await call(client.quotas.get)
        assert [c["name"] for c in clusters] == ["cosmos7-vast"]
        assert {"/cosmos7/raw", "/cosmos7/processed", "/cosmos7/temp"} == {q["path"] for q in quotas}
        assert {"cosmos7-raw", "cosmos7-processed", "cosmos7-temp"} == {q["name"] for q in quotas}
        assert all("/" not in q["name"] for q in quotas)
        cluster = clusters[0]
        assert cluster["quotas_allocated_capacity"] == sum(q["hard_limit"] for q in quotas)
        assert cluster["free_usable_capacity"] == cluster["usable_capacity_bytes"] - cluster["physical_space_in_use"]

    async def test_paging_envelope_like_drf(self, client: vastpy.VASTClient) -> None:
        first = await call(client.quotas.get, page_size=2)
        second = await call(client.quotas.get, page_size=2, page=2)
        assert 3 == first["count"] == second["count"]
        assert first["previous"] is None and "page=2" in first["next"] and "page_size=2" in first["next"]
        assert second["next"] is None and "page=1" in second["previous"]
        assert len({q["id"] for q in first["results"] + second["results"]}) == 3

    async def test_page_past_the_end_is_404(self, client: vastpy.VASTClient) -> None:
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.get, page_size=2, page=5)
        assert err.value.status == 404

    async def test_bad_page_size_is_400_naming_it(self, client: vastpy.VASTClient) -> None:
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.get, page_size="many")
        assert err.value.status == 400
        assert b"page_size" in err.value.data

    async def test_filters(self, client: vastpy.VASTClient) -> None:
        by_path = await call(client.quotas.get, path="/cosmos7/temp")
        by_name = await call(client.quotas.get, name="cosmos7-raw")
        nothing = await call(client.quotas.get, path="/nowhere")
        assert [q["path"] for q in by_path] == ["/cosmos7/temp"]
        assert [q["path"] for q in by_name] == ["/cosmos7/raw"]
        assert nothing == []

    async def test_views_and_view_policies(self, client: vastpy.VASTClient) -> None:
        views = await call(client.views.get)
        policies = await call(client.viewpolicies.get, name="cosmos7-default")
        assert {"/cosmos7/raw", "/cosmos7/processed", "/cosmos7/temp"} == {v["path"] for v in views}
        assert len(policies) == 1
        assert {policies[0]["id"]} == {v["policy_id"] for v in views}
        one = await call(client.views[views[0]["id"]].get)
        assert views[0]["path"] == one["path"]

    async def test_extra_quotas_page_completely(self, clock: VirtualClock, tmp_path: Path) -> None:
        async with SimulatorServer("cosmos7", clock=clock, extra_quotas=2500, state_dir=tmp_path) as sim:
            client = client_for(sim)
            pages = [await call(client.quotas.get, page_size=1000, page=p) for p in (1, 2, 3)]
            one = await call(client.quotas.get, path="/bench/q00042")
        ids = [q["id"] for page in pages for q in page["results"]]
        assert 2503 == pages[0]["count"] == len(ids) == len(set(ids))
        assert [q["name"] for q in one] == ["bench-q00042"]


class TestWrites:
    """PATCH, POST, DELETE as VMS validates them."""

    async def test_patch_hard_limit_reads_back(self, client: vastpy.VASTClient) -> None:
        raw = (await call(client.quotas.get, name="cosmos7-raw"))[0]
        await call(client.quotas[raw["id"]].patch, hard_limit=raw["hard_limit"] + 2**40)
        again = await call(client.quotas[raw["id"]].get)
        assert raw["hard_limit"] + 2**40 == again["hard_limit"]

    async def test_shrinking_below_usage_is_400_naming_hard_limit(self, client: vastpy.VASTClient) -> None:
        raw = (await call(client.quotas.get, name="cosmos7-raw"))[0]
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas[raw["id"]].patch, hard_limit=raw["used_capacity"] // 2)
        assert err.value.status == 400
        assert b"hard_limit" in err.value.data

    async def test_soft_above_hard_is_400_naming_soft_limit(self, client: vastpy.VASTClient) -> None:
        raw = (await call(client.quotas.get, name="cosmos7-raw"))[0]
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas[raw["id"]].patch, soft_limit=raw["hard_limit"] + 1)
        assert err.value.status == 400
        assert b"soft_limit" in err.value.data

    async def test_non_integer_limit_is_400(self, client: vastpy.VASTClient) -> None:
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas[1].patch, hard_limit="lots")
        assert err.value.status == 400
        assert b"hard_limit" in err.value.data

    async def test_create_view_then_quota_then_delete(self, client: vastpy.VASTClient) -> None:
        policy = (await call(client.viewpolicies.get, name="cosmos7-default"))[0]
        view = await call(client.views.post, path="/cosmos7/archive", name="cosmos7-archive",
                          policy_id=policy["id"], protocols=["NFS"], create_dir=True)
        quota = await call(client.quotas.post, name="cosmos7-archive", path="/cosmos7/archive",
                           hard_limit=10 * TB, soft_limit=9 * TB)
        listed = await call(client.quotas.get, path="/cosmos7/archive")
        await call(client.quotas[quota["id"]].delete)
        after = await call(client.quotas.get, path="/cosmos7/archive")
        assert view["path"] == "/cosmos7/archive"
        assert [quota["id"]] == [q["id"] for q in listed]
        assert (quota["used_capacity"], quota["state"]) == (0, "OK")
        assert after == []

    @pytest.mark.parametrize(("body", "field"), [
        ({"path": "/x"}, b"name"),
        ({"name": "x"}, b"path"),
        ({"name": "a/b", "path": "/x"}, b"name"),
        ({"name": "dup", "path": "/cosmos7/raw"}, b"path"),
        ({"name": "x", "path": "/x", "hard_limit": -1}, b"hard_limit"),
    ])
    async def test_create_quota_errors_name_the_field(self, client: vastpy.VASTClient, body: dict[str, object],
                                                      field: bytes) -> None:
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.post, **body)
        assert err.value.status == 400
        assert field in err.value.data

    async def test_create_view_errors_name_the_field(self, client: vastpy.VASTClient) -> None:
        with pytest.raises(vastpy.RESTFailure) as missing:
            await call(client.views.post, path="/x")
        with pytest.raises(vastpy.RESTFailure) as duplicate:
            await call(client.views.post, path="/cosmos7/raw", policy_id=1)
        assert (missing.value.status, duplicate.value.status) == (400, 400)
        assert b"policy_id" in missing.value.data and b"path" in duplicate.value.data


TWO_TENANTS = """
[[views]]
path = "/default/scratch"
quota_name = "scratch"
quota = { hard_limit = "10TB" }

[[views]]
path = "/acme/scratch"
quota_name = "scratch"
tenant = "acme"
quota = { hard_limit = "20TB" }
"""


class TestTenants:
    """Quotas of several tenants: an admin listing holds them all, `X-Tenant-Name` one tenant's."""

    @pytest.fixture
    async def shared(self, clock: VirtualClock, tmp_path: Path) -> AsyncIterator[SimulatorServer]:
        async with SimulatorServer(write_scenario(tmp_path, TWO_TENANTS), clock=clock,
                                   state_dir=tmp_path / "sim") as server:
            yield server

    async def test_an_admin_listing_holds_every_tenants_quotas(self, shared: SimulatorServer) -> None:
        quotas = await call(client_for(shared).quotas.get)
        assert [(q["name"], q["path"], q["tenant_id"], q["tenant_name"]) for q in quotas] == [
            ("scratch", "/default/scratch", 1, "default"), ("scratch", "/acme/scratch", 2, "acme")]
        assert [schema_errors(q, "Quota") for q in quotas] == [[], []]

    async def test_a_tenant_header_lists_that_tenants_quotas_only(self, shared: SimulatorServer) -> None:
        acme = await call(client_for(shared, tenant="acme").quotas.get)
        default = await call(client_for(shared, tenant="default").quotas.get, page_size=10)
        nobody = await call(client_for(shared, tenant="nobody").quotas.get)
        assert [q["path"] for q in acme] == ["/acme/scratch"]
        assert (default["count"], [q["path"] for q in default["results"]]) == (1, ["/default/scratch"])
        assert nobody == []

    async def test_a_quota_is_created_in_the_header_tenant_its_name_unique_there(
            self, shared: SimulatorServer) -> None:
        acme = client_for(shared, tenant="acme")
        created = await call(acme.quotas.post, name="archive", path="/acme/archive", hard_limit=TB)
        again = await call(client_for(shared).quotas.post, name="archive", path="/default/archive", hard_limit=TB)
        with pytest.raises(vastpy.RESTFailure) as taken:
            await call(acme.quotas.post, name="scratch", path="/acme/other", hard_limit=TB)
        assert (created["tenant_name"], again["tenant_name"]) == ("acme", "default")
        assert taken.value.status == 400 and b"name" in taken.value.data


class TestProtocol:
    """Auth, versions, unknown paths, TLS, restarts."""

    async def test_wrong_token_is_401_json(self, sim: SimulatorServer) -> None:
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client_for(sim, token="wrong").quotas.get)
        assert err.value.status == 401
        assert b"detail" in err.value.data

    async def test_basic_auth_and_tenant_header(self, sim: SimulatorServer) -> None:
        good = client_for(sim, user=sim.user, password=sim.password, tenant="default")
        bad = client_for(sim, user=sim.user, password="nope")
        assert len(await call(good.quotas.get)) == 3
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(bad.quotas.get)
        assert err.value.status == 401

    async def test_unversioned_and_numbered_api_paths(self, sim: SimulatorServer) -> None:
        plain = client_for(sim, version=None)
        numbered = client_for(sim, version="v5")
        assert len(await call(plain.clusters.get)) == 1
        assert len(await call(numbered.clusters.get)) == 1

    async def test_unknown_paths_are_404_json(self, client: vastpy.VASTClient) -> None:
        for target in (client.nonsense, client.quotas[999999], client.views[4242], client.quotas["abc"]):
            with pytest.raises(vastpy.RESTFailure) as err:
                await call(target.get)
            assert err.value.status == 404
            assert b'"detail"' in err.value.data

    async def test_foreign_ca_is_refused(self, sim: SimulatorServer) -> None:
        other = client_for(sim, cert_file="/etc/ssl/certs/ca-certificates.crt")
        with pytest.raises(urllib3.exceptions.HTTPError):
            await call(other.clusters.get)

    async def test_stop_and_start_on_the_same_port(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        address = sim.address
        await sim.stop()
        with pytest.raises(urllib3.exceptions.HTTPError):
            await call(client.clusters.get)
        await sim.start()
        assert address == sim.address
        assert len(await call(client.clusters.get)) == 1


class TestMonitor:
    """`/monitors/ad_hoc_query/`: cluster write bandwidth."""

    async def test_write_bandwidth_matches_what_was_written(self, sim: SimulatorServer, clock: VirtualClock,
                                                            client: vastpy.VASTClient) -> None:
        before = sim.engine.logical_used_bytes()
        clock.advance(3600)
        answer = await call(client.monitors.ad_hoc_query.get, object_type="cluster", time_frame="1h",
                            prop_list=["ProtoMetrics,proto_name=ProtoCommon,wr_bw"])
        written = sim.engine.logical_used_bytes() - before
        assert answer["prop_list"] == ["timestamp", "object_id", "ProtoMetrics,proto_name=ProtoCommon,wr_bw"]
        assert len(answer["data"]) == 60
        assert written == pytest.approx(sum(row[2] * 60 for row in answer["data"]), rel=1e-6)
        assert schema_errors(answer, "MonitorData") == []

    async def test_hourly_granularity_and_from_to(self, clock: VirtualClock, client: vastpy.VASTClient) -> None:
        clock.advance(6 * 3600)
        hourly = await call(client.monitors.ad_hoc_query.get, object_type="cluster", time_frame="6h",
                            granularity="hours")
        window = await call(client.monitors.ad_hoc_query.get, object_type="cluster",
                            from_time="2026-01-01T01:00:00Z", to_time="2026-01-01T02:00:00Z")
        assert len(hourly["data"]) == 6
        assert len(hourly["data"][0]) == 4  # timestamp, id, wr_bw, wr_iops
        assert window["data"][0][0] == "2026-01-01T01:00:00Z"

    @pytest.mark.parametrize(("params", "field"), [
        ({}, b"object_type"),
        ({"object_type": "cluster", "time_frame": "soon"}, b"time_frame"),
        ({"object_type": "cluster", "granularity": "weeks"}, b"granularity"),
        ({"object_type": "cluster", "prop_list": ["Nope,rd_bw"]}, b"prop_list"),
        ({"object_type": "cluster", "from_time": "yesterday"}, b"from_time"),
    ])
    async def test_bad_query_is_400_naming_the_field(self, client: vastpy.VASTClient,
                                                     params: dict[str, object], field: bytes) -> None:
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.monitors.ad_hoc_query.get, **params)
        assert err.value.status == 400
        assert field in err.value.data
