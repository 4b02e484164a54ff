"""A short-lived history server over an OpenMetrics file, for `quotapilot demo --warm-start`.

`TemporaryPrometheus` is the real thing: `promtool tsdb create-blocks-from openmetrics` backfills a
TSDB in a scratch directory and `prometheus` serves it on a free loopback port until the context
exits (also on Ctrl-C or an error: the process is terminated, then killed if it lingers; on Linux
it also gets SIGTERM if the demo dies without exiting the context).

`OpenMetricsServer` is the fallback where the binaries are not installed: an in-process HTTP
server that answers Prometheus' `/api/v1/query_range` for plain metric names from the same file
(the value at each step is the newest sample within the 5-minute lookback, as Prometheus does).
Either way the daemon reads it through its own `[history]` client and importer.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from aiohttp import web

from quotapilot.daemon.history.prometheus import PrometheusClient
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.settings import HistorySettings

log = get_logger(__name__)

LOOKBACK_DELTA_SECONDS = 300.0
"""Prometheus' default `--query.lookback-delta`: a step sees a sample at most this old."""

HistoryServerKind = Literal["prometheus", "builtin"]


def prometheus_installed() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def backfill_tsdb(source: Path, tsdb: Path) -> None:
    """`promtool tsdb create-blocks-from openmetrics`: a TSDB at `tsdb` holding `source`'s samples."""
    done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=1000h",
                           "--quiet", str(source), str(tsdb)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"promtool could not backfill {source}: {done.stdout.decode(errors='replace')[-500:]}")


def prometheus_argv(workdir: Path, tsdb: Path, port: int) -> list[str]:
    """The `prometheus` command serving `tsdb` (backfilled: nothing scraped, nothing expired) on
    127.0.0.1:`port`; writes its config file into `workdir`."""
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    return ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y"]


class TemporaryPrometheus:
    """`async with TemporaryPrometheus(openmetrics_file, workdir) as prom: prom.url`."""

    kind: HistoryServerKind = "prometheus"

    def __init__(self, source: Path, workdir: Path, *, ready_timeout_seconds: float = 60.0) -> None:
        self.source = source
        self.workdir = workdir
        self.ready_timeout_seconds = ready_timeout_seconds
        self.url = ""
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def __aenter__(self) -> TemporaryPrometheus:
        tsdb = self.workdir / "tsdb"
        await asyncio.to_thread(backfill_tsdb, self.source, tsdb)
        port = free_port()
        self._log = (self.workdir / "prometheus.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            *prometheus_argv(self.workdir, tsdb, port), stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        self.url = f"http://127.0.0.1:{port}"
        try:
            await self._wait_ready()
        except BaseException:
            await self._stop()
            raise
        log.info("history_server.started", kind=self.kind, url=self.url, pid=self.process.pid)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.shield(self._stop())

    async def _wait_ready(self) -> None:
        assert self.process is not None
        settings = HistorySettings(prometheus_url=self.url, max_retries=0, timeout_seconds=2.0)
        async with PrometheusClient(settings) as client, asyncio.timeout(self.ready_timeout_seconds):
            while not await client.ready():
                if self.process.returncode is not None:
                    raise RuntimeError(f"prometheus exited with {self.process.returncode} "
                                       f"(see {self.workdir / 'prometheus.log'})")
                await asyncio.sleep(0.1)  # a real process starting: real time

    async def _stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if process is not None:
            log.info("history_server.stopped", kind=self.kind, returncode=process.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, SIGTERM when the demo dies without cleaning up
    (SIGKILL, a crash), so no Prometheus outlives it. Elsewhere nothing: `__aexit__` still stops it."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


Samples = tuple[list[float], list[float]]
"""One series: its timestamps (ascending) and values."""


def parse_openmetrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], Samples]]:
    """Metric name → labels → samples, from an OpenMetrics text with timestamps."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    out: dict[str, dict[tuple[tuple[str, str], ...], Samples]] = {}
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]  # prometheus_client's parser has no annotations
        for sample in family.samples:
            if sample.timestamp is None:
                continue
            labels = tuple(sorted(sample.labels.items()))
            times, values = out.setdefault(sample.name, {}).setdefault(labels, ([], []))
            times.append(float(sample.timestamp))
            values.append(float(sample.value))
    for series in out.values():
        for times, values in series.values():
            order = sorted(range(len(times)), key=times.__getitem__)
            times[:] = [times[i] for i in order]
            values[:] = [values[i] for i in order]
    return out


class OpenMetricsServer:
    """`async with OpenMetricsServer(openmetrics_file) as server: server.url` — `query_range` for
    plain metric names, over the file's samples (the fallback without a `prometheus` binary)."""

    kind: HistoryServerKind = "builtin"

    def __init__(self, source: Path) -> None:
        self.source = source
        self.url = ""
        self._series: dict[str, dict[tuple[tuple[str, str], ...], Samples]] = {}
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> OpenMetricsServer:
        self._series = await asyncio.to_thread(parse_openmetrics, self.source.read_text())
        app = web.Application()
        app.router.add_get("/api/v1/query_range", self._query_range)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        log.info("history_server.started", kind=self.kind, url=self.url)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._runner is not None:
            await asyncio.shield(self._runner.cleanup())
            self._runner = None

    async def _query_range(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "").strip()
        try:
            start, end, step = (float(request.query[key]) for key in ("start", "end", "step"))
        except (KeyError, ValueError):
            return _error("start, end and step are required numbers")
        if step <= 0 or end < start or not all(map(math.isfinite, (start, end, step))):
            return _error("want step > 0 and end >= start")
        if not query.replace("_", "a").replace(":", "a").isalnum():
            return _error(f"this stand-in for Prometheus answers plain metric names only, not {query!r}")
        result = []
        for labels, (times, values) in self._series.get(query, {}).items():
            points = []
            for k in range(math.floor((end - start) / step) + 1):
                t = start + k * step
                i = bisect.bisect_right(times, t) - 1
                if i >= 0 and t - times[i] <= LOOKBACK_DELTA_SECONDS:
                    points.append([t, repr(values[i])])
            if points:
                result.append({"metric": {"__name__": query, **dict(labels)}, "values": points})
        return web.json_response({"status": "success", "data": {"resultType": "matrix", "result": result}})


def _error(message: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": "bad_data", "error": message}, status=400)


def history_server(source: Path, workdir: Path,
                   kind: Literal["auto", "prometheus", "builtin"] = "auto") -> TemporaryPrometheus | OpenMetricsServer:
    """The server for `source`: a temporary Prometheus when asked or (`auto`) when installed, else
    the in-process stand-in. Asking for `prometheus` without the binaries is a `RuntimeError`."""
    if kind == "prometheus" and not prometheus_installed():
        raise RuntimeError("prometheus and promtool are not on PATH (install the Debian package "
                           "prometheus, or use the built-in stand-in)")
    if kind == "prometheus" or (kind == "auto" and prometheus_installed()):
        return TemporaryPrometheus(source, workdir)
    return OpenMetricsServer(source)
