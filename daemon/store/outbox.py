"""The alert outbox and the alert rules' state, over the `outbox` and `alert_state` tables.

`OutboxStore` is a synchronous repository like every other store (see the package docstring);
`AsyncOutbox` wraps it for asyncio callers and implements `quotapilot.alerts.dispatcher.Outbox`.

`commit_evaluation()` writes the rules' new states and the new notifications in ONE transaction:
after a crash either both are on disk or neither, so a restart neither re-fires (the state says
"firing, notified") nor forgets (the notification is queued). An entry whose (sink, dedup_key)
is stored already is ignored, so instances evaluating the same alert enqueue it once.

Shared by a fleet: `pending()` *claims* the rows it returns for `claim_seconds` (PostgreSQL:
`FOR UPDATE SKIP LOCKED`, so two instances never get the same row); a failed send gives its row
back (`mark_retry`). A claim that lapses (its instance died before marking the row) is taken by
the next claimer: delivery is at least once,
exactly once unless an instance dies between a send and its `mark_delivered`; the unchanged dedup
key lets a receiver drop that rare duplicate. SQLite has one instance by construction, so there
it claims trivially: `pending()` is the plain read it always was (every pending row is its own,
including a killed predecessor's), and costs no write.

The latest state per (alert, sink) wins across the fleet too, by two rules:

- claims are per ALERT: no instance claims a row of an alert while another instance holds a live
  claim on a pending row of it (claims of one sink are taken one at a time, under an advisory
  lock, so two claimers never split an alert's rows either). Otherwise instance B would deliver
  an alert's `resolved` while A's send of its `firing` is still in flight, and A's send could
  land after it;
- a row never goes back to waiting behind a newer row of its alert: `mark_retry` and
  `supersede_older` supersede a row that has a newer row of the same (sink, alert) in ANY state,
  delivered included — else a fire whose send failed would be retried after the resolve that
  another instance (a lapsed claim) or an earlier pass already delivered.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from quotapilot.alerts.dispatcher import OutboxEntry, OutboxRow
from quotapilot.alerts.model import AlertState
from quotapilot.daemon.store.backend import Backend, Row, Transaction

_PENDING = "delivered_at IS NULL AND superseded_at IS NULL AND dropped_at IS NULL"
_HAS_NEWER = ("EXISTS (SELECT 1 FROM outbox AS newer WHERE newer.sink = outbox.sink"
              " AND newer.alert_id = outbox.alert_id AND newer.id > outbox.id)")
"""The row has a newer row of its alert for its sink, in any state (index `outbox_alert`)."""
_CLAIMED_ELSEWHERE = ("EXISTS (SELECT 1 FROM outbox AS other WHERE other.sink = outbox.sink"
                      " AND other.alert_id = outbox.alert_id AND other.delivered_at IS NULL"
                      " AND other.superseded_at IS NULL AND other.dropped_at IS NULL"
                      " AND other.claimed_until > ? AND other.claimed_by <> ?)")
"""A pending row of the row's alert (itself included) is claimed, live, by another instance; its
parameters: now, this claimer."""
_CLAIM_LOCK = 7_215_519
"""First key of the transaction-scoped advisory lock (the second: the sink's hash) that takes the
claims of one sink one at a time (the migration lock is a one-key lock: another key space)."""
_ROW_COLUMNS = "id, sink, alert_id, dedup_key, status, payload, created_at, next_attempt_at, attempts"
DEFAULT_CLAIM_SECONDS = 60.0
"""How long a claimed row stays with its claimer: longer than any send with its timeout."""


def default_claimer() -> str:
    """A claimer of its own: host and pid for whoever reads the row, plus a random suffix — host
    and pid alone are not unique (instances sharing a process; containers with one host name,
    each quotapilot pid 1), and two instances taking each other's claims for their own would
    both send the row."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class OutboxStore:
    """Repository of the `outbox` and `alert_state` tables (blocking)."""

    def __init__(self, db: Backend, *, claimer: str | None = None,
                 claim_seconds: float = DEFAULT_CLAIM_SECONDS, wall_clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.claimer = claimer or default_claimer()
        self.claim_seconds = claim_seconds
        self.wall_clock = wall_clock
        """What claims are timed by (wall time: claims are compared across instances)."""

    # ---------------------------------------------------------------------------- alert state
    def load_states(self) -> dict[str, AlertState]:
        rows = self.db.query("SELECT alert_id, state FROM alert_state")
        return {row["alert_id"]: AlertState.from_json(row["state"]) for row in rows}

    def commit_evaluation(self, states: Mapping[str, AlertState], entries: Sequence[OutboxEntry],
                          now: float) -> int:
        """Persist the rules' changed states and enqueue notifications, atomically."""
        if not states and not entries:
            return 0
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO alert_state (alert_id, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (alert_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                [(alert_id, state.to_json(), now) for alert_id, state in states.items()])
            return insert_entries(conn, entries)

    # --------------------------------------------------------------------------------- outbox
    def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        with self.db.transaction() as conn:
            return insert_entries(conn, entries)

    def pending(self, sink: str, limit: int, due_by: float = math.inf, *,
                retries: bool = False) -> list[OutboxRow]:
        """Claim up to `limit` pending rows of `sink` (unclaimed, ours, or with a lapsed claim, of
        alerts no other instance holds a live claim on — see the module docstring), oldest first:
        the rows of every alert that has a row due (`next_attempt_at <= due_by`, or with `retries`
        any row tried before — a flush), all of that alert's pending rows so the dispatcher can let
        the newest win. Rows of alerts with nothing due (held for a quiet window,
        backing off) are left out, so a backlog of them never keeps a due row out of the batch."""
        due = (f"alert_id IN (SELECT alert_id FROM outbox WHERE sink = ? AND {_PENDING}"
               f" AND (next_attempt_at <= ? OR (? AND attempts > 0)))")
        due_params = (sink, due_by, retries)
        if self.db.dialect != "postgres":  # one instance by construction: a plain read, no claim
            return [_outbox_row(row) for row in self.db.query(
                f"SELECT {_ROW_COLUMNS} FROM outbox WHERE sink = ? AND {_PENDING} AND {due} ORDER BY id LIMIT ?",
                (sink, *due_params, limit))]
        now = self.wall_clock()
        # per alert: none of its rows while another instance has one of them in flight. The lock
        # makes the claim below see every claim committed before it (its statement starts after
        # the lock is ours); SKIP LOCKED alone would let two concurrent claimers split an alert.
        with self.db.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), hashtext(?))", (_CLAIM_LOCK, sink))
            rows = conn.execute(
                f"UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN ("
                f"SELECT id FROM outbox WHERE sink = ? AND {_PENDING} AND {due} AND NOT {_CLAIMED_ELSEWHERE}"
                f" ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED) RETURNING {_ROW_COLUMNS}",
                (self.claimer, now + self.claim_seconds, sink, *due_params, now, self.claimer, limit)).fetchall()
        return sorted((_outbox_row(row) for row in rows), key=lambda r: r.row_id)

    def supersede_older(self, sink: str, now: float) -> int:
        """Mark every pending row of `sink` that has a newer row of the same alert, pending or
        not: a newer state delivered (or on its way) makes an older one stale."""
        with self.db.transaction() as conn:
            return conn.execute(f"UPDATE outbox SET superseded_at = ? WHERE sink = ? AND {_PENDING} AND {_HAS_NEWER}",
                                (now, sink)).rowcount

    def mark_delivered(self, row_ids: Sequence[int], now: float) -> None:
        self._update("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                     [(now, row_id) for row_id in row_ids])

    def mark_retry(self, row_ids: Sequence[int], error: str, next_attempt_at: float) -> None:
        """A failed send: the row waits for `next_attempt_at` unclaimed, so if this instance dies
        while backing off, whichever instance is alive sends it then (not a claim later) — unless
        its alert has a newer row for this sink by now, in any state (another instance delivered
        the resolve while this send of the fire was failing): then it is superseded, never sent."""
        now = self.wall_clock()
        self._update(f"UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                     f" claimed_by = NULL, claimed_until = NULL,"
                     f" superseded_at = CASE WHEN {_PENDING} AND {_HAS_NEWER} THEN ? ELSE superseded_at END"
                     f" WHERE id = ?",
                     [(error[:500], next_attempt_at, now, row_id) for row_id in row_ids])

    def mark_superseded(self, row_ids: Sequence[int], now: float) -> None:
        self._update("UPDATE outbox SET superseded_at = ? WHERE id = ?", [(now, row_id) for row_id in row_ids])

    def mark_dropped(self, row_ids: Sequence[int], now: float, error: str) -> None:
        self._update("UPDATE outbox SET dropped_at = ?, last_error = ? WHERE id = ?",
                     [(now, error[:500], row_id) for row_id in row_ids])

    def drop_pending(self, sink: str, now: float, error: str, created_before: float = math.inf) -> int:
        """Drop the pending rows of `sink` (a sink no longer configured) made before
        `created_before`; returns how many."""
        with self.db.transaction() as conn:
            return conn.execute(f"UPDATE outbox SET dropped_at = ?, last_error = ? WHERE sink = ? AND {_PENDING}"
                                f" AND created_at < ?", (now, error[:500], sink, created_before)).rowcount

    def last_created_at(self, sinks: Sequence[str]) -> dict[str, float]:
        """Per sink of `sinks` that has any row (pending or finished): when its newest row was made."""
        if not sinks:
            return {}
        rows = self.db.query(f"SELECT sink, MAX(created_at) AS t FROM outbox WHERE sink IN "
                             f"({', '.join('?' * len(sinks))}) GROUP BY sink", tuple(sinks))
        return {row["sink"]: float(row["t"]) for row in rows if row["t"] is not None}

    def schedule(self, sink: str) -> list[tuple[float, int]]:
        rows = self.db.query(f"SELECT next_attempt_at, attempts FROM outbox WHERE sink = ? AND {_PENDING}", (sink,))
        return [(row["next_attempt_at"], row["attempts"]) for row in rows]

    def pending_counts(self) -> dict[str, int]:
        rows = self.db.query(f"SELECT sink, COUNT(*) AS n FROM outbox WHERE {_PENDING} GROUP BY sink")
        return {row["sink"]: int(row["n"]) for row in rows}

    def history(self, alert_id: str) -> list[Row]:
        """Every row of one alert (for status output and tests)."""
        return self.db.query("SELECT * FROM outbox WHERE alert_id = ? ORDER BY id", (alert_id,))

    def purge(self, older_than: float) -> int:
        """Forget finished rows (delivered, superseded, dropped) created before `older_than`."""
        with self.db.transaction() as conn:
            return conn.execute(f"DELETE FROM outbox WHERE created_at < ? AND NOT ({_PENDING})",
                                (older_than,)).rowcount

    def _update(self, sql: str, params: list[tuple[object, ...]]) -> None:
        if params:
            with self.db.transaction() as conn:
                conn.executemany(sql, params)


class AsyncOutbox:
    """`OutboxStore` for asyncio code: every call runs in a worker thread. Implements the
    dispatcher's `Outbox` protocol (plus the alerting stage's state and housekeeping calls)."""

    def __init__(self, tables: OutboxStore) -> None:
        self.tables = tables
        self.shared = tables.db.dialect == "postgres"
        """Whether other instances (a fleet, each with its own configuration) read this outbox."""

    async def load_states(self) -> dict[str, AlertState]:
        return await asyncio.to_thread(self.tables.load_states)

    async def commit_evaluation(self, states: Mapping[str, AlertState], entries: Sequence[OutboxEntry],
                                now: float) -> int:
        if not states and not entries:
            return 0
        return await asyncio.to_thread(self.tables.commit_evaluation, states, entries, now)

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        return await asyncio.to_thread(self.tables.enqueue, entries)

    async def pending(self, sink: str, limit: int, due_by: float = math.inf, *,
                      retries: bool = False) -> list[OutboxRow]:
        return await asyncio.to_thread(self.tables.pending, sink, limit, due_by, retries=retries)

    async def supersede_older(self, sink: str, now: float) -> int:
        return await asyncio.to_thread(self.tables.supersede_older, sink, now)

    async def mark_delivered(self, row_ids: Sequence[int], now: float) -> None:
        if row_ids:
            await asyncio.to_thread(self.tables.mark_delivered, row_ids, now)

    async def mark_retry(self, row_ids: Sequence[int], error: str, next_attempt_at: float) -> None:
        if row_ids:
            await asyncio.to_thread(self.tables.mark_retry, row_ids, error, next_attempt_at)

    async def mark_superseded(self, row_ids: Sequence[int], now: float) -> None:
        if row_ids:
            await asyncio.to_thread(self.tables.mark_superseded, row_ids, now)

    async def mark_dropped(self, row_ids: Sequence[int], now: float, error: str) -> None:
        if row_ids:
            await asyncio.to_thread(self.tables.mark_dropped, row_ids, now, error)

    async def drop_pending(self, sink: str, now: float, error: str, created_before: float = math.inf) -> int:
        return await asyncio.to_thread(self.tables.drop_pending, sink, now, error, created_before)

    async def last_created_at(self, sinks: Sequence[str]) -> dict[str, float]:
        return await asyncio.to_thread(self.tables.last_created_at, sinks)

    async def schedule(self, sink: str) -> list[tuple[float, int]]:
        return await asyncio.to_thread(self.tables.schedule, sink)

    async def pending_counts(self) -> dict[str, int]:
        return await asyncio.to_thread(self.tables.pending_counts)

    async def purge(self, older_than: float) -> int:
        return await asyncio.to_thread(self.tables.purge, older_than)


def _outbox_row(row: Row) -> OutboxRow:
    return OutboxRow(row_id=int(row["id"]), sink=row["sink"], alert_id=row["alert_id"],
                     dedup_key=row["dedup_key"], status=row["status"], payload=json.loads(row["payload"]),
                     created_at=row["created_at"], next_attempt_at=row["next_attempt_at"],
                     attempts=int(row["attempts"]))


def insert_entries(conn: Transaction, entries: Sequence[OutboxEntry]) -> int:
    """Enqueue `entries` in the caller's transaction (an entry whose (sink, dedup_key) is stored
    already is ignored); returns the rows added. The audit trail commits the decision events of a
    row with the row (`ActionStore.record`)."""
    if not entries:
        return 0
    encoded: dict[int, str] = {}  # one notification bound for several sinks shares its payload object

    def encode(entry: OutboxEntry) -> str:
        text = encoded.get(id(entry.payload))
        if text is None:
            text = encoded[id(entry.payload)] = json.dumps(dict(entry.payload), sort_keys=True)
        return text

    return conn.executemany(
        "INSERT INTO outbox (sink, alert_id, dedup_key, status, payload, created_at, next_attempt_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sink, dedup_key) DO NOTHING",
        [(e.sink, e.alert_id, e.dedup_key, e.status, encode(e), e.created_at, e.next_attempt_at)
         for e in entries])
