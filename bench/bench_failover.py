"""Failover of a fleet: three quotapilot instances on one PostgreSQL store against the simulator,
a random instance killed every few simulated hours (half of the time the leader, at its next
growth: mid-growth), restarted one to four hours later.

Everything is real except time: the simulator over HTTPS (vastpy), the daemons' full cycles,
PostgreSQL (a throwaway server started here, or `--url`), a webhook receiver that records every
alert it gets. One virtual clock drives it all; each poll interval every live instance renews its
leases, then polls. A kill closes an instance without handing its leases over (like kill -9);
a mid-growth kill stops it at its write-ahead `intent` or after its `patched` mark.

Prints one JSON object:
- `writes_by_non_leader`: PATCHes sent by an instance that did not hold the cluster's lease
  at the time (must be 0);
- `duplicate_growths`: growths of one quota from the same old limit recorded twice, or limit
  changes in the simulator beyond the audited growths (0);
- `lost_growths`: intents never settled, and limit changes in the simulator no audit row
  explains (0);
- `alerts_duplicated` / `alerts_lost`: notifications the receiver got more than once / queued
  but never received (0);
- `write_failures`: refused writes in the simulator's ground truth (0);
- `failover_intervals_p50` / `_p99`: poll intervals from killing the leader to a new leader.

    .venv/bin/python bench/bench_failover.py [--quick] [--days 30] [--seed 0] [--url postgresql://…]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.commands.demo import DEMO_POLICY
from quotapilot.daemon.logs import configure_logging
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.leadership import LeaseLeadership
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.simulator import SimulatorServer
from quotapilot.daemon.stages.alerting import AlertingStage
from quotapilot.daemon.stages.growth import GrowthStage
from quotapilot.daemon.store.backend import Row
from quotapilot.daemon.store.postgres import PostgresDatabase
from quotapilot.forecasting.types import ActionStatus

DAY = 86400.0
POLL_SECONDS = 900.0
PATCHED = (ActionStatus.VERIFIED, ActionStatus.VERIFY_FAILED)
ARMED_HOURS = 6.0
"""A leader armed to die at its next growth that has not grown within this long is killed outright."""
WRAPPER = Path(__file__).parents[1] / "tests" / "store" / "pg_ctl_as_postgres.sh"


class Killed(BaseException):
    """Raised inside an instance to stop it dead (not an Exception: no stage handler catches it)."""


@dataclass
class Instance:
    name: str
    daemon: Daemon
    task: asyncio.Task[None]

    @property
    def leadership(self) -> LeaseLeadership:
        assert isinstance(self.daemon.leadership, LeaseLeadership)
        return self.daemon.leadership


@dataclass
class Tally:
    writes_by_non_leader: int = 0
    kills: int = 0
    mid_growth_kills: int = 0
    failovers: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------- PostgreSQL server
@asynccontextmanager
async def throwaway_postgres(workdir: Path) -> AsyncIterator[str]:
    """A PostgreSQL server of our own (pytest-postgresql's executor, as the tests use it)."""
    from pytest_postgresql.executors import PostgreSQLExecutor
    from pytest_postgresql.janitor import DatabaseJanitor

    pg_ctl = _find_pg_ctl()
    if pg_ctl is None:
        raise SystemExit("bench_failover: PostgreSQL server binaries (pg_ctl) not found; pass --url")
    os.environ.setdefault("QP_PG_CTL", str(pg_ctl))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    executor = PostgreSQLExecutor(
        executable=str(WRAPPER) if os.geteuid() == 0 else str(pg_ctl), host="127.0.0.1", port=port,
        datadir=str(workdir / "pgdata"), unixsocketdir=tempfile.gettempdir(), logfile=str(workdir / "pg.log"),
        startparams="-w", dbname="quotapilot", user="postgres", options="",
        postgres_options="")
    executor.start()
    try:
        with DatabaseJanitor(user="postgres", host="127.0.0.1", port=port, dbname="quotapilot"):
            yield f"postgresql://postgres@127.0.0.1:{port}/quotapilot"
    finally:
        executor.stop()


def _find_pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return str(versions[-1]) if versions else None


# ---------------------------------------------------------------------------- the receiver
@asynccontextmanager
async def receiver(clock: VirtualClock) -> AsyncIterator[tuple[str, Counter[str], dict[str, list[str]]]]:
    """The webhook: counts each dedup key, and remembers who sent it when (to trace a duplicate)."""
    received: Counter[str] = Counter()
    senders: dict[str, list[str]] = {}

    async def hook(request: web.Request) -> web.Response:
        key = (await request.json())["dedup_key"]
        received[key] += 1
        senders.setdefault(key, []).append(f"{request.headers.get('X-Instance')}@{clock.now():.0f}")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received, senders
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------- the fleet
def settings_data(sim: SimulatorServer, url: str, hook: str, name: str, workdir: Path) -> dict[str, Any]:
    return {
        "clusters": [{"name": sim.scenario.cluster.name, "address": sim.address, "token": sim.token,
                      "ca_file": str(sim.ca_file)}],
        "poll": {"interval_seconds": POLL_SECONDS, "jitter_ratio": 0.0},
        "policy": dict(DEMO_POLICY),
        "http": {"listen": "127.0.0.1:0"},
        "store": {"url": url, "instance_name": name, "path": str(workdir / f"{name}.db"),
                  "lease_seconds": 2 * POLL_SECONDS, "lease_renew_seconds": POLL_SECONDS},
        "vast": {"max_retries": 2, "backoff_base_seconds": 0.05, "backoff_max_seconds": 0.2},
        "forecast": {"workers": 0},
        "alerts": {"webhooks": [{"name": "hook", "url": hook, "headers": {"X-Instance": name}}]},
    }


async def start(name: str, sim: SimulatorServer, url: str, hook: str, clock: VirtualClock,
                workdir: Path) -> Instance:
    daemon = Daemon(load_settings(None, **settings_data(sim, url, hook, name, workdir)), clock)
    await daemon.__aenter__()
    alerting = next(s for s in daemon.stages if isinstance(s, AlertingStage))
    alerting.store.tables.wall_clock = clock.now  # claims on the bench's clock, like everything else
    task = asyncio.create_task(alerting.dispatcher.run(), name=f"bench:{name}:alerts")
    return Instance(name, daemon, task)


async def kill(instance: Instance) -> None:
    """Stop an instance dead: no lease hand-over, its delivery task cancelled mid-flight."""
    instance.task.cancel()
    await asyncio.gather(instance.task, return_exceptions=True)
    instance.leadership._fences.clear()  # the process is gone: it holds nothing (its rows stay)
    try:
        await instance.daemon.__aexit__(None, None, None)
    except Exception as exc:  # a half-dead daemon's close is best effort
        print(f"close of {instance.name}: {exc}", file=sys.stderr)


def holder_of(url: str, cluster: str, now: float) -> str | None:
    db = PostgresDatabase(url, migrate=False)
    try:
        rows = db.query("SELECT holder FROM leases WHERE cluster = ? AND expires_at > ?", (cluster, now))
    finally:
        db.close()
    return str(rows[0][0]) if rows else None


async def run(days: float, seed: int, url: str | None) -> dict[str, Any]:
    rng = random.Random(seed)
    clock = VirtualClock()
    workdir = Path(tempfile.mkdtemp(prefix="quotapilot-failover-"))
    tally = Tally()
    started = time.monotonic()
    try:
        async with receiver(clock) as (hook, received, senders), \
                (throwaway_postgres(workdir) if url is None else _given(url)) as db_url, \
                SimulatorServer("cosmos7", clock=clock, seed=seed, port=0, state_dir=workdir / "sim") as sim:
            cluster = sim.scenario.cluster.name
            names = ["a", "b", "c"]
            alive: dict[str, Instance] = {n: await start(n, sim, db_url, hook, clock, workdir) for n in names}
            dead_until: dict[str, float] = {}
            end = clock.now() + days * DAY
            next_kill = clock.now() + rng.uniform(2, 6) * 3600
            leader_killed_at: float | None = None
            armed: str | None = None  # an instance that dies at its next growth (mid-growth kill)
            armed_at = 0.0
            while clock.now() < end:
                now = clock.now()
                for name in [n for n, t in dead_until.items() if t <= now]:  # restarts
                    del dead_until[name]
                    alive[name] = await start(name, sim, db_url, hook, clock, workdir)
                victim = None
                if armed is not None and (armed not in alive or now - armed_at >= ARMED_HOURS * 3600):
                    # no growth came within ARMED_HOURS: the armed leader is killed outright
                    victim, armed = (armed if armed in alive else None), None
                elif now >= next_kill and armed is None and len(alive) > 1:
                    current = await asyncio.to_thread(holder_of, db_url, cluster, now)
                    leader = next((n for n, i in sorted(alive.items()) if i.leadership.holder == current), None)
                    if leader is not None and rng.random() < 0.5:
                        armed, armed_at = leader, now  # dies at its next write-ahead step or right after its PATCH
                        _arm(alive[leader], rng)
                    else:
                        victim = rng.choice(sorted(alive))
                for name in sorted(alive):
                    instance = alive[name]
                    await instance.leadership.step()
                    holder = await asyncio.to_thread(holder_of, db_url, cluster, clock.now())
                    died = False
                    try:
                        ctx = await instance.daemon.poll_once(cluster)
                    except Killed:
                        tally.mid_growth_kills += 1
                        died, ctx, armed = True, None, None
                    if ctx is not None and any(a.status in PATCHED for a in ctx.actions) and \
                            holder != instance.leadership.holder:
                        tally.writes_by_non_leader += 1
                    if name == victim or died:
                        if holder == instance.leadership.holder and leader_killed_at is None:
                            leader_killed_at = now
                        await kill(alive.pop(name))
                        tally.kills += 1
                        dead_until[name] = now + rng.uniform(1, 4) * 3600
                        next_kill = now + rng.uniform(2, 6) * 3600
                if leader_killed_at is not None and any(i.leadership.is_leader(cluster) for i in alive.values()):
                    tally.failovers.append((clock.now() - leader_killed_at) / POLL_SECONDS)
                    leader_killed_at = None
                for instance in alive.values():
                    await instance.daemon.stages[-1].drain(10.0)  # type: ignore[attr-defined]
                await clock.advance_and_settle(POLL_SECONDS)
            sim.engine.advance_to(clock.now())
            for instance in alive.values():  # a last round: a leader settles what is open, drains
                await instance.leadership.step()
                await instance.daemon.poll_once(cluster)
                await next(s for s in instance.daemon.stages if isinstance(s, AlertingStage)).drain(10.0)
            truth = sim.engine.summary()
            audit, outbox = await asyncio.to_thread(_read_store, db_url)
            for instance in list(alive.values()):
                await kill(instance)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for key, count in sorted(received.items()):
        if count > 1:  # the trace of a duplicate: which instance sent it when
            print(f"duplicate {key}: {senders[key]}", file=sys.stderr)
    return _report(days, tally, truth, audit, outbox, received, time.monotonic() - started)


@asynccontextmanager
async def _given(url: str) -> AsyncIterator[str]:
    yield url


def _arm(instance: Instance, rng: random.Random) -> None:
    """The next growth of this instance dies at its intent or right after its PATCH."""
    dies_at = rng.choice(["intent", "patched"])
    growth = next(s for s in instance.daemon.stages if isinstance(s, GrowthStage))

    def checkpoint(point: str) -> None:
        if point == dies_at:
            raise Killed(point)

    growth.actuator.checkpoint = checkpoint  # type: ignore[method-assign]  # the bench's kill -9


def _read_store(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    db = PostgresDatabase(url, migrate=False)
    try:
        audit = [_as_dict(r) for r in db.query("SELECT * FROM actions WHERE mode = 'enforce' ORDER BY id")]
        outbox = [_as_dict(r) for r in db.query(
            "SELECT sink, dedup_key, delivered_at, superseded_at, dropped_at FROM outbox")]
    finally:
        db.close()
    return audit, outbox


def _as_dict(row: Row) -> dict[str, Any]:
    names = row.keys()
    return {name: row[name] for name in names}


def _report(days: float, tally: Tally, truth: dict[str, Any], audit: list[dict[str, Any]],
            outbox: list[dict[str, Any]], received: Counter[str], wall: float) -> dict[str, Any]:
    grew = [r for r in audit if r["status"] in ("verified", "reconciled", "patched", "verify_failed")]
    same_base = Counter((r["path"], r["dimension"], r["old_hard"]) for r in grew)
    duplicates = sum(n - 1 for n in same_base.values() if n > 1)
    changes = {path: len(limits) - 1 for path, limits in truth["limits_over_time"].items()}
    audited = Counter(r["path"] for r in grew if r["dimension"] == "bytes")
    unexplained = sum(max(0, changes.get(path, 0) - audited.get(path, 0)) for path in changes)
    unsettled = sum(1 for r in audit if r["status"] in ("intent", "patched"))
    delivered_keys = {r["dedup_key"] for r in outbox if r["delivered_at"] is not None}
    queued_keys = {r["dedup_key"] for r in outbox if r["superseded_at"] is None and r["dropped_at"] is None}
    failovers = sorted(tally.failovers)
    return {
        "days": days,
        "instances": 3,
        "poll_interval_seconds": POLL_SECONDS,
        "kills": tally.kills,
        "mid_growth_kills": tally.mid_growth_kills,
        "leader_failovers": len(failovers),
        "writes_by_non_leader": tally.writes_by_non_leader,
        "duplicate_growths": duplicates,
        "lost_growths": unsettled + unexplained,
        "growths": len(grew),
        "simulator_limit_changes": sum(changes.values()),
        "alerts_sent": sum(received.values()),
        "alerts_duplicated": sum(n - 1 for n in received.values() if n > 1),
        "alerts_lost": len(queued_keys - set(received)) + len(delivered_keys - set(received)),
        "write_failures": int(truth["write_failures"]),
        "failover_intervals_p50": statistics.median(failovers) if failovers else None,
        "failover_intervals_p99": failovers[min(len(failovers) - 1, int(0.99 * len(failovers)))] if failovers
        else None,
        "wall_seconds": round(wall, 1),
        "run_id": uuid.uuid4().hex[:8],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 simulated days instead of 30")
    parser.add_argument("--days", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=None, help="an existing, empty PostgreSQL database (default: start one)")
    args = parser.parse_args(argv)
    days = args.days if args.days is not None else (5.0 if args.quick else 30.0)
    configure_logging("warning", "console")
    print(json.dumps(asyncio.run(run(days, args.seed, args.url))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
