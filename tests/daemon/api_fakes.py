"""A daemon faked at our own boundary for the API tests: real settings, a real SQLite store, a
virtual clock, and a snapshot built from plain data (what the poll cycle would have published)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.http.api import add_api_routes
from quotapilot.daemon.http.capacity import add_capacity_routes
from quotapilot.daemon.runtime.leadership import SoleLeadership
from quotapilot.daemon.runtime.snapshot import ClusterState, PollHealth, Snapshot, TargetState, frozen_map
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.simulator.faults import Faults
from quotapilot.daemon.store.db import Database
from quotapilot.forecasting.types import (
    ClusterCapacity,
    Dimension,
    Forecast,
    Observation,
    Runway,
    SeriesForecast,
    TargetId,
    TargetKind,
)

TIB = 2**40
TB = 10**12
TOKEN = "s3cret-token"
CLUSTER = "sim"
T0 = 1_767_225_600.0


def target_id(name: str) -> TargetId:
    return TargetId(CLUSTER, name, "/" + name.replace("-", "/"), TargetKind.QUOTA)


def linear_forecast(t0: float, used: float, rate_per_second: float, hours: int = 48,
                    band: float = 0.2) -> Forecast:
    times = tuple(t0 + 3600.0 * (i + 1) for i in range(hours))
    p50 = tuple(used + rate_per_second * (t - t0) for t in times)
    p10 = tuple(used + (1 - band) * rate_per_second * (t - t0) for t in times)
    p90 = tuple(used + (1 + band) * rate_per_second * (t - t0) for t in times)
    return Forecast(t0=t0, step_seconds=3600.0, times=times, p10=p10, p50=p50, p90=p90, model="test-linear")


@dataclass
class Quota:
    name: str
    used: int
    hard: int
    rate: float = 0.0  # bytes per second (p50); 0: no forecast
    forecast: bool = True  # False: a cold start (only the observed ingest rate is known)
    hard_inodes: int | None = 10**7  # None: no inode limit (nothing bounds inode reservations)
    used_inodes: int | None = 1000  # None: VMS reported no inode count
    path: str | None = None  # None: from the name (`target_id`); set, the path stays when the name changes

    def state(self, t: float) -> TargetState:
        tid = target_id(self.name) if self.path is None else TargetId(CLUSTER, self.name, self.path, TargetKind.QUOTA)
        obs = Observation(target=tid, t=t, used_bytes=self.used, hard_limit_bytes=self.hard,
                          soft_limit_bytes=int(self.hard * 0.9), used_inodes=self.used_inodes,
                          hard_limit_inodes=self.hard_inodes, quota_id=hash(self.name) % 1000)
        forecasts: dict[Dimension, SeriesForecast] = {}
        if self.rate and self.forecast:
            fc = linear_forecast(t, self.used, self.rate)
            full_at = t + (self.hard - self.used) / (self.rate * 1.2)
            forecasts[Dimension.BYTES] = SeriesForecast(
                target=tid, dimension=Dimension.BYTES, t=t, limit=float(self.hard), forecast=fc,
                runways=(Runway(1.0, None, t + (self.hard - self.used) / self.rate, full_at, t + 14 * 86400),),
                rate_per_second=self.rate)
        return TargetState(target=tid, observation=obs, ingest_rate_bytes_per_second=self.rate or None,
                           forecasts=frozen_map(forecasts))


@dataclass
class FakeDaemon:
    """What `add_api_routes` needs: settings, clock, db, snapshot."""

    settings: Settings
    db: Database
    clock: VirtualClock = field(default_factory=lambda: VirtualClock(T0))
    quotas: list[Quota] = field(default_factory=list)
    usable_bytes: int = 1000 * TIB
    free_bytes: int = 500 * TIB
    quotas_allocated_bytes: int | None = None  # what the quotas promise (VMS's `quotas_allocated_capacity`)
    cycles_requested: list[str] = field(default_factory=list)
    leadership: SoleLeadership | None = field(default_factory=lambda: SoleLeadership([CLUSTER], holder="ops1"))

    @property
    def snapshot(self) -> Snapshot:
        t = self.clock.now()
        capacity = ClusterCapacity(CLUSTER, t, self.usable_bytes, self.usable_bytes - self.free_bytes,
                                   self.free_bytes, quotas_allocated_bytes=self.quotas_allocated_bytes)
        cluster = ClusterState(CLUSTER, health=PollHealth(last_success_t=t), capacity=capacity,
                               targets=frozen_map({q.name: q.state(t) for q in self.quotas}))
        return Snapshot(t=t, clusters=frozen_map({CLUSTER: cluster}))

    def request_cycle(self, cluster: str) -> None:
        self.cycles_requested.append(cluster)


def make_settings(tmp_path: Path, **http: Any) -> Settings:
    policy = http.pop("policy", {})
    return load_settings(None, http={"write_token": TOKEN, **http}, store={"path": str(tmp_path / "state.db")},
                         policy=policy)


def default_quotas() -> list[Quota]:
    return [
        Quota("cosmos7-raw", used=60 * TIB, hard=100 * TIB, rate=50 * TB / 86400),
        Quota("cosmos7-processed", used=10 * TIB, hard=100 * TIB, rate=1 * TB / 86400),
        Quota("cosmos7-temp", used=1 * TIB, hard=10 * TIB),
    ]


@asynccontextmanager
async def api_client(daemon: FakeDaemon) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_api_routes(app, daemon)
    async with TestClient(TestServer(app)) as client:
        yield client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fault_middleware(faults: Faults, clock: VirtualClock) -> Any:
    """The simulator's fault rules (`Faults`), applied in front of the API: 429 with
    `Retry-After` and 5xx answers, so the client's backoff meets the same faults vastpy does."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        _, rule = faults.pick(request.method, request.path, clock.now())
        if rule is not None and rule.kind == "rate_limit":
            return web.json_response({"detail": "Request was throttled."}, status=429,
                                     headers={"Retry-After": str(rule.retry_after)})
        if rule is not None and rule.kind == "error":
            return web.json_response({"detail": "injected"}, status=rule.status)
        response: web.StreamResponse = await handler(request)
        return response

    return middleware


@contextmanager
def serve_in_thread(daemon: FakeDaemon, faults: Faults | None = None) -> Iterator[str]:
    """Serve the API from its own event loop in a thread (for blocking clients); yields the URL."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        app = web.Application(middlewares=[fault_middleware(faults, daemon.clock)] if faults else [])
        add_api_routes(app, daemon)
        add_capacity_routes(app, lambda: None)  # documented too: its 404 is the API's error shape
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(state["runner"].cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="api-test-server", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


class FakeTime:
    """Monotonic time and sleep for clients under test: sleeping only moves the clock."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)
