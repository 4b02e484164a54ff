"""`quotapilot simulator`: the first stdout line is JSON, then it serves until SIGTERM and exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import vastpy


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "quotapilot.daemon", "simulator", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class TestCommand:
    def test_json_line_then_serves_until_sigterm(self, tmp_path: Path) -> None:
        proc = start("--json", "--speed", "3600", "--seed", "4", "--quotas", "10", "--state-dir", str(tmp_path))
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            client = vastpy.VASTClient(address=info["address"], token=info["token"], cert_file=info["ca_file"])
            quotas = client.quotas.get()
            basic = vastpy.VASTClient(address=info["address"], user=info["user"], password=info["password"],
                                      cert_file=info["ca_file"])
            clusters = basic.clusters.get()
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(15)
        assert set(info) == {"address", "ca_file", "token", "user", "password", "scenario", "speed", "start"}
        assert (info["scenario"], info["speed"], info["ca_file"]) == ("cosmos7", 3600.0, str(tmp_path / "ca.pem"))
        assert (len(quotas), len(clusters), rc) == (13, 1, 0)

    def test_bad_scenario_exits_2_naming_it(self) -> None:
        proc = start("--scenario", "nowhere.toml")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert "scenario" in err

    def test_start_pins_the_simulated_start(self, tmp_path: Path) -> None:
        proc = start("--json", "--start", "2026-03-01T12:00:00Z", "--state-dir", str(tmp_path))
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            client = vastpy.VASTClient(address=info["address"], token=info["token"], cert_file=info["ca_file"])
            uptime = client.clusters.get()[0]["uptime"]
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(15)
        assert (info["start"], rc) == ("2026-03-01T12:00:00+00:00", 0)
        assert uptime.startswith("0:00:")  # simulated time runs from the pinned start, not from 1970

    def test_bad_start_exits_2_naming_the_flag(self) -> None:
        proc = start("--start", "yesterday")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert "--start" in err and "ISO 8601" in err
