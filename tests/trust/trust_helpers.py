"""Helpers for the trust tests (issue 13): the daemon in enforce mode against the simulator over
HTTPS with vastpy, on injected time, judged by the simulator's ground truth and the store.

Only public behaviour is used: `Daemon`, `poll_once`/`run`, settings, the store's tables on disk
(`actions` = the audit, `outbox` = every notification, the built-in `log` sink always has one),
and the simulator's write log.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.simulator import SimulatorServer, WriteRecord

TB = 10**12
TIB = 2**40

TRUST_SCENARIO = """
# Two quiet quotas and a spare path: nothing needs growth unless a test makes it so.
[scenario]
name = "trust"
step_seconds = 60
[cluster]
name = "trust-vast"
usable_capacity = "2PB"
used = "100TB"
[[views]]
path = "/t/data"
quota_name = "t-data"
quota = { hard_limit = "100TB", soft_limit = "90TB" }
initial = { used = "70TB", files = 1_000 }
[views.ingest]
bytes_per_day = "0.2TB"
[[views]]
path = "/t/hot"
quota_name = "t-hot"
quota = { hard_limit = "20TB", soft_limit = "18TB" }
initial = { used = "12TB", files = 1_000 }
[views.ingest]
bytes_per_day = "1TB"
[[views]]
path = "/t/spare"
initial = { used = "15TB", files = 1_000 }
[views.ingest]
bytes_per_day = "1TB"
"""


class TrustClock(VirtualClock):
    """The daemon's `VirtualClock` (separate wall and monotonic readings, `step_wall`) that also
    remembers the steps, so the simulator can keep true time (`MonotonicView`), and can sleep
    instantly. `instant=True`: `sleep()` returns at once, moving time forward (for code that
    sleeps inline, e.g. retry backoff, while the test drives cycles with `poll_once`)."""

    def __init__(self, start: float = 1_767_225_600.0, *, instant: bool = False) -> None:
        super().__init__(start)
        self.stepped_seconds = 0.0
        self.instant = instant

    def step_wall(self, seconds: float) -> None:
        """An NTP step: wall time jumps, monotonic time does not."""
        self.stepped_seconds += seconds
        super().step_wall(seconds)

    async def sleep(self, seconds: float) -> None:
        if self.instant:
            if seconds > 0:
                self.advance(seconds)
            await asyncio.sleep(0)
            return
        await super().sleep(seconds)


class MonotonicView:
    """The simulator's view of a `TrustClock`: true (monotonic) time; VMS's clock is not stepped."""

    def __init__(self, clock: TrustClock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now() - self._clock.stepped_seconds

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


def settings_for(*sims: SimulatorServer, store: Path, **groups: Any) -> Settings:
    """Enforce mode against `sims` (clusters "sim", "sim2", ...), verified TLS, loopback HTTP on a
    free port, no retries' waiting to speak of; keyword groups override."""
    clusters = [{"name": "sim" if i == 0 else f"sim{i + 1}", "address": s.address, "token": s.token,
                 "ca_file": str(s.ca_file)} for i, s in enumerate(sims)]
    data: dict[str, Any] = {
        "clusters": clusters,
        "store": {"path": str(store)},
        "http": {"listen": "127.0.0.1:0"},
        "vast": {"backoff_base_seconds": 1, "max_retries": 2, "request_timeout_seconds": 5},
        "poll": {"interval_seconds": 60, "jitter_ratio": 0.0},
        "policy": {"mode": "enforce"},
        "forecast": {"workers": 0},
    }
    for key, value in groups.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(None, **data)


def daemon_writes(sim: SimulatorServer, *, applied: bool | None = True) -> list[WriteRecord]:
    """The writes the daemon (the API user) made that VMS applied (or refused, `applied=False`)."""
    sim.sync()
    return sim.engine.writes.by("api:", applied=applied)


def query(store: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    with sqlite3.connect(store) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql, params))


def audit(store: Path, target: str | None = None) -> list[dict[str, Any]]:
    """The `actions` rows (the audit trail), oldest first."""
    sql = "SELECT * FROM actions" + (" WHERE target = ?" if target else "") + " ORDER BY id"
    return [dict(r) for r in query(store, sql, (target,) if target else ())]


def notifications(store: Path, alert_prefix: str) -> list[tuple[str, str]]:
    """(alert id, status) of every notification to the built-in log sink for alerts starting with
    `alert_prefix` (`cluster/target/`), oldest first."""
    return [(r["alert_id"], r["status"]) for r in query(
        store, "SELECT alert_id, status FROM outbox WHERE sink = 'log' AND alert_id LIKE ? ORDER BY id",
        (alert_prefix + "%",))]


async def wait_until(predicate: Callable[[], bool], within_seconds: float = 5.0) -> bool:
    """Wait (for IO in threads and the simulator) until `predicate()`; False after `within_seconds` real
    seconds. Used only where the daemon's own work runs in its thread pool."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    while not predicate():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True
