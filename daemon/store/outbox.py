"""The alert outbox and the alert rules' state, over the `outbox` and `alert_state` tables.

`OutboxStore` implements `quotapilot.alerts.dispatcher.Outbox` (async; the blocking SQLite work
runs in a thread) and adds `commit_evaluation()`, which writes the rules' new states and the new
notifications in ONE transaction: after a crash either both are on disk or neither, so a restart
neither re-fires (the state says "firing, notified") nor forgets (the notification is queued).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping, Sequence

from quotapilot.alerts.dispatcher import OutboxEntry, OutboxRow
from quotapilot.alerts.model import AlertState
from quotapilot.daemon.store.db import Database

_PENDING = "delivered_at IS NULL AND superseded_at IS NULL AND dropped_at IS NULL"


class OutboxStore:
    """Repository of the `outbox` and `alert_state` tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---------------------------------------------------------------------------- alert state
    def load_states_sync(self) -> dict[str, AlertState]:
        rows = self.db.query("SELECT alert_id, state FROM alert_state")
        return {row["alert_id"]: AlertState.from_json(row["state"]) for row in rows}

    async def load_states(self) -> dict[str, AlertState]:
        return await asyncio.to_thread(self.load_states_sync)

    def commit_evaluation_sync(self, states: Mapping[str, AlertState], entries: Sequence[OutboxEntry],
                               now: float) -> int:
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO alert_state (alert_id, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (alert_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                [(alert_id, state.to_json(), now) for alert_id, state in states.items()])
            return _insert(conn, entries)

    async def commit_evaluation(self, states: Mapping[str, AlertState], entries: Sequence[OutboxEntry],
                                now: float) -> int:
        """Persist the rules' changed states and enqueue notifications, atomically."""
        if not states and not entries:
            return 0
        return await asyncio.to_thread(self.commit_evaluation_sync, states, entries, now)

    # --------------------------------------------------------------------------------- outbox
    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        def work() -> int:
            with self.db.transaction() as conn:
                return _insert(conn, entries)

        return await asyncio.to_thread(work)

    def pending_sync(self, sink: str, limit: int) -> list[OutboxRow]:
        rows = self.db.query(
            f"SELECT id, sink, alert_id, dedup_key, status, payload, created_at, next_attempt_at, attempts "
            f"FROM outbox WHERE sink = ? AND {_PENDING} ORDER BY id LIMIT ?", (sink, limit))
        return [OutboxRow(row_id=row["id"], sink=row["sink"], alert_id=row["alert_id"],
                          dedup_key=row["dedup_key"], status=row["status"],
                          payload=json.loads(row["payload"]), created_at=row["created_at"],
                          next_attempt_at=row["next_attempt_at"], attempts=row["attempts"])
                for row in rows]

    async def pending(self, sink: str, limit: int) -> list[OutboxRow]:
        return await asyncio.to_thread(self.pending_sync, sink, limit)

    async def supersede_older(self, sink: str, now: float) -> int:
        """Mark every pending row of `sink` that has a newer pending row of the same alert."""
        def work() -> int:
            with self.db.transaction() as conn:
                cursor = conn.execute(
                    f"UPDATE outbox SET superseded_at = ? WHERE sink = ? AND {_PENDING} AND id < ("
                    f"SELECT MAX(newer.id) FROM outbox AS newer WHERE newer.sink = outbox.sink "
                    f"AND newer.alert_id = outbox.alert_id AND newer.delivered_at IS NULL "
                    f"AND newer.superseded_at IS NULL AND newer.dropped_at IS NULL)", (now, sink))
                return cursor.rowcount

        return await asyncio.to_thread(work)

    async def mark_delivered(self, row_ids: Sequence[int], now: float) -> None:
        await self._update("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                           [(now, row_id) for row_id in row_ids])

    async def mark_retry(self, row_ids: Sequence[int], error: str, next_attempt_at: float) -> None:
        await self._update(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            [(error[:500], next_attempt_at, row_id) for row_id in row_ids])

    async def mark_superseded(self, row_ids: Sequence[int], now: float) -> None:
        await self._update("UPDATE outbox SET superseded_at = ? WHERE id = ?",
                           [(now, row_id) for row_id in row_ids])

    async def mark_dropped(self, row_ids: Sequence[int], now: float, error: str) -> None:
        await self._update("UPDATE outbox SET dropped_at = ?, last_error = ? WHERE id = ?",
                           [(now, error[:500], row_id) for row_id in row_ids])

    async def schedule(self, sink: str) -> list[tuple[float, int]]:
        def work() -> list[tuple[float, int]]:
            rows = self.db.query(
                f"SELECT next_attempt_at, attempts FROM outbox WHERE sink = ? AND {_PENDING}", (sink,))
            return [(row["next_attempt_at"], row["attempts"]) for row in rows]

        return await asyncio.to_thread(work)

    def pending_counts_sync(self) -> dict[str, int]:
        rows = self.db.query(f"SELECT sink, COUNT(*) AS n FROM outbox WHERE {_PENDING} GROUP BY sink")
        return {row["sink"]: row["n"] for row in rows}

    async def pending_counts(self) -> dict[str, int]:
        return await asyncio.to_thread(self.pending_counts_sync)

    def history_sync(self, alert_id: str) -> list[sqlite3.Row]:
        """Every row of one alert (for status output and tests)."""
        return self.db.query("SELECT * FROM outbox WHERE alert_id = ? ORDER BY id", (alert_id,))

    async def purge(self, older_than: float) -> int:
        """Forget finished rows (delivered, superseded, dropped) created before `older_than`."""
        def work() -> int:
            with self.db.transaction() as conn:
                cursor = conn.execute(
                    f"DELETE FROM outbox WHERE created_at < ? AND NOT ({_PENDING})", (older_than,))
                return cursor.rowcount

        return await asyncio.to_thread(work)

    async def _update(self, sql: str, params: list[tuple[object, ...]]) -> None:
        if not params:
            return

        def work() -> None:
            with self.db.transaction() as conn:
                conn.executemany(sql, params)

        await asyncio.to_thread(work)


def _insert(conn: sqlite3.Connection, entries: Sequence[OutboxEntry]) -> int:
    before = conn.total_changes
    encoded: dict[int, str] = {}  # one notification bound for several sinks shares its payload object

    def encode(entry: OutboxEntry) -> str:
        text = encoded.get(id(entry.payload))
        if text is None:
            text = encoded[id(entry.payload)] = json.dumps(dict(entry.payload), sort_keys=True)
        return text

    conn.executemany(
        "INSERT OR IGNORE INTO outbox (sink, alert_id, dedup_key, status, payload, created_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(e.sink, e.alert_id, e.dedup_key, e.status, encode(e), e.created_at, e.next_attempt_at)
         for e in entries])
    return conn.total_changes - before
