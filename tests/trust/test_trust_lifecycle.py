"""Issue 13, defect 6: vanished, renamed and re-created targets."""

from __future__ import annotations

from pathlib import Path

from trust_helpers import TB, TrustClock, audit, daemon_writes, notifications, settings_for

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer


async def test_the_alerts_of_a_deleted_quota_resolve(trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
    # every quota above 50 % warns: t-data (70 %) and t-hot (60 %) fire on the second poll (the
    # first one confirms)
    settings = settings_for(trust, store=store, policy={"mode": "observe", "overrides": [
        {"match": "*", "warning_at": 0.5}]})
    async with Daemon(settings, clock) as daemon:
        await daemon.poll_once("sim")
        clock.advance(60)
        await daemon.poll_once("sim")
        assert ("sim/t-hot/utilization", "firing") in notifications(store, "sim/t-hot/")
        hot = trust.engine.quota_by_name("t-hot")
        assert hot is not None
        trust.engine.delete_quota(hot.id, source="operator")  # an operator removes the quota
        for _ in range(32):  # four days of polls: past any sensible grace period
            clock.advance(3 * 3600)
            await daemon.poll_once("sim")
    assert notifications(store, "sim/t-hot/utilization")[-1] == ("sim/t-hot/utilization", "resolved")


async def test_a_quota_recreated_under_the_same_name_elsewhere_starts_afresh(
        trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
    policy = {"mode": "enforce", "overrides": [{"match": "t-hot", "grow_at": 0.5, "target_utilization": 0.45}]}
    async with Daemon(settings_for(trust, store=store, policy=policy), clock) as daemon:
        await daemon.poll_once("sim")  # a first sample: growth waits for the next to confirm it
        clock.advance(60)
        await daemon.poll_once("sim")
        assert [r["status"] for r in audit(store, "t-hot")] == ["verified"]
        # t-hot is deleted and a quota of the same name made on /t/spare (15 TB used of 20 TB: 75 %)
        old = trust.engine.quota_by_name("t-hot")
        assert old is not None
        trust.engine.delete_quota(old.id, source="operator")
        new = trust.engine.create_quota(name="t-hot", path="/t/spare", hard_limit=20 * TB, soft_limit=18 * TB,
                                        source="operator")
        clock.advance(60)
        await daemon.poll_once("sim")  # the new quota's first sample
        clock.advance(60)
        await daemon.poll_once("sim")
    # another quota (VMS id, path): no cooldown of the old one applies
    assert [w.quota_id for w in daemon_writes(trust) if w.path == "/t/spare"] == [new.id]


async def test_a_removed_targets_series_are_evicted(trust: SimulatorServer, clock: TrustClock, store: Path) -> None:
    async with Daemon(settings_for(trust, store=store, policy={"mode": "observe"}), clock) as daemon:
        await daemon.poll_once("sim")
        hot = trust.engine.quota_by_name("t-hot")
        assert hot is not None
        trust.engine.delete_quota(hot.id, source="operator")
        for _ in range(32):  # four days
            clock.advance(3 * 3600)
            await daemon.poll_once("sim")
        series = [(metric.name, sample.labels) for metric in daemon.registry.collect() for sample in metric.samples
                  if sample.labels.get("target") == "t-hot"]
    assert series == []
