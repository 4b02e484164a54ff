"""Versioned migrations on both backends: applied at start, recorded, a newer schema refused,
each applied once when two processes open a new store at once."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest
from store_helpers import OpenStore

from quotapilot.daemon.store import db as sqlite_db
from quotapilot.daemon.store.backend import (
    Backend,
    Dialect,
    Migration,
    SchemaTooNew,
    latest_version,
    migrations,
    pending,
)
from quotapilot.daemon.store.db import Database

TABLES = {"observations", "observations_hourly", "actions", "outbox", "alert_state", "overrides", "reservations",
          "leases", "members", "schema_version"}


class TestMigrations:
    """A new store gets every version; reopening changes nothing; a newer store is refused."""

    def test_new_store_gets_every_version_once(self, open_store: OpenStore) -> None:
        backend = open_store()
        assert latest_version(backend.dialect) == backend.schema_version
        rows = backend.query("SELECT version, name FROM schema_version ORDER BY version")
        assert [(m.version, m.name) for m in migrations(backend.dialect)] == [(r[0], r[1]) for r in rows]
        again = open_store()
        assert latest_version(backend.dialect) == again.schema_version
        assert len(rows) == len(again.query("SELECT version FROM schema_version"))

    def test_every_table_exists(self, backend: Backend) -> None:
        for table in TABLES:
            assert backend.query(f"SELECT * FROM {table} WHERE 1 = 0") == []

    def test_store_from_a_newer_quotapilot_is_refused(self, open_store: OpenStore) -> None:
        backend = open_store()
        newer = latest_version(backend.dialect) + 1
        with backend.transaction() as tx:
            tx.execute("INSERT INTO schema_version VALUES (?, 'from_the_future', 0)", (newer,))
        with pytest.raises(SchemaTooNew, match=f"schema v{newer}, newer than this quotapilot"):
            open_store()

    def test_both_dialects_have_the_same_versions(self) -> None:
        assert [m.name for m in migrations("sqlite")] == [m.name for m in migrations("postgres")]


class TestOpenersAtOnce:
    def test_two_openers_of_a_new_sqlite_store_each_apply_every_version_once(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Guards `Database.migrate()` reading the version under the write lock: the daemon
        starting while an operator runs `quotapilot import-history` (which opens the file itself),
        or the first start after an upgrade. The version used to be read BEFORE `BEGIN IMMEDIATE`,
        so both openers decided to apply the same versions, and the second failed on DDL the
        first had committed ("table observations already exists") and refused to start.

        Each opener is held just after it read the version (a barrier around `pending`), where
        the other process can run. Read under the lock, the second opener waits for the lock
        instead, and the barrier times out. (PostgreSQL migrates under an advisory lock.)"""
        path = tmp_path / "state.db"
        barrier = threading.Barrier(2)

        def pending_then_yield(dialect: Dialect, current: int, where: str) -> list[Migration]:
            todo = pending(dialect, current, where)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=0.5)  # the other process reads the version meanwhile
            return todo

        monkeypatch.setattr(sqlite_db, "pending", pending_then_yield)
        errors: list[BaseException] = []
        opened: list[Database] = []

        def open_store() -> None:
            try:
                opened.append(Database(path))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for db in opened:
            db.close()
        assert not errors, f"an opener failed: {errors[0]!r}"
        reopened = Database(path)
        try:
            assert latest_version("sqlite") == reopened.schema_version
            assert len(reopened.query("SELECT version FROM schema_version")) == latest_version("sqlite")
        finally:
            reopened.close()

    def test_three_processes_starting_at_once_on_a_new_sqlite_store_all_open_it(self, tmp_path: Path) -> None:
        """Guards the same without forcing an interleaving — openers released together, as
        processes started together are — and `journal_mode=WAL` too: two connections switching a
        new file to WAL at once deadlock on its lock, and SQLite answered one "database is locked"
        at once, without waiting (busy_timeout does not cover it)."""
        for attempt in range(20):
            path = tmp_path / f"state-{attempt}.db"
            barrier = threading.Barrier(3)
            errors: list[BaseException] = []

            def open_store(path: Path = path, barrier: threading.Barrier = barrier,
                           errors: list[BaseException] = errors) -> None:
                barrier.wait()
                try:
                    Database(path).close()
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=open_store) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not errors, f"attempt {attempt}: an opener failed: {errors[0]!r}"
