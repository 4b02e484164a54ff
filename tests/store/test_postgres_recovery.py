"""After PostgreSQL comes back, the store works again within seconds, however long it was down;
a server that answers but cannot take a write now (read-only) is an outage too, a bug is not.

psycopg_pool re-adds a lost connection with exponential backoff (1, 2, 4, 8 … s) for as long as
its `reconnect_timeout` (5 minutes by default): after a down time of T, its next attempt could
come up to about T after the server is back, and meanwhile no instance of a fleet could renew a
lease. The backoff is psycopg_pool's own real time; this test scales its first delay down
(a class constant) so that the schedule a long outage builds up fits in seconds."""

from __future__ import annotations

import time

import psycopg
import psycopg_pool.base
import pytest
from fleet_processes import RestartableServer
from pytest_postgresql.executors import PostgreSQLExecutor

from quotapilot.daemon.store.backend import StoreUnavailable
from quotapilot.daemon.store.postgres import PostgresDatabase

SCALE = 0.05
"""psycopg_pool's first reconnect delay in this test (1 s in real use): its attempts then come at
0.05, 0.15, 0.35, 0.75, 1.55, 3.15, 6.35, 12.75 s after a failure."""
DOWN_SECONDS = 8.0
"""The outage: 160 s at the real scale. On psycopg_pool's defaults its next attempt after the
restart came at 12.75 s, 4.6 s after the server was back (90 s at the real scale)."""


def works(db: PostgresDatabase) -> bool:
    try:
        db.query("SELECT 1")
        return True
    except StoreUnavailable:
        return False


def test_the_store_works_again_soon_after_the_server_is_back(
        postgresql_server: PostgreSQLExecutor, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psycopg_pool.base.AttemptWithBackoff, "INITIAL_DELAY", SCALE)
    db = PostgresDatabase(pg_url, connect_timeout_seconds=0.3,
                          reconnect_timeout_seconds=10 * SCALE)  # its real default, scaled alike
    server = RestartableServer(postgresql_server)
    try:
        assert works(db)
        server.stop()
        try:
            down_until = time.monotonic() + DOWN_SECONDS
            while time.monotonic() < down_until:  # a store call every few tenths, as lease renewals do
                assert not works(db)
                time.sleep(0.1)
        finally:
            server.start()
        back = time.monotonic()
        while not works(db):
            assert time.monotonic() - back < 30, "the store never came back"
            time.sleep(0.05)
        waited = time.monotonic() - back
    finally:
        db.close()
    # at most its reconnect timeout plus a store call's pool wait (10 s + 5 s at the real scale)
    assert waited < 40 * SCALE, f"the store came back {waited:.2f} s after the server"


def test_a_read_only_server_is_an_outage_and_a_bad_query_is_not(pg_url: str) -> None:
    """Guards `_connection`'s error mapping: SQLSTATE 25006 (a hot standby, a demoted primary
    reached during a failover) is a psycopg `InternalError`, not an `OperationalError`; unmapped,
    it escaped every `except StoreError` and killed the lease loop. A programming error (an
    unknown table) must still surface as what it is."""
    db = PostgresDatabase(pg_url, max_connections=1)
    try:
        with db.transaction() as conn:
            conn.execute("SET default_transaction_read_only = on")
        with pytest.raises(StoreUnavailable, match="read-only"), db.transaction() as conn:
            conn.execute("INSERT INTO members (holder, instance, first_seen, last_seen) VALUES ('h', 'i', 0, 0)")
        outage = db.outage()
        assert outage is not None and "read-only" in outage  # what /healthz says
        with db.transaction() as conn:
            conn.execute("SET default_transaction_read_only = off")
        assert db.outage() is None
        with pytest.raises(psycopg.errors.UndefinedTable):
            db.query("SELECT * FROM no_such_table")
    finally:
        db.close()
