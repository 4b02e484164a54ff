"""Pauses and policy overrides that name another tenant's quota by its bare name.

Before 0198d09, an admin login (no `tenant` configured) listing every tenant's quotas named another
tenant's quota by its VMS name alone when no other quota had that name (`projects`); since, it is
`<tenant>:<name>` (`vms.validation.QuotaNaming`). What an operator made under the old name would
silently stop applying, and a quota the operator had paused be grown:

- A pause (a row of `overrides`, keyed by target name) is moved to the qualified name at the first
  poll that lists the quota (`override.migrated`), so it holds that quota and is lifted by that
  name. Logged once: the row has moved, and the next start finds nothing to move. Moved only when
  the bare name says one quota: no home quota has it, exactly one other tenant's does, and the row
  is this cluster's (a row of every cluster, `*`, only when the daemon watches one cluster: on
  another cluster the name may be a home quota's). Otherwise the row stays as it is — with its home
  meaning: the home quota of that name, or none — and `override.not_migrated` names the
  candidates, once per process.
- A `[[policy.overrides]]` `match` is the operator's glob and is read as written: reading it as a
  qualified name too would make a target's policy hang on which other quotas VMS lists (a home
  quota created under the name would take the policy over), unseen by `check-config`. One that
  matches no target of a cluster while it matches the bare name of another tenant's quota there
  is logged (`policy.override_unmatched`, naming the qualified names to match), once per process;
  looked for again only when the cluster's bare names change.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.cycle import PollResult
from quotapilot.daemon.settings import PolicyOverride
from quotapilot.daemon.store.overrides import ANY, Override, OverrideStore, pause_scopes
from quotapilot.forecasting.types import TargetKind

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PauseMove:
    """A pause by the bare name of one other tenant's quota, to be moved to its target name."""

    pause: Override
    new_target: str
    """If `new_target` has a pause in force of its own there, the longer one is kept
    (`OverrideStore.rename`, which says so: `Renamed.already_paused`)."""


@dataclass(frozen=True, slots=True)
class PauseNotMoved:
    """A pause by a bare name that may mean several quotas: left as it is."""

    pause: Override
    candidates: tuple[str, ...]
    """The target names of the quotas so named (the home quota's, the name itself, first)."""
    applies_to: str | None
    """What the pause holds as it stands: the home quota of the name, or nothing."""
    why: str


def plan_pauses(pauses: Iterable[Override], bare_names: Mapping[str, tuple[str, ...]], cluster: str, *,
                sole_cluster: bool) -> tuple[list[PauseMove], list[PauseNotMoved]]:
    """Which of `pauses` (in force) to move on `cluster`, whose listing has `bare_names`
    (`PollResult.bare_names`), and which name a bare name that is not one quota's.
    `sole_cluster`: `cluster` is the only VMS cluster watched (a `*` pause is its pause)."""
    moves: list[PauseMove] = []
    not_moved: list[PauseNotMoved] = []
    for pause in pauses:
        if pause.is_kill_switch or pause.cluster not in (cluster, ANY):
            continue
        candidates = bare_names.get(pause.target)
        if not candidates:
            continue  # no other tenant's quota has the name here: its meaning did not change
        home = pause.target if candidates[0] == pause.target else None
        qualified = candidates[1:] if home is not None else candidates
        if home is not None:
            why = "a home quota has the name (before 0198d09 the other tenants' quota of that name was not watched)"
        elif len(qualified) > 1:
            why = "several other tenants' quotas have the name"
        elif pause.cluster not in pause_scopes(cluster, sole_cluster=sole_cluster):
            why = "paused on every cluster: on another cluster the name may be a home quota's"
        else:
            moves.append(PauseMove(pause, qualified[0]))
            continue
        not_moved.append(PauseNotMoved(pause, candidates, home, why))
    return moves, not_moved


def unmatched_overrides(overrides: Iterable[PolicyOverride],
                        poll: PollResult) -> list[tuple[PolicyOverride, tuple[str, ...]]]:
    """The policy overrides that match no quota of `poll`'s cluster but the bare name of another
    tenant's quota there, each with the target names of the quotas whose bare name it matches."""
    found: list[tuple[PolicyOverride, tuple[str, ...]]] = []
    for override in overrides:
        candidates = tuple(sorted(
            target for bare, targets in poll.bare_names.items() if fnmatch.fnmatchcase(bare, override.match)
            for target in targets if target != bare))
        if not candidates:
            continue
        if any(override.matches(o.target.name, o.target.path) for o in poll.observations
               if o.target.kind is TargetKind.QUOTA):
            continue
        if any(fnmatch.fnmatchcase(d.target, override.match) for d in poll.dropped):
            continue  # a quota whose sample is dropped this poll still has the policy
        found.append((override, candidates))
    return found


class BareNameUpgrade:
    """Moves and names what was made by bare names (see the module docstring), at each poll of a
    cluster the growth stage acts on, before it reads the pauses. Costs nothing while every
    quota listed is a home quota (`PollResult.bare_names` empty)."""

    def __init__(self, overrides: OverrideStore, policy_overrides: Sequence[PolicyOverride], *,
                 sole_cluster: bool) -> None:
        """`sole_cluster`: the daemon watches one VMS cluster (a pause of every cluster is its pause)."""
        self.overrides = overrides
        self.policy_overrides = tuple(policy_overrides)
        self.sole_cluster = sole_cluster
        self._logged: set[tuple[str, ...]] = set()
        """What `override.not_migrated` and `policy.override_unmatched` have said in this process."""
        self._overrides_matched: dict[str, Mapping[str, tuple[str, ...]]] = {}
        """Per cluster, the bare names its policy overrides were last matched against: matched
        again only when they change (every override against every quota took 0.2 s of the event
        loop per poll at 10,000 quotas, to log what is logged once anyway)."""

    async def on_poll(self, poll: PollResult, now: float) -> None:
        if not poll.bare_names:
            return
        cluster = poll.cluster
        if self.policy_overrides and self._overrides_matched.get(cluster) != poll.bare_names:
            self._overrides_matched[cluster] = poll.bare_names
            self._log_unmatched(poll)
        pauses = await asyncio.to_thread(self.overrides.active, now)
        moves, not_moved = plan_pauses(pauses, poll.bare_names, cluster, sole_cluster=self.sole_cluster)
        for move in moves:
            pause = move.pause
            renamed = await asyncio.to_thread(self.overrides.rename, pause.target, move.new_target,
                                              cluster=pause.cluster, now=now)
            if renamed is not None:
                log.warning("override.migrated", cluster=cluster, paused_on=pause.cluster, old_target=pause.target,
                            target=move.new_target, already_paused=renamed.already_paused,
                            paused_until=renamed.kept.paused_until, reason=renamed.kept.reason)
        for item in not_moved:
            pause = item.pause
            if self._once("pause", cluster, pause.cluster, pause.target, *item.candidates):
                log.warning("override.not_migrated", cluster=cluster, paused_on=pause.cluster, target=pause.target,
                            candidates=list(item.candidates), applies_to=item.applies_to, why=item.why,
                            detail="pause the quota meant by its target name, then resume this one")

    def _log_unmatched(self, poll: PollResult) -> None:
        for override, candidates in unmatched_overrides(self.policy_overrides, poll):
            if self._once("policy", poll.cluster, override.match, *candidates):
                log.warning("policy.override_unmatched", cluster=poll.cluster, match=override.match,
                            candidates=list(candidates),
                            detail="matches no target, but the name another tenant's quota had before other "
                                   "tenants' quotas were named <tenant>:<name>: match the qualified name")

    def _once(self, *key: str) -> bool:
        if key in self._logged:
            return False
        self._logged.add(key)
        return True
