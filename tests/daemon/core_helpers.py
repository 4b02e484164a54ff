"""Helpers for the daemon-core tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.simulator.scenario import Scenario, parse_scenario


class InstantClock(VirtualClock):
    """A virtual clock whose `sleep()` returns at once, moving time forward: for code under test
    that sleeps inline (retry backoff) while the test drives it directly. Records every sleep."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        super().__init__(start)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds > 0:
            self.advance(seconds)
        await asyncio.sleep(0)


SettingsFactory = Callable[..., Settings]


TWO_TENANTS: Scenario = parse_scenario(tomllib.loads("""
[cluster]
name = "shared-vast"

[[views]]
path = "/default/scratch"
quota_name = "scratch"
quota = { hard_limit = "20TB" }
initial = { used = "14TB" }
[views.ingest]
bytes_per_day = "0.5TB"

[[views]]
path = "/acme/scratch"
quota_name = "scratch"
tenant = "acme"
quota = { hard_limit = "20TB" }
initial = { used = "14TB" }
[views.ingest]
bytes_per_day = "5TB"
"""), "two-tenants")
"""One VAST cluster that two tenants share, each with a quota named "scratch" at 70 % of its
20 TB hard limit: the default tenant's (id 1) filling slowly, tenant acme's (id 2) fast."""
