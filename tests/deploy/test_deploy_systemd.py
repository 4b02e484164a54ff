"""deploy/systemd/quotapilot.service: verified by systemd itself, hardened, consistent with the
daemon's own settings (paths, shutdown bound, credentials); and its drop-in example for
filesystem tiers that grow (lvextend), which the shipped unit cannot run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY

from quotapilot.daemon.settings import DaemonSettings, StoreSettings
from quotapilot.daemon.units import parse_duration

UNIT = DEPLOY / "systemd" / "quotapilot.service"
GROWTH_DROP_IN = DEPLOY / "systemd" / "quotapilot.service.d" / "filesystem-growth.conf.example"
MAX_EXPOSURE = 2.5


def directives(section: str, path: Path = UNIT) -> dict[str, list[str]]:
    """Every `Key=value` of one section (repeated keys keep every value)."""
    found: dict[str, list[str]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def unit_with_real_executable(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart names an executable that exists here, so `verify`
    judges the unit and not whether quotapilot is installed in /opt on this machine."""
    fake = tmp_path / "quotapilot"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace("/opt/quotapilot/bin/quotapilot", str(fake)))
    return copy


def unit_with_growth_drop_in(tmp_path: Path) -> Path:
    """The unit as above, with the growth drop-in installed beside it as systemd finds it
    (`<unit>.d/*.conf`, read by `verify` and `security --offline` from the unit's directory)."""
    unit = unit_with_real_executable(tmp_path)
    drop_ins = tmp_path / f"{UNIT.name}.d"
    drop_ins.mkdir()
    (drop_ins / GROWTH_DROP_IN.name.removesuffix(".example")).write_text(GROWTH_DROP_IN.read_text())
    return unit


class TestSystemdAnalyze:
    def test_verify_is_clean(self, systemd_analyze: str, tmp_path: Path) -> None:
        unit = unit_with_real_executable(tmp_path)
        result = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert (result.returncode, (result.stdout + result.stderr).strip()) == (0, "")

    def test_security_exposure_is_low(self, systemd_analyze: str) -> None:
        result = subprocess.run([systemd_analyze, "security", "--offline=yes", str(UNIT)],
                                capture_output=True, text=True, timeout=60)
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        assert match is not None, result.stdout + result.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


class TestUnitContract:
    """What the daemon relies on, and what the README tells the operator."""

    def test_notify_with_watchdog(self) -> None:
        service = directives("Service")
        assert service["Type"] == ["notify"]
        assert service["NotifyAccess"] == ["main"]
        assert parse_duration(service["WatchdogSec"][0].replace("min", "m")) >= 60

    def test_stop_timeout_covers_the_daemons_shutdown_bound(self) -> None:
        stop = parse_duration(directives("Service")["TimeoutStopSec"][0])
        assert stop >= DaemonSettings().shutdown_timeout_seconds + 15

    def test_state_directory_holds_the_default_store(self) -> None:
        service = directives("Service")
        assert service["StateDirectory"] == ["quotapilot"]
        assert Path("/var/lib/quotapilot") == StoreSettings().path.parent

    def test_runs_the_daemon_with_the_configuration_directory(self) -> None:
        service = directives("Service")
        assert service["ConfigurationDirectory"] == ["quotapilot"]
        assert service["ExecStart"][0].split()[1:] == ["run", "--config", "/etc/quotapilot/quotapilot.toml"]

    def test_vms_token_is_a_credential_the_example_config_reads(self) -> None:
        credentials = [v.split(":", 1)[0] for v in directives("Service")["LoadCredential"]]
        assert "vms.token" in credentials
        example = (DEPLOY / "config" / "quotapilot.toml").read_text()
        assert 'token_file = "${CREDENTIALS_DIRECTORY}/vms.token"' in example

    def test_restarts_do_not_hammer_vms(self) -> None:
        unit, service = directives("Unit"), directives("Service")
        assert service["Restart"] == ["on-failure"]
        assert parse_duration(service["RestartSec"][0]) >= 10
        # a bad config (exit 2) is not retried at all
        assert service["RestartPreventExitStatus"] == ["2"]
        interval = parse_duration(unit["StartLimitIntervalSec"][0].replace("min", "m"))
        assert int(unit["StartLimitBurst"][0]) * parse_duration(service["RestartSec"][0]) < interval

    @pytest.mark.parametrize(
        ("key", "value"),
        [("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
         ("NoNewPrivileges", "yes"), ("CapabilityBoundingSet", ""), ("PrivateDevices", "yes"),
         ("PrivateUsers", "yes"),
         ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"), ("MemoryDenyWriteExecute", "yes")],
    )
    def test_hardening(self, key: str, value: str) -> None:
        assert value in directives("Service")[key]
        assert "@system-service" in directives("Service")["SystemCallFilter"]


class TestFilesystemGrowthDropIn:
    """A filesystem tier's growth `command` (README "Filesystem targets": `lvextend ...
    /dev/vg/hot`, enforce mode) cannot run under the shipped unit: a transient user with no
    capabilities, in a user namespace, with a private /dev. The unit stays that way; a drop-in
    example grants what lvextend needs, and systemd accepts the unit with it."""

    def test_the_unit_points_to_the_drop_in(self) -> None:
        assert GROWTH_DROP_IN.is_file()
        assert GROWTH_DROP_IN.name in UNIT.read_text()

    def test_verify_is_clean_with_the_drop_in(self, systemd_analyze: str, tmp_path: Path) -> None:
        unit = unit_with_growth_drop_in(tmp_path)
        result = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert (result.returncode, (result.stdout + result.stderr).strip()) == (0, "")

    def test_the_drop_in_is_applied_and_exposure_stays_bounded(self, systemd_analyze: str,
                                                               tmp_path: Path) -> None:
        """`security` reads the drop-in (the service now runs as root with CAP_SYS_ADMIN), and the
        rest of the sandbox keeps the exposure within the same bound as the shipped unit."""
        unit = unit_with_growth_drop_in(tmp_path)
        result = subprocess.run([systemd_analyze, "security", "--offline=yes", str(unit)],
                                capture_output=True, text=True, timeout=60)
        assert "Service runs as root user" in result.stdout, result.stdout + result.stderr
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        assert match is not None, result.stdout + result.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout

    def test_grants_what_lvextend_needs_and_no_more(self) -> None:
        service = directives("Service", GROWTH_DROP_IN)
        assert service["PrivateDevices"] == ["no"]
        assert {"/dev/mapper/control rw", "block-device-mapper rw"} <= set(service["DeviceAllow"])
        assert service["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN CAP_SYS_RESOURCE CAP_IPC_LOCK"]
        assert (service["DynamicUser"], service["User"]) == (["no"], ["root"])
        assert service["PrivateUsers"] == ["no"]
        # the sandbox otherwise stays: no set-uid escape, the device policy stays closed
        for kept in ("NoNewPrivileges", "DevicePolicy", "ProtectSystem", "SystemCallFilter", "AmbientCapabilities"):
            assert kept not in service, kept
