"""Shared helpers of the deploy tests: where deploy/ is, and the external tools they run.

The tools (systemd-analyze, promtool, hadolint) are installed by `.ci/run` and the test extra.
Locally a missing tool skips its tests; under CI (`CI=true`) it fails them, so a green CI run
always means the real tool checked the real file.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def missing(what: str) -> None:
    """A tool the test needs is not installed: skip locally, fail under CI (`CI=true`)."""
    message = f"{what} is not installed (.ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The path of `name` (on PATH or beside this interpreter), or skip (fail under CI)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        missing(name)
        raise AssertionError("unreachable")
    return found
