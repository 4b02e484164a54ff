"""`quotapilot demo --warm-start`: 28 days of the scenario's pre-history, served by a temporary
Prometheus (or the in-process stand-in) and imported through the daemon's own `[history]` warm
start, so the first cycle already has forecasts and runways."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from quotapilot.daemon.cli import main
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.commands.demo import DemoOptions, Frame, run_demo
from quotapilot.daemon.errors import PermanentError
from quotapilot.daemon.history.local import OpenMetricsServer, parse_openmetrics
from quotapilot.daemon.history.prometheus import PrometheusClient
from quotapilot.daemon.history.trace import QuotaTrace, openmetrics_text, scenario_prehistory, scenario_trace
from quotapilot.daemon.settings import HistorySettings

DAY = 86400.0
START = VirtualClock().now()
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus/promtool are not installed (.ci/run installs the Debian package)")


def by_name(traces: list[QuotaTrace]) -> dict[str, QuotaTrace]:
    return {trace.name: trace for trace in traces}


class TestPrehistory:
    """The weeks before a scenario starts, from the same engine and seed."""

    def test_ends_where_the_simulator_begins(self) -> None:
        before = by_name(scenario_prehistory("cosmos7", start=START, days=3, interval_seconds=300))
        after = by_name(scenario_trace("cosmos7", start=START, days=0.01, interval_seconds=300))
        assert set(before) == set(after) == {"cosmos7-raw", "cosmos7-processed", "cosmos7-temp"}
        for name, trace in before.items():
            assert trace.times[-1] == START - 300
            assert all(b - a == 300 for a, b in zip(trace.times, trace.times[1:], strict=False))
            assert min(trace.used_bytes) >= 0
            first_live = after[name].used_bytes[0]  # the engine at its start: the scenario's initial usage
            # the last historic sample is one 5-minute write short of the first poll, never more
            written_in_one_interval = after[name].used_bytes[1] - first_live
            assert 0 <= first_live - trace.used_bytes[-1] <= 3 * written_in_one_interval, name

    def test_growing_streams_never_shrink_and_the_swept_one_is_swept(self) -> None:
        traces = by_name(scenario_prehistory("cosmos7", start=START, days=7, interval_seconds=900))
        for name in ("cosmos7-raw", "cosmos7-processed"):
            used = traces[name].used_bytes
            assert all(b >= a for a, b in itertools.pairwise(used)), name
            assert used[-1] > used[-96]  # it grew over the last day
        temp = traces["cosmos7-temp"].used_bytes
        drops = sum(1 for a, b in itertools.pairwise(temp) if b < a / 2)
        assert 6 <= drops <= 7  # the nightly sweep, once a day
        assert traces["cosmos7-raw"].used_inodes is not None

    def test_same_seed_same_history_other_seed_other_noise(self) -> None:
        one = scenario_prehistory("step3x", start=START, days=1, seed=3)
        again = scenario_prehistory("step3x", start=START, days=1, seed=3)
        other = scenario_prehistory("step3x", start=START, days=1, seed=4)
        assert one == again
        assert one[0].used_bytes != other[0].used_bytes
        # both end 5 minutes short of the same initial usage
        assert one[0].used_bytes[-1] == pytest.approx(other[0].used_bytes[-1], rel=1e-3)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="must be > 0"):
            scenario_prehistory("cosmos7", start=START, days=0)


class TestOpenMetricsServer:
    """The stand-in answers `query_range` as Prometheus does, for plain metric names."""

    async def test_query_range_matches_the_file(self, tmp_path: Path) -> None:
        trace = QuotaTrace("c", "q", "/q", (1000.0, 1300.0, 1600.0), (10, 20, 30), 100, None, (1, 2, 3))
        source = tmp_path / "h.om"
        source.write_text(openmetrics_text([trace]))
        assert parse_openmetrics(source.read_text())["quotapilot_target_used_inodes"] == {
            (("cluster", "c"), ("path", "/q"), ("target", "q")): ([1000.0, 1300.0, 1600.0], [1.0, 2.0, 3.0])}
        async with OpenMetricsServer(source) as server, PrometheusClient(
                HistorySettings(prometheus_url=server.url, max_retries=0)) as client:
            series = await client.query_range("quotapilot_target_used_bytes", 900, 2200, 150)
            assert [dict(s.labels) for s in series] == [
                {"__name__": "quotapilot_target_used_bytes", "cluster": "c", "path": "/q", "target": "q"}]
            # a step sees the newest sample at most 5 minutes old: none before 1000, none after 1900
            assert series[0].points == [(1050.0, 10.0), (1200.0, 10.0), (1350.0, 20.0), (1500.0, 20.0),
                                        (1650.0, 30.0), (1800.0, 30.0)]
            assert await client.query_range("no_such_metric", 900, 2200, 150) == []
            with pytest.raises(PermanentError, match="plain metric names only"):
                await client.query_range("sum(quotapilot_target_used_bytes)", 900, 2200, 150)


def first_runways(frames: list[Frame]) -> dict[str, float | None]:
    return {row.name: row.runway_seconds for row in frames[0].rows}


class TestDemoWarmStart:
    """The first cycle of the demo: runways with `--warm-start`, none without."""

    async def test_cold_demo_has_no_runway_on_its_first_cycle(self) -> None:
        frames: list[Frame] = []
        report = await run_demo(DemoOptions(days=0.1), on_frame=frames.append)
        assert report["warm_start"] is None
        assert first_runways(frames) == {"cosmos7-raw": None, "cosmos7-processed": None, "cosmos7-temp": None}

    async def test_builtin_history_server_gives_runways_from_the_first_cycle(self) -> None:
        frames: list[Frame] = []
        with capture_logs() as logs:
            report = await run_demo(DemoOptions(days=0.1, warm_start="builtin"), on_frame=frames.append)
        self.assert_warm(report, frames, logs, "builtin")

    @needs_prometheus
    async def test_temporary_prometheus_gives_runways_and_is_stopped(self) -> None:
        frames: list[Frame] = []
        with capture_logs() as logs:
            report = await run_demo(DemoOptions(days=0.1, warm_start="prometheus"), on_frame=frames.append)
        self.assert_warm(report, frames, logs, "prometheus")
        assert not process_alive(prometheus_pid(logs))

    @needs_prometheus
    async def test_cancelled_demo_stops_its_prometheus(self) -> None:
        """Ctrl-C under `asyncio.run` cancels the demo's task: the temporary Prometheus still goes."""
        with capture_logs() as logs:
            demo = asyncio.create_task(run_demo(DemoOptions(days=5, warm_start="prometheus"),
                                                on_frame=lambda frame: demo.cancel()))
            with pytest.raises(asyncio.CancelledError):
                await demo
        assert not process_alive(prometheus_pid(logs))
        assert any(entry["event"] == "history_server.stopped" for entry in logs)

    def test_cli_flag_reaches_the_demo(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["demo", "--days", "0.05", "--warm-start", "builtin", "--json"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["warm_start"]["history_server"] == "builtin"
        assert report["warm_start"]["import"]["samples_imported"] >= 3 * 28 * 24
        with pytest.raises(SystemExit) as refused:
            main(["demo", "--days", "0.05", "--warm-start", "elsewhere"])
        assert refused.value.code == 2
        assert "invalid choice: 'elsewhere'" in capsys.readouterr().err

    async def test_asking_for_prometheus_without_the_binaries_is_a_clear_error(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(RuntimeError, match="prometheus and promtool are not on PATH"):
            await run_demo(DemoOptions(days=0.1, warm_start="prometheus"))

    @staticmethod
    def assert_warm(report: dict[str, object], frames: list[Frame], logs: list[dict[str, object]],
                    kind: str) -> None:
        warm = report["warm_start"]
        assert isinstance(warm, dict)
        assert warm["history_server"] == kind
        imported = warm["import"]
        assert sorted(imported["targets_matched"]) == [
            "cosmos7-vast/cosmos7-processed", "cosmos7-vast/cosmos7-raw", "cosmos7-vast/cosmos7-temp"]
        assert imported["samples_imported"] >= 3 * 28 * 24
        # through the product's warm start, not a side door (the forecaster's loader imports once
        # more for the pool, which Prometheus has no history of)
        history_events = {e["event"] for e in logs if e["event"].startswith("history.")}
        assert history_events == {"history.imported"}
        runways = first_runways(frames)
        # raw fills within about a day and a half without growth (cosmos7's story)
        assert runways["cosmos7-raw"] is not None and 0.5 * DAY < runways["cosmos7-raw"] < 4 * DAY
        assert runways["cosmos7-processed"] is not None and runways["cosmos7-processed"] > 0
        assert frames[0].history_note.startswith(f"warm start: 28 days from {kind} http://127.0.0.1:")


def prometheus_pid(logs: list[dict[str, object]]) -> int:
    started = [e for e in logs if e["event"] == "history_server.started" and e["kind"] == "prometheus"]
    assert len(started) == 1
    pid = started[0]["pid"]
    assert isinstance(pid, int)
    return pid


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

