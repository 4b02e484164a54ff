"""The soak (issue 13): the real daemon in enforce mode against the simulator's `churn` scenario
for 90 simulated days (`--quick`: 14) with faults on, then invariants from the simulator's ground
truth and the daemon's store.

The daemon runs as `quotapilot demo` runs it: `Daemon.poll_once` on a virtual clock shared with
the simulator, one poll interval at a time (15 simulated minutes). The clock's sleeps return at
once, moving time (retry backoff does not hang); its wall reading steps when the scenario steps
the VMS's clock (`SimulatorServer.on_clock_step`), while the simulator runs on the monotonic
reading. The daemon is restarted (a new `Daemon` on the same store) at 20 % and 40 % of the run.
The scenario (`daemon/simulator/scenarios/churn.toml`) creates, deletes, renames and re-creates
quotas, has operators grow and shrink them, steps the clock, and injects errors, dropped
connections, truncated pages, PATCHes applied with their answer lost, PATCHes applied late and
glitched usage readings, at random.

Invariants, each with its figure in the JSON (`invariants_held` is true only when all hold):

- `writes_not_in_audit`: distinct (quota id, hard limit) PATCHes VMS applied for the daemon (its
  API user) that no audit row records as applied (`verified`, `reconciled`, `patched`,
  `verify_failed`): a `failed` or `abandoned` row whose write landed anyway;
- `duplicate_growths`: two different hard limits written by the daemon to one quota (VMS id) less
  than the cooldown apart;
- `hard_limits_below_usage`: hard limits the daemon asked for below the quota's usage of the
  moment (applied or refused);
- `growths_on_invalid_data`: quotas the daemon wrote to in a cycle that read a glitched
  (rewritten) record of them (a usage of 1 PB, a hard limit of 1 TB);
- `unresolved_alerts_of_removed_targets`: alerts of quotas the scenario removed (and that do not
  exist under that name at the end) whose last notification is not `resolved`;
- `metric_targets_beyond_live`: distinct `target` label values in the daemon's metrics beyond the
  live targets (quotas VMS lists, plus the pool);
- `rss_growth_after_week1_ratio`: resident memory at the end over resident memory after day 7;
  holds at <= 1.10.

Exit status: 0 when every invariant holds, 1 otherwise. Run by hand:
`python bench/soak.py [--quick] [--days N] [--seed N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.logs import configure_logging
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.simulator import SimulatorServer, WriteRecord
from quotapilot.forecasting.types import POOL_TARGET

DAY = 86400.0
POLL_INTERVAL_SECONDS = 900.0
COOLDOWN_SECONDS = 6 * 3600.0
APPLIED = ("verified", "reconciled", "patched", "verify_failed")
RSS_FLAT_RATIO = 1.10


class SoakClock(VirtualClock):
    """Virtual time whose sleeps return at once (moving time forward), with a wall reading that
    scenario clock steps move apart from the monotonic one."""

    def __init__(self) -> None:
        super().__init__()
        self.wall_offset = 0.0

    def now(self) -> float:
        return super().now() + self.wall_offset

    def monotonic(self) -> float:
        return super().now()

    def step_wall(self, seconds: float) -> None:
        self.wall_offset += seconds

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)


class MonotonicView:
    """The simulator's clock: the soak clock's monotonic reading."""

    def __init__(self, clock: SoakClock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def soak_settings(sim: SimulatorServer, store: Path) -> Settings:
    return load_settings(None, **{
        "clusters": [{"name": "churn", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}],
        "store": {"path": str(store)},
        "http": {"listen": "127.0.0.1:0"},
        "poll": {"interval_seconds": POLL_INTERVAL_SECONDS, "jitter_ratio": 0.0},
        "vast": {"max_retries": 2, "backoff_base_seconds": 1, "request_timeout_seconds": 10},
        "policy": {"mode": "enforce", "cooldown_seconds": COOLDOWN_SECONDS},
        "forecast": {"workers": 0},
    })


def query(store: Path, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(store) as conn:
        conn.row_factory = sqlite3.Row
        return list(conn.execute(sql))


def writes_not_in_audit(writes: list[WriteRecord], audit: list[sqlite3.Row]) -> int:
    recorded = {(r["quota_id"], r["new_hard"]) for r in audit if r["mode"] == "enforce" and r["status"] in APPLIED}
    return len({(w.quota_id, w.changes["hard_limit"]) for w in writes if w.kind == "patch"
                and "hard_limit" in w.changes} - recorded)


def duplicate_growths(writes: list[WriteRecord]) -> int:
    last: dict[int, tuple[float, int]] = {}
    duplicates = 0
    for w in sorted(writes, key=lambda w: w.t):
        hard = w.changes.get("hard_limit")
        if w.kind != "patch" or not isinstance(hard, int):
            continue
        previous = last.get(w.quota_id)
        if previous is not None and previous[1] != hard and w.t - previous[0] < COOLDOWN_SECONDS:
            duplicates += 1
        if previous is None or previous[1] != hard:
            last[w.quota_id] = (w.t, hard)
    return duplicates


def unresolved_alerts(store: Path, removed: set[str]) -> list[str]:
    """Standing alerts of removed targets whose last notification is not a resolve. One-shot
    notifications (`"event": true` in the payload: "quota grown") never stand, so never resolve."""
    rows = query(store, "SELECT alert_id, status, payload FROM outbox WHERE sink = 'log' ORDER BY id")
    last: dict[str, str] = {}
    for row in rows:
        if json.loads(row["payload"]).get("event"):
            continue
        last[row["alert_id"]] = row["status"]
    return sorted(a for a, status in last.items() if a.split("/")[1] in removed and status != "resolved")


def metric_targets(daemon: Daemon) -> set[str]:
    return {sample.labels["target"] for metric in daemon.registry.collect() for sample in metric.samples
            if "target" in sample.labels}


async def soak(days: float, seed: int, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    clock = SoakClock()
    store = workdir / "state.db"
    async with SimulatorServer("churn", clock=MonotonicView(clock), seed=seed, state_dir=workdir / "sim") as sim:
        sim.on_clock_step.append(clock.step_wall)
        settings = soak_settings(sim, store)
        glitches = [r for r in sim.faults.rules if r.kind == "rewrite"]
        start = clock.monotonic()
        end = start + days * DAY
        restarts = [start + f * days * DAY for f in (0.2, 0.4)]
        rss_week1: int | None = None
        polls = 0
        invalid_growths = 0
        daemons = 0
        daemon_ctx: Daemon | None = None
        try:
            while clock.monotonic() < end:
                if daemon_ctx is None or (restarts and clock.monotonic() >= restarts[0]):
                    if daemon_ctx is not None:
                        restarts.pop(0)
                        await daemon_ctx.__aexit__(None, None, None)
                    daemon_ctx = Daemon(settings, clock)
                    await daemon_ctx.__aenter__()
                    daemons += 1
                fired_before, writes_before = [r.fired for r in glitches], len(sim.engine.writes.records)
                await daemon_ctx.poll_once("churn")
                polls += 1
                glitched = {r.match for r, n in zip(glitches, fired_before, strict=True) if r.fired > n}
                invalid_growths += len({w.quota_id for w in sim.engine.writes.records[writes_before:]
                                        if w.source.startswith("api:") and w.name in glitched})
                clock.advance(POLL_INTERVAL_SECONDS)
                if rss_week1 is None and clock.monotonic() - start >= 7 * DAY:
                    rss_week1 = rss_bytes()
            sim.sync()
            live = {q.name for q in sim.engine.quotas.values()} | {POOL_TARGET}
            seen_targets = metric_targets(daemon_ctx) if daemon_ctx is not None else set()
        finally:
            if daemon_ctx is not None:
                await daemon_ctx.__aexit__(None, None, None)
        rss_end = rss_bytes()
        ours = sim.engine.writes.by("api:", applied=None)
        applied = [w for w in ours if w.applied]
        audit = query(store, "SELECT * FROM actions ORDER BY id")
        removed = {name for _, name, _ in sim.events.removed_names} - live
        unresolved = unresolved_alerts(store, removed)
        truth = sim.engine.summary()
        fired: dict[str, int] = {}
        for rule in sim.faults.rules:
            fired[rule.kind] = fired.get(rule.kind, 0) + rule.fired
    rss_ratio = rss_end / rss_week1 if rss_week1 else None
    figures = {
        "writes_not_in_audit": writes_not_in_audit(applied, audit),
        "duplicate_growths": duplicate_growths(applied),
        "hard_limits_below_usage": sum(w.hard_below_usage for w in ours),
        "growths_on_invalid_data": invalid_growths,
        "unresolved_alerts_of_removed_targets": len(unresolved),
        "metric_targets_beyond_live": len(seen_targets - live),
        "rss_growth_after_week1_ratio": None if rss_ratio is None else round(rss_ratio, 3),
    }
    held = {name: (value == 0) for name, value in figures.items() if name != "rss_growth_after_week1_ratio"}
    held["rss_growth_after_week1_ratio"] = rss_ratio is not None and rss_ratio <= RSS_FLAT_RATIO
    return {
        "invariants_held": all(held.values()),
        "invariants": {name: {"value": figures[name], "held": ok} for name, ok in held.items()},
        "unresolved_alerts": unresolved,
        "metric_targets_not_live": sorted(seen_targets - live),
        "days": round((clock.monotonic() - start) / DAY, 3),
        "seed": seed,
        "polls": polls,
        "daemon_starts": daemons,
        "daemon_writes_applied": len(applied),
        "daemon_writes_refused": len(ours) - len(applied),
        "delayed_writes_landed": sum(w.delayed for w in applied),
        "audit_rows_by_status": _count(r["status"] for r in audit),
        "faults_fired": fired,
        "events_applied": len(sim.events.applied),
        "events_skipped": [what for _, what, _ in sim.events.skipped],
        "write_failures": int(truth["write_failures"]),
        "rss_mib_week1": None if rss_week1 is None else round(rss_week1 / 2**20, 1),
        "rss_mib_end": round(rss_end / 2**20, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="14 simulated days instead of 90")
    parser.add_argument("--days", type=float, default=None, help="simulated days (overrides --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    days = args.days if args.days is not None else 14.0 if args.quick else 90.0
    if days <= 0:
        parser.error("--days must be > 0")
    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="quotapilot-soak-") as tmp:
        report = asyncio.run(soak(days, args.seed, Path(tmp)))
    print(json.dumps(report, sort_keys=True))
    return 0 if report["invariants_held"] else 1


if __name__ == "__main__":
    sys.exit(main())
