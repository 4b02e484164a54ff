"""Issue 13, wrong writes 1, 3 and 4: what the actuator does when a write's outcome is unknown,
when VMS reports a limit far below usage, and when an old write lands after a restart. Review r1,
defects 1 and 2: a refusal after an applied attempt, and a quota id listed for two quotas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from trust_helpers import TB, MonotonicView, TrustClock, audit, daemon_writes, settings_for, wait_until

from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.simulator import SimulatorServer

GROW_NOW = {"mode": "enforce", "grow_at": 0.45, "target_utilization": 0.4, "max_growth_bytes": "2TiB",
            "min_growth_bytes": "1TiB", "step_bytes": "1TiB", "cooldown_seconds": 6 * 3600}
"""cosmos7-raw (12 of 20 TB) grows on the first poll, by at most 2 TiB, so it still wants more after."""


async def test_lost_answer_is_settled_by_a_reread_and_never_grown_twice(
        cosmos: SimulatorServer, clock: TrustClock, store: Path) -> None:
    # every attempt of the growth (the first try and both retries) is applied, its answer lost
    cosmos.faults.add("applied_answer_lost", method="PATCH", path="/quotas/1/", count=3)  # cosmos7-raw
    async with Daemon(settings_for(cosmos, store=store, policy=GROW_NOW), clock) as daemon:
        await daemon.poll_once("sim")
        clock.advance(2)
        await daemon.poll_once("sim")
    raw_writes = {w.changes["hard_limit"] for w in daemon_writes(cosmos) if w.name == "cosmos7-raw"}
    # the growth rows (a guard's once-per-episode `blocked` row, e.g. the cooldown holding the
    # second cycle, is not a growth)
    rows = [r for r in audit(store, "cosmos7-raw")
            if r["mode"] == "enforce" and r["status"] not in ("blocked", "paused")]
    # the limit VMS holds matches the intent: recorded as applied (starting the cooldown), not failed
    assert rows[0]["status"] in ("verified", "reconciled", "applied"), rows[0]
    assert len(rows) == 1  # not grown again inside the cooldown
    assert raw_writes == {rows[0]["new_hard"]}  # one growth, however many attempts carried it


async def test_a_refused_retry_after_a_landed_attempt_is_settled_by_a_reread(
        cosmos: SimulatorServer, clock: TrustClock, store: Path) -> None:
    """Review r1 defect 1: the PATCH's first attempt is applied with its answer lost, and the
    transport's retry is refused (401: the token expired in between). Judged `failed` on the error,
    the growth VMS holds was not counted, the quota not frozen, the cooldown not started, and it was
    grown again at the next cycle. An error from the PATCH ends in a re-read, whatever the error."""
    cosmos.faults.add("applied_answer_lost", method="PATCH", path="/quotas/1/", count=1)  # attempt 1
    cosmos.faults.add("token_expired", method="PATCH", path="/quotas/1/", count=1)  # attempt 2, the retry
    async with Daemon(settings_for(cosmos, store=store, policy=GROW_NOW), clock) as daemon:
        await daemon.poll_once("sim")  # first sample: unconfirmed
        clock.advance(60)
        await daemon.poll_once("sim")  # the growth: landed, then refused on retry
        for _ in range(3):
            clock.advance(60)
            await daemon.poll_once("sim")
    applied = [w.changes["hard_limit"] for w in daemon_writes(cosmos) if w.name == "cosmos7-raw"]
    rows = [(r["status"], r["new_hard"]) for r in audit(store, "cosmos7-raw")
            if r["mode"] == "enforce" and r["status"] not in ("blocked", "paused")]
    assert applied, "the fault sequence did not apply the first PATCH"
    # VMS holds the growth: audited as applied (starting the cooldown), and never grown again in it
    assert rows == [("verified", applied[0])], (rows, applied)
    assert set(applied) == {applied[0]}, applied


async def test_a_refused_retry_after_an_unanswered_attempt_is_frozen_until_the_attempt_lands(
        cosmos: SimulatorServer, clock: TrustClock, store: Path) -> None:
    """Review r4 defect 3: the PATCH's first attempt goes unanswered (held by the network, it lands
    10 s later, inside the landing window) and the transport's retry is refused (401). The re-read
    comes too early and shows the old limit. Judged `failed` on it, the quota was free, and the
    next cycle grew it again under the first attempt. The refusal says an earlier attempt's answer
    was lost: `unknown`, frozen, and settled by the read that finds the first attempt landed."""
    cosmos.faults.add("delayed_apply", method="PATCH", path="/quotas/1/", count=1, apply_after=10)  # attempt 1
    cosmos.faults.add("token_expired", method="PATCH", path="/quotas/1/", count=1)  # attempt 2, the retry
    async with Daemon(settings_for(cosmos, store=store, policy=GROW_NOW), clock) as daemon:
        await daemon.poll_once("sim")  # first sample: unconfirmed
        clock.advance(2)
        await daemon.poll_once("sim")  # the growth: unanswered, then refused on retry
        statuses = [r["status"] for r in audit(store, "cosmos7-raw") if r["mode"] == "enforce"]
        assert statuses == ["unknown"]
        for _ in range(4):
            clock.advance(5)
            await daemon.poll_once("sim")
    written = [w for w in daemon_writes(cosmos) if w.name == "cosmos7-raw"]
    rows = [(r["status"], r["new_hard"]) for r in audit(store, "cosmos7-raw")
            if r["mode"] == "enforce" and r["status"] not in ("blocked", "paused")]
    assert [w.delayed for w in written] == [True], written  # the first attempt, and no other growth
    assert rows == [("reconciled", written[0].changes["hard_limit"])], rows


TWINS = """
[scenario]
name = "twins"
step_seconds = 60
[cluster]
name = "twins-vast"
usable_capacity = "2PB"
used = "100TB"
[[views]]
path = "/t/busy"
quota_name = "busy"
quota = { hard_limit = "20TB", soft_limit = "18TB" }
initial = { used = "15TB", files = 1_000 }
[views.ingest]
bytes_per_day = "1TB"
[[views]]
path = "/t/quiet"
quota_name = "quiet"
quota = { hard_limit = "20TB", soft_limit = "18TB" }
initial = { used = "2TB", files = 1_000 }
[views.ingest]
bytes_per_day = "0.01TB"
"""
"""Two templated quotas of equal limits: a growth planned for `busy` written to `quiet`'s id would
pass a re-read that compares the hard limit only."""


async def test_growth_is_never_written_to_another_quota_under_a_contested_id(
        clock: TrustClock, tmp_path: Path, store: Path) -> None:
    """Review r1 defect 2: a glitching VMS (or a proxy) lists `busy` under `quiet`'s id. The growth
    planned for `busy` must never be written to `quiet`: the collector drops a contested id, and
    the actuator's re-read checks that the id answers for the quota planned for (see
    tests/daemon/test_actuator.py::TestQuotaIdentity for the actuator's check on its own)."""
    path = tmp_path / "twins.toml"
    path.write_text(TWINS)
    async with SimulatorServer(path, clock=MonotonicView(clock), seed=0, state_dir=tmp_path / "sim") as sim:
        sim.sync()
        ids = {q.name: q.id for q in sim.engine.quotas.values()}
        sim.faults.add("rewrite", method="GET", path="quotas", match="busy", values={"id": ids["quiet"]})
        async with Daemon(settings_for(sim, store=store, policy=GROW_NOW), clock) as daemon:
            for _ in range(3):
                await daemon.poll_once("sim")
                clock.advance(60)
        written = [w.name for w in daemon_writes(sim, applied=None)]
    assert "quiet" not in written, written


async def test_never_asks_for_a_hard_limit_below_usage(trust: SimulatorServer, clock: TrustClock,
                                                       store: Path) -> None:
    # a glitching VMS reports t-data's hard limit far below its usage (1 TB vs 70 TB)
    trust.faults.add("rewrite", method="GET", path="quotas", match="t-data",
                     values={"hard_limit": 1 * TB, "soft_limit": 1 * TB // 10 * 9})
    policy = {"mode": "enforce", "max_growth_bytes": "10TiB", "min_growth_bytes": "1TiB", "step_bytes": "1TiB"}
    async with Daemon(settings_for(trust, store=store, policy=policy), clock) as daemon:
        for _ in range(3):
            await daemon.poll_once("sim")
            clock.advance(60)
    asked = [w for w in daemon_writes(trust, applied=None) if w.name == "t-data"]
    assert [w.changes.get("hard_limit") for w in asked if w.hard_below_usage] == []
    assert asked == []  # used >> hard is implausible data: dropped, never acted on


async def test_an_intent_is_not_settled_while_its_request_can_still_land(tmp_path: Path, store: Path) -> None:
    clock = TrustClock()  # time moves only when the test says (no retries here: nothing sleeps inline)
    async with SimulatorServer("cosmos7", clock=MonotonicView(clock), state_dir=tmp_path / "sim") as cosmos:
        await _restart_with_a_patch_in_flight(cosmos, clock, store)


async def _restart_with_a_patch_in_flight(cosmos: SimulatorServer, clock: TrustClock, store: Path) -> None:
    # the growth's PATCH is held by the network, then lands 10 simulated minutes later
    rule = cosmos.faults.add("delayed_apply", method="PATCH", path="/quotas/1/", count=1, seconds=3.0,
                             apply_after=600)
    settings = settings_for(cosmos, store=store, policy=GROW_NOW, vast={"max_retries": 0})
    async with Daemon(settings, clock) as first:
        await first.poll_once("sim")  # a first sample: growth waits for the next to confirm it
        clock.advance(60)
        cycle = asyncio.create_task(first.poll_once("sim"))
        assert await wait_until(lambda: rule.fired == 1, within_seconds=20)
        cycle.cancel()  # the process dies with the PATCH in flight (its intent row stays open)
        with pytest.raises(asyncio.CancelledError):
            await cycle
    (intent,) = [r for r in audit(store, "cosmos7-raw") if r["mode"] == "enforce"]
    assert intent["status"] == "intent"
    async with Daemon(settings, clock) as second:  # restarted at once, as Docker would
        await second.poll_once("sim")
        settled = audit(store, "cosmos7-raw")[0]["status"]
        grown_again = [w for w in daemon_writes(cosmos) if w.name == "cosmos7-raw"]
        # an in-flight request can still land (within the request timeout of the intent): not settled,
        # and no new growth on top of it
        assert settled == "intent"
        assert grown_again == []
        clock.advance(900)  # the old PATCH lands
        await second.poll_once("sim")
    (landed,) = [w for w in daemon_writes(cosmos) if w.name == "cosmos7-raw"]
    assert landed.delayed and landed.changes["hard_limit"] == intent["new_hard"]
