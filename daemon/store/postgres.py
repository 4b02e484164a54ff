"""The PostgreSQL backend: the store of a fleet (several instances, one leader per VMS cluster).

It implements `backend.Backend` with psycopg 3 and a *synchronous* `psycopg_pool.ConnectionPool`,
called from asyncio through `asyncio.to_thread` exactly like the SQLite backend (see the package
docstring for why one convention). The repositories' `?` placeholders become `%s` here.

Connection: `[store] url = "postgresql://user@host:5432/quotapilot?sslmode=verify-full&sslrootcert=…"`.
Every query parameter of the URL is a libpq parameter passed through as is (TLS: `sslmode`,
`sslrootcert`, `sslcert`, `sslkey`; `application_name`, …). The password comes from
`[store] password` / `password_file` (or libpq's own `PGPASSWORD` / `~/.pgpass`); it is never put
in the URL we log (`describe()` strips it).

Migrations (`migrations/postgres/NNNN_*.sql`) run at start under a transaction-scoped advisory
lock, so instances starting together apply each version once; PostgreSQL's DDL is transactional,
so a version is applied whole or not at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import psycopg
import psycopg_pool
from psycopg.rows import RowMaker

from quotapilot.daemon.settings import LIBPQ_SECRET_PARAMETERS
from quotapilot.daemon.store.backend import (
    Dialect,
    Params,
    Row,
    StoreUnavailable,
    latest_version,
    pending,
)

# psycopg_pool logs every failed connection attempt through stdlib logging, which quotapilot does
# not configure: logging's last-resort handler wrote those lines raw to stderr, outside the JSON
# logs and around check-config's message. Each failure reaches the operator as `StoreUnavailable`.
logging.getLogger("psycopg").addHandler(logging.NullHandler())


class _LastAttempt(logging.Handler):
    """Why the pool's last connection attempt failed (psycopg_pool logs it as "error connecting
    in <pool>: <error>"; its own timeout only says "pool initialization incomplete")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and len(record.args) == 2:
            lines = str(record.args[1]).strip().splitlines()
            self.reason = lines[0] if lines else None  # the error; the next lines are libpq's hints

_MIGRATION_LOCK = 7_215_519_001
"""Advisory lock key that serialises migrations between instances starting at once."""


class PgRow:
    """A result row addressable by column name or position (like `sqlite3.Row`)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str, /) -> Any:
        if isinstance(key, str):
            return self._values[self._names[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._names, self._values, strict=True))!r})"


def _pg_row(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(names, values)

    return make


def to_pg(sql: str) -> str:
    """SQLite-style `?` placeholders → psycopg's `%s` (a literal `%` is doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _PgResult:
    def __init__(self, cursor: psycopg.Cursor[PgRow]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Row | None:
        if self._cursor.description is None:
            return None
        return self._cursor.fetchone()

    def fetchall(self) -> list[Row]:
        if self._cursor.description is None:
            return []
        return list(self._cursor.fetchall())


class _PgTransaction:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> _PgResult:
        cursor = self._conn.cursor(row_factory=_pg_row)
        cursor.execute(to_pg(sql), tuple(params))
        return _PgResult(cursor)

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        rows = [tuple(p) for p in params]
        if not rows:
            return 0
        cursor = self._conn.cursor()
        cursor.executemany(to_pg(sql), rows)
        return max(cursor.rowcount, 0)


def redact(url: str) -> str:
    """`url` without a password, whether in the userinfo or a query parameter (`?password=`), and
    whatever its shape (several hosts, no host, a port that is no number): for logs and errors."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    query = "&".join(pair for pair in parts.query.split("&")
                     if unquote_plus(pair.split("=", 1)[0]).lower() not in LIBPQ_SECRET_PARAMETERS)
    return (f"{parts.scheme}://{user + '@' if user else ''}{hosts}{parts.path}"
            + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else ""))


RECONNECT_TIMEOUT_SECONDS = 10.0
"""How long psycopg_pool retries a lost connection, with its doubling backoff (1, 2, 4 … s), before
it gives up and the next store call starts again at once. Its default, 5 minutes, let the backoff
grow with the outage: after 160 s down, its next attempt came 90 s after the server was back, and
no instance could renew a lease until then (`tests/store/test_postgres_recovery.py`). Bounded so, a
store call finds the server within about this long after it is back."""


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, password: str | None = None, min_connections: int = 1,
                 max_connections: int = 4, connect_timeout_seconds: float = 5.0,
                 statement_timeout_seconds: float = 10.0, reconnect_timeout_seconds: float = RECONNECT_TIMEOUT_SECONDS,
                 migrate: bool = True) -> None:
        self.url = url
        self._outage: str | None = None
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout_seconds)),
            # a partitioned database must not hang a write: fail, so the leader stops writing
            "options": f"-c statement_timeout={round(statement_timeout_seconds * 1000)}",
        }
        if password is not None:
            kwargs["password"] = password
        self._pool = psycopg_pool.ConnectionPool(
            url, kwargs=kwargs, min_size=min_connections, max_size=max_connections, open=False,
            timeout=connect_timeout_seconds, reconnect_timeout=reconnect_timeout_seconds, name="quotapilot-store")
        attempts = _LastAttempt()
        pool_log = logging.getLogger("psycopg.pool")
        pool_log.addHandler(attempts)
        try:
            self._pool.open(wait=True, timeout=connect_timeout_seconds)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            why = f" (last attempt: {attempts.reason})" if attempts.reason else ""
            raise StoreUnavailable(f"cannot connect to PostgreSQL at {self.describe()}: {exc}{why}") from None
        finally:
            pool_log.removeHandler(attempts)
        if migrate:
            try:
                self.migrate()
            except BaseException:
                self._pool.close()
                raise

    def describe(self) -> str:
        return redact(self.url)

    @property
    def schema_version(self) -> int:
        with self._connection() as conn:
            exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return 0
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            return int(row[0]) if row else 0

    def migrate(self) -> None:
        """Apply every migration newer than the database's version (refusing a newer schema)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY,"
                         " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
            for migration in pending("postgres", int(row[0]) if row else 0, self.describe()):
                conn.execute(migration.sql.encode())  # bytes: run as a script, no placeholders
                conn.execute("INSERT INTO schema_version VALUES (%s, %s, %s)",
                             (migration.version, migration.name, time.time()))

    @contextmanager
    def transaction(self) -> Iterator[_PgTransaction]:
        """A write transaction: commits on success, rolls back on error."""
        with self._connection() as conn, conn.transaction():
            yield _PgTransaction(conn)

    def query(self, sql: str, params: Params = ()) -> list[Row]:
        with self._connection() as conn:
            cursor = conn.cursor(row_factory=_pg_row)
            cursor.execute(to_pg(sql), tuple(params))
            return list(cursor.fetchall())

    def checkpoint(self) -> None:
        """Nothing to fold: PostgreSQL's WAL is the server's business."""

    def close(self) -> None:
        self._pool.close()

    def outage(self) -> str | None:
        return self._outage

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; a server that cannot take the call now becomes `StoreUnavailable`
        (and the outage `outage()` reports until a connection works again): unreachable, shutting
        down, timed out, read-only (`_NOT_NOW`). Programming errors (an unknown table, bad SQL, a
        violated constraint) stay what they are."""
        try:
            with self._pool.connection() as conn:
                self._outage = None
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            self._outage = f"PostgreSQL at {self.describe()} unavailable: {exc}"
            raise StoreUnavailable(self._outage) from None
        except _NOT_NOW as exc:
            why = ("is read-only (a standby, or a failover under way)"
                   if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction) else "failed")
            self._outage = f"PostgreSQL at {self.describe()} {why}: {exc}"
            raise StoreUnavailable(self._outage) from exc


_NOT_NOW: tuple[type[psycopg.Error], ...] = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction,
                                             psycopg.errors.IdleInTransactionSessionTimeout)
"""Server errors that say "not now", the store's outages: every `OperationalError` — SQLSTATE
classes 08 (connection), 53 (resources), 57 (admin shutdown, crash shutdown, cannot connect now,
statement timeout), 40 (serialization failure, deadlock), 55 (lock not available) — and two that
psycopg files under `InternalError` (class 25): a read-only server (25006: a hot standby, a
demoted primary still reached during a failover; every write fails until the fleet reaches the
new primary) and a session the server ended for idling in a transaction (25P03). Deliberately
not: the rest of class 25 (`InFailedSqlTransaction` is a bug in our transaction handling), `XX`
(internal errors, data corruption) and every `ProgrammingError`/`IntegrityError`, which an
operator must see."""


LATEST_VERSION = latest_version("postgres")
