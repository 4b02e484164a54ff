"""deploy/grafana/quotapilot.json: a well-formed dashboard whose every quotapilot_* metric (and
every metric the Prometheus rules use) is exported by a live daemon, and that daemon's /metrics
passes `promtool check metrics`.

The live daemon is the real one (`Daemon`, vastpy over verified HTTPS) against the built-in
simulator on a virtual clock, driven through a simulated day so forecasts exist, with a
webhook sink that refuses connections (so the delivery metrics have series) and a low warning
threshold (so alerts fire); its last poll meets VMS errors (so the error counters have series)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import DEPLOY
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = DEPLOY / "grafana" / "quotapilot.json"
RULES = DEPLOY / "prometheus" / "quotapilot_rules.yml"
METRIC = re.compile(r"\b(quotapilot_[a-zA-Z0-9_]+)")
SIMULATED_SECONDS = 86400.0
POLL_INTERVAL_SECONDS = 1800.0


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(node: object) -> list[str]:
    """Every PromQL string in the dashboard: panel targets, annotations, template variables."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                found.append(value["query"])
            else:
                found.extend(queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(queries(item))
    return found


def metric_names(texts: list[str]) -> set[str]:
    return {name for text in texts for name in METRIC.findall(text)}


def exported(name: str, live: set[str]) -> bool:
    return name in live or re.sub(r"_(bucket|sum|count|total|created)$", "", name) in live


async def scrape_live_daemon(tmp: Path) -> str:
    from quotapilot.daemon.clock import VirtualClock
    from quotapilot.daemon.runtime.daemon import Daemon
    from quotapilot.daemon.settings import load_settings
    from quotapilot.daemon.simulator import SimulatorServer

    clock = VirtualClock()
    async with SimulatorServer("cosmos7", clock=clock, seed=0, port=0, state_dir=tmp / "sim") as sim:
        settings = load_settings(
            None,
            clusters=[{"name": "sim", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}],
            poll={"interval_seconds": POLL_INTERVAL_SECONDS, "jitter_ratio": 0.0},
            policy={"warning_at": 0.5},
            alerts={"webhooks": [{"name": "refused", "url": "http://127.0.0.1:9/", "timeout_seconds": 1}],
                    "retry_backoffs_seconds": [3600]},
            vast={"max_retries": 0},  # a retry would sleep on the virtual clock nobody advances
            http={"listen": "127.0.0.1:0"},
            store={"path": str(tmp / "state.db")},
            forecast={"workers": 0},
        )
        async with Daemon(settings, clock) as daemon:
            # the stages' background tasks (the alert dispatcher), as `quotapilot demo` runs them
            tasks = asyncio.create_task(daemon.supervisor.run(), name="test:supervisor")
            try:
                end = clock.now() + SIMULATED_SECONDS
                while True:
                    if clock.now() >= end - POLL_INTERVAL_SECONDS:  # the last poll fails: error counters show
                        sim.faults.add("error", status=503, path="quotas")
                    await daemon.poll_once("sim")
                    if clock.now() >= end:
                        break
                    await clock.advance_and_settle(POLL_INTERVAL_SECONDS)
                return generate_latest(daemon.registry).decode()
            finally:
                daemon.supervisor.stop()
                await tasks


async def scrape_young_daemon(tmp: Path) -> str:
    """Three polls two seconds apart (simulated time at 60x, as the acceptance check runs it)."""
    from quotapilot.daemon.clock import VirtualClock
    from quotapilot.daemon.runtime.daemon import Daemon
    from quotapilot.daemon.settings import load_settings
    from quotapilot.daemon.simulator import SimulatorServer

    clock = VirtualClock()
    async with SimulatorServer("cosmos7", clock=clock, seed=0, port=0, state_dir=tmp / "sim") as sim:
        settings = load_settings(
            None,
            clusters=[{"name": "sim", "address": sim.address, "token": sim.token, "ca_file": str(sim.ca_file)}],
            poll={"interval_seconds": 2.0, "jitter_ratio": 0.0},
            vast={"max_retries": 0},
            http={"listen": "127.0.0.1:0"},
            store={"path": str(tmp / "state.db")},
            forecast={"workers": 0},
        )
        async with Daemon(settings, clock) as daemon:
            for _ in range(3):
                await daemon.poll_once("sim")
                await clock.advance_and_settle(120.0)
            return generate_latest(daemon.registry).decode()


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], str]:
    body = asyncio.run(scrape_live_daemon(tmp_path_factory.mktemp("live")))
    names = set()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            names |= {sample.name, re.sub(r"_(bucket|sum|count|total|created)$", "", sample.name)}
    return names, body


class TestDashboardShape:
    def test_identity(self) -> None:
        board = dashboard()
        assert (board["uid"], board["title"]) == ("quotapilot", "quotapilot")

    def test_panels_have_unique_ids_and_fit_the_grid(self) -> None:
        panels = dashboard()["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        cells: set[tuple[int, int]] = set()
        for p in panels:
            grid = p["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
            mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not cells & mine, f"{p['title']} overlaps another panel"
            cells |= mine

    def test_every_query_panel_uses_the_datasource_variable(self) -> None:
        for p in dashboard()["panels"]:
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)), p["title"]

    def test_variables_used_are_defined(self) -> None:
        board = dashboard()
        defined = {v["name"] for v in board["templating"]["list"]}
        used = set(re.findall(r"\$\{?([a-z_]+)", json.dumps(board["panels"]) + json.dumps(board["annotations"])))
        assert used - {"__rate_interval", "__range", "__interval"} <= defined

    def test_queries_are_valid_promql(self, promtool: str, tmp_path: Path) -> None:
        """Every panel and annotation query, with Grafana's variables filled in, parses as PromQL
        (checked by promtool as the expressions of recording rules)."""
        variables = {"$__rate_interval": "5m", "$__range": "1h", "$cluster": ".*", "$kind": ".*", "$tier": ".*",
                     "$target": ".*"}
        exprs = []
        for text in queries(dashboard()["panels"]) + queries(dashboard()["annotations"]):
            for name, value in variables.items():
                text = text.replace(name, value)
            exprs.append(text)
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(yaml.safe_dump(rules))
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_shows_what_the_issue_asks(self) -> None:
        text = DASHBOARD.read_text()
        for metric in ("quotapilot_cluster_usable_bytes", "quotapilot_target_utilization_ratio",
                       "quotapilot_target_forecast_used_bytes", "quotapilot_target_runway_seconds",
                       "quotapilot_growth_decisions_total", "quotapilot_alerts_firing", "quotapilot_outbox_pending",
                       "quotapilot_last_successful_poll_timestamp_seconds"):
            assert metric in text
        assert "heatmap" in {p["type"] for p in dashboard()["panels"]}
        assert any("hard_limit" in a.get("expr", "") for a in dashboard()["annotations"]["list"])


@pytest.mark.slow
class TestAgainstALiveDaemon:
    def test_dashboard_uses_only_exported_metrics(self, live_metrics: tuple[set[str], str]) -> None:
        live, _ = live_metrics
        missing = sorted(n for n in metric_names(queries(dashboard())) if not exported(n, live))
        assert missing == []

    def test_rules_use_only_exported_metrics(self, live_metrics: tuple[set[str], str]) -> None:
        live, _ = live_metrics
        groups = yaml.safe_load(RULES.read_text())["groups"]
        exprs = [str(rule["expr"]) for group in groups for rule in group["rules"]]
        missing = sorted(n for n in metric_names(exprs) if not exported(n, live))
        assert missing == []

    def test_promtool_check_metrics(self, live_metrics: tuple[set[str], str], promtool: str) -> None:
        _, body = live_metrics
        result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True,
                                timeout=60)
        problems = sorted(set((result.stdout + result.stderr).strip().splitlines()))
        assert (result.returncode, problems) == (0, [])

    def test_forecast_families_are_summaries_with_numeric_quantiles(
            self, live_metrics: tuple[set[str], str]) -> None:
        """The `quantile` label is Prometheus' summary convention: "0.1", "0.5", "0.9"."""
        _, body = live_metrics
        families = {f.name: f for f in text_string_to_metric_families(body)}
        for name in ("quotapilot_target_runway_seconds", "quotapilot_target_forecast_used_bytes"):
            family = families[name]
            assert family.type == "summary"
            assert {s.labels["quantile"] for s in family.samples} == {"0.1", "0.5", "0.9"}


class TestAgainstAYoungDaemon:
    """What the deploy acceptance sees: a fresh daemon, a few polls seconds apart, no sinks —
    every dashboard metric already has a sample and promtool accepts the scrape."""

    def test_every_dashboard_metric_has_a_sample_after_three_polls(self, tmp_path: Path, promtool: str) -> None:
        body = asyncio.run(scrape_young_daemon(tmp_path))
        live = set()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                live |= {sample.name, re.sub(r"_(bucket|sum|count|total|created)$", "", sample.name)}
        missing = sorted(n for n in metric_names(queries(dashboard())) if not exported(n, live))
        assert missing == []
        result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True,
                                timeout=60)
        assert (result.returncode, result.stdout + result.stderr) == (0, "")
