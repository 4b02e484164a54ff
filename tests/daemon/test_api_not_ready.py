"""Two answers a pipeline got that sent it the wrong way (pipeline-developer review, 2026-12-05).

Right after the daemon (re)started, before its first poll of VMS finished (a slow or unreachable
VMS makes that window long), every existing quota was answered 404 `unknown_target`, which the
client raises at once as `NotFound` (it retries only connection failures, 429 and 5xx): the quota
is not unknown, the daemon is not ready — 503 `not_ready` with Retry-After, which the client
retries. And `/api/v1/targets/by-path` without `?path=` was a 404 for a quota *named* by-path."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from core_helpers import InstantClock

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator.server import SimulatorServer

TOKEN = "pipeline-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_by_path_without_path_is_a_400_naming_path(sim: SimulatorServer, make_settings: Any,
                                                         clock: InstantClock) -> None:
    """README: `/api/v1/targets/by-path?path=/cosmos7/raw`; errors are "400 for bad JSON or values
    (`field` names the culprit), 404 for an unknown target". Forgetting `?path=` (or misspelling it,
    `?Path=`) is answered 404 "no target 'by-path'" — the daemon looked for a quota *named* by-path."""
    async with Daemon(make_settings(http={"write_token": TOKEN}), clock) as daemon, \
            TestClient(TestServer(daemon.http.build_app())) as http:
        await daemon.poll_once("sim")
        resp = await http.get("/api/v1/targets/by-path", params={"Path": "/cosmos7/raw"})
        body = await resp.json()
    assert resp.status == 400 and body["error"].get("field") == "path", (resp.status, body)


async def test_preflight_before_the_first_poll_is_not_an_unknown_target(
        sim: SimulatorServer, make_settings: Any, clock: InstantClock) -> None:
    async with Daemon(make_settings(http={"write_token": TOKEN}), clock) as daemon, \
            TestClient(TestServer(daemon.http.build_app())) as http:
        # the daemon is up and serving; its first poll has not completed yet
        preflight = await http.post("/api/v1/preflight", json={"target": "/cosmos7/raw", "bytes": "1TB"})
        reserve = await http.post("/api/v1/reservations", headers=AUTH, json={
            "target": "/cosmos7/raw", "bytes": "1TB", "ttl": "1h", "idempotency_key": "early"})
        p_body, r_body = await preflight.json(), await reserve.json()
        await daemon.poll_once("sim")
        later = await http.post("/api/v1/preflight", json={"target": "/cosmos7/raw", "bytes": "1TB"})
        assert later.status == 200  # the quota exists
    assert preflight.status != 404 and reserve.status != 404, (
        f"before the first poll an existing quota is {preflight.status} {p_body} (reservation: "
        f"{reserve.status} {r_body.get('error')}); the client raises NotFound instead of retrying")
    assert preflight.status == 503 and "Retry-After" in preflight.headers


async def test_a_cluster_that_never_polls_does_not_turn_every_typo_into_a_503_for_ever(
        sim: SimulatorServer, make_settings: Any, clock: InstantClock) -> None:
    good = {"name": "sim", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}
    broken = {**good, "name": "old", "token": "revoked-token"}   # VMS answers 401 at every poll
    async with Daemon(make_settings(clusters=[good, broken]), clock) as daemon, \
            TestClient(TestServer(daemon.http.build_app())) as http:
        await daemon.poll_once("sim")
        for _ in range(30):   # half an hour of failed polls of "old", refused (not a transient error)
            await daemon.poll_once("old")
            clock.advance(60)
        assert daemon.snapshot.clusters["old"].health.consecutive_failures == 30   # (review of the first fix)
        known = await http.get("/api/v1/targets/cosmos7-raw")
        typo = await http.get("/api/v1/targets/cosmos7-rw")
        body = await typo.json()
    assert known.status == 200
    assert typo.status == 404, (
        f"an unknown target is {typo.status} {body.get('error')} after 30 refused polls of another "
        "cluster: the client retries it to its deadline instead of raising NotFound, and it stays so "
        "for as long as that cluster is configured")
