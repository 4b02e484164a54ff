"""The reservations table (daemon/store/reservations.py), on both backends: answers, idempotency, expiry."""

from __future__ import annotations

from dataclasses import replace

from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.reservations import Reservation, ReservationStore, ReservedCapacity, active_reservations


def granted(key: str, nbytes: int, *, t: float = 100.0, ttl: float = 60.0, target: str = "raw") -> Reservation:
    return Reservation(id=f"rsv_{key}", idempotency_key=key, cluster="c", target=target, bytes=nbytes, inodes=1,
                       status="granted", response_status=201, response={"id": f"rsv_{key}", "n": nbytes},
                       request={"bytes": nbytes}, created_at=t, expires_at=t + ttl, released_at=None)


class TestReservationStore:
    """Answers are stored once per key; only granted, unexpired rows count as demand."""

    def test_first_answer_wins_for_a_key(self, backend: Backend) -> None:
        store = ReservationStore(backend)
        first = store.record(granted("k", 10))
        again = store.record(replace(granted("k", 99), id="rsv_other"))
        assert again == first
        assert store.find_by_key("k") == first

    def test_totals_follow_expiry_and_release(self, backend: Backend) -> None:
        db = backend
        store = ReservationStore(db)
        store.record(granted("a", 10, ttl=60))
        store.record(granted("b", 5, ttl=600))
        store.record(granted("x", 7, target="other"))
        assert store.active_reservations("c", "raw", 120.0) == ReservedCapacity(15, 2, 2)
        assert store.active_totals(120.0)[("c", "other")] == ReservedCapacity(7, 1, 1)
        assert active_reservations(db, "c", "raw", 200.0) == ReservedCapacity(5, 1, 1)
        released = store.release("rsv_b", 300.0)
        assert released is not None and released.status == "released" and released.released_at == 300.0
        assert store.active_reservations("c", "raw", 300.0) == ReservedCapacity()
        expired = store.release("rsv_a", 300.0)  # past its TTL: nothing to release
        assert expired is not None and expired.effective_status(300.0) == "expired"
        assert store.expire(300.0) == 2  # a and x
        assert store.release("rsv_nope", 300.0) is None


class TestTotalsBeyondSixtyFourBits:
    """Guards the sums behind the API and the growth stage: reservations a store already holds
    that add up past 2**63 (granted before the API refused such totals) are summed exactly on
    both backends — SQLite's SUM() raised `integer overflow` (a 500 on every target listing), and
    PostgreSQL's SUM of BIGINT is NUMERIC."""

    def test_totals_past_2_63_are_exact(self, backend: Backend) -> None:
        store = ReservationStore(backend)
        huge = 2**62
        for key in ("a", "b", "c"):
            store.record(replace(granted(key, huge), inodes=huge))
        expected = ReservedCapacity(3 * huge, 3 * huge, 3)
        assert expected == store.active_reservations("c", "raw", 120.0)
        assert expected == store.active_totals(120.0)[("c", "raw")]
