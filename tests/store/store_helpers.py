"""Shared by the store suite (which runs every test on SQLite and on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable

from quotapilot.daemon.store.backend import Backend

OpenStore = Callable[[], Backend]
"""Opens another connection (another instance of the fleet) to the test's one store."""
