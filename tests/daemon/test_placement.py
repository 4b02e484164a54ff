"""Which instance leads which cluster (daemon/runtime/placement.py): a pure function of the
members and leases, so every instance computes the same answer."""

from __future__ import annotations

from quotapilot.daemon.runtime.placement import Placement, place, weight
from quotapilot.daemon.store.leases import Lease
from quotapilot.daemon.store.members import Member

T0 = 1_767_225_600.0
STABLE, GRACE = 10.0, 15.0


def member(name: str, since: float = T0 - 100) -> Member:
    return Member(f"{name}/0", name, since, T0)


def lease(cluster: str, holder: str, expires_at: float = T0 + 10, epoch: int = 1) -> Lease:
    return Lease(cluster, f"{holder}/0", epoch, expires_at)


def moves(me: str, clusters: list[str], members: list[Member], leases: list[Lease],
          started_at: float = T0) -> Placement:
    by_name = {m.instance: m for m in members}
    return place(by_name[me], clusters, members, leases, now=T0, stable_seconds=STABLE, grace_seconds=GRACE,
                 started_at=started_at)


class TestPlace:
    def test_alone_it_takes_every_free_cluster(self) -> None:
        assert moves("a", ["c1", "c2"], [member("a")], []) == Placement((), ("c1", "c2"), None)

    def test_a_free_cluster_goes_to_the_least_loaded_then_the_heaviest_weight(self) -> None:
        members = [member("a"), member("b")]
        leases = [lease("c0", "a")]  # a leads one already: b is preferred for the free one
        assert moves("b", ["c0", "c1"], members, leases).take == ("c1",)
        assert moves("a", ["c0", "c1"], members, leases) == Placement(("c0",), (), None)
        # equal loads: the rendezvous weight decides, the same way on both
        winner = max(["a", "b"], key=lambda name: weight("c1", name))
        loser = "a" if winner == "b" else "b"
        assert moves(winner, ["c1"], members, []).take == ("c1",)
        assert moves(loser, ["c1"], members, []).take == ()

    def test_anyone_takes_a_lease_free_for_longer_than_the_grace(self) -> None:
        members = [member("a"), member("b")]
        held_by_a = [lease("c0", "a")]
        assert moves("a", ["c0", "c1"], members, [*held_by_a, lease("c1", "x", expires_at=T0 - 1)]).take == ()
        assert moves("a", ["c0", "c1"], members, [*held_by_a, lease("c1", "x", expires_at=T0 - GRACE)]).take == (
            "c1",)
        # never taken at all: free since this instance started, at least
        assert moves("a", ["c0", "c1"], members, held_by_a, started_at=T0 - 1).take == ()
        assert moves("a", ["c0", "c1"], members, held_by_a, started_at=T0 - GRACE).take == ("c1",)

    def test_hands_one_over_to_a_stable_member_two_below(self) -> None:
        leases = [lease("c1", "a"), lease("c2", "a")]
        fresh = [member("a"), member("b", since=T0 - STABLE + 1)]
        assert moves("a", ["c1", "c2"], fresh, leases).release is None  # b not live for two renewals yet
        stable = [member("a"), member("b")]
        handed = moves("a", ["c1", "c2"], stable, leases)
        assert handed.release == min(["c1", "c2"], key=lambda c: weight(c, "a"))
        assert len(handed.renew) == 1
        # a difference of one never moves anything (that is what keeps it from flapping)
        assert moves("a", ["c1", "c2", "c3"], stable, [*leases, lease("c3", "b")]).release is None

    def test_a_live_lease_of_another_is_left_alone(self) -> None:
        assert moves("a", ["c1"], [member("a"), member("b")], [lease("c1", "b")]) == Placement((), (), None)
