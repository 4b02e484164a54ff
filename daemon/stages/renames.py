"""Quotas renamed in VMS: their pauses follow them to the new target name.

A quota VMS renames keeps its VMS id and path: the same quota (DESIGN's identity rule; the growth
stage keeps its cooldown). A pause is stored by the target's name (a path may be several tenants'
quotas'), so at the first confirmed poll that lists the quota under its new name, the pauses of
the name it was last confirmed under are moved to the new one (`OverrideStore.rename`: if the new
name has a pause of its own, the longer one is kept), logged once (`override.renamed`: the row has
moved, and nothing is left to move). A pause stored by the path (88b95cb) needs no move.

The name each quota was last confirmed under is kept in memory; at a cluster's first poll in this
process (and in each term this instance leads it: the names a former term left are stale) it is
read from the samples stored before that poll — the poll's own is stored by then, and would hide
the rename — so a rename while the daemon was down (or another instance led) is found too.
When two quotas swap names and one of the renames is confirmed a poll after the other, the first
waits for the second (moved alone, its pause met the other quota's pause still on the name).
A pause of every cluster (`*`) is moved only when the daemon watches one cluster: on another
cluster the old name may be another quota's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import PollResult
from quotapilot.daemon.store.overrides import OverrideStore, Renamed, pause_scopes
from quotapilot.forecasting.types import Observation, TargetKind

log = get_logger(__name__)

QuotaKey = tuple[int, str]
"""A quota of one cluster: its VMS id and path."""


@dataclass(frozen=True, slots=True)
class Rename:
    """A quota confirmed under `new_name`, last confirmed under `old_name`."""

    cluster: str
    quota_id: int
    path: str
    old_name: str
    new_name: str


class QuotaNames:
    """Per cluster, the target name each quota (VMS id, path) was last confirmed under."""

    def __init__(self) -> None:
        self._names: dict[str, dict[QuotaKey, str]] = {}

    def known(self, cluster: str) -> bool:
        return cluster in self._names

    def seed(self, cluster: str, stored: Sequence[Observation]) -> None:
        """Start `cluster`'s names from `stored` (the newest stored sample of each name): the
        newest name of each quota (VMS id, path) — also a name the poll lists, which may be
        another quota's by now (a new quota took the name while the daemon was down)."""
        names: dict[QuotaKey, tuple[float, str]] = {}
        for obs in stored:
            if obs.quota_id is None or obs.target.kind is not TargetKind.QUOTA:
                continue
            key = (obs.quota_id, obs.target.path)
            if key not in names or names[key][0] < obs.t:
                names[key] = (obs.t, obs.target.name)
        self._names[cluster] = {key: name for key, (_, name) in names.items()}

    def undo(self, renames: Sequence[Rename]) -> None:
        """`renames` were not moved: each quota's old name again, so the next poll finds them anew."""
        for rename in renames:
            self._names[rename.cluster][(rename.quota_id, rename.path)] = rename.old_name

    def forget(self, cluster: str) -> None:
        """`cluster` is no longer led here: its names are read anew at the next term's first poll."""
        self._names.pop(cluster, None)

    def renamed(self, poll: PollResult) -> list[Rename]:
        """The quotas of `poll` confirmed under another name than they last were (each said
        once: the new name is remembered). An unconfirmed sample changes nothing, and holds back
        a confirmed rename to the name the unconfirmed quota is leaving (half of a swap)."""
        names = self._names.setdefault(poll.cluster, {})
        quotas = [(o.quota_id, o.target) for o in poll.observations
                  if o.quota_id is not None and o.target.kind is TargetKind.QUOTA]
        leaving = {names[(quota_id, target.path)] for quota_id, target in quotas if target.name in poll.unconfirmed
                   and names.get((quota_id, target.path), target.name) != target.name}
        found: list[Rename] = []
        for quota_id, target in quotas:
            if target.name in poll.unconfirmed or target.name in leaving:
                continue
            key = (quota_id, target.path)
            old = names.get(key)
            names[key] = target.name
            if old is not None and old != target.name:
                found.append(Rename(poll.cluster, quota_id, target.path, old, target.name))
        return found


class RenamedPauses:
    """Moves the pauses of a renamed quota to its new name, at each poll of a cluster the growth
    stage acts on, before it reads the pauses (see the module docstring)."""

    def __init__(self, overrides: OverrideStore, stored_latest: Callable[[str, float], Sequence[Observation]], *,
                 sole_cluster: bool) -> None:
        """`stored_latest`: (cluster, before) → the newest sample stored before `before` of each of
        its names (blocking);
        `sole_cluster`: the daemon watches one VMS cluster (a pause of every cluster is its pause)."""
        self.overrides = overrides
        self.stored_latest = stored_latest
        self.sole_cluster = sole_cluster
        self.names = QuotaNames()

    async def on_poll(self, poll: PollResult, now: float, *, stored_before: float) -> None:
        """`stored_before`: when this term's first poll of the cluster was taken (its names are
        seeded from the samples stored before it)."""
        if not self.names.known(poll.cluster):
            self.names.seed(poll.cluster, await asyncio.to_thread(self.stored_latest, poll.cluster, stored_before))
        renames = self.names.renamed(poll)
        if not renames:
            return
        try:
            done = await asyncio.to_thread(self._move, renames, now)
        except BaseException:
            self.names.undo(renames)  # not moved: found again at the next poll
            raise
        for rename, paused_on, moved in done:
            log.warning("override.renamed", cluster=rename.cluster, paused_on=paused_on, old_target=rename.old_name,
                        target=rename.new_name, quota_id=rename.quota_id, path=rename.path,
                        already_paused=moved.already_paused, paused_until=moved.kept.paused_until,
                        reason=moved.kept.reason)

    def _move(self, renames: Sequence[Rename], now: float) -> list[tuple[Rename, str, Renamed]]:
        """Each rename's pauses moved: (rename, the cluster the pause is of, what `rename` kept).

        All of a poll's renames move at once, in one transaction of two steps: every old name's
        pause first goes to a name of its quota's own that no target can have (`_in_transit`),
        then to its new name. One by one, two quotas swapping names moved a pause there and back
        again, and a chain (b → a while a → c) merged two quotas' pauses. A new name meets a pause
        of its own in the second step only when that name was not renamed away in the same poll."""
        scoped = [(rename, paused_on) for rename in renames
                  for paused_on in pause_scopes(rename.cluster, sole_cluster=self.sole_cluster)]
        away = [(rename.old_name, _in_transit(rename), paused_on) for rename, paused_on in scoped]
        back = [(_in_transit(rename), rename.new_name, paused_on) for rename, paused_on in scoped]
        kept = self.overrides.rename_all(away + back, now=now)[len(away):]
        return [(rename, paused_on, moved) for (rename, paused_on), moved in zip(scoped, kept, strict=True)
                if moved is not None]


def _in_transit(rename: Rename) -> str:
    """A name no target can have (target names hold no NUL), unique to the renamed quota."""
    return f"\x00renaming\x00{rename.quota_id}\x00{rename.path}"
