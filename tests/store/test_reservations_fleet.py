"""README (fleet): "the HTTP API (reservations, pauses) can be called on either [instance]: both read
and write the shared store." Two pipeline jobs, each talking to a different instance, reserve the
last room of one quota at the same moment."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator import SimulatorServer

TOKEN = "pipeline-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def instance(sim: SimulatorServer, tmp_path: Path, url: str, name: str) -> Settings:
    return Settings(
        clusters=({"name": "sim", "address": sim.address, "token": sim.token,  # type: ignore[arg-type]
                   "ca_file": str(sim.ca_file)},),
        store={"url": url, "instance_name": name, "path": tmp_path / f"{name}.db"},  # type: ignore[arg-type]
        http={"listen": "127.0.0.1:0", "write_token": TOKEN})  # type: ignore[arg-type]


async def test_two_instances_do_not_both_grant_the_last_room(tmp_path: Path, pg_url: str) -> None:
    clock = VirtualClock()
    async with SimulatorServer("cosmos7", clock=clock, port=0, state_dir=tmp_path / "sim") as sim, \
            Daemon(instance(sim, tmp_path, pg_url, "a"), clock) as a, \
            Daemon(instance(sim, tmp_path, pg_url, "b"), clock) as b, \
            TestClient(TestServer(a.http.build_app())) as ca, TestClient(TestServer(b.http.build_app())) as cb:
        await a.poll_once("sim")
        await b.poll_once("sim")
        pre = await (await ca.post("/api/v1/preflight", json={"target": "cosmos7-temp", "bytes": 1})).json()
        room = pre["bytes"]["room_now"]
        answers: list[tuple[int, Any]] = []
        for attempt in range(5):  # each job asks for 60 % of the room: only one can have it
            body = {"target": "cosmos7-temp", "bytes": room * 6 // 10, "ttl": 60, "idempotency_key": f"job-{attempt}"}
            one, two = await asyncio.gather(
                ca.post("/api/v1/reservations", headers=AUTH, json={**body, "idempotency_key": f"a-{attempt}"}),
                cb.post("/api/v1/reservations", headers=AUTH, json={**body, "idempotency_key": f"b-{attempt}"}))
            answers = [(one.status, await one.json()), (two.status, await two.json())]
            if all(status == 201 for status, _ in answers):
                break
            clock.advance(120)  # both expire; try again
        listed = await (await ca.get("/api/v1/reservations?target=cosmos7-temp")).json()
    total = sum(r["bytes"] for r in listed["reservations"])
    assert [s for s, _ in answers].count(201) <= 1 and total <= room, (
        f"both instances granted {room * 6 // 10} bytes of {room} bytes of room: {total} bytes reserved "
        f"({[s for s, _ in answers]})")
