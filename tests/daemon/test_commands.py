"""`quotapilot check-config` and `quotapilot run` as a user runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from quotapilot.daemon.cli import main
from quotapilot.daemon.clock import SystemClock
from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.daemon.simulator.tls import make_certificates


def write_config(path: Path, address: str, ca_file: str, *, token: str = "secret-token-value",
                 interval: object = 60, port: int = 9187, extra: str = "") -> Path:
    path.write_text(f"""
[[clusters]]
name = "sim"
address = "{address}"
token = "{token}"
ca_file = "{ca_file}"

[poll]
interval_seconds = {interval}

[http]
listen = "127.0.0.1:{port}"

[store]
path = "{path.parent / 'state.db'}"

[daemon]
shutdown_timeout_seconds = 5
{extra}
""")
    return path


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    return str(make_certificates(tmp_path / "tls").ca_file)


class TestCheckConfig:
    """Exit 0 with a summary (secrets masked), or 2 naming the field and why."""

    def test_valid_config_summary(self, tmp_path: Path, ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
        config = write_config(tmp_path / "q.toml", "vms.example.org", ca_file)
        assert main(["check-config", "--config", str(config)]) == 0
        out = capsys.readouterr()
        assert "configuration valid" in out.out
        assert "vms.example.org" in out.out and f"ca_file {ca_file}" in out.out
        assert "secret-token-value" not in out.out + out.err

    def test_json_is_one_object(self, tmp_path: Path, ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
        config = write_config(tmp_path / "q.toml", "vms.example.org", ca_file)
        assert main(["check-config", "--config", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["valid"] is True
        assert report["summary"]["poll"]["interval_seconds"] == 60
        assert "secret-token-value" not in json.dumps(report)

    @pytest.mark.parametrize(("interval", "field", "reason"), [
        (-5, "poll.interval_seconds", "greater than or equal to 1"),
        ('"soon"', "poll.interval_seconds", "not a duration"),
    ])
    def test_bad_value_exits_2_naming_the_field(self, tmp_path: Path, ca_file: str, interval: object,
                                                field: str, reason: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        config = write_config(tmp_path / "q.toml", "vms.example.org", ca_file, interval=interval)
        assert main(["check-config", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert field in err and reason in err
        assert main(["check-config", "--config", str(config), "--json"]) == 2
        report = json.loads(capsys.readouterr().out)
        assert (False, field) == (report["valid"], report["field"])

    def test_cross_field_rule(self, tmp_path: Path, ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
        config = write_config(tmp_path / "q.toml", "vms.example.org", ca_file,
                              extra="[policy]\ngrow_at = 0.95\n")
        assert main(["check-config", "--config", str(config)]) == 2
        assert "policy.grow_at: must be < policy.critical_at" in capsys.readouterr().err

    def test_unusable_ca_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        not_pem = tmp_path / "ca.pem"
        not_pem.write_text("hello\n")
        config = write_config(tmp_path / "q.toml", "vms.example.org", str(not_pem))
        assert main(["check-config", "--config", str(config)]) == 2  # every poll would fail its TLS check
        assert "clusters.0.ca_file: not a PEM CA bundle" in capsys.readouterr().err

    def test_empty_token_file(self, tmp_path: Path, ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
        (tmp_path / "token").write_text("\n")
        config = tmp_path / "q.toml"
        config.write_text(f'[[clusters]]\nname = "c"\naddress = "vms"\ntoken_file = "{tmp_path / "token"}"\n'
                          f'ca_file = "{ca_file}"\n')
        assert main(["check-config", "--config", str(config)]) == 2
        assert "clusters.0.token_file: is empty" in capsys.readouterr().err

    def test_no_cluster_is_an_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = tmp_path / "q.toml"
        config.write_text("[poll]\ninterval_seconds = 30\n")
        assert main(["check-config", "--config", str(config)]) == 2
        assert "clusters:" in capsys.readouterr().err

    def test_insecure_tls_is_loud(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        config = tmp_path / "q.toml"
        config.write_text('[[clusters]]\nname = "c"\naddress = "vms"\ntoken = "t"\n'
                          "insecure_skip_tls_verify = true\n")
        assert main(["check-config", "--config", str(config)]) == 0
        out = capsys.readouterr()
        assert "NOT VERIFIED" in out.out
        assert "WARNING: clusters.0.insecure_skip_tls_verify" in out.err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """`quotapilot run` configures structlog for the process; put the test's configuration back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def running_daemon(sim: SimulatorServer, tmp_path: Path,
                         **env: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """`python -m quotapilot.daemon run` against `sim`, once its /healthz says 200."""
    port = free_port()
    config = write_config(tmp_path / "q.toml", sim.address, str(sim.ca_file), token=sim.token, port=port,
                          interval=1)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quotapilot.daemon", "run", "--config", str(config),
        env={**os.environ, "QUOTAPILOT_LOG__FORMAT": "json", **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        status = 0
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline and status != 200:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        status = response.status
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)  # the subprocess is starting (real time)
        assert status == 200
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class TestRun:
    """`quotapilot run` serves /healthz, exits 0 on SIGTERM within the bound; bad config → 2."""

    async def test_sigterm_exits_0_within_the_bound(self, tmp_path: Path) -> None:
        async with SimulatorServer("cosmos7", clock=SystemClock(), seed=0) as sim, \
                running_daemon(sim, tmp_path) as (proc, port):
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "quotapilot_target_used_bytes" in await response.text()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert time.monotonic() - started < 5
            assert proc.stderr is not None
            events = [json.loads(line)["event"] for line in (await proc.stderr.read()).decode().splitlines()
                      if line.startswith("{")]
            assert "supervisor.stopping" in events and "store.flushed" in events

    async def test_sighup_is_said_and_the_daemon_keeps_running(self, tmp_path: Path) -> None:
        """SIGHUP (an operator's reload) killed the daemon at once, 129, with no drain: queued
        alerts and the store's last writes were left (SRE walkthrough). It reloads nothing."""
        async with SimulatorServer("cosmos7", clock=SystemClock(), seed=0) as sim, \
                running_daemon(sim, tmp_path) as (proc, port):
            proc.send_signal(signal.SIGHUP)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(proc.wait(), 1)  # real time: it must still be running
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert proc.stderr is not None
            events = [json.loads(line)["event"] for line in (await proc.stderr.read()).decode().splitlines()
                      if line.startswith("{")]
            assert "daemon.reload_unsupported" in events and "store.flushed" in events

    async def test_a_hung_vms_request_does_not_hold_up_the_exit(self, tmp_path: Path) -> None:
        async with SimulatorServer("cosmos7", clock=SystemClock(), seed=0) as sim, \
                running_daemon(sim, tmp_path, QUOTAPILOT_DAEMON__SHUTDOWN_TIMEOUT_SECONDS="1") as (proc, _):
            hang = sim.faults.add("timeout", seconds=60, path="/clusters/")
            for _ in range(200):
                if hang.fired:
                    break
                await asyncio.sleep(0.05)  # the next poll (1 s interval, real time) runs into it
            assert hang.fired == 1
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
            assert time.monotonic() - started < 3  # grace 1 s, then cancel; the pool thread is left

    @pytest.mark.usefixtures("restore_logging")
    def test_busy_port_exits_1(self, tmp_path: Path, ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            config = write_config(tmp_path / "q.toml", "127.0.0.1:1", ca_file, port=busy.getsockname()[1],
                                  extra="[vast]\nmax_retries = 0\n")
            assert main(["run", "--config", str(config)]) == 1
        assert "daemon.failed" in capsys.readouterr().err

    def test_bad_config_exits_2(self, tmp_path: Path, ca_file: str, capsys: pytest.CaptureFixture[str]) -> None:
        config = write_config(tmp_path / "q.toml", "vms.example.org", ca_file, interval=0)
        assert main(["run", "--config", str(config)]) == 2
        assert "poll.interval_seconds" in capsys.readouterr().err


class TestDaemonUrl:
    """Guards `--url` of the commands that ask a running daemon: `status --url "http://[::1"`
    was a ValueError traceback from urllib (the client caught only URLError/OSError), a
    non-numeric port an InvalidURL traceback, a URL without a scheme or host a "cannot reach"
    exit 1. Each is bad usage now: one line naming `--url`, exit 2, and the daemon is not asked."""

    @pytest.mark.parametrize("url", ["http://[::1", "http://host:abc", "http://127.0.0.1:99999",
                                     "localhost:9187", "http://", "ftp://127.0.0.1:9187"])
    @pytest.mark.parametrize("command", [["status"], ["capacity"], ["preflight", "raw", "1TB"], ["resume", "raw"]])
    def test_a_url_no_daemon_can_have_is_bad_usage(self, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], url: str,
                                                   command: list[str]) -> None:
        from quotapilot.daemon.commands import client

        def no_daemon(*args: object, **kwargs: object) -> object:
            raise AssertionError(f"the daemon was asked at {url!r}")

        monkeypatch.setattr(client, "Client", no_daemon)
        assert main([*command, "--url", url, "--token", "t"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("quotapilot: --url: ") and len(err.strip().splitlines()) == 1


class TestStatusOfAnInodeGrowth:
    """An inode limit is a count of files: `status` showed a verified inode growth to 2,000,000
    files as "verified → 1.91 MiB" (every last action's limit formatted as bytes)."""

    def test_an_inode_growth_is_shown_in_files(self) -> None:
        from quotapilot.daemon.commands.client import render_status

        target = {
            "cluster": "c1", "name": "inodes-only", "path": "/inodes-only", "used_bytes": 5 * 2**30,
            "hard_limit_bytes": None, "utilization_ratio": None, "runway_seconds": {}, "mode": "enforce",
            "paused": False, "last_action": {"status": "verified", "at": 1_767_225_600.0, "reason": "grown",
                                             "dimension": "inodes", "old_hard": 1_600_000, "new_hard": 2_000_000}}
        bytes_target = {**target, "name": "raw", "path": "/raw",
                        "last_action": {**target["last_action"], "dimension": "bytes", "new_hard": 3 * 2**40}}
        text = render_status([target, bytes_target], kill_switch=False)
        assert "verified → 2,000,000 files" in text and "verified → 3 TiB" in text, text
        assert "MiB" not in text
