"""The daemon works under the unit's system-call filter and MemoryDenyWriteExecute=.

`systemd-analyze security` scores the unit; this checks the hardening does not break what it
hardens: `quotapilot demo` (the real daemon, the simulator, vastpy over TLS, SQLite, the forecaster
and alert stages) runs a simulated day under the unit's own `SystemCallFilter=` lines applied with
libseccomp, plus the kernel's MDWE. A forbidden system call fails with EPERM there exactly as it
would under systemd, and the demo would crash or report nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, missing

UNIT = DEPLOY / "systemd" / "quotapilot.service"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-seccomp installs


def seccomp_python() -> str:
    if not (Path(SYSTEM_PYTHON).exists()
            and subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode == 0):
        missing("Debian's python3-seccomp")
    return SYSTEM_PYTHON


def sandboxed(*argv: str) -> subprocess.CompletedProcess[str]:
    wrapper = Path(__file__).with_name("sandbox_exec.py")
    return subprocess.run([seccomp_python(), str(wrapper), str(UNIT), *argv],
                          capture_output=True, text=True, timeout=240)


class TestUnderTheUnitsSyscallFilter:
    def test_the_filter_is_enforced(self, systemd_analyze: str) -> None:
        result = sandboxed(sys.executable, "-c", "import os; os.chroot('/')")
        assert result.returncode != 0
        assert "Operation not permitted" in result.stderr

    def test_writable_executable_memory_is_refused(self, systemd_analyze: str) -> None:
        result = sandboxed(sys.executable, "-c",
                           "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)")
        assert result.returncode != 0

    @pytest.mark.slow
    def test_demo_runs_a_simulated_day(self, systemd_analyze: str) -> None:
        quotapilot = str(Path(sys.executable).with_name("quotapilot"))
        result = sandboxed(quotapilot, "demo", "--days", "1", "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["days"] >= 1
        assert "Traceback" not in result.stderr
