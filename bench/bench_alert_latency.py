"""Benchmark: alert evaluation → receipt latency, MQTT and webhook, loopback, N targets firing.

One poll cycle in which N quotas (default 1,000) are all at 95 % raises N critical alerts; the
real `AlertingStage` evaluates them, writes states + 3N outbox rows (SQLite, synchronous=FULL),
and the dispatcher delivers to the built-in log sink (every line rendered as JSON at info level, as
under systemd, into a discarded stderr), to a real Mosquitto broker (started here on a free port, subscribed
by `mosquitto_sub` in its own process) and to a plain HTTP receiver (its own process). Latency per
notification = receipt time at the receiver − the payload's `evaluated_at_epoch`.

Prints one JSON object. Target: p99 ≤ 1 s for both sinks.

    .venv/bin/python bench/bench_alert_latency.py [--targets 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from quotapilot.daemon.clock import SystemClock
from quotapilot.daemon.logs import configure_logging
from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
from quotapilot.daemon.settings import load_settings
from quotapilot.daemon.stages.alerting import AlertingStage
from quotapilot.daemon.store.db import Database
from quotapilot.forecasting.types import Observation, TargetId

RECEIVER = textwrap.dedent("""
    import http.server, sys, time
    out = open(sys.argv[2], "w", buffering=1)
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0)); body = self.rfile.read(n)
            out.write(f"{time.time()} {body.decode()}\\n")
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *a):
            pass
    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 256  # the default listen backlog (5) drops SYNs of a connection burst
    Server(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(latencies: list[float], expected: int) -> dict[str, Any]:
    if not latencies:
        return {"received": 0, "expected": expected}
    return {"received": len(latencies), "expected": expected,
            "p50_seconds": round(percentile(latencies, 0.50), 4),
            "p99_seconds": round(percentile(latencies, 0.99), 4),
            "max_seconds": round(max(latencies), 4)}


def read_lines(path: Path) -> list[tuple[float, dict[str, Any]]]:
    out: list[tuple[float, dict[str, Any]]] = []
    for line in path.read_text().splitlines():
        stamp, _, body = line.partition(" ")
        try:
            out.append((float(stamp), json.loads(body)))
        except ValueError:
            continue
    return out


def start_receivers(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    """mosquitto, mosquitto_sub (timestamps each message) and the HTTP receiver, each its own process."""
    mqtt_port, http_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    procs.append(subprocess.Popen(["mosquitto", "-p", str(mqtt_port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(mqtt_port)
    with open(workdir / "mqtt.txt", "wb") as sink_file:
        procs.append(subprocess.Popen(
            ["mosquitto_sub", "-p", str(mqtt_port), "-q", "1", "-t", "bench/+/+/alert", "-F", "@s.@N %p"],
            stdout=sink_file, stderr=subprocess.DEVNULL))
    procs.append(subprocess.Popen([sys.executable, "-c", RECEIVER, str(http_port), str(workdir / "http.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port(http_port)
    time.sleep(0.3)  # mosquitto_sub has subscribed
    return procs, mqtt_port, http_port


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


async def bench(targets: int, workdir: Path, mqtt_port: int, http_port: int) -> dict[str, Any]:
    mqtt_out, http_out = workdir / "mqtt.txt", workdir / "http.txt"
    settings = load_settings(None, store={"path": workdir / "state.db"}, daemon={"shutdown_timeout_seconds": 5},
                             alerts={"mqtt": {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "bench"},
                                     "webhooks": [{"url": f"http://127.0.0.1:{http_port}/hook"}]})
    clock = SystemClock()
    stage = AlertingStage(settings, Database(settings.store.path), clock)
    stopping = asyncio.Event()
    task = asyncio.create_task(stage.run(stopping), name="alerts")
    limit = 10 * 2**40
    try:
        await asyncio.sleep(0.2)
        now = clock.now()
        observations = tuple(
            Observation(TargetId("bench", f"q{i:04d}", f"/bench/q{i:04d}"), now, int(0.95 * limit), limit)
            for i in range(targets))
        ctx = CycleContext(poll=PollResult("bench", now, observations=observations), now=now)
        started = time.perf_counter()
        await stage.on_cycle(ctx)
        evaluate_seconds = time.perf_counter() - started
        drained = await stage.drain(60)
        delivered_seconds = time.perf_counter() - started
        logged = stage.dispatcher.stats.results[("log", "delivered")]
    finally:
        stopping.set()
        await task
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len(read_lines(mqtt_out)) >= targets and len(read_lines(http_out)) >= targets:
            break
        await asyncio.sleep(0.05)
    result: dict[str, Any] = {}
    for name, path in (("mqtt", mqtt_out), ("webhook", http_out)):
        rows = read_lines(path)
        latencies = [stamp - float(body["evaluated_at_epoch"]) for stamp, body in rows]
        keys = [body["dedup_key"] for _, body in rows]
        result[name] = {**summary(latencies, targets), "duplicates": len(keys) - len(set(keys))}
    return {
        "benchmark": "alert_latency",
        "targets_firing": targets,
        "evaluate_and_enqueue_seconds": round(evaluate_seconds, 4),
        "all_delivered_seconds": round(delivered_seconds, 4),
        "drained": drained,
        "log_sink_lines": logged,
        **result,
        "target_p99_seconds": 1.0,
        "ok": all(result[s].get("p99_seconds", 99) <= 1.0 and result[s]["received"] == targets
                  for s in ("mqtt", "webhook")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    args = parser.parse_args()
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_sub") is None:
        print(json.dumps({"benchmark": "alert_latency", "error": "mosquitto and mosquitto_sub are required"}))
        return 1
    configure_logging("info", "json")  # the log sink does its real work ...
    workdir = Path(tempfile.mkdtemp(prefix="qp-bench-alerts-"))
    procs, mqtt_port, http_port = start_receivers(workdir)
    real_stderr = sys.stderr
    try:
        with open(os.devnull, "w") as discarded:
            sys.stderr = discarded  # ... into nowhere; stdout keeps the one JSON line
            report = asyncio.run(bench(args.targets, workdir, mqtt_port, http_port))
    finally:
        sys.stderr = real_stderr
        stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
