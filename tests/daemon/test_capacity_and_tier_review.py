"""Capacity planning (the person who orders disks) and filesystem tiers (their admin), as a
walkthrough of the README found them (2026-12-05): each test failed first on the code before its
fix, for the reason its docstring gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from capacity_cycles import DAY, HOUR, POOL, T0, TB, RecordingAlerts

from quotapilot.alerts.rules import GrowthInput, RuleConfig, TargetInput, capacity_order_conditions, target_conditions
from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.fs.alerts import FilesystemAlertStage
from quotapilot.daemon.fs.collector import UNREACHABLE
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.http.capacity import capacity_document
from quotapilot.daemon.runtime.cycle import CycleContext, DroppedSample, PollResult
from quotapilot.daemon.settings import CapacitySettings, load_settings
from quotapilot.daemon.stages.capacity import CapacityStage
from quotapilot.forecasting.capacity import CapacityPolicy, plan_pool
from quotapilot.forecasting.types import (
    ClusterCapacity,
    Dimension,
    Forecast,
    Observation,
    SeriesForecast,
    StepTimes,
    TargetId,
    TargetKind,
)

GB = 10**9
GiB = 2**30
FS = TargetId(FILESYSTEM_CLUSTER, "nvme", "/data/hot", TargetKind.FILESYSTEM, tier="hot")


def capacity_settings(**fields: Any) -> CapacitySettings:
    return load_settings(None, capacity=fields).capacity


def stopgap(now: float, used: float, rate_per_day: float) -> Forecast:
    """The forecaster's stopgap (`predict_linear`, fallback `below_min_history`): a steep line with
    a wide band, what it keeps in `SeriesForecast.provisional` before a model is fitted."""
    n = 14 * 24
    paths = [[used + rate_per_day * factor / DAY * HOUR * k for k in range(1, n + 1)] for factor in (0.0, 1, 2)]
    return Forecast(t0=now, step_seconds=HOUR, times=StepTimes(now, HOUR, n), p10=paths[0], p50=paths[1],
                    p90=paths[2], model="predict_linear", fallback="below_min_history")


class TestStopgapForecast:
    """README (Forecasting, the history table): the stopgap is "for metrics and the API only …
    Growth stays reactive and the alert rules say nothing until a model is fitted"; Alerts: "A rule
    that cannot tell (no data this cycle, no forecast yet) says nothing". `SeriesForecast.provisional`:
    "Nothing acts on it: the planner and the alert rules read `forecast` and `runways` only"."""

    async def test_capacity_order_alert_is_not_raised_from_the_stopgap(self) -> None:
        """`CapacityStage.on_cycle` plans from `series.forecast or series.provisional` and hands that
        plan to `capacity_order_conditions`: a pool polled for one minute (the live run: order-by
        a month in the past, 8.7 PB to order on a 2 PB pool) raises a critical order condition."""
        alerts = RecordingAlerts()
        stage = CapacityStage(capacity_settings(procurement_lead_time="8w", alert_lead_time="30d"),
                              VirtualClock(T0), raise_alerts=alerts)
        used, usable = 300 * TB, 1000 * TB
        capacity = ClusterCapacity(cluster="c1", t=T0, usable_bytes=usable, used_bytes=used,
                                   free_bytes=usable - used, drr=1.2)
        ctx = CycleContext(poll=PollResult(cluster="c1", t=T0, observations=(Observation(POOL, T0, used, usable),),
                                           capacity=capacity), now=T0)
        ctx.forecasts[(POOL, Dimension.BYTES)] = SeriesForecast(
            target=POOL, dimension=Dimension.BYTES, t=T0, limit=float(usable), forecast=None,
            reason="below_min_history", provisional=stopgap(T0, used, rate_per_day=40 * TB))
        await stage.on_cycle(ctx)
        assert stage.view.ordered()[0].provisional  # the plan itself may show the stopgap (API only)
        fired = [(c.alert_id, c.severity) for c in alerts.conditions if c.severity is not None]
        assert fired == [], f"the capacity_order rule acted on the stopgap forecast: {fired}"

    async def test_filesystem_plan_from_the_stopgap_says_provisional(self) -> None:
        """The cluster pool's plan sets `provisional` when it extends the stopgap; the filesystem
        plans in `CapacityStage.on_cycle` never pass it, so `/api/v1/capacity` shows a filesystem
        planned from two samples as `"provisional": false` (seen live: nvme, model predict_linear)."""
        stage = CapacityStage(capacity_settings(procurement_lead_time="8w"), VirtualClock(T0))
        used, size = 400 * GB, 1000 * GB
        ctx = CycleContext(poll=PollResult(cluster=FILESYSTEM_CLUSTER, t=T0,
                                           observations=(Observation(FS, T0, used, size),)), now=T0)
        ctx.forecasts[(FS, Dimension.BYTES)] = SeriesForecast(
            target=FS, dimension=Dimension.BYTES, t=T0, limit=float(size), forecast=None,
            reason="below_min_history", provisional=stopgap(T0, used, rate_per_day=50 * GB))
        await stage.on_cycle(ctx)
        [pool] = json.loads(json.dumps(capacity_document(stage.view)))["pools"]
        assert pool["kind"] == "filesystem"
        assert pool["provisional"] or pool["forecast_model"] is None, pool


class TestOrderAlertWording:
    def test_a_filesystem_sized_order_is_not_zero_tb(self) -> None:
        """`capacity_order_conditions` writes the amount as `f"{order_bytes / 10**12:,.0f} TB"`: a
        filesystem tier (README: "Each filesystem is planned too") that needs 300 GB more is told
        "order capacity for nvme by …: 0 TB usable" — an order alert that says to order nothing."""
        forecast = Forecast(t0=T0, step_seconds=DAY, times=StepTimes(T0, DAY, 14),
                            p10=[700 * GB + k * 10 * GB for k in range(1, 15)],
                            p50=[700 * GB + k * 10 * GB for k in range(1, 15)],
                            p90=[700 * GB + k * 20 * GB for k in range(1, 15)], model="test")
        plan = plan_pool(name="nvme", kind="filesystem", now=T0, usable_bytes=1000 * GB, used_bytes=700 * GB,
                         forecast=forecast, policy=CapacityPolicy(procurement_lead_time_seconds=14 * DAY,
                                                                  plan_horizon_seconds=30 * DAY))
        assert plan.order_by is not None and plan.order_bytes is not None
        assert 0 < plan.order_bytes < TB / 2
        [condition] = capacity_order_conditions([plan], now=T0, alert_lead_seconds=30 * DAY)
        assert condition.severity is not None
        assert " 0 TB" not in condition.summary, condition.summary


class TestGrowthAlertWording:
    def test_a_filesystem_growth_shows_two_different_sizes(self) -> None:
        """`alerts.rules._amount` prints every byte limit as `{value / 2**40:.1f} TiB`: a 100 GiB
        hot tier recommended to grow to 110 GiB is alerted "nvme would grow from 0.1 TiB to 0.1 TiB"
        (live: a 64 MiB tmpfs "would grow from 0.0 TiB to 1.0 TiB")."""
        target = TargetInput(cluster=FILESYSTEM_CLUSTER, target="nvme", path="/data/hot", is_pool=False, t=T0,
                             growth=(GrowthInput("bytes", "would_grow", "at 85% of its size",
                                                 old_hard=100 * GiB, new_hard=110 * GiB),))
        [would] = [c for c in target_conditions(target, {}, RuleConfig()) if c.kind == "growth_would_grow"]
        assert would.severity is not None
        assert "from 0.1 TiB to 0.1 TiB" not in would.summary, would.summary


class TestUnreachableAlert:
    async def test_filesystem_unreachable_names_the_mount_path(self) -> None:
        """`fs.alerts.unreachable_conditions` sets `path="/"` on `filesystem_unreachable`: the
        filesystem's other alerts (utilization, runway, growth) carry its mount point as `path`,
        its metrics too (`quotapilot_target_*{path="/data/hot"}`), so the most urgent alert of a
        tier points at the root filesystem (seen live: path "/" for /tmp/cap-review/warm)."""
        settings = load_settings(None, filesystems=[{"name": "nvme", "path": "/data/hot", "tier": "hot"}])
        alerts = RecordingAlerts()
        stage = FilesystemAlertStage(settings, alerts)
        poll = PollResult(cluster=FILESYSTEM_CLUSTER, t=T0, dropped=(
            DroppedSample(FILESYSTEM_CLUSTER, "nvme", UNREACHABLE, "timeout: statvfs(/data/hot) took over 5 s"),))
        await stage.on_cycle(CycleContext(poll=poll, now=T0))
        [condition] = alerts.conditions
        assert condition.kind == "filesystem_unreachable" and condition.severity is not None
        assert dict(condition.labels).get("tier") == "hot"
        assert condition.path == "/data/hot", condition.path


class TestPlotPath:
    def test_a_plot_file_of_an_unknown_format_is_bad_usage_not_a_traceback(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        """README: "A `--plot` path that cannot be written … exits 2 before any output (… and
        `capacity --plot`)". `quotapilot capacity --plot plan.txt` passes `file_problem` (the
        directory is writable), asks the daemon, then matplotlib's `savefig` raises
        `ValueError: Format 'txt' is not supported`, which `cmd_capacity` does not catch: a
        traceback (exit 1). Live: `quotapilot capacity --url … --plot /tmp/cap-review/plot.txt`."""
        pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
        from quotapilot.daemon.cli import main
        from quotapilot.daemon.commands import capacity

        stage_plan = plan_pool(name="c1", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=500 * TB,
                               forecast=None, policy=CapacityPolicy())
        from quotapilot.daemon.stages.capacity import CapacityView
        document = json.loads(json.dumps(capacity_document(CapacityView(t=T0, plans={("cluster", "c1"): stage_plan}))))

        class FakeClient:
            def request(self, method: str, path: str) -> dict[str, Any]:
                return document

        monkeypatch.setattr(capacity, "_client", lambda args: FakeClient())
        plot = tmp_path / "plan.txt"
        try:
            code = main(["capacity", "--url", "http://127.0.0.1:9", "--plot", str(plot)])
        except ValueError as exc:
            pytest.fail(f"traceback instead of a usage error: {exc!r}")
        captured = capsys.readouterr()
        assert code == 2, (code, captured.err)
        assert captured.err.startswith("quotapilot capacity: --plot ")


class TestShrinkingPool:
    def test_no_order_alert_for_nothing_to_order(self) -> None:
        """A pool at 85 % that is being emptied (every path falls, p50 ends near 740 TB of 1000):
        the 80 % threshold reads "now" (already above), so `plan_pool` gives an order-by date
        `now - procurement_lead_time` (overdue) while the order size — from the median at the plan
        horizon — is 0. `capacity_order_conditions` only skips plans whose `order_bytes` is None, so
        the planner is paged critical: "order capacity for c1 by <8 weeks ago>: 0 TB usable to stay
        under 80%". An order alert with nothing to order is misleading."""
        falling = [850 * TB - k * 8 * TB for k in range(1, 15)]
        forecast = Forecast(t0=T0, step_seconds=DAY, times=StepTimes(T0, DAY, 14),
                            p10=[v - 20 * TB for v in falling], p50=falling, p90=[v + 20 * TB for v in falling],
                            model="test")
        plan = plan_pool(name="c1", kind="cluster", now=T0, usable_bytes=1000 * TB, used_bytes=850 * TB,
                         forecast=forecast, policy=CapacityPolicy(procurement_lead_time_seconds=56 * DAY), drr=1.5)
        assert plan.order_bytes == 0
        [condition] = capacity_order_conditions([plan], now=T0, alert_lead_seconds=30 * DAY)
        assert condition.severity is None, condition.summary


class TestForecastPlotPath:
    def test_forecast_plot_of_an_unknown_format_is_bad_usage(self, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
        """`quotapilot forecast --plot out.txt` had the same gap as `capacity --plot` (written with
        the fix): refused with exit 2 before any output."""
        from quotapilot.daemon.cli import main

        csv = tmp_path / "usage.csv"
        csv.write_text("timestamp,used_bytes\n" + "".join(f"{int(T0 + k * HOUR)},{10**12 + k * 10**9}\n"
                                                            for k in range(100)))
        code = main(["forecast", "--csv", str(csv), "--plot", str(tmp_path / "out.txt")])
        captured = capsys.readouterr()
        assert (code, captured.out) == (2, ""), captured.err
        assert captured.err.startswith("quotapilot forecast: --plot ") and ".txt" in captured.err
