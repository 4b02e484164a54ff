"""The faults and ground truth the trust tests and the soak need: a write applied with its answer
lost, a write applied late, rewritten and emptied answers, and the log of every write."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
import urllib3
import vastpy
from sim_helpers import call

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.simulator import SimulatorServer

TB = 10**12


def raw_hard(sim: SimulatorServer) -> int:
    sim.sync()  # the engine catches up with the clock (scheduled writes land) as on a request
    return int(sim.engine.summary()["quotas"]["/cosmos7/raw"]["hard_limit"])


class TestUnknownOutcomes:
    async def test_applied_answer_lost_applies_then_drops(self, sim: SimulatorServer,
                                                         client: vastpy.VASTClient) -> None:
        rule = sim.faults.add("applied_answer_lost", method="PATCH", count=1)
        with pytest.raises(urllib3.exceptions.ProtocolError):
            await call(client.quotas[1].patch, hard_limit=30 * TB)
        assert rule.fired == 1
        assert raw_hard(sim) == 30 * TB  # applied, though the client saw an error
        (write,) = sim.engine.writes.by("api:")
        assert (write.kind, write.changes, write.before["hard_limit"]) == ("patch", {"hard_limit": 30 * TB}, 20 * TB)

    async def test_delayed_apply_lands_later_on_the_simulated_clock(
            self, sim: SimulatorServer, client: vastpy.VASTClient, clock: VirtualClock) -> None:
        sim.faults.add("delayed_apply", method="PATCH", count=1, apply_after=600)
        with pytest.raises(urllib3.exceptions.ProtocolError):
            await call(client.quotas[1].patch, hard_limit=30 * TB)
        assert raw_hard(sim) == 20 * TB
        assert sim.engine.writes.by("api:") == []
        clock.advance(599)
        assert raw_hard(sim) == 20 * TB
        clock.advance(61)
        assert raw_hard(sim) == 30 * TB
        (write,) = sim.engine.writes.by("api:")
        assert write.delayed and write.t == sim.engine.origin + 600

    async def test_a_late_write_overrides_a_newer_one(self, sim: SimulatorServer, client: vastpy.VASTClient,
                                                      clock: VirtualClock) -> None:
        sim.faults.add("delayed_apply", method="PATCH", count=1, apply_after=300)
        with pytest.raises(urllib3.exceptions.ProtocolError):
            await call(client.quotas[1].patch, hard_limit=30 * TB)
        await call(client.quotas[1].patch, hard_limit=35 * TB)
        clock.advance(400)
        assert raw_hard(sim) == 30 * TB  # the old PATCH landed last: a shrink nobody asked for now
        assert [w.changes["hard_limit"] for w in sim.engine.writes.by("api:")] == [35 * TB, 30 * TB]


class TestChangedAnswers:
    async def test_rewrite_changes_only_the_matching_object(self, sim: SimulatorServer,
                                                            client: vastpy.VASTClient) -> None:
        sim.faults.add("rewrite", method="GET", path="quotas", match="cosmos7-raw",
                       values={"used_capacity": 19 * TB}, count=2)
        listed = {q["name"]: q for q in await call(client.quotas.get)}
        single = await call(client.quotas[1].get)
        again = await call(client.quotas[1].get)
        assert listed["cosmos7-raw"]["used_capacity"] == 19 * TB == single["used_capacity"]
        assert listed["cosmos7-processed"]["used_capacity"] < 10 * TB
        assert again["used_capacity"] < 19 * TB  # the budget of two is spent

    async def test_empty_list(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        sim.faults.add("empty", path="clusters", count=1)
        assert await call(client.clusters.get) == []
        sim.faults.add("empty", path="quotas", count=1)
        page = await call(client.quotas.get, page_size=2)
        assert (page["count"], page["results"], page["next"]) == (0, [], None)


class TestWriteLog:
    async def test_sources_and_refusals(self, sim: SimulatorServer, client: vastpy.VASTClient) -> None:
        await call(client.quotas[1].patch, hard_limit=25 * TB)
        with pytest.raises(vastpy.RESTFailure):
            await call(client.quotas[1].patch, hard_limit=1 * TB)  # below usage: VMS refuses
        summary = sim.engine.summary()["writes"]
        assert summary == {"applied": 1, "refused": 1, "by_source": {"api:admin": 1}, "delayed": 0,
                           "hard_below_usage_asked": 1}
        refused = sim.engine.writes.by("api:", applied=False)[0]
        assert refused.refusal is not None and refused.refusal.startswith("hard_limit")


class TestAdminRoutes:
    async def test_write_log_over_http_and_unknown_admin_method(self, sim: SimulatorServer,
                                                                client: vastpy.VASTClient) -> None:
        await call(client.quotas[1].patch, hard_limit=25 * TB)
        context = ssl.create_default_context(cafile=str(sim.ca_file))
        headers = {"Authorization": f"Api-Token {sim.token}"}

        def fetch(method: str, path: str) -> tuple[int, bytes]:
            request = urllib.request.Request(f"https://{sim.address}{path}", method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as err:
                return err.code, err.read()

        status, body = await call(fetch, "GET", "/_sim/writes")
        assert status == 200
        (write,) = json.loads(body)
        assert (write["source"], write["changes"]) == ("api:admin", {"hard_limit": 25 * TB})
        assert (await call(fetch, "PUT", "/_sim/summary"))[0] == 404
