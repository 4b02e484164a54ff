"""One poll cycle of the daemon against a simulator holding 10,000 quotas.

The simulator runs as a separate process (`quotapilot simulator --quotas N --json`), so the
figures are the daemon's alone: wall seconds of a full cycle (poll + every stage) and of the poll,
VMS requests made, resident memory, and the time to scrape `/metrics` over HTTP; `core_seconds`
is the daemon core's own share (poll + store stage), the stages report their own seconds. Prints one JSON
object. Targets (issue 3): cycle <= 10 s, RSS <= 400 MB, scrape <= 0.5 s.

    .venv/bin/python bench/bench_poll_cycle.py [--quotas 10000] [--cycles 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from quotapilot.daemon.logs import configure_logging
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import load_settings

TARGETS = {"cycle_seconds": 10.0, "rss_mb": 400.0, "scrape_seconds": 0.5}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def scrape(port: int | None) -> tuple[float, int, int]:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            body = await response.read()
        elapsed = time.perf_counter() - started
    return elapsed, len(body), body.count(b"\nquotapilot_target_used_bytes{")


async def bench(info: dict[str, Any], state_dir: Path, cycles: int) -> dict[str, Any]:
    settings = load_settings(None, clusters=[{"name": "bench", "address": info["address"], "token": info["token"],
                                               "ca_file": info["ca_file"]}],
                             store={"path": str(state_dir / "state.db")}, http={"listen": "127.0.0.1:0"})
    rss_before = rss_mb()
    async with Daemon(settings) as daemon:
        await daemon.http.start()
        runs = []
        for _ in range(cycles):
            stage_before = dict(daemon.snapshot.stage_seconds_total)
            started = time.perf_counter()
            ctx = await daemon.poll_once("bench")
            wall = time.perf_counter() - started
            stage_seconds = {name: round(total - stage_before.get(name, 0.0), 3)
                             for name, total in daemon.snapshot.stage_seconds_total.items()}
            if not ctx.poll.ok:
                raise SystemExit(f"poll failed: {ctx.poll.error}")
            runs.append({"cycle_seconds": round(wall, 3), "poll_seconds": round(ctx.poll.duration_seconds, 3),
                         "requests": ctx.poll.requests, "observations": len(ctx.poll.observations),
                         "dropped": len(ctx.poll.dropped), "stage_seconds": stage_seconds})
        scrape_seconds, scrape_bytes, target_series = await scrape(daemon.http_port)
        scrape_again, _, _ = await scrape(daemon.http_port)
        stages = [stage.name for stage in daemon.stages]
        rss_after = rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first = runs[0]
    result = {
        "benchmark": "poll_cycle",
        "quotas": first["observations"] - 1,
        "stages": stages,
        "cycle_seconds": first["cycle_seconds"],
        "poll_seconds": first["poll_seconds"],
        "stage_seconds": first["stage_seconds"],
        "core_seconds": round(first["poll_seconds"] + first["stage_seconds"].get("store", 0.0), 3),
        "requests": first["requests"],
        "cycles": runs,
        "rss_mb": round(rss_after, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_at_start_mb": round(rss_before, 1),
        "scrape_seconds": round(scrape_seconds, 3),
        "scrape_seconds_second": round(scrape_again, 3),
        "scrape_bytes": scrape_bytes,
        "target_series": target_series,
    }
    measured = {"cycle_seconds": max(r["cycle_seconds"] for r in runs), "rss_mb": peak,
                "scrape_seconds": scrape_seconds}
    result["targets"] = {k: {"target": v, "measured": round(measured[k], 3), "ok": measured[k] <= v}
                         for k, v in TARGETS.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotas", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    configure_logging("warning", "auto")  # logs to stderr: stdout is the one JSON object
    with tempfile.TemporaryDirectory(prefix="qp-bench-") as tmp:
        sim = subprocess.Popen(
            [sys.executable, "-m", "quotapilot.daemon", "simulator", "--port", "0", "--json",
             "--quotas", str(args.quotas), "--state-dir", tmp],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert sim.stdout is not None
            line = sim.stdout.readline()
            info = json.loads(line)
            result = asyncio.run(bench(info, Path(tmp), args.cycles))
        finally:
            sim.terminate()
            sim.wait(10)
    print(json.dumps(result))
    return 0 if all(t["ok"] for t in result["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
