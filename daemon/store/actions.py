"""The audit trail of growth actions (table `actions`), written ahead of every PATCH.

A row's life in enforce mode: `intent` (committed before the PATCH) → `patched` → `verified`
(or `verify_failed`); or `intent` → `failed` / `replanned`; or `intent` → `unknown` (the PATCH
was sent, its answer lost, the re-read inconclusive). A filesystem's growth command (`fs/growth.py`):
`running` → `verified` / `verify_failed` / `failed`, or `unknown` (killed after its timeout,
cancelled, or left `running` by a crash: it may have grown the filesystem). A row left open (`intent`, `patched`,
`unknown`) is settled by `reconcile` in the actuator once no request of ours can still land
(→ `reconciled` when VMS shows the new limit, `abandoned` when it shows the old one,
`external_change` when someone else moved it). Observe mode writes `would_grow`;
guards write `blocked` / `paused` (once per episode, not every cycle).

Fencing (a fleet on PostgreSQL): `record(..., fence=Fence(holder, epoch))` stores the row only if
that lease is still current for the cluster, in the same transaction (the lease row is locked
`FOR UPDATE`, so a new leader cannot take over between the check and the insert); otherwise it
raises `FencedOut` and nothing is written. Every row carries the `epoch` it was made under (0 for
the single SQLite instance, which leads alone and records without a fence).

Decision events: `record(..., events=entries)` enqueues the outbox entries of the row's decision
(its `intent` or `blocked` event) in the row's transaction, so the audit row and its event are on
disk together or not at all (a fenced-out intent leaves neither); `record(..., result_events=)`
likewise the `result` event of a row that is an outcome as written (`external_change`), made from
the row as stored.

Blocking calls: run them with `asyncio.to_thread` from async code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from quotapilot.alerts.dispatcher import OutboxEntry
from quotapilot.daemon.store.backend import Backend, Row, StoreError, Transaction
from quotapilot.daemon.store.outbox import insert_entries
from quotapilot.forecasting.types import Decision, Dimension

UNFINISHED = ("intent", "patched", "unknown")
"""Open statuses: a crash can leave `intent`/`patched` behind; `unknown` is a write whose answer
was lost and whose re-read did not show it applied. `reconcile` settles them by reading VMS."""
GREW = ("verified", "reconciled", "patched", "verify_failed", "unknown")
"""Statuses after which VMS (probably, or possibly) holds the new limit: they count as growths
(cooldown, rate limit, the audit's totals). `patched`/`verify_failed`/`unknown` are included to
err on the safe side."""
COUNTED = (*GREW, "would_grow")
"""Statuses that start a cooldown and count against the rate limit (observe mode included)."""
WRITTEN = (*UNFINISHED, "verified", "reconciled", "verify_failed", "failed", "abandoned")
"""Statuses of an enforce-mode row whose PATCH we sent (or may have sent)."""
RUNNING = "running"
"""A filesystem growth's row while its command runs (`fs/growth.py`: written before the command
starts). No PATCH of the quota actuator's, so `reconcile` never reads it; the filesystem growth
stage settles a row a crash (or a cancellation) left `running` as `unknown` — which counts."""
STARTED = (RUNNING, *WRITTEN)
"""Statuses of an enforce-mode row whose write (a PATCH, or a filesystem's growth command) was, or
may have been, started: whatever it changed is ours (`growth_started_since`)."""
_WRITE_OF_OURS = f"mode = 'enforce' AND new_hard IS NOT NULL AND status IN ({', '.join('?' * len(WRITTEN))})"
"""The rows of a write of ours (`WRITTEN`, in enforce mode), with `WRITTEN` as its parameters."""


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One row of the audit trail."""

    id: int
    cluster: str
    target: str
    path: str
    quota_id: int | None
    dimension: str
    mode: str
    status: str
    reason: str
    old_hard: int | None
    old_soft: int | None
    new_hard: int | None
    new_soft: int | None
    detail: dict[str, Any]
    created_at: float
    updated_at: float
    epoch: int | None = None
    """The lease epoch the row was recorded under (None: written before fencing existed)."""

    @classmethod
    def from_row(cls, row: Row) -> ActionRecord:
        values = dict(row)
        values["detail"] = json.loads(values["detail"] or "{}")
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        """The API's view of one action (`/api/v1/actions`)."""
        return {
            "id": self.id, "cluster": self.cluster, "target": self.target, "path": self.path,
            "quota_id": self.quota_id, "dimension": self.dimension, "mode": self.mode,
            "status": self.status, "reason": self.reason, "old_hard": self.old_hard,
            "old_soft": self.old_soft, "new_hard": self.new_hard, "new_soft": self.new_soft,
            "growth": (self.new_hard - self.old_hard) if self.new_hard is not None and self.old_hard is not None
            else None,
            "detail": self.detail, "created_at": self.created_at, "updated_at": self.updated_at,
        }


class FencedOut(StoreError):
    """The lease an intent was to be recorded under is no longer current: a deposed leader."""


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease an action is taken under: `holder` leads the cluster under `epoch`."""

    holder: str
    epoch: int


def lease_is_current(conn: Transaction, cluster: str, fence: Fence, now: float, *, lock: bool) -> bool:
    """Whether `fence` is the live lease of `cluster` at `now`, optionally locking the lease row
    until the transaction ends (PostgreSQL; SQLite's write transaction already excludes others)."""
    sql = "SELECT 1 FROM leases WHERE cluster = ? AND holder = ? AND epoch = ? AND expires_at > ?"
    if lock:
        sql += " FOR UPDATE"
    return conn.execute(sql, (cluster, fence.holder, fence.epoch, now)).fetchone() is not None


class ActionStore:
    """Queries of the `actions` table."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    def record(self, decision: Decision, *, mode: str, status: str, now: float, quota_id: int | None,
               reason: str | None = None, fence: Fence | None = None, events: Sequence[OutboxEntry] = (),
               result_events: Callable[[ActionRecord], Sequence[OutboxEntry]] | None = None) -> int:
        """Insert one row (committed before returning: this is the write-ahead) and return its id.

        With a `fence`, only while that lease is current (checked in the same transaction);
        `FencedOut` otherwise. `events`: the outbox entries of the decision's event, enqueued in
        the same transaction. `result_events`: for a row that is an outcome as written
        (`external_change`), the row as stored → the entries of its `result` event (whose id is
        the row's, unknown before the insert), enqueued in the same transaction too."""
        detail = dict(decision.numbers)
        if decision.guard:
            detail["guard"] = decision.guard  # type: ignore[assignment]  # the JSON detail mixes numbers and the guard name
        if decision.urgency_seconds is not None:
            detail["urgency_seconds"] = decision.urgency_seconds
        cluster = decision.target.cluster
        with self.db.transaction() as conn:
            if fence is not None and not lease_is_current(conn, cluster, fence, now,
                                                          lock=self.db.dialect == "postgres"):
                raise FencedOut(f"lease of {cluster} under epoch {fence.epoch} is no longer held by {fence.holder}")
            row = conn.execute(
                "INSERT INTO actions (cluster, target, path, quota_id, dimension, mode, status, reason,"
                " old_hard, old_soft, new_hard, new_soft, detail, created_at, updated_at, epoch)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (cluster, decision.target.name, decision.target.path, quota_id,
                 decision.dimension.value, mode, status, reason or decision.reason, decision.current_hard,
                 decision.current_soft, decision.new_hard, decision.new_soft,
                 json.dumps(detail, sort_keys=True), now, now, fence.epoch if fence is not None else 0)).fetchone()
            assert row is not None
            insert_entries(conn, events)
            if result_events is not None:
                stored = conn.execute("SELECT * FROM actions WHERE id = ?", (row[0],)).fetchone()
                assert stored is not None
                insert_entries(conn, result_events(ActionRecord.from_row(stored)))
        return int(row[0])

    def mark(self, action_id: int, status: str, now: float, reason: str | None = None,
             **detail: Any) -> None:
        """Move a row to `status` (appending `reason` and merging `detail`)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT reason, detail FROM actions WHERE id = ?", (action_id,)).fetchone()
            if row is None:
                raise KeyError(action_id)
            merged = {**json.loads(row["detail"] or "{}"), **detail}
            new_reason = row["reason"] if reason is None else f"{row['reason']} → {reason}"
            conn.execute("UPDATE actions SET status = ?, reason = ?, detail = ?, updated_at = ? WHERE id = ?",
                         (status, new_reason, json.dumps(merged, sort_keys=True), now, action_id))

    def get(self, action_id: int) -> ActionRecord | None:
        rows = self.db.query("SELECT * FROM actions WHERE id = ?", (action_id,))
        return ActionRecord.from_row(rows[0]) if rows else None

    def unfinished(self, cluster: str | None = None) -> list[ActionRecord]:
        """Rows a crash left between intent and verification, oldest first."""
        sql = f"SELECT * FROM actions WHERE status IN ({', '.join('?' * len(UNFINISHED))})"
        params: list[object] = list(UNFINISHED)
        if cluster is not None:
            sql += " AND cluster = ?"
            params.append(cluster)
        return [ActionRecord.from_row(r) for r in self.db.query(sql + " ORDER BY id", tuple(params))]

    def with_status(self, status: str, cluster: str) -> list[ActionRecord]:
        """The rows of `cluster` in `status`, oldest first."""
        return [ActionRecord.from_row(r) for r in self.db.query(
            "SELECT * FROM actions WHERE cluster = ? AND status = ? ORDER BY id", (cluster, status))]

    def growth_started_since(self, cluster: str, target: str, since: float) -> bool:
        """Whether a write of ours on `target` of `cluster` (`STARTED`: a PATCH, or a filesystem's
        growth command, whatever its outcome) was started at or after `since`: a size that moved
        since then may be ours."""
        rows = self.db.query(
            f"SELECT 1 FROM actions WHERE cluster = ? AND target = ? AND mode = 'enforce' AND created_at >= ?"
            f" AND status IN ({', '.join('?' * len(STARTED))}) LIMIT 1", (cluster, target, since, *STARTED))
        return bool(rows)

    def changed_since(self, since: float) -> list[ActionRecord]:
        """Rows recorded or moved to another status at or after `since`, oldest first."""
        return [ActionRecord.from_row(r) for r in
                self.db.query("SELECT * FROM actions WHERE updated_at >= ? ORDER BY id", (since,))]

    def last_growth_at(self, cluster: str, mode: str | None = None,
                       also: Sequence[str] = ()) -> dict[tuple[str, Dimension], float]:
        """When each series of `cluster` last grew (or would have; or ended in one of the statuses
        `also`): (target name, dimension) → time."""
        return {(r["target"], Dimension(r["dimension"])): float(r["t"])
                for r in self._last_growths(cluster, mode, "target", also)}

    def last_growth_by_quota(self, cluster: str,
                             mode: str | None = None) -> dict[tuple[int | None, str, Dimension], float]:
        """When each series of `cluster` last grew (or would have), keyed by the quota's identity:
        (VMS quota id, path, dimension) → time. A quota re-created under the same name is another key."""
        return {(r["quota_id"], r["path"], Dimension(r["dimension"])): float(r["t"])
                for r in self._last_growths(cluster, mode, "quota_id, path")}

    def _last_growths(self, cluster: str, mode: str | None, key: str, also: Sequence[str] = ()) -> list[Row]:
        """The latest counted action (or one in a status of `also`) of `cluster` per `key` columns
        and dimension."""
        statuses = (*COUNTED, *also)
        sql = (f"SELECT {key}, dimension, MAX(created_at) AS t FROM actions WHERE cluster = ?"
               f" AND status IN ({', '.join('?' * len(statuses))})")
        params: list[object] = [cluster, *statuses]
        if mode is not None:
            sql += " AND mode = ?"
            params.append(mode)
        return self.db.query(sql + f" GROUP BY {key}, dimension", tuple(params))

    def audited_write(self, cluster: str, quota_id: int | None, hard_limit: int,
                      dimension: Dimension = Dimension.BYTES) -> bool:
        """Whether a write of ours (any sent or possibly sent PATCH) asked `quota_id` for `hard_limit`
        (of `dimension`: bytes or inodes): a limit that moved to anything else was moved by someone
        else."""
        # `quota_id IS ?` is SQLite only (PostgreSQL's IS takes NULL/TRUE/FALSE, not a parameter)
        same_quota, params = ("quota_id IS NULL", ()) if quota_id is None else ("quota_id = ?", (quota_id,))
        rows = self.db.query(
            f"SELECT 1 FROM actions WHERE cluster = ? AND {same_quota} AND dimension = ? AND new_hard = ?"
            f" AND {_WRITE_OF_OURS} LIMIT 1",
            (cluster, *params, dimension.value, hard_limit, *WRITTEN))
        return bool(rows)

    def written_limits(self, cluster: str) -> set[tuple[int | None, Dimension, int]]:
        """Every (quota id, dimension, hard limit) a write of ours asked for on `cluster`: each
        `audited_write` question of the cluster, answered in one read (no index serves
        `audited_write`'s, a scan of the audit per call: a recovery of the baseline asks it of
        every limit that moved)."""
        rows = self.db.query(
            f"SELECT DISTINCT quota_id, dimension, new_hard FROM actions WHERE cluster = ? AND {_WRITE_OF_OURS}",
            (cluster, *WRITTEN))
        return {(r["quota_id"], Dimension(r["dimension"]), int(r["new_hard"])) for r in rows}

    def audited_external_limits(self, cluster: str) -> set[tuple[int | None, Dimension, int]]:
        """The (quota id, dimension, hard limit) of the latest `external_change` audited for each
        quota and dimension of `cluster`: the limit someone else set, already said. The actuator's
        row (a lost answer's, settled on a re-read) asked for `new_hard`; the limit it found is its
        `live_hard`. Only the latest: a limit audited long ago and changed away since is new again."""
        rows = self.db.query(
            "SELECT quota_id, dimension, new_hard, detail FROM actions WHERE cluster = ? AND status = ?"
            " ORDER BY updated_at, id", (cluster, "external_change"))
        latest: dict[tuple[int | None, Dimension], int] = {}
        for r in rows:
            limit = json.loads(r["detail"] or "{}").get("live_hard", r["new_hard"])
            if limit is not None:
                latest[(r["quota_id"], Dimension(r["dimension"]))] = int(limit)
        return {(quota_id, dimension, limit) for (quota_id, dimension), limit in latest.items()}

    def last_of_each_target(self, cluster: str) -> list[ActionRecord]:
        """The newest row of each target of `cluster`."""
        rows = self.db.query(
            "SELECT a.* FROM actions a JOIN (SELECT target, MAX(id) AS id FROM actions WHERE cluster = ?"
            " GROUP BY target) newest ON a.id = newest.id", (cluster,))
        return [ActionRecord.from_row(row) for row in rows]

    def count_since(self, since: float, cluster: str | None = None, mode: str | None = None) -> int:
        """Growth actions (and would-grows) started at or after `since` (the global rate limit)."""
        sql = f"SELECT COUNT(*) FROM actions WHERE created_at >= ? AND status IN ({', '.join('?' * len(COUNTED))})"
        params: list[object] = [since, *COUNTED]
        if cluster is not None:
            sql += " AND cluster = ?"
            params.append(cluster)
        if mode is not None:
            sql += " AND mode = ?"
            params.append(mode)
        return int(self.db.query(sql, tuple(params))[0][0])

    def rate_limit_count_since(self, since: float, *, mode: str) -> int:
        """What the global `max_actions_per_hour` counts since `since` for a growth of a target in
        `mode`: every real write (the enforce rows, whatever the global mode — an override's target
        in enforce mode writes as much as any), and for a target observed also the would-grows, so
        that observe mode reports the limit as enforce would meet it. A would-grow never holds a
        real write (as it starts no cooldown for a target in enforce mode)."""
        return self.count_since(since, mode="enforce" if mode == "enforce" else None)

    def totals(self, mode: str = "enforce") -> tuple[int, int]:
        """(growth actions, bytes added) over the whole trail, for summaries."""
        rows = self.db.query(
            f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN dimension = 'bytes' THEN new_hard - old_hard END), 0)"
            f" FROM actions WHERE mode = ? AND status IN ({', '.join('?' * len(GREW))})", (mode, *GREW))
        return int(rows[0][0]), int(rows[0][1])

    def prune(self, older_than: float, *, cluster: str | None = None, open_rows: bool = False) -> int:
        """Drop finished rows created before `older_than` (audit retention); of `cluster` only, when
        given. `open_rows`: its open rows too — for a cluster whose open rows nothing settles (a
        filesystem's `unknown`: no read can tell what a killed command did), which would otherwise
        outlive any retention."""
        where = "created_at < ?"
        params: list[object] = [older_than]
        if cluster is not None:
            where, params = f"{where} AND cluster = ?", [*params, cluster]
        if not open_rows:
            where = f"{where} AND status NOT IN ({', '.join('?' * len(UNFINISHED))})"
            params = [*params, *UNFINISHED]
        with self.db.transaction() as conn:
            return conn.execute(f"DELETE FROM actions WHERE {where}", tuple(params)).rowcount


def query_actions(db: Backend, *, cluster: str | None = None, target: str | None = None,
                  status: str | None = None, since: float | None = None, until: float | None = None,
                  before_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The audit trail for `/api/v1/actions`, newest first.

    `target` matches the quota name or its path; `before_id` pages backwards (pass the last id of
    the previous page); `limit` is clamped to 1..1000.
    """
    clauses: list[str] = []
    params: list[object] = []
    if cluster is not None:
        clauses.append("cluster = ?")
        params.append(cluster)
    if target is not None:
        clauses.append("(target = ? OR path = ?)")
        params.extend([target, target])
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("created_at < ?")
        params.append(until)
    if before_id is not None:
        clauses.append("id < ?")
        params.append(before_id)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    limit = max(1, min(int(limit), 1000))
    rows = db.query(f"SELECT * FROM actions{where} ORDER BY id DESC LIMIT {limit}", tuple(params))
    return [ActionRecord.from_row(r).as_json() for r in rows]

