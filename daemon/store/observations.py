"""Observation history: the raw tier (every poll sample, a few days) and an hourly tier (the last
sample of each hour, weeks) that the forecaster warm-starts from after a restart.

One poll is written in one transaction (`write_poll`), so a crash leaves either all of a poll's
samples or none. Methods are blocking; async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Sequence

from quotapilot.daemon.store.backend import Backend
from quotapilot.forecasting.types import Observation, TargetId, TargetKind

HOUR_SECONDS = 3600.0

HistoryPoint = tuple[float, int, int | None]
"""(t, used_bytes, used_inodes)"""

_INSERT_RAW = """
INSERT INTO observations (cluster, target, path, kind, t, used_bytes, hard_limit_bytes,
    soft_limit_bytes, used_inodes, hard_limit_inodes, soft_limit_inodes, state, quota_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (cluster, target, t) DO UPDATE SET
    path = excluded.path, kind = excluded.kind, used_bytes = excluded.used_bytes,
    hard_limit_bytes = excluded.hard_limit_bytes, soft_limit_bytes = excluded.soft_limit_bytes,
    used_inodes = excluded.used_inodes, hard_limit_inodes = excluded.hard_limit_inodes,
    soft_limit_inodes = excluded.soft_limit_inodes, state = excluded.state, quota_id = excluded.quota_id
"""
_UPSERT_HOURLY = """
INSERT INTO observations_hourly (cluster, target, path, kind, hour, t, used_bytes, hard_limit_bytes,
    used_inodes, hard_limit_inodes)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (cluster, target, hour) DO UPDATE SET
    path = excluded.path, t = excluded.t, used_bytes = excluded.used_bytes,
    hard_limit_bytes = excluded.hard_limit_bytes, used_inodes = excluded.used_inodes,
    hard_limit_inodes = excluded.hard_limit_inodes
WHERE excluded.t >= observations_hourly.t
"""


class ObservationStore:
    """Reads and writes the `observations` and `observations_hourly` tables."""

    def __init__(self, db: Backend, *, raw_retention_seconds: float,
                 hourly_retention_seconds: float) -> None:
        self.db = db
        self.raw_retention_seconds = raw_retention_seconds
        self.hourly_retention_seconds = hourly_retention_seconds

    def write_poll(self, observations: Sequence[Observation]) -> None:
        """Store one poll's validated samples in both tiers, in one transaction."""
        if not observations:
            return
        raw = []
        hourly = []
        for obs in observations:
            target = obs.target
            raw.append((target.cluster, target.name, target.path, target.kind.value, obs.t,
                        obs.used_bytes, obs.hard_limit_bytes, obs.soft_limit_bytes, obs.used_inodes,
                        obs.hard_limit_inodes, obs.soft_limit_inodes, obs.state, obs.quota_id))
            hourly.append((target.cluster, target.name, target.path, target.kind.value,
                           obs.t - obs.t % HOUR_SECONDS, obs.t, obs.used_bytes, obs.hard_limit_bytes,
                           obs.used_inodes, obs.hard_limit_inodes))
        with self.db.transaction() as conn:
            conn.executemany(_INSERT_RAW, raw)
            conn.executemany(_UPSERT_HOURLY, hourly)

    def import_history(self, observations: Sequence[Observation]) -> int:
        """Imported history (e.g. from Prometheus) into the hourly tier, the last sample of each
        hour, in one transaction; an hour that already has a sample keeps it (local samples are
        never overwritten, and a second import adds nothing). Returns the rows added."""
        last_of_hour: dict[tuple[str, str, float], Observation] = {}
        for obs in observations:
            key = (obs.target.cluster, obs.target.name, obs.t - obs.t % HOUR_SECONDS)
            kept = last_of_hour.get(key)
            if kept is None or obs.t >= kept.t:
                last_of_hour[key] = obs
        rows = [(o.target.cluster, o.target.name, o.target.path, o.target.kind.value, hour, o.t, o.used_bytes,
                 o.hard_limit_bytes, o.used_inodes, o.hard_limit_inodes)
                for (_, _, hour), o in last_of_hour.items()]
        if not rows:
            return 0
        with self.db.transaction() as conn:
            return conn.executemany(
                "INSERT INTO observations_hourly (cluster, target, path, kind, hour, t, used_bytes,"
                " hard_limit_bytes, used_inodes, hard_limit_inodes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (cluster, target, hour) DO NOTHING", rows)

    def history(self, target: TargetId, since: float) -> list[HistoryPoint]:
        """`(t, used_bytes, used_inodes)` of one target from `since`, oldest first: hourly points
        where the raw tier no longer reaches, every raw sample after that."""
        raw = self.db.query(
            "SELECT t, used_bytes, used_inodes FROM observations"
            " WHERE cluster = ? AND target = ? AND t >= ? ORDER BY t",
            (target.cluster, target.name, since))
        first_raw = raw[0]["t"] if raw else None
        hourly_sql = ("SELECT t, used_bytes, used_inodes FROM observations_hourly"
                      " WHERE cluster = ? AND target = ? AND t >= ?")
        params: tuple[object, ...] = (target.cluster, target.name, since)
        if first_raw is not None:
            hourly_sql += " AND t < ?"
            params = (*params, first_raw)
        hourly = self.db.query(hourly_sql + " ORDER BY t", params)
        return [(row["t"], row["used_bytes"], row["used_inodes"]) for row in (*hourly, *raw)]

    def histories(self, cluster: str, since: float) -> dict[str, list[HistoryPoint]]:
        """`history()` of every target of `cluster` at once (two queries, for a warm start of
        thousands of series), by target name."""
        raw: dict[str, list[HistoryPoint]] = {}
        for row in self.db.query("SELECT target, t, used_bytes, used_inodes FROM observations"
                                 " WHERE cluster = ? AND t >= ? ORDER BY target, t", (cluster, since)):
            raw.setdefault(row["target"], []).append((row["t"], row["used_bytes"], row["used_inodes"]))
        merged: dict[str, list[HistoryPoint]] = {}
        for row in self.db.query("SELECT target, t, used_bytes, used_inodes FROM observations_hourly"
                                 " WHERE cluster = ? AND t >= ? ORDER BY target, t", (cluster, since)):
            recent = raw.get(row["target"])
            if recent and row["t"] >= recent[0][0]:
                continue
            merged.setdefault(row["target"], []).append((row["t"], row["used_bytes"], row["used_inodes"]))
        for name, points in raw.items():
            merged.setdefault(name, []).extend(points)
        return merged

    def latest(self, cluster: str, *, before: float | None = None) -> list[Observation]:
        """The newest raw sample of every target of `cluster` (e.g. to show something at start);
        with `before`, the newest taken before that time."""
        cut = "" if before is None else " AND t < ?"
        rows = self.db.query(
            "SELECT o.* FROM observations o JOIN ("
            f"  SELECT target, MAX(t) AS t FROM observations WHERE cluster = ?{cut} GROUP BY target"
            ") newest ON o.target = newest.target AND o.t = newest.t WHERE o.cluster = ?",
            (cluster, cluster) if before is None else (cluster, before, cluster))
        return [
            Observation(
                target=TargetId(row["cluster"], row["target"], row["path"], TargetKind(row["kind"])),
                t=row["t"], used_bytes=row["used_bytes"], hard_limit_bytes=row["hard_limit_bytes"],
                soft_limit_bytes=row["soft_limit_bytes"], used_inodes=row["used_inodes"],
                hard_limit_inodes=row["hard_limit_inodes"], soft_limit_inodes=row["soft_limit_inodes"],
                state=row["state"], quota_id=row["quota_id"])
            for row in rows
        ]

    def recent_hard_limits(self, target: TargetId, quota_id: int | None, *, before: float,
                           count: int) -> list[tuple[int | None, int | None]]:
        """The hard limits (bytes, inodes) of `target`'s newest `count` raw samples before
        `before`, oldest first; only those of the quota it is now (VMS id `quota_id`, at its
        path): the samples of a quota the name stood for before are not its history."""
        rows = self.db.query(
            "SELECT quota_id, path, hard_limit_bytes, hard_limit_inodes FROM observations"
            " WHERE cluster = ? AND target = ? AND t < ? ORDER BY t DESC LIMIT ?",
            (target.cluster, target.name, before, count))
        limits: list[tuple[int | None, int | None]] = []
        for row in rows:  # newest first: up to the first sample of another identity
            if (row["quota_id"], row["path"]) != (quota_id, target.path):
                break
            limits.append((row["hard_limit_bytes"], row["hard_limit_inodes"]))
        return limits[::-1]

    def prune(self, now: float, *, batch_rows: int = 20_000) -> tuple[int, int]:
        """Delete samples past their tier's retention, `batch_rows` per transaction so that other
        writers are never held up long; returns (raw, hourly) rows deleted."""
        deleted = []
        for table, key, cutoff in (("observations", "t", now - self.raw_retention_seconds),
                                   ("observations_hourly", "hour", now - self.hourly_retention_seconds)):
            total = 0
            while True:
                with self.db.transaction() as conn:
                    count = conn.execute(
                        f"DELETE FROM {table} WHERE (cluster, target, {key}) IN"
                        f" (SELECT cluster, target, {key} FROM {table} WHERE t < ? LIMIT ?)",
                        (cutoff, batch_rows)).rowcount
                total += count
                if count < batch_rows:
                    break
            deleted.append(total)
        return deleted[0], deleted[1]
