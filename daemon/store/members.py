"""Fleet membership (table `members`): which instances are running, so clusters spread over them.

Every instance heartbeats its row (`holder`, the name it holds leases under; `instance`, its
configured name) each lease renewal; a row not refreshed for `ttl_seconds` (the lease length) is
a dead member, and rows dead for a day are deleted by whoever heartbeats next. `first_seen` is
kept while the member stays live, so "live for at least two renewals" (the hysteresis of a
hand-over, `runtime/leadership.py`) is a plain comparison. Blocking; call through
`asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass

from quotapilot.daemon.store.backend import Backend, Row

FORGET_AFTER_SECONDS = 86400.0
"""Rows of members dead this long are deleted (each restart is a new holder, a new row)."""

_HEARTBEAT = """
INSERT INTO members (holder, instance, first_seen, last_seen) VALUES (?, ?, ?, ?)
ON CONFLICT (holder) DO UPDATE SET
    first_seen = CASE WHEN members.last_seen <= ? THEN excluded.first_seen ELSE members.first_seen END,
    last_seen = excluded.last_seen
"""


@dataclass(frozen=True, slots=True)
class Member:
    """One running instance as stored."""

    holder: str
    instance: str
    first_seen: float
    last_seen: float

    @classmethod
    def from_row(cls, row: Row) -> Member:
        return cls(row["holder"], row["instance"], float(row["first_seen"]), float(row["last_seen"]))


class MemberStore:
    """Heartbeat, leave and list the members of a fleet."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    def heartbeat(self, holder: str, instance: str, *, now: float, ttl_seconds: float) -> None:
        """Mark `holder` live at `now` (a member back after more than `ttl_seconds` starts afresh)."""
        with self.db.transaction() as conn:
            conn.execute(_HEARTBEAT, (holder, instance, now, now, now - ttl_seconds))
            conn.execute("DELETE FROM members WHERE last_seen < ?", (now - FORGET_AFTER_SECONDS,))

    def leave(self, holder: str) -> None:
        """A clean exit: this member stops counting at once."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM members WHERE holder = ?", (holder,))

    def live(self, *, now: float, ttl_seconds: float) -> list[Member]:
        """The members heard from within `ttl_seconds`, by holder."""
        return [Member.from_row(r) for r in self.db.query(
            "SELECT * FROM members WHERE last_seen > ? ORDER BY holder", (now - ttl_seconds,))]
