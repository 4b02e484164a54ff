"""Leases (table `leases`): which instance leads each VMS cluster, under which epoch.

One row per cluster: `holder`, `epoch`, `expires_at`. Each operation is ONE statement, so two
instances racing for a lease cannot both win:

- `acquire` (also the renewal): insert the row, or take it over when it has expired, or extend it
  when we hold it already. The epoch goes up by one on every change of holder, never otherwise,
  so it is a fencing token: an intent recorded under epoch N is refused once N+1 exists.
- `release`: expire our own lease now, so a standby takes over at its next attempt instead of
  waiting for the expiry (a clean shutdown).
- `is_current`: the check the actuator repeats right before a PATCH.

Time is the caller's (the injected clock's wall time): every instance compares against its own
clock, so hosts must be NTP-synchronised to well under the margin between renewal and expiry
(the defaults: renew every 5 s, expire after 15 s). Blocking; call through `asyncio.to_thread`.
"""

from __future__ import annotations

from dataclasses import dataclass

from quotapilot.daemon.store.actions import Fence
from quotapilot.daemon.store.backend import Backend, Row

_ACQUIRE = """
INSERT INTO leases (cluster, holder, epoch, expires_at) VALUES (?, ?, 1, ?)
ON CONFLICT (cluster) DO UPDATE SET
    epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END,
    holder = excluded.holder,
    expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder OR leases.expires_at <= ?
RETURNING epoch
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """One cluster's lease as stored."""

    cluster: str
    holder: str
    epoch: int
    expires_at: float

    @classmethod
    def from_row(cls, row: Row) -> Lease:
        return cls(row["cluster"], row["holder"], int(row["epoch"]), float(row["expires_at"]))


class LeaseStore:
    """Acquire, renew, release and check leases."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    def acquire(self, cluster: str, holder: str, *, now: float, ttl_seconds: float) -> Fence | None:
        """Take or renew the lease of `cluster` for `ttl_seconds`: the fence (holder, epoch) when
        `holder` now leads it, None when someone else's lease is still live."""
        with self.db.transaction() as conn:
            row = conn.execute(_ACQUIRE, (cluster, holder, now + ttl_seconds, now)).fetchone()
        return Fence(holder, int(row[0])) if row is not None else None

    def release(self, fence: Fence, cluster: str, *, now: float) -> bool:
        """Give up our lease (it expires at `now`; the epoch stays, the next holder increments it)."""
        with self.db.transaction() as conn:
            return conn.execute(
                "UPDATE leases SET expires_at = ? WHERE cluster = ? AND holder = ? AND epoch = ? AND expires_at > ?",
                (now, cluster, fence.holder, fence.epoch, now)).rowcount > 0

    def is_current(self, cluster: str, fence: Fence, *, now: float) -> bool:
        """Whether `fence` still leads `cluster` at `now` (the re-check right before a PATCH)."""
        return bool(self.db.query(
            "SELECT 1 FROM leases WHERE cluster = ? AND holder = ? AND epoch = ? AND expires_at > ?",
            (cluster, fence.holder, fence.epoch, now)))

    def all(self) -> list[Lease]:
        """Every lease row (live or expired), by cluster: who leads what, for `status`."""
        return [Lease.from_row(r) for r in self.db.query("SELECT * FROM leases ORDER BY cluster")]
