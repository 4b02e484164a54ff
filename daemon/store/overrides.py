"""Manual overrides (table `overrides`): pause/resume per target, and the global kill switch.

Stored, so they survive restarts. A pause names a target by quota name or path, on one cluster
or on every cluster (`cluster="*"`); it lasts until `resume`, or until `until` (epoch seconds)
passes. The kill switch is the row (`*`, `*`); the config's `policy.kill_switch` is the other way
to engage it (see the actuator, which honours either). A pause made before 0198d09 by the bare
name of another tenant's quota is moved to its `<tenant>:<name>` (`rename`, by `stages/bare_names.py`).
A pause of a quota VMS renames (same VMS id and path) is moved to its new name (`stages/renames.py`).

This is the Python API behind `quotapilot pause/resume` and the HTTP endpoints. Blocking calls:
run them with `asyncio.to_thread` from async code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from quotapilot.daemon.store.backend import Backend, Row, Transaction
from quotapilot.forecasting.types import TargetId

ANY = "*"


def pause_scopes(cluster: str, *, sole_cluster: bool) -> tuple[str, ...]:
    """The `cluster` values of the pauses that are `cluster`'s own, to move with its quotas: its
    rows, and a row of every cluster (`*`) only when `cluster` is the only one watched (on another
    cluster the name may be another quota's)."""
    return (cluster, ANY) if sole_cluster else (cluster,)


@dataclass(frozen=True, slots=True)
class Override:
    """One pause (or the kill switch when `cluster == target == "*"`)."""

    cluster: str
    target: str
    paused_until: float | None
    reason: str
    created_at: float

    @property
    def is_kill_switch(self) -> bool:
        return self.cluster == ANY and self.target == ANY

    def applies_to(self, target: TargetId) -> bool:
        if self.is_kill_switch:
            return True
        return self.cluster in (ANY, target.cluster) and self.target in (target.name, target.path)

    def as_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "target": self.target, "paused_until": self.paused_until,
                "reason": self.reason, "created_at": self.created_at, "kill_switch": self.is_kill_switch}

    @classmethod
    def from_row(cls, row: Row) -> Override:
        return cls(cluster=row["cluster"], target=row["target"], paused_until=row["paused_until"],
                   reason=row["reason"], created_at=row["created_at"])


@dataclass(frozen=True, slots=True)
class Renamed:
    """What `OverrideStore.rename` did."""

    kept: Override
    """The pause the new name has now: the moved one, or its own when that lasts longer."""
    already_paused: bool
    """The new name had a pause in force of its own (kept or not)."""


_MOVED_LASTS_LONGER = ("((excluded.paused_until IS NULL AND overrides.paused_until IS NOT NULL)"
                       " OR excluded.paused_until > overrides.paused_until)")
"""In `rename`'s upsert: the pause moved (`excluded`) ends later than the new name's own (NULL,
indefinite, last of all; a comparison with NULL is NULL, so false). Portable: SQLite and PostgreSQL."""


class OverrideStore:
    """Pause, resume, kill switch."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    def pause(self, target: str, *, now: float, cluster: str = ANY, until: float | None = None,
              reason: str = "", replacing: Iterable[str] = ()) -> Override:
        """Stop growth actions on `target` (name or path) until `until` or `resume`. Idempotent:
        pausing again replaces the earlier pause — and, in the same transaction, the pauses on
        `cluster` stored under `replacing`, the target's other keys (the API pauses a quota by its
        name; a pause stored by its path before, by 88b95cb, is replaced, not left to hold on
        beside the new one)."""
        if target == ANY:
            raise ValueError("use engage_kill_switch() to pause everything")
        if until is not None and until <= now:
            raise ValueError("until must be in the future")
        return self._put(Override(cluster, target, until, reason, now),
                         replacing=tuple(k for k in replacing if k not in (target, ANY)))

    def resume(self, target: str, *, cluster: str | None = None) -> bool:
        """Lift the pause of `target` on `cluster` (`"*"`: the pause of every cluster, that row
        alone); with no cluster, every pause of `target`. True when one was lifted."""
        with self.db.transaction() as conn:
            if cluster is None:
                cursor = conn.execute("DELETE FROM overrides WHERE target = ? AND target != '*'", (target,))
            else:
                cursor = conn.execute("DELETE FROM overrides WHERE cluster = ? AND target = ?", (cluster, target))
            return cursor.rowcount > 0

    def rename(self, target: str, new_target: str, *, cluster: str, now: float) -> Renamed | None:
        """Move the pause in force at `now` of `target` on `cluster` (a row of its own; `*`: of
        every cluster) to `new_target`, in one transaction; None when `target` had none there (a
        row of `target` that has expired is dropped all the same).

        When `new_target` has a pause in force there too, the one that lasts longer is kept whole
        — its end, reason and time made — and the other dropped: an indefinite pause outlasts any
        end; on a tie the one `new_target` had stays. A pause of `new_target` that has expired
        (not pruned yet) is no pause: it is deleted first, so it never stands in for the one
        moved."""
        return self.rename_all([(target, new_target, cluster)], now=now)[0]

    def rename_all(self, moves: Sequence[tuple[str, str, str]], *, now: float) -> list[Renamed | None]:
        """Each (target, new_target, cluster) of `moves` as `rename` does it, in order, all in one
        transaction (a quota's rename moves its pause through a transit name: a crash between the
        steps left it there)."""
        if any(ANY in (target, new_target) for target, new_target, _ in moves):
            raise ValueError("the kill switch is not renamed")
        with self.db.transaction() as conn:
            return [_rename(conn, target, new_target, cluster, now) for target, new_target, cluster in moves]

    def engage_kill_switch(self, *, now: float, reason: str = "", until: float | None = None) -> Override:
        return self._put(Override(ANY, ANY, until, reason, now))

    def release_kill_switch(self) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM overrides WHERE cluster = '*' AND target = '*'").rowcount > 0

    def active(self, now: float) -> list[Override]:
        """Every pause (and the kill switch) in force at `now`, kill switch first."""
        rows = self.db.query(
            "SELECT * FROM overrides WHERE paused_until IS NULL OR paused_until > ?"
            " ORDER BY (cluster = '*' AND target = '*') DESC, cluster, target", (now,))
        return [Override.from_row(r) for r in rows]

    def prune(self, now: float) -> int:
        """Forget pauses that have expired."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM overrides WHERE paused_until IS NOT NULL AND paused_until <= ?",
                                (now,)).rowcount

    def _put(self, override: Override, replacing: tuple[str, ...] = ()) -> Override:
        with self.db.transaction() as conn:
            for key in replacing:
                conn.execute("DELETE FROM overrides WHERE cluster = ? AND target = ?", (override.cluster, key))
            conn.execute(
                "INSERT INTO overrides (cluster, target, paused_until, reason, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (cluster, target) DO UPDATE SET paused_until = excluded.paused_until,"
                " reason = excluded.reason, created_at = excluded.created_at",
                (override.cluster, override.target, override.paused_until, override.reason,
                 override.created_at))
        return override


def _rename(conn: Transaction, target: str, new_target: str, cluster: str, now: float) -> Renamed | None:
    """`OverrideStore.rename`'s move, in the caller's transaction."""
    conn.execute("DELETE FROM overrides WHERE cluster = ? AND target = ?"
                 " AND paused_until IS NOT NULL AND paused_until <= ?", (cluster, new_target, now))
    already_paused = conn.execute("SELECT 1 FROM overrides WHERE cluster = ? AND target = ?",
                                  (cluster, new_target)).fetchone() is not None
    moved = conn.execute(
        "INSERT INTO overrides (cluster, target, paused_until, reason, created_at)"
        " SELECT cluster, ?, paused_until, reason, created_at FROM overrides"
        " WHERE cluster = ? AND target = ? AND (paused_until IS NULL OR paused_until > ?)"
        " ON CONFLICT (cluster, target) DO UPDATE SET"
        f" paused_until = CASE WHEN {_MOVED_LASTS_LONGER} THEN excluded.paused_until"
        "  ELSE overrides.paused_until END,"
        f" reason = CASE WHEN {_MOVED_LASTS_LONGER} THEN excluded.reason ELSE overrides.reason END,"
        f" created_at = CASE WHEN {_MOVED_LASTS_LONGER} THEN excluded.created_at"
        "  ELSE overrides.created_at END",
        (new_target, cluster, target, now)).rowcount > 0
    conn.execute("DELETE FROM overrides WHERE cluster = ? AND target = ?", (cluster, target))
    if not moved:
        return None
    row = conn.execute("SELECT * FROM overrides WHERE cluster = ? AND target = ?", (cluster, new_target)).fetchone()
    assert row is not None  # written in this transaction
    return Renamed(Override.from_row(row), already_paused=already_paused)
