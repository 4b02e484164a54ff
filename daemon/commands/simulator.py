"""`quotapilot simulator`: the built-in VMS simulator alone, serving HTTPS until SIGTERM/SIGINT.

With `--json` the first stdout line is one JSON object with everything a client needs
(`address`, `ca_file`, `token`, `user`, `password`, `scenario`, `speed`, `start`); logs go to
stderr. `--start ISO8601` pins the simulated start (default: the wall clock), so a run is
reproducible to the second; simulated time then runs `--speed` times real time from there.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import signal
import sys

from quotapilot.daemon.clock import ScaledClock
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.logs import configure_logging, get_logger

log = get_logger(__name__)


async def _serve(args: argparse.Namespace) -> int:
    from quotapilot.daemon.simulator.server import SimulatorServer

    clock = ScaledClock(args.speed, start=args.start_epoch)
    sim = SimulatorServer(args.scenario, clock=clock, seed=args.seed, host=args.host, port=args.port,
                          extra_quotas=args.quotas or 0, state_dir=args.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            info = {**sim.client_info(), "speed": args.speed,
                    "start": datetime.datetime.fromtimestamp(sim.engine.origin, datetime.UTC).isoformat()}
            if args.json:
                sys.stdout.write(json.dumps(info) + "\n")
            else:
                sys.stdout.write(
                    f"quotapilot simulator: scenario {info['scenario']} at https://{info['address']}/api/latest/ "
                    f"(speed x{args.speed:g})\n  CA file: {info['ca_file']}\n  token:   {info['token']}\n"
                    f"  user:    {info['user']} / {info['password']}\n"
                    f"  faults:  POST https://{info['address']}/_sim/faults   summary: GET /_sim/summary\n")
            sys.stdout.flush()
            await stop.wait()
            log.info("simulator.stopping", summary_write_failures=sim.engine.write_failures_total)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def parse_start(text: str) -> float:
    """`--start`: an ISO 8601 time (UTC when it names no zone) → epoch seconds."""
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-01-01T00:00:00Z)") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    try:
        return value.timestamp()
    except (OverflowError, OSError) as exc:
        raise ValueError(f"out of range: {text!r}") from exc


def cmd_simulator(args: argparse.Namespace) -> int:
    """Run the simulator until SIGTERM/SIGINT; exit 0 (2 on a bad scenario or flag)."""
    configure_logging("info")
    if args.speed <= 0:
        sys.stderr.write("quotapilot simulator: --speed must be > 0\n")
        return 2
    if args.quotas is not None and args.quotas < 0:
        sys.stderr.write("quotapilot simulator: --quotas must be >= 0\n")
        return 2
    args.start_epoch = None
    if getattr(args, "start", None) is not None:
        try:
            args.start_epoch = parse_start(args.start)
        except ValueError as exc:
            sys.stderr.write(f"quotapilot simulator: --start: {exc}\n")
            return 2
    try:
        return asyncio.run(_serve(args))
    except ConfigError as exc:
        sys.stderr.write(f"quotapilot simulator: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"quotapilot simulator: cannot serve on {args.host}:{args.port}: {exc}\n")
        return 1
