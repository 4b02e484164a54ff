"""Which targets a cluster still has: vanished (deleted or renamed) quotas, found from good polls.

A quota missing from every successful poll of its cluster for `REMOVED_TARGET_GRACE_SECONDS`
(measured from the last poll that listed it) is *removed*: the alerting stage resolves its alerts
("target removed") and forgets its state, the growth stage evicts its counters, pauses and usage
window (so `/metrics` carries no series of it). Its audit rows stay. A failed poll proves
nothing and counts for nothing; a target whose sample was dropped this cycle is still present.
"""

from __future__ import annotations

from collections.abc import Iterable

from quotapilot.daemon.runtime.cycle import PollResult

REMOVED_TARGET_GRACE_SECONDS = 3600.0
"""How long a target may be missing from its cluster's good polls before it counts as removed
(an hour: a quota re-created at once keeps its history and alerts; churn stays bounded)."""


class TargetPresence:
    """When each target (cluster, name) was last listed by a good poll, and its path."""

    def __init__(self, grace_seconds: float = REMOVED_TARGET_GRACE_SECONDS) -> None:
        self.grace_seconds = grace_seconds
        self._last_seen: dict[str, dict[str, tuple[str, float]]] = {}

    def removed(self, poll: PollResult, now: float, *, known: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        """(name, path) of `poll.cluster`'s targets removed as of this good poll (each reported
        once, then forgotten). `known`: (name, path) of targets the caller holds state of but this
        process may never have seen listed (e.g. alert states loaded from the store): their grace
        starts now."""
        if not poll.ok:
            return []
        seen = self._last_seen.setdefault(poll.cluster, {})
        present = {obs.target.name for obs in poll.observations} | {d.target for d in poll.dropped}
        for obs in poll.observations:
            seen[obs.target.name] = (obs.target.path, now)
        for name, path in known:
            seen.setdefault(name, (path, now))
        gone = [(name, path) for name, (path, last) in seen.items()
                if name not in present and now - last >= self.grace_seconds]
        for name, _ in gone:
            del seen[name]
        return gone
