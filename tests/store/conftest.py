"""The store suite runs against both backends: SQLite on disk and a real, throwaway PostgreSQL.

The PostgreSQL server is started once per test session (per xdist worker) by pytest-postgresql
from the installed binaries, on a free port, with its data in pytest's temporary directory —
never the machine's shared PostgreSQL service. Each test gets a database of its own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor
from store_helpers import NO_PG_CTL, PG_CTL, OpenStore, Outage

from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.postgres import PostgresDatabase

if PG_CTL is not None:
    os.environ.setdefault("QP_PG_CTL", PG_CTL)
# as root (PostgreSQL refuses to run so) the wrapper runs pg_ctl as the `postgres` user
_EXECUTABLE = str(Path(__file__).with_name("pg_ctl_as_postgres.sh")) if os.geteuid() == 0 else PG_CTL

postgresql_server = factories.postgresql_proc(executable=_EXECUTABLE, port=None)

BACKENDS = ["sqlite", "postgres"]


def url_of(proc: PostgreSQLExecutor, dbname: str) -> str:
    return f"postgresql://{proc.user}@{proc.host}:{proc.port}/{dbname}"


@pytest.fixture
def pg_url(postgresql_server: PostgreSQLExecutor) -> Iterator[str]:
    """The URL of a database of its own on the session's throwaway server, dropped afterwards."""
    proc = postgresql_server
    dbname = f"qp_{uuid.uuid4().hex[:12]}"
    with DatabaseJanitor(user=proc.user, host=proc.host, port=proc.port, dbname=dbname, password=proc.password):
        yield url_of(proc, dbname)


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """A factory of backends on ONE store (a new file / a new database per test); every backend
    it opened is closed at the end."""
    opened: list[Backend] = []
    if request.param == "sqlite":
        def open_sqlite() -> Backend:
            opened.append(Database(tmp_path / "state.db"))
            return opened[-1]

        yield open_sqlite
    else:
        if PG_CTL is None:
            pytest.skip(NO_PG_CTL)
        proc: PostgreSQLExecutor = request.getfixturevalue("postgresql_server")
        dbname = f"qp_{uuid.uuid4().hex[:12]}"
        with DatabaseJanitor(user=proc.user, host=proc.host, port=proc.port, dbname=dbname,
                             password=proc.password):
            def open_postgres() -> Backend:
                opened.append(PostgresDatabase(url_of(proc, dbname)))
                return opened[-1]

            try:
                yield open_postgres
            finally:
                for backend in opened:
                    backend.close()
                opened.clear()
    for backend in opened:
        backend.close()


@pytest.fixture
def backend(open_store: OpenStore) -> Backend:
    """One store, either backend (every test using it runs twice)."""
    return open_store()


@pytest.fixture
def database(postgresql_server: PostgreSQLExecutor) -> Iterator[tuple[str, Outage]]:
    """A throwaway database on the suite's server, and the `Outage` that makes the server refuse it."""
    proc = postgresql_server
    dbname = f"qp_{uuid.uuid4().hex[:12]}"
    with DatabaseJanitor(user=proc.user, host=proc.host, port=proc.port, dbname=dbname, password=proc.password):
        outage = Outage(proc, dbname)
        try:
            yield f"postgresql://{proc.user}@{proc.host}:{proc.port}/{dbname}", outage
        finally:
            outage.end()
