"""Shared by the store suite (which runs every test on SQLite and on PostgreSQL)."""

from __future__ import annotations

import glob
import shutil
from collections.abc import Callable

import psycopg
from pytest_postgresql.executors import PostgreSQLExecutor

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.runtime.leadership import LeaseLeadership
from quotapilot.daemon.stages.alerting import AlertingStage
from quotapilot.daemon.store.actions import Fence
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.leases import LeaseStore

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


def leases(daemon: Daemon) -> LeaseLeadership:
    """A fleet instance's lease loop."""
    assert isinstance(daemon.leadership, LeaseLeadership)
    return daemon.leadership


def alerting(daemon: Daemon) -> AlertingStage:
    return next(s for s in daemon.stages if isinstance(s, AlertingStage))


class FailsToAcquire(LeaseStore):
    """A lease store whose acquire raises an error that is no `StoreError` (a bug, a driver error
    not mapped), for every cluster: the lease loop keeps running, its rounds keep failing."""

    def acquire(self, cluster: str, holder: str, *, now: float, ttl_seconds: float) -> Fence | None:
        raise RuntimeError("not a store error")


class Outage:
    """Makes the real server refuse one database, and accept it again."""

    def __init__(self, proc: PostgreSQLExecutor, dbname: str) -> None:
        self.admin = f"postgresql://{proc.user}@{proc.host}:{proc.port}/postgres"
        self.dbname = dbname

    def begin(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.dbname,))

    def end(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS true')
