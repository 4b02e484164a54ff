"""Review r14: the names the rename migration remembers, across a fleet's change of leader."""

from __future__ import annotations

from pathlib import Path

from test_actuator import NOW, RAW, TIB, Alternating, FakeVms, Replica

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.store.db import Database
from quotapilot.daemon.store.overrides import OverrideStore

NEW_NAME = "cosmos7-raw-2027"


async def test_a_pause_of_a_quota_that_took_a_renamed_quotas_old_name_under_another_leader_is_kept(
        tmp_path: Path) -> None:
    """Instance 1 leads, then instance 2 does: under it quota id 1 is renamed (no pause to move),
    a new quota id 2 takes id 1's old name and is paused by that name. The lead comes back to
    instance 1, whose memory still says id 1 is "cosmos7-raw": it must not move id 2's pause to id 1."""
    db, vms, clock = Database(tmp_path / "state.db"), FakeVms(), VirtualClock(NOW)
    vms.add(1, RAW.name, RAW.path, hard=100 * TIB, used=10 * TIB)
    first, second = Replica(db, vms, clock, leads=True, mode="enforce"), Replica(db, vms, clock, leads=False,
                                                                                  mode="enforce")
    cycles = Alternating(first, second, clock)

    await cycles(2)
    first.leadership.leads, second.leadership.leads = False, True  # the lease passes to instance 2
    await cycles(2)
    vms.quotas[1]["name"] = NEW_NAME  # renamed in VMS under instance 2
    await cycles(1, frozenset({NEW_NAME}))
    await cycles(1)
    vms.add(2, RAW.name, "/cosmos7/raw-new", hard=100 * TIB, used=80 * TIB)  # takes the free name
    OverrideStore(db).pause(RAW.name, now=clock.now(), cluster="c1", reason="id 2's")  # as the API stores it
    await cycles(1, frozenset({RAW.name}))
    await cycles(1)
    assert vms.patches == []
    first.leadership.leads, second.leadership.leads = True, False  # handed back
    await cycles(2)
    assert [o.target for o in OverrideStore(db).active(clock.now())] == [RAW.name]
    assert [quota_id for quota_id, _ in vms.patches] == []  # id 2 stays paused
