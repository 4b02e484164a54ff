"""Which instance of a fleet should lead which VMS cluster: a pure function of what the store says.

Every instance computes the same answer from the same two tables (`members`, `leases`), so there
is no coordinator and no extra message; the lease statement stays the only arbiter (two instances
that both think they are preferred for a free lease race for it, and exactly one wins).

The rule, least-loaded with a rendezvous tie-break ("fair share"):

- **Load** of a member: the live leases it holds.
- **Preferred** for a free cluster (no row, expired, or released): the live member with the
  smallest load; ties go to the highest rendezvous weight `hash(cluster, instance name)`, so a
  restarted instance (same name) is preferred for the same clusters again, and every instance
  breaks the tie the same way.
- **Take** a free lease when this instance is preferred, or when the lease has stayed free for
  `grace_seconds` (whoever is preferred may be sick: no cluster is left unled for longer).
- **Hand over** (release one lease, the one this instance weighs least) only when a *stable* live
  member (heard from for at least `stable_seconds`, two renewals) holds at least two fewer: then
  that member is the preferred one and takes it at its next renewal. A difference of two, not
  one, and one lease per round is what keeps it from flapping: after the move the two are within
  one of each other, and nothing moves back.

Sticky on purpose: a lease moves only when its holder dies or leaves, or to even out a difference
of two. Plain rendezvous hashing would spread clusters evenly only on average (3 clusters on 3
instances land 2-1-0 a fifth of the time) and would move healthy clusters whenever a member joins.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from quotapilot.daemon.store.leases import Lease
from quotapilot.daemon.store.members import Member


def weight(cluster: str, instance: str) -> int:
    """The rendezvous weight of (cluster, instance): the same on every host and every run."""
    digest = hashlib.blake2b(f"{cluster}\0{instance}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class Placement:
    """What one instance does with the leases this round."""

    renew: tuple[str, ...]
    """Clusters it holds and keeps."""
    take: tuple[str, ...]
    """Free clusters it tries to take."""
    release: str | None
    """A cluster it holds and hands over (to a less loaded, stable member)."""


def place(me: Member, clusters: Iterable[str], members: Sequence[Member], leases: Sequence[Lease], *,
          now: float, stable_seconds: float, grace_seconds: float, started_at: float) -> Placement:
    """This instance's moves for one round. `members`: the live ones (this instance among them);
    `leases`: every lease row; `started_at`: when this instance started (a cluster without a row
    has been free at least that long)."""
    live = {m.holder: m for m in members} | {me.holder: me}
    rows = {lease.cluster: lease for lease in leases}
    held = {lease.cluster for lease in leases if lease.holder == me.holder and lease.expires_at > now}
    load: Counter[str] = Counter(lease.holder for lease in leases if lease.expires_at > now)
    renew, take = [], []
    for cluster in sorted(set(clusters)):
        row = rows.get(cluster)
        if cluster in held:
            renew.append(cluster)
            continue
        if row is not None and row.expires_at > now:
            continue  # another instance leads it
        free_since = row.expires_at if row is not None else started_at
        if _preferred(cluster, live.values(), load) == me.holder or now - free_since >= grace_seconds:
            take.append(cluster)
            load[me.holder] += 1  # what the next free cluster's preference sees
    release = None
    stable = [m for m in live.values() if m.holder != me.holder and now - m.first_seen >= stable_seconds]
    if renew and stable and min(load[m.holder] for m in stable) <= len(renew) - 2:
        release = min(renew, key=lambda cluster: weight(cluster, me.instance))
        renew.remove(release)
    return Placement(tuple(renew), tuple(take), release)


def _preferred(cluster: str, members: Iterable[Member], load: Counter[str]) -> str:
    return min(members, key=lambda m: (load[m.holder], -weight(cluster, m.instance), m.holder)).holder
