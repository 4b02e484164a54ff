"""Shared by the store suite (which runs every test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import glob
import shutil
from collections.abc import Callable

from quotapilot.daemon.store.backend import Backend

OpenStore = Callable[[], Backend]
"""Opens another connection (another instance of the fleet) to the test's one store."""


def find_pg_ctl() -> str | None:
    """The PostgreSQL server's `pg_ctl`: on PATH, or the newest Debian/Ubuntu install."""
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return candidates[-1] if candidates else None


PG_CTL = find_pg_ctl()
NO_PG_CTL = "PostgreSQL server binaries (pg_ctl) not installed: .ci/run installs them"
