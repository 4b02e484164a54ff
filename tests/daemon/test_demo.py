"""`quotapilot demo`: the simulator and the real daemon in one process, a short run."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import aiohttp
import pytest

from quotapilot.daemon.commands.demo import (
    DemoOptions,
    Frame,
    LiveView,
    ViewRow,
    cmd_demo,
    demo_settings_data,
    run_demo,
)
from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.settings import load_settings

KEYS = {"write_failures", "growth_actions", "bytes_added", "mean_utilization", "peak_utilization", "alerts",
        "days", "policy"}


class TestRun:
    """Half a simulated day, in-process, enforce mode, over verified HTTPS."""

    async def test_summary_has_the_contract_keys(self) -> None:
        frames: list[Frame] = []
        scrapes: list[asyncio.Task[str]] = []

        async def scrape(url: str) -> str:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return await response.text()

        def on_frame(frame: Frame) -> None:
            frames.append(frame)
            if len(frames) == 10:  # /metrics is served while the demo runs
                scrapes.append(asyncio.get_running_loop().create_task(scrape(frame.metrics_url)))

        report = await run_demo(DemoOptions(days=0.5), on_frame=on_frame)
        metrics = await scrapes[0]
        assert 'quotapilot_mode{mode="enforce"} 1.0' in metrics
        assert "quotapilot_growth_decisions_total" in metrics
        assert set(report) >= KEYS
        assert report["policy"] == "quotapilot"
        assert report["days"] == pytest.approx(0.5)
        assert report["write_failures"] == 0
        assert len(frames) == 49  # a poll every 15 simulated minutes, both ends included
        assert {row.name for row in frames[-1].rows} >= {"cosmos7-raw", "cosmos7-processed"}
        assert frames[-1].metrics_url.startswith("http://127.0.0.1:")


class TestCli:
    def test_json_is_the_last_stdout_line(self, capsys: pytest.CaptureFixture[str]) -> None:
        args = argparse.Namespace(days=0.25, scenario="cosmos7", policy="reactive", seed=1, config=None, json=True,
                                  warm_start=None)
        assert cmd_demo(args) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        report = json.loads(last)
        assert set(report) >= KEYS
        assert report["policy"] == "reactive"

    def test_bad_days(self, capsys: pytest.CaptureFixture[str]) -> None:
        args = argparse.Namespace(days=0, scenario="cosmos7", policy="quotapilot", seed=0, config=None, json=True,
                                  warm_start=None)
        assert cmd_demo(args) == 2


class TestSettings:
    """`--config` layers the user's sections over the demo's own."""

    def test_user_alerts_layered_demo_cluster_kept(self, tmp_path: Path) -> None:
        config = tmp_path / "alerts.toml"
        config.write_text('[alerts.mqtt]\nhost = "127.0.0.1"\nport = 1884\n\n'
                          '[[clusters]]\nname = "other"\naddress = "x"\ntoken = "t"\n\n'
                          '[policy]\nmode = "observe"\ncooldown_seconds = "2h"\n')
        ca = tmp_path / "ca.pem"
        ca.write_text("-")
        data = demo_settings_data(cluster="sim", address="127.0.0.1:1", token="t", ca_file=ca,
                                  store=tmp_path / "s.db", config=config, poll_interval_seconds=900)
        settings = load_settings(None, **data)
        assert [c.name for c in settings.clusters] == ["sim"]
        assert settings.alerts.mqtt is not None and settings.alerts.mqtt.port == 1884
        assert settings.policy.mode == "enforce"
        assert settings.policy.cooldown_seconds == 7200.0

    def test_missing_config_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            demo_settings_data(cluster="sim", address="a", token="t", ca_file=tmp_path, store=tmp_path / "s.db",
                               config=tmp_path / "nope.toml", poll_interval_seconds=900)


class TestLiveView:
    def test_draws_in_place(self) -> None:
        out = io.StringIO()
        view = LiveView(out)
        frame = Frame(t=0, elapsed_days=30, days=30, metrics_url="http://127.0.0.1:1/metrics", growth_actions=3,
                      rows=[ViewRow("cosmos7-raw", 2**40, 2 * 2**40, 3600.0, "verified → 2.00 TiB (1h ago)")])
        view(frame)
        view(frame)
        text = out.getvalue()
        assert "cosmos7-raw" in text and "50%" in text and "day  30.0/30" in text
        assert "\x1b[" in text  # the second draw moves the cursor back up
