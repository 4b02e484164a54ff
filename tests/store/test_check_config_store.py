"""`quotapilot check-config` with a PostgreSQL store: it reaches the database (without changing
it) and checks the schema version, naming `store.url` when either fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from quotapilot.daemon.cli import main
from quotapilot.daemon.store.backend import latest_version
from quotapilot.daemon.store.postgres import PostgresDatabase


def config(tmp_path: Path, url: str) -> Path:
    secret = tmp_path / "pgpass"
    secret.write_text("not-logged-anywhere")
    path = tmp_path / "q.toml"
    path.write_text(f"""
[[clusters]]
name = "c1"
address = "vms.example.org"
token = "secret-token-value"

[store]
url = "{url}"
password_file = "{secret}"
connect_timeout_seconds = 2
""")
    return path


class TestCheckConfigStore:
    def test_reachable_database_and_its_schema_are_reported(self, tmp_path: Path, pg_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
        PostgresDatabase(pg_url).close()  # an instance has run: the schema is current
        assert main(["check-config", "--config", str(config(tmp_path, pg_url)), "--json"]) == 0
        out = capsys.readouterr().out
        store = json.loads(out)["summary"]["store"]
        assert (store["backend"], store["schema_version"]) == ("postgres", latest_version("postgres"))
        assert "not-logged-anywhere" not in out

    def test_fresh_database_is_not_migrated_by_a_check(self, tmp_path: Path, pg_url: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["check-config", "--config", str(config(tmp_path, pg_url))]) == 0
        assert "schema v0 of v" in capsys.readouterr().out
        db = PostgresDatabase(pg_url, migrate=False)
        try:
            assert db.schema_version == 0
        finally:
            db.close()

    def test_unreachable_database_names_the_field(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["check-config", "--config", str(config(tmp_path, "postgresql://qp@127.0.0.1:9/qp"))]) == 2
        err = capsys.readouterr().err
        assert "store.url" in err and "cannot connect to PostgreSQL" in err

    def test_a_failed_connection_prints_only_our_message(self, tmp_path: Path) -> None:
        """psycopg_pool's own warnings ("error connecting in 'quotapilot-store': ...") reached
        stderr raw, through logging's last-resort handler, around the message naming the field.
        A process of its own: pytest's log capture stands in for that handler in-process."""
        done = subprocess.run([sys.executable, "-m", "quotapilot.daemon", "check-config", "--config",
                               str(config(tmp_path, "postgresql://qp@127.0.0.1:9/qp"))],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2
        err = done.stderr
        assert [line for line in err.splitlines() if line.strip()] == [
            line for line in err.splitlines() if line.startswith("quotapilot: invalid configuration: store.url:")]

    def test_newer_schema_names_the_field(self, tmp_path: Path, pg_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
        db = PostgresDatabase(pg_url)
        with db.transaction() as tx:
            tx.execute("INSERT INTO schema_version VALUES (?, 'future', 0)", (latest_version("postgres") + 1,))
        db.close()
        assert main(["check-config", "--config", str(config(tmp_path, pg_url))]) == 2
        assert "newer than this quotapilot" in capsys.readouterr().err
