"""The SQLite database: one file, WAL, a versioned schema, one connection guarded by a lock.

Every table quotapilot keeps lives here. Repositories (`observations.py`, `outbox.py`,
`actions.py`, `overrides.py`, `reservations.py`) own the queries of their tables; this module owns
the connection, the transactions and the migrations. Callers in asyncio code run the blocking
methods with `asyncio.to_thread`; a threading lock serialises access to the single connection.

Durability: `journal_mode=WAL` + `synchronous=FULL`, so a committed transaction survives SIGKILL
and power loss; writes are batched per poll, so the fsync cost is once per cycle.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Append-only: a released schema never changes; a new version is a new entry.
MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE observations (          -- every validated poll sample (raw tier)
        cluster TEXT NOT NULL,
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,              -- 'quota' | 'pool'
        t REAL NOT NULL,                 -- epoch seconds
        used_bytes INTEGER NOT NULL,
        hard_limit_bytes INTEGER,
        soft_limit_bytes INTEGER,
        used_inodes INTEGER,
        hard_limit_inodes INTEGER,
        soft_limit_inodes INTEGER,
        state TEXT NOT NULL,
        quota_id INTEGER,
        PRIMARY KEY (cluster, target, t)
    ) WITHOUT ROWID;
    CREATE INDEX observations_by_t ON observations (t);   -- retention pruning without a full scan
    CREATE TABLE observations_hourly (   -- downsampled long-term tier: last sample of each hour
        cluster TEXT NOT NULL,
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        hour REAL NOT NULL,              -- epoch seconds, start of the hour
        t REAL NOT NULL,
        used_bytes INTEGER NOT NULL,
        hard_limit_bytes INTEGER,
        used_inodes INTEGER,
        hard_limit_inodes INTEGER,
        PRIMARY KEY (cluster, target, hour)
    ) WITHOUT ROWID;
    CREATE INDEX observations_hourly_by_t ON observations_hourly (t);
    CREATE TABLE actions (               -- audit trail of growth actions, write-ahead
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        cluster TEXT NOT NULL,
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        quota_id INTEGER,
        dimension TEXT NOT NULL,         -- 'bytes' | 'inodes'
        mode TEXT NOT NULL,              -- 'enforce' | 'observe'
        status TEXT NOT NULL,            -- intent | patched | verified | failed | replanned | would_grow | ...
        reason TEXT NOT NULL,
        old_hard INTEGER,
        old_soft INTEGER,
        new_hard INTEGER,
        new_soft INTEGER,
        detail TEXT NOT NULL DEFAULT '{}',   -- JSON: the numbers behind the decision
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX actions_target ON actions (cluster, target, created_at);
    CREATE INDEX actions_status ON actions (status);
    CREATE TABLE outbox (                -- every notification, before any send
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        alert_id TEXT NOT NULL,          -- cluster/target/kind
        dedup_key TEXT NOT NULL,         -- stable per (alert id, episode, status)
        status TEXT NOT NULL,            -- firing | resolved
        payload TEXT NOT NULL,           -- JSON notification (sink-independent)
        created_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL,
        superseded_at REAL,
        dropped_at REAL,
        last_error TEXT,
        UNIQUE (sink, dedup_key)
    );
    CREATE INDEX outbox_pending ON outbox (sink, delivered_at, superseded_at, dropped_at, next_attempt_at);
    CREATE INDEX outbox_alert ON outbox (sink, alert_id, id);   -- newest row per alert (supersede)
    CREATE TABLE alert_state (           -- the rules' state machine, so restarts neither re-fire nor forget
        alert_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,             -- JSON
        updated_at REAL NOT NULL
    );
    CREATE TABLE overrides (             -- manual pause per target; '*' is the global kill switch
        cluster TEXT NOT NULL,
        target TEXT NOT NULL,
        paused_until REAL,               -- NULL: until resumed
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (cluster, target)
    );
    CREATE TABLE reservations (
        id TEXT PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        cluster TEXT NOT NULL,
        target TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        inodes INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,            -- granted | refused | released | expired
        response_status INTEGER NOT NULL,
        response TEXT NOT NULL,          -- JSON answer, replayed for the same idempotency key
        request TEXT NOT NULL DEFAULT '{}',  -- JSON of the request, so a reused key with other values is refused
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        released_at REAL
    );
    CREATE INDEX reservations_active ON reservations (cluster, target, status, expires_at);
    """,
)


class Database:
    """One SQLite file. Use `transaction()` for writes; `query()` for reads."""

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

    @property
    def schema_version(self) -> int:
        with self._lock:
            version: int = self._conn.execute("PRAGMA user_version").fetchone()[0]
            return version

    def migrate(self) -> None:
        """Apply every migration newer than the file's `user_version`, each in one transaction."""
        with self._lock:
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} has schema v{current}, newer than this quotapilot (v{len(MIGRATIONS)})")
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                self._conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: commits on success, rolls back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (on shutdown)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
