"""README "Client": `answer = qp.preflight(...); if not answer.fits: qp.wait_for_room(..., deadline_seconds=3600)`
(and the Airflow example calls `wait_for_room` before it reserves). Preflight answers `action: grow`
"now" — but a preflight is not demand: nothing made the daemon grow, so `wait_for_room` polled
until its deadline and raised `DeadlineExceeded` (pipeline-developer review, 2026-12-05). It now
returns on such an answer (`grows_on_reservation`), and the reservation that follows is grown for."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from core_helpers import InstantClock

from quotapilot.daemon.pipeline_client import AsyncClient, DeadlineExceeded, RetryPolicy
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator.server import SimulatorServer

TOKEN = "pipeline-token"


async def test_wait_for_room_after_a_grow_answer_gets_room(sim: SimulatorServer, make_settings: Any,
                                                           clock: InstantClock) -> None:
    async with Daemon(make_settings(http={"write_token": TOKEN}, policy={"mode": "enforce"}), clock) as daemon, \
            TestClient(TestServer(daemon.http.build_app())) as http:
        await daemon.poll_once("sim")

        async def sleep(seconds: float) -> None:  # time passes as the daemon polls every minute
            while seconds > 0:
                step = min(60.0, seconds)
                clock.advance(step)
                seconds -= step
                await daemon.poll_once("sim")

        url = str(http.make_url("")).rstrip("/")
        async with AsyncClient(url, TOKEN, sleep=sleep, clock=clock.monotonic, wall=clock.now,
                               retry=RetryPolicy(attempts=1)) as qp:
            answer = await qp.preflight("/cosmos7/processed", "40TB", needed_for="6h")
            assert not answer.fits and answer.action["kind"] == "grow", answer.raw
            assert answer.earliest_fit_at is not None and answer.earliest_fit_at <= clock.now()
            try:
                fits = await qp.wait_for_room("/cosmos7/processed", "40TB", needed_for="6h",
                                              deadline_seconds=1200, poll_seconds=120)
            except DeadlineExceeded as exc:
                last = exc.last.raw if exc.last is not None else None  # type: ignore[attr-defined]
                raise AssertionError(
                    f"preflight promised growth now (earliest_fit_at = now), yet after 20 min of polls the "
                    f"daemon has not grown: {last and last['bytes']['limit']} limit, action "
                    f"{last and last['action']['kind']}") from exc
            assert fits.grows_on_reservation, fits.raw   # a preflight is a question: reserve, and it grows
            held = await qp.reserve("/cosmos7/processed", "40TB", ttl="6h")
            await sleep(120)   # the poll after the reservation grows it, the one after reads it back
            after = await qp.preflight("/cosmos7/processed", "40TB", needed_for="6h")
            await qp.release(held.id)
    assert held.status == "granted" and after.raw["bytes"]["limit"] > answer.raw["bytes"]["limit"], after.raw
