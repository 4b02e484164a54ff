"""Open the configured backend: PostgreSQL when `[store] url` is set, else the SQLite file."""

from __future__ import annotations

from quotapilot.daemon.settings import StoreSettings
from quotapilot.daemon.store.backend import Backend, StoreError, latest_version, pending
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.postgres import PostgresDatabase


def open_backend(settings: StoreSettings) -> Backend:
    """Connect and migrate (blocking: call through `asyncio.to_thread`). Raises
    `StoreUnavailable` (cannot connect), `SchemaTooNew` (the store is from a newer quotapilot) or
    `StoreError` (a path no file can have)."""
    if settings.url is None:
        try:
            return Database(settings.path)
        except ValueError as exc:  # a NUL in the path: the OS calls refuse it before SQLite sees it
            raise StoreError(f"cannot open the store at {str(settings.path)!r}: {exc}") from None
    return PostgresDatabase(
        settings.url, password=settings.resolved_password(), max_connections=settings.pool_max_size,
        connect_timeout_seconds=settings.connect_timeout_seconds,
        statement_timeout_seconds=settings.statement_timeout_seconds)


def probe(settings: StoreSettings) -> dict[str, object]:
    """For `check-config`: reach the PostgreSQL store without changing it, and compare its schema
    with this code's. Raises `StoreUnavailable`, or `SchemaTooNew` when `run` would refuse it."""
    if settings.url is None:
        return {"backend": "sqlite", "where": str(settings.path)}
    db = PostgresDatabase(settings.url, password=settings.resolved_password(), max_connections=1,
                          connect_timeout_seconds=settings.connect_timeout_seconds,
                          statement_timeout_seconds=settings.statement_timeout_seconds, migrate=False)
    try:
        found = db.schema_version
    finally:
        db.close()
    pending("postgres", found, db.describe())  # raises SchemaTooNew
    return {"backend": "postgres", "where": db.describe(), "schema_version": found,
            "latest_schema_version": latest_version("postgres")}
