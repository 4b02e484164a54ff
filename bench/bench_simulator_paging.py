"""How fast can a client page 10,000 quotas from the built-in simulator?

Starts the simulator (cosmos7 plus N generated quotas) in this process on a virtual clock, pages
every quota with the real vastpy client (`page_size` 1000, a new TLS connection per request, as
vastpy does), several times with 15 simulated minutes between listings, and prints one JSON
object: requests/s and seconds per full listing (median, p90). Not a timed test: run it by hand,
`python bench/bench_simulator_paging.py [--quotas 10000] [--listings 7] [--page-size 1000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import vastpy

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.logs import configure_logging
from quotapilot.daemon.simulator import SimulatorServer


def list_all(client: vastpy.VASTClient, page_size: int) -> tuple[int, int, list[float]]:
    """Follow pages until `next` is null; (quotas seen, requests, per-request seconds)."""
    seen, page, latencies = 0, 1, []
    while True:
        started = time.perf_counter()
        answer: dict[str, Any] = client.quotas.get(page_size=page_size, page=page)
        latencies.append(time.perf_counter() - started)
        seen += len(answer["results"])
        if not answer.get("next"):
            return seen, page, latencies
        page += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(quotas: int, listings: int, page_size: int) -> dict[str, Any]:
    clock = VirtualClock()
    with tempfile.TemporaryDirectory() as state_dir:
        async with SimulatorServer("cosmos7", clock=clock, extra_quotas=quotas, state_dir=Path(state_dir)) as sim:
            client = vastpy.VASTClient(address=sim.address, token=sim.token, cert_file=str(sim.ca_file))
            listing_seconds: list[float] = []
            request_seconds: list[float] = []
            total = 0
            for _ in range(listings):
                clock.advance(900)
                started = time.perf_counter()
                total, _, latencies = await asyncio.to_thread(list_all, client, page_size)
                listing_seconds.append(time.perf_counter() - started)
                request_seconds += latencies
    elapsed = sum(listing_seconds)
    return {
        "benchmark": "simulator_paging",
        "quotas": total,
        "page_size": page_size,
        "listings": listings,
        "requests": len(request_seconds),
        "requests_per_second": round(len(request_seconds) / elapsed, 1),
        "quotas_per_second": round(total * listings / elapsed),
        "listing_seconds_median": round(statistics.median(listing_seconds), 3),
        "listing_seconds_p90": round(percentile(listing_seconds, 0.9), 3),
        "request_seconds_median": round(statistics.median(request_seconds), 4),
        "request_seconds_p90": round(percentile(request_seconds, 0.9), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotas", type=int, default=10_000, help="generated quotas besides cosmos7's 3")
    parser.add_argument("--listings", type=int, default=7, help="full listings to time")
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args.quotas, args.listings, args.page_size))))


if __name__ == "__main__":
    main()
