"""History import against a real Prometheus: a TSDB backfilled by `promtool` from the cosmos7
scenario's ground truth, `prometheus` started on a free port over it (per module, cleaned up)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alert_receivers import serve_app
from structlog.testing import capture_logs

from quotapilot.daemon.cli import main
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.errors import TemporaryError
from quotapilot.daemon.history.importer import import_history, warm_start_from_history
from quotapilot.daemon.history.local import backfill_tsdb, free_port, prometheus_argv
from quotapilot.daemon.history.prometheus import PrometheusClient, chunk_ranges
from quotapilot.daemon.history.trace import QuotaTrace, openmetrics_text, scenario_trace
from quotapilot.daemon.settings import Settings, load_settings
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.forecasting.types import Observation, TargetId

DAY = 86400.0
HOUR = 3600.0
LOOKBACK = 28 * DAY


@dataclass
class Prom:
    url: str
    traces: list[QuotaTrace]
    end: float
    cluster: str


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    root = tmp_path_factory.mktemp("prometheus")
    end = math.floor(time.time() / HOUR) * HOUR  # ends now: `import-history` looks back from the wall clock
    traces = scenario_trace("cosmos7", start=end - LOOKBACK, days=LOOKBACK / DAY, interval_seconds=900.0)
    with serve_openmetrics(root, openmetrics_text(traces)) as url:
        yield Prom(url, traces, end, traces[0].cluster)


@contextlib.contextmanager
def serve_openmetrics(root: Path, text: str) -> Iterator[str]:
    """A real Prometheus over a TSDB backfilled from `text`, on a free port: its URL."""
    if shutil.which("promtool") is None or shutil.which("prometheus") is None:
        pytest.skip("prometheus/promtool are not installed (.ci/run installs the Debian package)")
    source = root / "trace.om"
    source.write_text(text)
    tsdb = root / "tsdb"
    backfill_tsdb(source, tsdb)
    port = free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(prometheus_argv(root, tsdb, port), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # the readiness wait: the only real wait here
    raise RuntimeError("prometheus did not become ready")


def settings_for(prom_url: str, tmp_path: Path, cluster: str, **history: Any) -> Settings:
    return load_settings(None, clusters=[{"name": cluster, "address": "vms.invalid", "token": "t"}],
                         store={"path": str(tmp_path / "state.db")},
                         history={"prometheus_url": prom_url, "max_retries": 0, **history})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObservationStore]:
    db = Database(tmp_path / "state.db")
    try:
        yield ObservationStore(db, raw_retention_seconds=3 * DAY, hourly_retention_seconds=70 * DAY)
    finally:
        db.close()


def hourly_truth(trace: QuotaTrace, start: float) -> dict[float, int]:
    """The trace resampled as the store keeps it: the last sample of each hour."""
    out: dict[float, int] = {}
    for t, used in zip(trace.times, trace.used_bytes, strict=True):
        if t >= start:
            out[t - t % HOUR] = used
    return out


def stored_hourly(store: ObservationStore, cluster: str, name: str) -> dict[float, int]:
    rows = store.db.query("SELECT hour, used_bytes FROM observations_hourly WHERE cluster = ? AND target = ?",
                          (cluster, name))
    return {row["hour"]: row["used_bytes"] for row in rows}


class TestImport:
    async def test_matches_the_trace_sample_for_sample(self, prom: Prom, tmp_path: Path,
                                                       store: ObservationStore) -> None:
        settings = settings_for(prom.url, tmp_path, prom.cluster)
        summary = await import_history(settings, store, now=prom.end, since_seconds=LOOKBACK)
        assert sorted(f"{prom.cluster}/{t.name}" for t in prom.traces) == sorted(summary.targets_matched)
        assert summary.unmatched_series == []
        start = prom.end - LOOKBACK
        for trace in prom.traces:
            truth = hourly_truth(trace, math.floor(start / 300) * 300)
            assert len(truth) >= 28 * 24
            assert stored_hourly(store, prom.cluster, trace.name) == truth
        assert sum(len(hourly_truth(t, start)) for t in prom.traces) == summary.samples_imported
        # the limits came along
        row = store.db.query("SELECT hard_limit_bytes, path FROM observations_hourly WHERE target = ? LIMIT 1",
                             (prom.traces[0].name,))[0]
        assert (prom.traces[0].initial_hard_limit_bytes, prom.traces[0].path) == (row["hard_limit_bytes"], row["path"])

    async def test_second_import_adds_nothing_and_local_samples_win(self, prom: Prom, tmp_path: Path,
                                                                    store: ObservationStore) -> None:
        trace = prom.traces[0]
        target = TargetId(prom.cluster, trace.name, trace.path)
        local_t = prom.end - 2 * DAY + 120.0
        store.write_poll([Observation(target, local_t, used_bytes=12345, hard_limit_bytes=99999)])
        settings = settings_for(prom.url, tmp_path, prom.cluster)
        first = await import_history(settings, store, now=prom.end, since_seconds=LOOKBACK)
        assert first.samples_imported > 0
        second = await import_history(settings, store, now=prom.end, since_seconds=LOOKBACK)
        assert second.samples_fetched == first.samples_fetched
        assert second.samples_imported == 0
        assert stored_hourly(store, prom.cluster, trace.name)[local_t - local_t % HOUR] == 12345
        # the forecaster's warm-start read sees the imported weeks
        history = store.history(target, since=prom.end - LOOKBACK)
        assert history[0][0] < prom.end - 27 * DAY

    async def test_chunked_to_the_point_limit(self, prom: Prom, tmp_path: Path, store: ObservationStore) -> None:
        settings = settings_for(prom.url, tmp_path, prom.cluster, max_points_per_query=500)
        async with PrometheusClient(settings.history) as client:
            summary = await import_history(settings, store, now=prom.end, since_seconds=LOOKBACK, client=client,
                                           dry_run=True)
            chunks = len(chunk_ranges(math.floor((prom.end - LOOKBACK) / 300) * 300, prom.end, 300.0, 500))
            assert chunks > 10
            assert client.requests == 3 * chunks  # used bytes, hard limit, inodes
        assert summary.samples_imported == 0
        unchunked = settings_for(prom.url, tmp_path, prom.cluster)
        whole = await import_history(unchunked, store, now=prom.end, since_seconds=LOOKBACK, dry_run=True)
        assert whole.samples_fetched == summary.samples_fetched

    async def test_known_target_without_history_is_left_cold(self, prom: Prom, tmp_path: Path,
                                                              store: ObservationStore) -> None:
        store.write_poll([Observation(TargetId(prom.cluster, "newcomer", "/cosmos7/newcomer"), prom.end - 60,
                                      used_bytes=1, hard_limit_bytes=10)])
        summary = await import_history(settings_for(prom.url, tmp_path, prom.cluster), store, now=prom.end,
                                       since_seconds=LOOKBACK)
        assert [f"{prom.cluster}/newcomer"] == summary.targets_cold


class TestVastMapping:
    async def test_path_only_series_match_known_targets(self, prom: Prom, tmp_path: Path,
                                                        store: ObservationStore) -> None:
        """VAST's series carry a path, not our quota name: matched by path to the store's targets;
        a path the store does not know is reported, not guessed."""
        known = prom.traces[0]
        store.write_poll([Observation(TargetId("vms1", "raw-quota", known.path), prom.end - 60,
                                      used_bytes=1, hard_limit_bytes=10)])
        settings = load_settings(None, clusters=[{"name": "vms1", "address": "vms.invalid", "token": "t"}],
                                 history={"prometheus_url": prom.url, "source": "vast",
                                          "used_bytes_query": "quotapilot_target_used_bytes",
                                          "hard_limit_bytes_query": "", "used_inodes_query": ""})
        summary = await import_history(settings, store, now=prom.end, since_seconds=7 * DAY)
        assert summary.targets_matched == ["vms1/raw-quota"]
        assert len(summary.unmatched_series) == len(prom.traces) - 1
        assert stored_hourly(store, "vms1", "raw-quota")


class FlakyProxy:
    """Our boundary's fault injector in front of the real Prometheus: `down` answers 503, `hang`
    never answers; otherwise requests are forwarded."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.down = False
        self.hang = False
        self.release = asyncio.Event()
        self.refused = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.hang:
            await self.release.wait()
        if self.down:
            self.refused += 1
            return web.Response(status=503, text="down")
        import aiohttp

        async with aiohttp.ClientSession() as session, \
                session.get(self.upstream + request.path_qs) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(),
                                content_type="application/json")


@pytest.fixture
async def proxy(prom: Prom) -> AsyncIterator[tuple[FlakyProxy, str]]:
    flaky = FlakyProxy(prom.url)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", flaky.handle)
    async with serve_app(app) as url:
        try:
            yield flaky, url
        finally:
            flaky.release.set()


class SignallingClock(VirtualClock):
    """A virtual clock that says when someone starts sleeping on it (the retry's request before
    that is real IO, so "settled" cannot be counted in loop turns)."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asleep.set()
        await super().sleep(seconds)

    async def next_sleep(self) -> None:
        await asyncio.wait_for(self.asleep.wait(), timeout=30)
        self.asleep.clear()


class TestWarmStart:
    async def test_down_starts_cold_says_so_and_retries_later(self, prom: Prom, proxy: tuple[FlakyProxy, str],
                                                              tmp_path: Path, store: ObservationStore) -> None:
        flaky, url = proxy
        flaky.down = True
        settings = settings_for(url, tmp_path, prom.cluster, retry_interval_seconds=600)
        clock = SignallingClock(prom.end)
        tasks: dict[str, Any] = {}
        with capture_logs() as logs:
            summary = await warm_start_from_history(settings, store, clock, tasks.__setitem__)
        assert summary is None
        assert [e["event"] for e in logs if e["event"] == "history.import_failed"] == ["history.import_failed"]
        assert list(tasks) == ["history-import"]
        assert stored_hourly(store, prom.cluster, prom.traces[0].name) == {}

        imported = asyncio.Event()
        loop = asyncio.get_running_loop()
        original = store.import_history

        def recording(rows: Any) -> int:
            added = original(rows)
            loop.call_soon_threadsafe(imported.set)
            return added

        store.import_history = recording  # type: ignore[method-assign]  # observe the retry's import
        stopping = asyncio.Event()
        retry = asyncio.create_task(tasks["history-import"](stopping))
        with capture_logs() as logs:
            await clock.next_sleep()
            refused = flaky.refused
            await clock.advance_and_settle(600)  # still down: the retry fails and sleeps again, quietly
            await clock.next_sleep()
            assert flaky.refused == refused + 1
            assert not imported.is_set()
            flaky.down = False
            await clock.advance_and_settle(600)
            await asyncio.wait_for(imported.wait(), timeout=30)
            await asyncio.sleep(0)
            assert not retry.done()  # a supervised task: idles until the daemon stops
            stopping.set()
            await asyncio.wait_for(retry, timeout=5)
        assert "history.imported" in [e["event"] for e in logs]
        assert stored_hourly(store, prom.cluster, prom.traces[0].name)

    async def test_slow_prometheus_is_bounded(self, prom: Prom, proxy: tuple[FlakyProxy, str], tmp_path: Path,
                                              store: ObservationStore) -> None:
        flaky, url = proxy
        flaky.hang = True
        settings = settings_for(url, tmp_path, prom.cluster, timeout_seconds=0.2, start_timeout_seconds=0.5)
        tasks: dict[str, Any] = {}
        with capture_logs() as logs:
            assert await warm_start_from_history(settings, store, VirtualClock(prom.end), tasks.__setitem__) is None
        assert "history.import_failed" in [e["event"] for e in logs]
        assert "history-import" in tasks

    async def test_up_imports_before_the_first_cycle(self, prom: Prom, tmp_path: Path,
                                                     store: ObservationStore) -> None:
        tasks: dict[str, Any] = {}
        settings = settings_for(prom.url, tmp_path, prom.cluster)
        summary = await warm_start_from_history(settings, store, VirtualClock(prom.end), tasks.__setitem__)
        assert summary is not None and summary.samples_imported > 0
        assert tasks == {}

    async def test_no_url_does_nothing(self, tmp_path: Path, store: ObservationStore) -> None:
        settings = load_settings(None, clusters=[{"name": "c", "address": "vms.invalid", "token": "t"}])
        assert await warm_start_from_history(settings, store, VirtualClock(), {}.__setitem__) is None

    async def test_refused_connection_is_temporary(self, tmp_path: Path) -> None:
        settings = settings_for(f"http://127.0.0.1:{free_port()}", tmp_path, "c")
        async with PrometheusClient(settings.history) as client:
            with pytest.raises(TemporaryError, match="cannot reach Prometheus"):
                await client.query_range("up", 0, 60, 15)


class TestCommands:
    def write_config(self, tmp_path: Path, prom: Prom, **history: object) -> Path:
        extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in history.items())
        path = tmp_path / "quotapilot.toml"
        path.write_text(f'[[clusters]]\nname = "{prom.cluster}"\naddress = "vms.invalid"\ntoken = "t"\n'
                        f'[store]\npath = "{tmp_path / "cli.db"}"\n'
                        f'[history]\nprometheus_url = "{prom.url}"\n{extra}')
        return path

    def test_import_history_dry_run_then_real_then_again(self, prom: Prom, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
        config = self.write_config(tmp_path, prom)
        assert main(["import-history", "--config", str(config), "--since", "7d", "--dry-run", "--json"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert dry["dry_run"] and dry["samples_imported"] == 0 and dry["samples_fetched"] > 0
        assert main(["import-history", "--config", str(config), "--since", "7d", "--json"]) == 0
        real = json.loads(capsys.readouterr().out)
        assert len(real["targets_matched"]) == len(prom.traces)
        assert 0 < real["samples_imported"] <= 7 * 24 * len(prom.traces) + len(prom.traces)
        assert main(["import-history", "--config", str(config), "--since", "7d"]) == 0
        text = capsys.readouterr().out
        assert f"{len(prom.traces)} targets matched" in text and " 0 imported" in text
        assert "targets left cold: 0" in text

    def test_import_history_unreachable_exits_1(self, prom: Prom, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        config = self.write_config(tmp_path, prom, max_retries=0)
        config.write_text(config.read_text().replace(prom.url, f"http://127.0.0.1:{free_port()}"))
        assert main(["import-history", "--config", str(config)]) == 1
        assert "cannot reach Prometheus" in capsys.readouterr().err

    def test_replay_from_prometheus(self, prom: Prom, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = self.write_config(tmp_path, prom, step_seconds=900)
        assert main(["replay", "--config", str(config), "--prometheus", "--since", "3d", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert {t.name for t in prom.traces} == set(report["targets"])
        raw = report["targets"][prom.traces[0].name]
        assert raw["recorded"]["final_hard_limit_bytes"] == prom.traces[0].initial_hard_limit_bytes
        assert raw["samples"] == pytest.approx(3 * 96, abs=2)


@dataclass
class Fleet:
    url: str
    trace: QuotaTrace
    instances: tuple[str, ...]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Every instance of a quotapilot fleet polls and serves the same targets' metrics, so
    Prometheus holds one series per instance (differing in `instance`), scraped a minute apart."""
    end = math.floor(time.time() / HOUR) * HOUR
    trace = scenario_trace("cosmos7", start=end - 3 * DAY, days=3, interval_seconds=900.0)[0]
    instances = ("qp-a:9187", "qp-b:9187")
    lines = []
    for metric in ("used_bytes", "hard_limit_bytes"):
        lines.append(f"# TYPE quotapilot_target_{metric} gauge")
        for instance, shift in zip(instances, (0.0, -60.0), strict=True):
            labels = f'cluster="{trace.cluster}",instance="{instance}",path="{trace.path}",target="{trace.name}"'
            for t, used in zip(trace.times, trace.used_bytes, strict=True):
                value = used - int(shift) if metric == "used_bytes" else trace.initial_hard_limit_bytes
                lines.append(f"quotapilot_target_{metric}{{{labels}}} {value} {t + shift:.3f}")
    with serve_openmetrics(tmp_path_factory.mktemp("fleet"), "\n".join([*lines, "# EOF"]) + "\n") as url:
        yield Fleet(url, trace, instances)


class TestFleetSeries:
    """Two series of one target (a fleet's instances, an HA pair of Prometheus): one history."""

    def one_instance(self, fleet: Fleet) -> dict[str, str]:
        selector = f'{{instance="{fleet.instances[0]}"}}'
        return {"used_bytes_query": "quotapilot_target_used_bytes" + selector,
                "hard_limit_bytes_query": "quotapilot_target_hard_limit_bytes" + selector,
                "used_inodes_query": ""}

    async def test_each_step_is_fetched_once(self, fleet: Fleet, tmp_path: Path,
                                             store: ObservationStore) -> None:
        now = math.floor(time.time() / HOUR) * HOUR
        alone = await import_history(settings_for(fleet.url, tmp_path, fleet.trace.cluster, **self.one_instance(fleet)),
                                     store, now=now, since_seconds=2 * DAY, dry_run=True)
        both = await import_history(settings_for(fleet.url, tmp_path, fleet.trace.cluster), store, now=now,
                                    since_seconds=2 * DAY, dry_run=True)
        assert alone.samples_fetched > 2 * 24 * 4
        assert (alone.targets_matched, alone.samples_fetched) == (both.targets_matched, both.samples_fetched)

    def test_replay_from_prometheus(self, fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = tmp_path / "quotapilot.toml"
        config.write_text(f'[[clusters]]\nname = "{fleet.trace.cluster}"\naddress = "vms.invalid"\ntoken = "t"\n'
                          f'[history]\nprometheus_url = "{fleet.url}"\nstep_seconds = 900\n')
        assert main(["replay", "--config", str(config), "--prometheus", "--since", "2d", "--json"]) == 0, \
            capsys.readouterr().err
        report = json.loads(capsys.readouterr().out)
        assert [fleet.trace.name] == list(report["targets"])
        assert report["targets"][fleet.trace.name]["samples"] == pytest.approx(2 * 96, abs=2)


TIB = 2**40


@dataclass
class LimitGaps:
    url: str
    cluster: str


@pytest.fixture(scope="module")
def limit_gaps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitGaps]:
    """Hourly samples of 2 days, one target per way a limit series can look: every point there
    (`full`); no point for 16 hours while usage has one (`gaps`: a scrape gap in the limit series);
    0 throughout (`unlimited`: VAST's "no hard limit"); 15 TiB, then 0 from hour 24 on (`lifted`: the
    limit removed a day in, before usage passes 15 TiB)."""
    end = math.floor(time.time() / HOUR) * HOUR
    hours = range(49)
    limits: dict[str, list[int | None]] = {
        "full": [15 * TIB for _ in hours],
        "gaps": [None if 5 <= i <= 20 else 15 * TIB for i in hours],
        "unlimited": [0 for _ in hours],
        "lifted": [15 * TIB if i < 24 else 0 for i in hours],
    }
    lines = []
    for metric in ("used_bytes", "hard_limit_bytes"):
        lines.append(f"# TYPE quotapilot_target_{metric} gauge")
        for name, hards in limits.items():
            labels = f'cluster="c1",path="/{name}",target="{name}"'
            per_hour = TIB // 5 if name == "lifted" else TIB // 10
            for i, hard in zip(hours, hards, strict=True):
                value = 10 * TIB + i * per_hour if metric == "used_bytes" else hard
                if value is not None:
                    lines.append(f"quotapilot_target_{metric}{{{labels}}} {value} {end - 2 * DAY + i * HOUR:.3f}")
    with serve_openmetrics(tmp_path_factory.mktemp("limit-gaps"), "\n".join([*lines, "# EOF"]) + "\n") as url:
        yield LimitGaps(url, "c1")


class TestLimitGaps:
    """A step where the limit series has no point is the limit of the step before (none known before
    the first), as an empty limit cell is in `replay --csv`; one such step dropped every recorded
    limit of the target. A limit of 0 is VAST's "no limit", not a gap."""

    def replay(self, limit_gaps: LimitGaps, tmp_path: Path, capsys: pytest.CaptureFixture[str],
               *flags: str) -> dict[str, Any]:
        config = tmp_path / "quotapilot.toml"
        config.write_text(f'[[clusters]]\nname = "{limit_gaps.cluster}"\naddress = "vms.invalid"\ntoken = "t"\n'
                          f'[history]\nprometheus_url = "{limit_gaps.url}"\nstep_seconds = 3600\n')
        assert main(["replay", "--config", str(config), "--prometheus", "--since", "2d", *flags, "--json"]) == 0, \
            capsys.readouterr().err
        report: dict[str, Any] = json.loads(capsys.readouterr().out)["targets"]
        return report

    def test_a_step_without_a_limit_keeps_the_previous_limit(self, limit_gaps: LimitGaps, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        targets = self.replay(limit_gaps, tmp_path, capsys)
        assert targets["full"] == targets["gaps"]
        assert targets["gaps"]["recorded"]["final_hard_limit_bytes"] == 15 * TIB

    def test_a_zero_limit_is_no_limit(self, limit_gaps: LimitGaps, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
        """0 is not carried over as a gap would be: `lifted` passes its old 15 TiB with no limit
        in place, which is no write failure; `unlimited` starts from `--initial-limit`."""
        targets = self.replay(limit_gaps, tmp_path, capsys, "--initial-limit", "100TiB")
        lifted = targets["lifted"]["recorded"]
        assert (lifted["write_failures"], lifted["final_hard_limit_bytes"]) == (0, 0)
        assert targets["unlimited"]["recorded"]["write_failures"] == 0
        assert targets["unlimited"]["quotapilot"]["final_hard_limit_bytes"] == 100 * TIB
        assert targets["full"]["quotapilot"]["final_hard_limit_bytes"] != 100 * TIB  # it has a limit at the start


@dataclass
class TwoClusters:
    url: str
    ours: list[QuotaTrace]
    theirs: list[QuotaTrace]


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoClusters]:
    """One Prometheus scraping two single-cluster quotapilot daemons whose quotas share names."""
    from dataclasses import replace

    end = math.floor(time.time() / HOUR) * HOUR
    ours = scenario_trace("cosmos7", start=end - 2 * DAY, days=2, interval_seconds=900.0)
    theirs = [replace(t, cluster="archive", used_bytes=tuple(3 * u + 10**12 for u in t.used_bytes)) for t in ours]
    text = openmetrics_text([*ours, *theirs], with_limits=False)
    with serve_openmetrics(tmp_path_factory.mktemp("two-clusters"), text) as url:
        yield TwoClusters(url, ours, theirs)


class TestAnotherClustersSeries:
    async def test_are_not_imported_as_ours(self, two_clusters: TwoClusters, tmp_path: Path,
                                            store: ObservationStore) -> None:
        """With one `[[clusters]]` entry, series that name *another* cluster are not ours (only a
        lone cluster name that is not ours is taken as the exporter's name for our VMS)."""
        cluster = two_clusters.ours[0].cluster
        now = math.floor(time.time() / HOUR) * HOUR
        summary = await import_history(settings_for(two_clusters.url, tmp_path, cluster), store, now=now,
                                       since_seconds=DAY)
        assert sorted(f"{cluster}/{t.name}" for t in two_clusters.ours) == sorted(summary.targets_matched)
        assert len(summary.unmatched_series) == len(two_clusters.theirs)
        assert all('cluster="archive"' in series for series in summary.unmatched_series)
        for trace in two_clusters.ours:
            stored = stored_hourly(store, cluster, trace.name)
            truth = hourly_truth(trace, now - DAY)
            assert stored == {hour: truth[hour] for hour in stored}


@pytest.fixture(scope="module")
def week_aligned_prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    """As `prom`, but ending on the last week boundary of the epoch (Thursday 00:00 UTC) rather
    than at the last whole hour: for a test that passes its own `now` and compares forecasts, whose
    outcome must not depend on the hour of the day the suite runs at."""
    root = tmp_path_factory.mktemp("prometheus_week")
    end = math.floor(time.time() / (7 * DAY)) * 7 * DAY
    traces = scenario_trace("cosmos7", start=end - LOOKBACK, days=LOOKBACK / DAY, interval_seconds=900.0)
    with serve_openmetrics(root, openmetrics_text(traces)) as url:
        yield Prom(url, traces, end, traces[0].cluster)


class TestDayOneForecast:
    async def test_warm_started_runway_within_the_band_of_a_28_day_old_daemon(
            self, week_aligned_prom: Prom, tmp_path: Path, store: ObservationStore) -> None:
        """The forecast stage, warm-started from the imported store on its first cycle, against the
        same stage fed the trace cycle by cycle for 28 days (an hourly poll), as a running daemon.

        At a fixed phase of the week (`week_aligned_prom`): with the trace ending at the last whole
        hour, the outcome moved with the hour the suite ran at (2026-12-05, ending at 11:00 UTC the
        day-one p50 came 3.3 h before the aged band's p90 edge, 172.5 h against 175.8–209.9 h;
        ending 2, 4, … 22 hours earlier it lay inside)."""
        prom = week_aligned_prom
        from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
        from quotapilot.daemon.settings import ForecastSettings
        from quotapilot.daemon.stages.forecast import ForecastStage
        from quotapilot.forecasting.types import Dimension

        settings = settings_for(prom.url, tmp_path, prom.cluster)
        await import_history(settings, store, now=prom.end - 900, since_seconds=LOOKBACK)
        trace = prom.traces[0]  # raw: the 10x ramp
        target = TargetId(prom.cluster, trace.name, trace.path)
        limit = int(trace.used_bytes[-1] * 1.5)

        def observation(i: int) -> Observation:
            return Observation(target, trace.times[i], used_bytes=trace.used_bytes[i], hard_limit_bytes=limit)

        async def cycle(stage: ForecastStage, i: int) -> Any:
            obs = observation(i)
            ctx = CycleContext(poll=PollResult(prom.cluster, obs.t, (obs,)), now=obs.t)
            await stage.on_cycle(ctx)
            return ctx.forecasts[(target, Dimension.BYTES)].runway(1.0)

        forecast = ForecastSettings(workers=0)
        warm = ForecastStage(forecast, VirtualClock(prom.end),
                             history_loader=lambda t: store.history(t, since=prom.end - LOOKBACK))
        day_one = await cycle(warm, len(trace.times) - 1)

        old = ForecastStage(forecast, VirtualClock(trace.times[0]))
        for i in range(0, len(trace.times) - 1, 4):  # a daemon that has polled hourly for 28 days
            await cycle(old, i)
        aged = await cycle(old, len(trace.times) - 1)
        assert day_one is not None and aged is not None
        assert day_one.p50 is not None and aged.p90 is not None and aged.p10 is not None
        assert aged.p90 <= day_one.p50 <= aged.p10, (
            f"day one p50 runway {(day_one.p50 - prom.end) / 3600:.1f} h, 28-day-old daemon's band "
            f"{(aged.p90 - prom.end) / 3600:.1f}–{(aged.p10 - prom.end) / 3600:.1f} h")
        cold = ForecastStage(forecast, VirtualClock(prom.end))
        assert await cycle(cold, len(trace.times) - 1) is None  # without the import: no forecast at all


class TestLateTarget:
    """A target that appears after start with too little local history is fetched when the
    forecast stage first meets it (the stage's history loader), once per batch."""

    async def cycle(self, stage: Any, prom: Prom, index: int) -> Any:
        from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
        from quotapilot.forecasting.types import Dimension

        trace = prom.traces[index]
        target = TargetId(prom.cluster, trace.name, trace.path)
        obs = Observation(target, prom.end, used_bytes=trace.used_bytes[-1],
                          hard_limit_bytes=trace.used_bytes[-1] * 2)
        ctx = CycleContext(poll=PollResult(prom.cluster, prom.end, (obs,)), now=prom.end)
        await stage.on_cycle(ctx)
        return ctx.forecasts[(target, Dimension.BYTES)]

    async def test_new_target_warm_started_from_prometheus(self, prom: Prom, tmp_path: Path,
                                                           store: ObservationStore) -> None:
        from quotapilot.daemon.history.importer import HistoryBackedLoader
        from quotapilot.daemon.settings import ForecastSettings
        from quotapilot.daemon.stages.forecast import ForecastStage

        clock = VirtualClock(prom.end)
        loader = HistoryBackedLoader(settings_for(prom.url, tmp_path, prom.cluster), store, clock,
                                     reach_seconds=LOOKBACK)
        stage = ForecastStage(ForecastSettings(workers=0), clock, history_loader=loader)
        first = await self.cycle(stage, prom, 0)
        assert first.forecast is not None and loader.imports == 1
        second = await self.cycle(stage, prom, 1)  # in the store already: no second fetch
        assert second.forecast is not None and loader.imports == 1

    async def test_prometheus_down_starts_cold_without_failing_the_cycle(
            self, tmp_path: Path, store: ObservationStore) -> None:
        from quotapilot.daemon.history.importer import HistoryBackedLoader
        from quotapilot.daemon.runtime.cycle import CycleContext, PollResult
        from quotapilot.daemon.settings import ForecastSettings
        from quotapilot.daemon.stages.forecast import ForecastStage
        from quotapilot.forecasting.types import Dimension

        clock = VirtualClock()
        settings = settings_for(f"http://127.0.0.1:{free_port()}", tmp_path, "c")
        loader = HistoryBackedLoader(settings, store, clock, reach_seconds=LOOKBACK)
        stage = ForecastStage(ForecastSettings(workers=0), clock, history_loader=loader)
        target = TargetId("c", "q", "/q")
        obs = Observation(target, clock.now(), used_bytes=5, hard_limit_bytes=10)
        ctx = CycleContext(poll=PollResult("c", clock.now(), (obs,)), now=clock.now())
        with capture_logs() as logs:
            await stage.on_cycle(ctx)
        assert ctx.forecasts[(target, Dimension.BYTES)].forecast is None
        assert "history.unavailable" in [e["event"] for e in logs]
        assert (loader.imports, loader.last_attempt) == (0, clock.now())
