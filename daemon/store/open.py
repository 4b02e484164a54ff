"""Open the configured backend: PostgreSQL when `[store] url` is set, else the SQLite file."""

from __future__ import annotations

from quotapilot.daemon.settings import StoreSettings
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.postgres import PostgresDatabase


def open_backend(settings: StoreSettings) -> Backend:
    """Connect and migrate (blocking: call through `asyncio.to_thread`). Raises
    `StoreUnavailable` (cannot connect) or `SchemaTooNew` (the store is from a newer quotapilot)."""
    if settings.url is None:
        return Database(settings.path)
    return PostgresDatabase(
        settings.url, password=settings.resolved_password(), max_connections=settings.pool_max_size,
        connect_timeout_seconds=settings.connect_timeout_seconds,
        statement_timeout_seconds=settings.statement_timeout_seconds)
