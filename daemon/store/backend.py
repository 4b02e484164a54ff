"""What every store backend offers the repositories, and the versioned-SQL migration runner.

A backend (`db.Database` for SQLite, `postgres.PostgresDatabase`) owns connections,
transactions and the schema; the repositories (`observations.py`, `actions.py`, `outbox.py`,
`overrides.py`, `reservations.py`, `leases.py`) own the queries and run unchanged on both.
They write portable SQL with `?` placeholders (the PostgreSQL backend rewrites them to `%s`);
where the dialects differ for real (row locks) a repository asks `backend.dialect`.

Migrations are files `migrations/<dialect>/NNNN_name.sql`, applied in order at start, each in one
transaction that also records it in `schema_version`; a released file never changes, a new
version is a new file. A store whose schema is newer than this code knows is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgres"]
Params = Sequence[object]

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class StoreError(Exception):
    """A store-level failure with a message for operators (never carrying a password)."""


class SchemaTooNew(StoreError):
    """The store was migrated by a newer quotapilot: this one refuses to run against it."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (PostgreSQL down, network partition): retry later."""


class Row(Protocol):
    """A result row: by column name or by position (`sqlite3.Row` and the PostgreSQL rows)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Result(Protocol):
    """What `Transaction.execute` returns."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row | None: ...

    def fetchall(self) -> list[Row]: ...


class Transaction(Protocol):
    """One open write transaction (committed when its `with` block ends without an error)."""

    def execute(self, sql: str, params: Params = ()) -> Result: ...

    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run `sql` once per parameter tuple; returns the rows changed in total."""
        ...


class Backend(Protocol):
    """One database, as the repositories see it."""

    dialect: Dialect

    @property
    def schema_version(self) -> int: ...

    def describe(self) -> str:
        """Where the data lives, for logs (a file path, or a URL without its password)."""
        ...

    def transaction(self) -> AbstractContextManager[Transaction]: ...

    def query(self, sql: str, params: Params = ()) -> list[Row]: ...

    def checkpoint(self) -> None: ...

    def close(self) -> None: ...

    def outage(self) -> str | None:
        """Why the database could not be reached at the last attempt, None when it could (a
        server that is down or partitioned away; /healthz reports it)."""
        ...


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """Every migration of `dialect`, oldest first (checked: numbered 1, 2, 3… without a gap)."""
    folder = resources.files("quotapilot.daemon.store").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise StoreError(f"migrations/{dialect}: versions must run 1..N without a gap,"
                         f" got {[m.version for m in found]}")
    return found


def latest_version(dialect: Dialect) -> int:
    return len(migrations(dialect))


def pending(dialect: Dialect, current: int, where: str) -> list[Migration]:
    """The migrations to apply to a store at `current`; refuses a store newer than this code."""
    known = migrations(dialect)
    if current > len(known):
        raise SchemaTooNew(
            f"{where} has schema v{current}, newer than this quotapilot (v{len(known)}): "
            f"upgrade quotapilot, or point it at another store")
    return known[current:]


def strip_sql_comments(script: str) -> Iterator[str]:
    """The statements of a migration file (comments removed, split on `;`). Migration files keep
    to plain DDL, without `;` inside literals, so this is enough."""
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    for statement in text.split(";"):
        if statement.strip():
            yield statement.strip()
