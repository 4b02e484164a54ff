"""The SQLite backend: one file, WAL, versioned migrations, one connection guarded by a lock.

The embedded default for one host. It implements `backend.Backend`, so every repository
(`observations.py`, `outbox.py`, `actions.py`, `overrides.py`, `reservations.py`, `leases.py`)
runs on it exactly as on PostgreSQL; this module owns the connection, the transactions and the
migrations (`migrations/sqlite/NNNN_*.sql`). A threading lock serialises access to the single
connection, so the blocking methods may be called from `asyncio.to_thread` workers.

Durability: `journal_mode=WAL` + `synchronous=FULL`, so a committed transaction survives SIGKILL
and power loss; writes are batched per poll, so the fsync cost is once per cycle.

Versions: the `schema_version` table records every applied migration; `PRAGMA user_version`
mirrors the latest (files written before the table existed have only that, and are read so).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from quotapilot.daemon.store.backend import (
    Dialect,
    Params,
    Result,
    Row,
    latest_version,
    pending,
    strip_sql_comments,
)


class _SqliteTransaction:
    """`backend.Transaction` over the one connection (the lock is held by `Database`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> Result:
        return self._conn.execute(sql, tuple(params))

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        before = self._conn.total_changes
        self._conn.executemany(sql, (tuple(p) for p in params))
        return self._conn.total_changes - before


class Database:
    """One SQLite file. Use `transaction()` for writes; `query()` for reads."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self.migrate()

    def describe(self) -> str:
        return str(self.path)

    def outage(self) -> str | None:
        """Never: a local file has no server to lose (its errors fail the stage that met them)."""
        return None

    @property
    def schema_version(self) -> int:
        with self._lock:
            user_version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
            has_table = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
            if not has_table:
                return user_version
            recorded = self._conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            return max(user_version, int(recorded))

    def migrate(self) -> None:
        """Apply every migration newer than the file's version, each in one transaction; refuse a
        file from a newer quotapilot (`SchemaTooNew`)."""
        with self._lock:
            todo = pending("sqlite", self.schema_version, str(self.path))
            for migration in todo:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                        " name TEXT NOT NULL, applied_at REAL NOT NULL)")
                    for statement in strip_sql_comments(migration.sql):
                        self._conn.execute(statement)
                    self._conn.execute("INSERT OR REPLACE INTO schema_version VALUES (?, ?, ?)",
                                       (migration.version, migration.name, time.time()))
                    self._conn.execute(f"PRAGMA user_version={migration.version}")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTransaction]:
        """A write transaction: commits on success, rolls back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        with self._lock:
            rows: list[Row] = self._conn.execute(sql, tuple(params)).fetchall()
            return rows

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (on shutdown)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


LATEST_VERSION = latest_version("sqlite")
"""The schema version this code writes."""
