"""Review r14: a rename while the daemon was down, with the store stage running first (as the
wiring runs it: `StoreStage`, forecast, growth)."""

from __future__ import annotations

from pathlib import Path

from test_actuator import NOW, RAW, TIB, Harness, make_settings, poll

from quotapilot.daemon.runtime.cycle import CycleContext
from quotapilot.daemon.stages.store import StoreStage
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.store.overrides import OverrideStore

NEW_NAME = "cosmos7-raw-2027"


async def _cycle(h: Harness, store: StoreStage, *, unconfirmed: frozenset[str] = frozenset()) -> CycleContext:
    """One cycle as the daemon runs it: the store stage writes the poll, then the growth stage."""
    ctx = CycleContext(poll=poll(h.vms, h.clock.now(), unconfirmed=unconfirmed), now=h.clock.now())
    await store.on_cycle(ctx)
    await h.stage.on_cycle(ctx)
    return ctx


def _store(h: Harness) -> StoreStage:
    return StoreStage(ObservationStore(h.db, raw_retention_seconds=86400, hourly_retention_seconds=86400))


async def _before_restart(tmp_path: Path) -> None:
    """The daemon ran, stored the quota under its old name, was paused by name, then stopped."""
    before = Harness(tmp_path, make_settings("enforce"))
    OverrideStore(before.db).pause(RAW.name, now=NOW, cluster="c1", reason="migration")
    await _cycle(before, _store(before))
    assert before.vms.patches == []
    before.db.close()


async def test_a_pause_by_name_is_kept_when_the_quota_is_renamed_while_the_daemon_is_down(tmp_path: Path) -> None:
    await _before_restart(tmp_path)
    h = Harness(tmp_path, make_settings("enforce"))  # restart: a new growth stage, same store
    h.clock.advance(600)
    h.vms.quotas[1]["name"] = NEW_NAME  # renamed in VMS while down (same VMS id and path)
    store = _store(h)
    await _cycle(h, store, unconfirmed=frozenset({NEW_NAME}))  # the first sample since start
    h.clock.advance(60)
    await _cycle(h, store)  # confirmed
    assert [o.target for o in OverrideStore(h.db).active(h.clock.now())] == [NEW_NAME]
    assert h.vms.patches == []


async def test_a_pause_does_not_move_to_a_new_quota_that_took_the_old_name_while_the_daemon_was_down(
        tmp_path: Path) -> None:
    """e688536's case, with the store stage first: id 1 renamed, a new quota id 2 took the old name."""
    await _before_restart(tmp_path)
    h = Harness(tmp_path, make_settings("enforce"))
    h.clock.advance(600)
    h.vms.quotas[1]["name"] = NEW_NAME
    h.vms.add(2, RAW.name, "/cosmos7/raw-new", hard=100 * TIB, used=10 * TIB)
    store = _store(h)
    await _cycle(h, store, unconfirmed=frozenset({NEW_NAME, RAW.name}))
    h.clock.advance(60)
    await _cycle(h, store)
    assert [o.target for o in OverrideStore(h.db).active(h.clock.now())] == [NEW_NAME]
    assert [quota_id for quota_id, _ in h.vms.patches] == []  # id 1 is paused still
