"""Versioned migrations on both backends: applied at start, recorded, a newer schema refused."""

from __future__ import annotations

import pytest
from store_helpers import OpenStore

from quotapilot.daemon.store.backend import Backend, SchemaTooNew, latest_version, migrations

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
