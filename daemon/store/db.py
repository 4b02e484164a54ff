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
    Migration,
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


_BUSY_TIMEOUT_SECONDS = 5.0
"""How long a statement waits for another connection's lock on the file before it fails."""


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
        # first: a second process opening a new file at once waits for the first (migrating it)
        # instead of failing with "database is locked"
        self._conn.execute(f"PRAGMA busy_timeout={round(_BUSY_TIMEOUT_SECONDS * 1000)}")
        self._use_wal()
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    def _use_wal(self) -> None:
        """`journal_mode=WAL`, waiting for another process that opens the same new file at once:
        two connections switching a file to WAL together deadlock on its lock, and SQLite answers
        one of them "database is locked" at once, without its busy handler — so retry here."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_SECONDS
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:  # any BUSY_*
                    raise
            time.sleep(0.01)

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
        file from a newer quotapilot (`SchemaTooNew`).

        Another process may open the same new file at once (the daemon starting while an operator
        runs `import-history`): the version is read again under the write lock (`BEGIN
        IMMEDIATE`) before each migration, so each is applied once whoever gets there first, and
        the other waits for the lock and finds it applied. The first read, outside the lock, only
        skips the lock when nothing is pending (a version never goes back)."""
        with self._lock:
            if not pending("sqlite", self.schema_version, str(self.path)):
                return
            while True:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    todo = pending("sqlite", self.schema_version, str(self.path))
                    if todo:
                        self._apply(todo[0])
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                if len(todo) <= 1:
                    return

    def _apply(self, migration: Migration) -> None:
        """Run one migration and record it, in the caller's transaction."""
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at REAL NOT NULL)")
        for statement in strip_sql_comments(migration.sql):
            self._conn.execute(statement)
        self._conn.execute("INSERT OR REPLACE INTO schema_version VALUES (?, ?, ?)",
                           (migration.version, migration.name, time.time()))
        self._conn.execute(f"PRAGMA user_version={migration.version}")

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
