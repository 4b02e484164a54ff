"""Fixtures of the deploy tests: the external tools, found once per session."""

from __future__ import annotations

import pytest
from deploy_helpers import require_tool


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool")


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    return require_tool("systemd-analyze")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return require_tool("hadolint")
