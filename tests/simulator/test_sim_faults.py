"""Fault injection: each mode as vastpy sees it, triggers (rate, window, count), the admin endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
import vastpy
from sim_helpers import call, client_for

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import FaultRule, Faults, SimulatorServer
from quotapilot.daemon.simulator.faults import FaultError


def with_socket_timeout(fn: Callable[[], Any], seconds: float = 0.2) -> Callable[[], Any]:
    """vastpy sets no timeout of its own: urllib3 falls back to the socket default."""
    def run() -> Any:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(seconds)
        try:
            return fn()
        finally:
            socket.setdefaulttimeout(old)
    return run


def admin(sim: SimulatorServer, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """A request to the admin endpoint (outside /api, same token, verified TLS)."""
    request = urllib.request.Request(
        f"https://{sim.address}/_sim/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Api-Token {sim.token}", "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(sim.ca_file))
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class TestFaultModes:
    """What each kind looks like from vastpy."""

    async def test_latency_slows_but_answers(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("latency", seconds=0.05)
        started = time.monotonic()
        clusters = await call(client.clusters.get)
        assert len(clusters) == 1
        assert time.monotonic() - started >= 0.05

    @pytest.mark.parametrize("status", [500, 503])
    async def test_error_is_rest_failure(self, sim: SimulatorServer, client: vastpy.VASTClient,
                                         status: int) -> None:
        sim.faults.add("error", status=status)
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.get)
        assert err.value.status == status

    async def test_rate_limit_on_patch_is_429_with_retry_after(self, sim: SimulatorServer,
                                                               client: vastpy.VASTClient) -> None:
        sim.faults.add("rate_limit", retry_after=7, method="PATCH")
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas[1].patch, hard_limit=10**14)
        assert err.value.status == 429
        assert b"7 seconds" in err.value.data

    async def test_rate_limit_on_get_is_retried_by_urllib3_first(self, sim: SimulatorServer,
                                                                 client: vastpy.VASTClient) -> None:
        rule = sim.faults.add("rate_limit", retry_after=0)
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.get)
        assert (err.value.status, rule.fired) == (429, 4)

    async def test_timeout_on_patch_is_read_timeout(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("timeout", method="PATCH")
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            await call(with_socket_timeout(lambda: client.quotas[1].patch(hard_limit=10**14)))

    async def test_one_timeout_on_get_is_hidden_by_urllib3_retry(self, sim: SimulatorServer,
                                                                 client: vastpy.VASTClient) -> None:
        rule = sim.faults.add("timeout", count=1)
        clusters = await call(with_socket_timeout(client.clusters.get))
        assert (len(clusters), rule.fired) == (1, 1)

    async def test_drop_on_get_is_max_retry_error(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        rule = sim.faults.add("drop")
        with pytest.raises(urllib3.exceptions.MaxRetryError) as err:
            await call(client.clusters.get)
        assert isinstance(err.value.reason, urllib3.exceptions.ProtocolError)
        assert rule.fired == 4  # the first try and urllib3's three retries

    async def test_drop_on_patch_is_protocol_error(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("drop", method="PATCH")
        with pytest.raises(urllib3.exceptions.ProtocolError):
            await call(client.quotas[1].patch, hard_limit=10**14)

    async def test_malformed_json(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("malformed")
        with pytest.raises(json.JSONDecodeError):
            await call(client.quotas.get)

    async def test_truncated_page_keeps_count(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("truncated_page")
        page = await call(client.quotas.get, page_size=3)
        assert (page["count"], len(page["results"])) == (3, 1)

    async def test_token_expired_rule(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("token_expired", count=1)
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.get)
        assert err.value.status == 401
        assert b"expired" in err.value.data
        assert len(await call(client.quotas.get)) == 3

    async def test_expire_token_rotates_it(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        new_token = sim.expire_token()
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.quotas.get)
        assert (err.value.status, b"expired" in err.value.data) == (401, True)
        assert len(await call(client_for(sim, token=new_token).quotas.get)) == 3

    async def test_stop_releases_a_hanging_request(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("timeout", seconds=60, method="PATCH")
        pending = call(with_socket_timeout(lambda: client.quotas[1].patch(hard_limit=10**14), 5.0))
        task = asyncio.ensure_future(pending)
        for _ in range(500):  # until the request is being held
            if sim.faults.rules[0].fired:
                break
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await sim.stop()
        with pytest.raises(urllib3.exceptions.HTTPError):
            await task
        assert time.monotonic() - started < 2.0


class TestTriggers:
    async def test_window_of_simulated_time(self, sim: SimulatorServer, clock: VirtualClock,
                                            client: vastpy.VASTClient) -> None:
        sim.faults.add("error", start=clock.now() + 3600, end=clock.now() + 7200)
        assert len(await call(client.clusters.get)) == 1
        clock.advance(3600)
        with pytest.raises(vastpy.RESTFailure):
            await call(client.clusters.get)
        clock.advance(3600)
        assert len(await call(client.clusters.get)) == 1

    async def test_count_and_path_filter(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        rule = sim.faults.add("error", count=2, path="quotas")
        assert len(await call(client.clusters.get)) == 1
        for _ in range(2):
            with pytest.raises(vastpy.RESTFailure):
                await call(client.quotas.get)
        assert len(await call(client.quotas.get)) == 3
        assert rule.fired == 2

    async def test_rate_is_seeded(self, clock: VirtualClock, tmp_path: Any) -> None:
        outcomes = []
        for run in range(2):
            async with SimulatorServer("cosmos7", clock=clock, seed=5, state_dir=tmp_path / str(run)) as sim:
                sim.faults.add("error", rate=0.5, method="PATCH")  # PATCH: no urllib3 retries
                client = client_for(sim)
                seen = []
                for _ in range(20):
                    try:
                        await call(client.quotas[1].patch, soft_limit=10**12)
                        seen.append(True)
                    except vastpy.RESTFailure:
                        seen.append(False)
                outcomes.append(seen)
        assert outcomes[0] == outcomes[1]
        assert 3 <= outcomes[0].count(False) <= 17

    def test_bad_rules_name_the_field(self) -> None:
        faults = Faults()
        for kwargs, field in (({"kind": "gremlins"}, "kind"), ({"kind": "error", "rate": 2}, "rate"),
                              ({"kind": "error", "status": 404}, "status"), ({"kind": "latency", "seconds": -1},
                                                                             "seconds")):
            with pytest.raises(FaultError) as err:
                faults.add(**kwargs)
            assert err.value.field == field


class TestAdminEndpoint:
    async def test_add_list_remove_rules_over_http(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        status, rule = await call(admin, sim, "POST", "faults", {"kind": "error", "status": 502, "count": 1})
        assert status == 201
        assert [r["id"] for r in (await call(admin, sim, "GET", "faults"))[1]] == [rule["id"]]
        with pytest.raises(vastpy.RESTFailure) as err:
            await call(client.clusters.get)
        assert err.value.status == 502
        assert (await call(admin, sim, "DELETE", f"faults/{rule['id']}"))[0] == 204
        assert (await call(admin, sim, "GET", "faults"))[1] == []

    async def test_bad_rule_is_400_naming_the_field(self, sim: SimulatorServer) -> None:
        status, body = await call(admin, sim, "POST", "faults", {"kind": "error", "rate": "often"})
        assert (status, list(body)) == (400, ["rate"])

    async def test_summary_and_token_expiry(self, sim: SimulatorServer, clock: VirtualClock) -> None:
        clock.advance(3600)
        status, summary = await call(admin, sim, "GET", "summary")
        assert (status, summary["simulated_days"]) == (200, pytest.approx(1 / 24))
        old = sim.token
        status, body = await call(admin, sim, "POST", "token/expire")
        assert status == 200 and body["token"] == sim.token != old

    async def test_needs_credentials(self, sim: SimulatorServer) -> None:
        request = urllib.request.Request(f"https://{sim.address}/_sim/summary")
        context = ssl.create_default_context(cafile=str(sim.ca_file))
        with pytest.raises(urllib.error.HTTPError) as err:
            await call(urllib.request.urlopen, request, context=context, timeout=5)
        assert err.value.code == 401


def test_rule_as_dict_round_trips() -> None:
    rule = FaultRule(id=1, kind="error", rate=0.5)
    assert rule.as_dict()["kind"] == "error"
