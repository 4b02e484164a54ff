"""The growth stage's (and pre-flight's) view of the pool for the cluster-reserve guard (issue 13 defect 9)."""

from __future__ import annotations

from quotapilot.forecasting.planner import net_of_overcommit
from quotapilot.forecasting.types import ClusterCapacity

TB = 10**12


def pool(*, free: int, allocated: int | None, quotas_used: int | None = None) -> ClusterCapacity:
    return ClusterCapacity("c1", 0.0, usable_bytes=100 * TB, used_bytes=100 * TB - free, free_bytes=free,
                           quotas_allocated_bytes=allocated, quotas_used_bytes=quotas_used)


class TestNetOfOvercommit:
    """Bytes the quotas already promise count as taken."""

    def test_overcommitted_pool_has_no_room_left(self) -> None:
        seen = net_of_overcommit(pool(free=95 * TB, allocated=140 * TB))
        assert seen is not None and seen.free_bytes == -40 * TB

    def test_partly_promised_pool_offers_only_the_unpromised_part(self) -> None:
        seen = net_of_overcommit(pool(free=95 * TB, allocated=60 * TB))
        assert seen is not None and seen.free_bytes == 40 * TB

    def test_free_space_below_the_unpromised_part_stays(self) -> None:
        seen = net_of_overcommit(pool(free=20 * TB, allocated=60 * TB))
        assert seen is not None and seen.free_bytes == 20 * TB

    def test_data_outside_the_quotas_leaves_room_only_beyond_their_unused_promises(self) -> None:
        """60 TB used, 30 of them outside any quota; the quotas promise 50 TB and use 30: of the
        40 TB free, 20 are promised (usable − allocated, 50 TB, took no account of the data
        outside, and the quotas were grown until the pool filled)."""
        seen = net_of_overcommit(pool(free=40 * TB, allocated=50 * TB, quotas_used=30 * TB))
        assert seen is not None and seen.free_bytes == 20 * TB

    def test_quotas_over_their_limits_promise_nothing_more(self) -> None:
        seen = net_of_overcommit(pool(free=40 * TB, allocated=50 * TB, quotas_used=55 * TB))
        assert seen is not None and seen.free_bytes == 40 * TB

    def test_unknown_allocation_changes_nothing(self) -> None:
        capacity = pool(free=95 * TB, allocated=None)
        assert net_of_overcommit(capacity) == capacity
        assert net_of_overcommit(None) is None
