"""Reservations: capacity a pipeline has set aside on a target, until it releases it or its TTL ends.

A reservation is demand the planner counts on top of the observed usage (see
`active_reservations`). Every answer to `POST /api/v1/reservations` is stored with its
idempotency key — refusals too — so a client retrying the same request while its reservation is
active gets the same status and body, even across daemon restarts. Once that reservation has
ended (released, expired) or when the answer was a refusal, the key asks anew: the ended row
gives its key up (`supersede`: kept as `<key>#<id>` for the audit) to the new answer.

Deciding and storing an answer is serialised per cluster across every instance sharing the store
(`serialized`: a transaction-scoped advisory lock on PostgreSQL; SQLite serves one instance, and
its write transaction is exclusive): two instances must not both grant the last room.

Expiry is evaluated against `now` in every query (an expired row is never counted as active even
before `expire()` has marked it), so no background task is needed for correctness; `expire()`
only keeps the `status` column honest for the audit.

Blocking calls (either backend): call them from asyncio code through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from quotapilot.daemon.store.backend import Backend, Row, Transaction

_RESERVE_LOCK = 7_215_520
"""First key of the transaction-scoped advisory lock (the second: the cluster's hash) under which
an answer is decided and stored (PostgreSQL)."""

ReservationStatus = Literal["granted", "refused", "released", "expired"]


@dataclass(frozen=True, slots=True)
class ReservedCapacity:
    """Sum of the active reservations of one target."""

    bytes: int = 0
    inodes: int = 0
    count: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    """One stored reservation (or refusal) and the answer it was given."""

    id: str
    idempotency_key: str
    cluster: str
    target: str
    bytes: int
    inodes: int
    status: ReservationStatus
    response_status: int
    response: dict[str, Any]
    request: dict[str, Any]
    created_at: float
    expires_at: float
    released_at: float | None

    def replayed_at(self, now: float) -> bool:
        """Whether a request with this key at `now` gets this answer back: while the reservation
        it granted is active. A refusal, or a reservation released or expired, is asked anew."""
        return self.effective_status(now) == "granted"

    def effective_status(self, now: float) -> ReservationStatus:
        """`status`, with a granted reservation past its TTL reported as expired."""
        if self.status == "granted" and self.expires_at <= now:
            return "expired"
        return self.status


def new_reservation_id() -> str:
    return "rsv_" + uuid.uuid4().hex[:20]


def _row(row: Row) -> Reservation:
    return Reservation(
        id=row["id"], idempotency_key=row["idempotency_key"], cluster=row["cluster"],
        target=row["target"], bytes=row["bytes"], inodes=row["inodes"], status=row["status"],
        response_status=row["response_status"], response=json.loads(row["response"]),
        request=json.loads(row["request"]), created_at=row["created_at"],
        expires_at=row["expires_at"], released_at=row["released_at"])


def _total(rows: list[Row]) -> ReservedCapacity:
    # Summed here, not with SQL SUM(): SQLite's raises "integer overflow" past 2**63 (and
    # PostgreSQL's is NUMERIC), and rows granted before the API capped a target's total at
    # MAX_BYTES may add up that far; Python's integers are exact on both backends.
    return ReservedCapacity(bytes=sum(int(r["bytes"]) for r in rows),
                            inodes=sum(int(r["inodes"]) for r in rows), count=len(rows))


class ReservationStore:
    """The `reservations` table."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    def find_by_key(self, idempotency_key: str) -> Reservation | None:
        rows = self.db.query("SELECT * FROM reservations WHERE idempotency_key = ?", (idempotency_key,))
        return _row(rows[0]) if rows else None

    def get(self, reservation_id: str) -> Reservation | None:
        rows = self.db.query("SELECT * FROM reservations WHERE id = ?", (reservation_id,))
        return _row(rows[0]) if rows else None

    @contextmanager
    def serialized(self, cluster: str) -> Iterator[Transaction]:
        """A transaction in which one answer for `cluster` is decided and stored (`record` with
        `conn`): on PostgreSQL under an advisory lock per cluster, taken before anything is read,
        so the reservations another instance stored are counted (committed before the lock was
        released to us)."""
        with self.db.transaction() as conn:
            if self.db.dialect == "postgres":
                conn.execute("SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), hashtext(?))",
                             (_RESERVE_LOCK, cluster))
            yield conn

    def record(self, reservation: Reservation, *, conn: Transaction | None = None,
               supersede: Reservation | None = None) -> Reservation:
        """Store an answer. If the idempotency key is already stored (a concurrent duplicate),
        the stored one wins and is returned; otherwise `reservation` is. `supersede`: the ended
        answer the key held (`Reservation.replayed_at` false), which gives the key up — unless
        another request took it meanwhile. `conn`: the `serialized` transaction to store in."""
        if conn is None:
            with self.db.transaction() as own:
                return self.record(reservation, conn=own, supersede=supersede)
        if supersede is not None:
            conn.execute("UPDATE reservations SET idempotency_key = ? WHERE id = ? AND idempotency_key = ?",
                         (f"{supersede.idempotency_key}#{supersede.id}", supersede.id, supersede.idempotency_key))
        inserted = conn.execute(
            "INSERT INTO reservations (id, idempotency_key, cluster, target, bytes, inodes, status,"
            " response_status, response, request, created_at, expires_at, released_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            (reservation.id, reservation.idempotency_key, reservation.cluster, reservation.target,
             reservation.bytes, reservation.inodes, reservation.status, reservation.response_status,
             json.dumps(reservation.response, sort_keys=True),
             json.dumps(reservation.request, sort_keys=True), reservation.created_at,
             reservation.expires_at, reservation.released_at)).rowcount
        if inserted:
            return reservation
        rows = conn.execute("SELECT * FROM reservations WHERE idempotency_key = ?",
                            (reservation.idempotency_key,)).fetchall()
        if not rows:
            raise KeyError(reservation.idempotency_key)
        return _row(rows[0])

    def release(self, reservation_id: str, now: float) -> Reservation | None:
        """Release a granted reservation; releasing twice, or after expiry, changes nothing.
        Returns the reservation as it now stands, or None when there is no such id."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE reservations SET status = 'released', released_at = ?"
                " WHERE id = ? AND status = 'granted' AND expires_at > ?",
                (now, reservation_id, now))
        return self.get(reservation_id)

    def expire(self, now: float) -> int:
        """Mark granted reservations past their TTL as expired; returns how many."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE reservations SET status = 'expired' WHERE status = 'granted' AND expires_at <= ?", (now,))
            return cursor.rowcount

    def active_reservations(self, cluster: str, target: str, now: float) -> ReservedCapacity:
        """Total bytes and inodes set aside on one target at `now` (the planner's extra demand)."""
        rows = self.db.query(
            "SELECT bytes, inodes FROM reservations"
            " WHERE cluster = ? AND target = ? AND status = 'granted' AND expires_at > ?",
            (cluster, target, now))
        return _total(rows)

    def active_totals(self, now: float) -> dict[tuple[str, str], ReservedCapacity]:
        """`active_reservations` of every target at once, keyed by (cluster, target name)."""
        rows = self.db.query(
            "SELECT cluster, target, bytes, inodes FROM reservations"
            " WHERE status = 'granted' AND expires_at > ?", (now,))
        by_target: dict[tuple[str, str], list[Row]] = {}
        for row in rows:
            by_target.setdefault((row["cluster"], row["target"]), []).append(row)
        return {key: _total(target_rows) for key, target_rows in by_target.items()}

    def list_active(self, now: float, *, cluster: str | None = None, target: str | None = None) -> list[Reservation]:
        """Granted, unexpired reservations, oldest first, optionally of one target."""
        sql = "SELECT * FROM reservations WHERE status = 'granted' AND expires_at > ?"
        params: list[object] = [now]
        if cluster is not None:
            sql += " AND cluster = ?"
            params.append(cluster)
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        return [_row(r) for r in self.db.query(sql + " ORDER BY created_at, id", tuple(params))]


def active_reservations(db: Backend, cluster: str, target: str, now: float) -> ReservedCapacity:
    """Convenience for callers holding only the database (the growth stage reads `active_totals`)."""
    return ReservationStore(db).active_reservations(cluster, target, now)
