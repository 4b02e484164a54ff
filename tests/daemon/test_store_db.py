"""The SQLite database: migrations, versioning, transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from quotapilot.daemon.store.db import MIGRATIONS, Database


class TestMigrations:
    def test_new_file_gets_latest_schema_and_reopens_unchanged(self, tmp_path: Path) -> None:
        db = Database(tmp_path / "s.db")
        assert len(MIGRATIONS) == db.schema_version
        tables = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"observations", "observations_hourly", "actions", "outbox", "overrides", "reservations"} <= tables
        db.close()
        assert len(MIGRATIONS) == Database(tmp_path / "s.db").schema_version

    def test_newer_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "s.db"
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
        conn.close()
        with pytest.raises(RuntimeError, match="newer"):
            Database(path)

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
