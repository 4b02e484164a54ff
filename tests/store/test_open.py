"""`[store]` picks the backend; the PostgreSQL password comes from a file and never shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from pytest_postgresql.executors import PostgreSQLExecutor

from quotapilot.daemon.settings import StoreSettings
from quotapilot.daemon.store.backend import StoreUnavailable
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.open import open_backend
from quotapilot.daemon.store.postgres import PostgresDatabase, redact, to_pg


class TestSettings:
    """The URL is checked; a password belongs in `password` / `password_file`."""

    def test_password_in_the_url_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="not in the URL"):
            StoreSettings(url="postgresql://qp:secret@db:5432/qp")

    @pytest.mark.parametrize("query", ["password=PGSECRET", "sslmode=disable&password=PGSECRET",
                                       "pass%77ord=PGSECRET", "PASSWORD=PGSECRET", "sslpassword=PGSECRET"])
    def test_password_as_a_query_parameter_is_refused(self, query: str) -> None:
        """libpq reads `?password=` as it reads `user:password@`: refused alike."""
        with pytest.raises(ValidationError, match="not in the URL"):
            StoreSettings(url=f"postgresql://u@127.0.0.1:1/db?{query}")

    def test_not_a_postgres_url_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="postgresql://"):
            StoreSettings(url="mysql://db/qp")

    def test_renew_must_leave_a_margin(self) -> None:
        with pytest.raises(ValidationError, match="half of lease_seconds"):
            StoreSettings(lease_seconds=10, lease_renew_seconds=6)

    def test_password_file_is_read(self, tmp_path: Path) -> None:
        secret = tmp_path / "pw"
        secret.write_text("s3cret\n")
        settings = StoreSettings(url="postgresql://qp@db/qp?sslmode=verify-full", password_file=secret)
        assert settings.resolved_password() == "s3cret"
        assert "s3cret" not in repr(settings)


class TestOpen:
    def test_no_url_is_sqlite(self, tmp_path: Path) -> None:
        backend = open_backend(StoreSettings(path=tmp_path / "s.db"))
        assert isinstance(backend, Database)
        backend.close()

    def test_url_is_postgres_with_the_password(self, postgresql_server: PostgreSQLExecutor, tmp_path: Path) -> None:
        """The test server trusts every login, so a wrong password would pass too: what is
        checked is that the backend connects, and that neither description shows the password."""
        secret = tmp_path / "pw"
        secret.write_text("hunter2")
        url = f"postgresql://{postgresql_server.user}@{postgresql_server.host}:{postgresql_server.port}/postgres"
        backend = open_backend(StoreSettings(url=url + "?application_name=qp-test", password_file=secret))
        try:
            assert isinstance(backend, PostgresDatabase)
            assert backend.query("SELECT current_setting('application_name')")[0][0] == "qp-test"
            assert "hunter2" not in backend.describe()
        finally:
            backend.close()

    def test_unreachable_server_is_a_clear_error(self) -> None:
        with pytest.raises(StoreUnavailable, match=re.escape("cannot connect to PostgreSQL at postgresql://qp@127.0.0.1:9/qp")):
            PostgresDatabase("postgresql://qp:pw@127.0.0.1:9/qp", connect_timeout_seconds=1)

    def test_the_error_says_why_the_last_attempt_failed(self) -> None:
        """The pool's own timeout ("pool initialization incomplete") does not say why: the last
        connection attempt's error does (refused, no such host, authentication)."""
        with pytest.raises(StoreUnavailable) as raised:
            PostgresDatabase("postgresql://qp:pw@127.0.0.1:9/qp", connect_timeout_seconds=1)
        assert "refused" in str(raised.value).lower(), raised.value
        assert "pw@" not in str(raised.value)


class TestHelpers:
    def test_redact_drops_only_the_password(self) -> None:
        assert redact("postgresql://qp:pw@db:5433/qp?sslmode=require") == "postgresql://qp@db:5433/qp?sslmode=require"
        assert redact("postgresql://qp@db/qp") == "postgresql://qp@db/qp"

    @pytest.mark.parametrize(("url", "redacted"), [
        ("postgresql://u@db/qp?password=PGSECRET", "postgresql://u@db/qp"),
        ("postgresql://u@db/qp?sslmode=require&password=PGSECRET&application_name=x",
         "postgresql://u@db/qp?sslmode=require&application_name=x"),
        ("postgresql://u@db/qp?pass%77ord=PGSECRET&sslpassword=PGSECRET", "postgresql://u@db/qp"),
        ("postgresql://u:PGSECRET@db1:5432,db2:5433/qp", "postgresql://u@db1:5432,db2:5433/qp"),
        ("postgresql://u:PGSECRET@db:notaport/qp", "postgresql://u@db:notaport/qp"),
        ("postgresql://:PGSECRET@db/qp", "postgresql://db/qp"),
    ])
    def test_redact_drops_query_passwords_and_any_url_shape(self, url: str, redacted: str) -> None:
        """`?password=` was kept (`check-config` and `daemon.failed` printed it), and a multi-host
        URL (`db1:5432,db2:5433`) raised ValueError from `urlsplit(...).port` instead of redacting."""
        assert redacted == redact(url)

    def test_placeholders(self) -> None:
        assert to_pg("SELECT ? WHERE x LIKE 'a%'") == "SELECT %s WHERE x LIKE 'a%%'"
