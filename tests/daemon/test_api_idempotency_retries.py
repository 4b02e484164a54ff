"""What README promises about a retried reservation POST, and what a pipeline following the README's
Airflow example (`retries=6`, `idempotency_key=run_id`) gets on its retry (pipeline-developer
review, 2026-12-05: the stored answer was replayed after its reservation ended, and a refusal
forever)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from core_helpers import InstantClock

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator.server import SimulatorServer

TOKEN = "pipeline-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def served(daemon: Daemon) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(daemon.http.build_app())) as client:
        yield client


RESERVE = {"target": "/cosmos7/temp", "bytes": "1TB", "ttl": "6h", "idempotency_key": "run-2026-01-01"}


class TestRetriedReservationAfterRelease:
    async def test_retry_after_release_does_not_claim_a_granted_reservation(
            self, sim: SimulatorServer, make_settings: Any, clock: InstantClock) -> None:
        """Attempt 1 of an Airflow task reserves, fails, and `with qp.reservation(...)` releases on
        exit. Attempt 2 (same run_id as key) is answered 201 `"status": "granted"` with the id of
        the *released* reservation: the pipeline runs believing 1 TB is set aside while nothing is
        (the target's reserved_bytes is 0, the id's status is `released`)."""
        async with Daemon(make_settings(http={"write_token": TOKEN}), clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            first = await client.post("/api/v1/reservations", headers=AUTH, json=RESERVE)
            held = await first.json()
            assert first.status == 201, held
            released = await client.delete(f"/api/v1/reservations/{held['id']}", headers=AUTH)
            assert released.status == 200
            clock.advance(600)  # Airflow's retry_delay
            retry = await client.post("/api/v1/reservations", headers=AUTH, json=RESERVE)
            answer = await retry.json()
            actual = await (await client.get(f"/api/v1/reservations/{answer.get('id')}")).json()
            target = await (await client.get("/api/v1/targets/cosmos7-temp")).json()
        claims_granted = retry.status == 201 and answer.get("status") == "granted"
        assert not claims_granted or (actual["status"] == "granted" and target["reserved_bytes"] > 0), (
            f"retried POST answered {retry.status} status={answer.get('status')!r} id={answer.get('id')}, "
            f"but that reservation is {actual['status']!r} and the target has {target['reserved_bytes']} "
            "bytes reserved")

    async def test_retry_after_expiry_does_not_claim_a_granted_reservation(
            self, sim: SimulatorServer, make_settings: Any, clock: InstantClock) -> None:
        """Same with a TTL that passed: the replayed 201 names an `expires_at` in the past."""
        async with Daemon(make_settings(http={"write_token": TOKEN}), clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            body = {**RESERVE, "ttl": "1h", "idempotency_key": "nightly-42"}
            first = await client.post("/api/v1/reservations", headers=AUTH, json=body)
            assert first.status == 201
            clock.advance(2 * 3600)
            await daemon.poll_once("sim")
            retry = await client.post("/api/v1/reservations", headers=AUTH, json=body)
            answer = await retry.json()
            now = clock.now()
        claims_granted = retry.status == 201 and answer.get("status") == "granted"
        assert not claims_granted or answer["expires_at"] > now, (
            f"retried POST answered 201 granted, expires_at {answer['expires_at'] - now:+.0f}s from now")


class TestRetriedReservationAfterRefusal:
    async def test_refused_run_retried_after_the_guard_lifts_is_granted(
            self, sim: SimulatorServer, make_settings: Any, clock: InstantClock) -> None:
        """README Airflow example: `except Refused: raise AirflowException(...)  # retried later by
        Airflow` with `idempotency_key=run_id`. The refusal names when it lifts (`earliest_at`,
        the end of a pause); after that time, the retry (same run_id) still gets the stored 409
        refusal, forever: the retries the example relies on can never succeed."""
        settings = make_settings(http={"write_token": TOKEN}, policy={"mode": "enforce"})
        async with Daemon(settings, clock) as daemon, served(daemon) as client:
            await daemon.poll_once("sim")
            paused = await client.post("/api/v1/targets/cosmos7-processed/pause", headers=AUTH,
                                       json={"until": "1h", "reason": "migration"})
            assert paused.status == 200
            body = {"target": "/cosmos7/processed", "bytes": "40TB", "ttl": "6h", "idempotency_key": "run-7"}
            first = await client.post("/api/v1/reservations", headers=AUTH, json=body)
            refused = await first.json()
            assert first.status == 409 and refused["guard"] == "paused", refused
            clock.advance(refused["earliest_at"] - clock.now() + 60)  # the pause is over
            await daemon.poll_once("sim")
            fresh = await client.post("/api/v1/preflight", json={k: body[k] for k in ("target", "bytes")})
            assert (await fresh.json())["action"]["guard"] != "paused"
            retry = await client.post("/api/v1/reservations", headers=AUTH, json=body)
            answer = await retry.json()
        assert retry.status == 201, (
            f"after the pause ended the retried run still gets {retry.status} guard={answer.get('guard')!r}: "
            f"{answer.get('reason')}")
