"""The SQLite backend specifically: WAL, `user_version`, upgrading a file written before the
`schema_version` table (the backend-neutral suite is in tests/store)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from quotapilot.daemon.store.backend import SchemaTooNew, migrations
from quotapilot.daemon.store.db import LATEST_VERSION, Database


class TestMigrations:
    def test_new_file_gets_latest_schema_and_reopens_unchanged(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "s.db")
        assert db.schema_version == LATEST_VERSION
        tables = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"observations", "observations_hourly", "actions", "outbox", "overrides", "reservations"} <= tables
        db.close()
        assert Database(tmp_path / "s.db").schema_version == LATEST_VERSION

    def test_newer_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "s.db"
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version={LATEST_VERSION + 1}")
        conn.close()
        with pytest.raises(SchemaTooNew, match="newer"):
            Database(path)

    def test_file_of_version_1_is_upgraded_keeping_its_rows(self, tmp_path: Path) -> None:
        """A 0.1 file: v1 tables, `PRAGMA user_version = 1`, no `schema_version` table."""
        path = tmp_path / "old.db"
        conn = sqlite3.connect(path)
        conn.executescript(migrations("sqlite")[0].sql)
        conn.execute("INSERT INTO overrides (cluster, target, created_at) VALUES ('c', 'raw', 1)")
        conn.execute("PRAGMA user_version=1")
        conn.commit()
        conn.close()
        db = Database(path)
        assert db.schema_version == LATEST_VERSION
        # v1 predates the table; the runner records what it applied
        assert list(range(2, LATEST_VERSION + 1)) == [r[0] for r in db.query("SELECT version FROM schema_version")]
        assert [(r["cluster"], r["target"]) for r in db.query("SELECT * FROM overrides")] == [("c", "raw")]
        assert db.query("SELECT epoch FROM actions") == []  # the v2 column exists

    def test_wal_mode(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "s.db")
        assert db.query("PRAGMA journal_mode")[0][0] == "wal"


class TestTransactions:
    def test_error_rolls_back(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "s.db")
        with pytest.raises(ZeroDivisionError), db.transaction() as conn:
            conn.execute("INSERT INTO overrides (cluster, target, created_at) VALUES ('c', 't', 0)")
            raise ZeroDivisionError
        assert db.query("SELECT count(*) FROM overrides")[0][0] == 0
