"""Filesystem targets: real tmpfs mounts filled by the test, read through statvfs by the daemon's
cycle (store, forecaster, alert rules, metrics), and a hanging mount that must not hold up the
others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from quotapilot.daemon.clock import VirtualClock
from quotapilot.daemon.fs.collector import FilesystemCollector
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import FilesystemTarget, load_settings
from quotapilot.daemon.stages.capacity import CapacityStage
from quotapilot.forecasting.types import Dimension, TargetKind

MIB = 2**20
HOUR = 3600.0


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "4m") -> Iterator[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path, name: str, nbytes: int) -> None:
    with open(directory / name, "wb") as fh:
        fh.write(b"\0" * nbytes)
        fh.flush()
        os.fsync(fh.fileno())


class TestFilesystemTiers:
    """Two tiers on real tmpfs mounts and one broken path, through the daemon's own cycle."""

    @pytest.mark.skipif(shutil.which("mount") is None, reason="no mount(8)")
    async def test_filling_raises_tier_alerts_in_order_and_metrics_appear(self, tmp_path: Path) -> None:
        with tmpfs(tmp_path / "hot") as hot, tmpfs(tmp_path / "warm") as warm, tmpfs(tmp_path / "cold") as cold:
            settings = load_settings(None, **{
                "store": {"path": str(tmp_path / "state.db")}, "http": {"listen": "127.0.0.1:0"},
                "poll": {"interval_seconds": HOUR, "jitter_ratio": 0.0}, "forecast": {"workers": 0},
                "filesystems": [{"name": "nvme", "path": str(hot), "tier": "hot"},
                                {"name": "sata", "path": str(warm), "tier": "warm"},   # default 80 / 90 %
                                {"name": "nas", "path": str(cold), "tier": "cold"},
                                {"name": "gone", "path": str(tmp_path / "not-mounted"), "tier": "warm"}],
                "filesystem": {"tier_thresholds": {"hot": [0.7, 0.85], "cold": [0.9, 0.95]}},
            })
            clock = VirtualClock()
            raised: list[tuple[str, str]] = []
            utilization_by_step: dict[int, set[tuple[str, str]]] = {}
            with capture_logs() as logs:
                async with Daemon(settings, clock) as daemon:
                    for step in range(1, 9):   # +0.45 MiB an hour on hot and cold: 11 % … 90 % of 4 MiB
                        fill(hot, f"f{step}", int(0.45 * MIB))
                        fill(warm, f"f{step}", int(0.47 * MIB))   # 82 % at step 7, 94 % at step 8
                        fill(cold, f"f{step}", int(0.45 * MIB))
                        ctx = await daemon.poll_once(FILESYSTEM_CLUSTER)
                        new = [(e["alert_id"], e["severity"]) for e in logs
                               if e["event"] == "alert.raised" and (e["alert_id"], e["severity"]) not in raised]
                        raised.extend(new)
                        utilization_by_step[step] = {a for a in new if a[0].endswith("/utilization")}
                        clock.advance(HOUR)
                    registry = daemon.registry
                    # a filesystem is a target like a quota, with kind and tier labels
                    labels = {"cluster": FILESYSTEM_CLUSTER, "target": "nvme", "path": str(hot),
                              "kind": "filesystem", "tier": "hot"}
                    used = registry.get_sample_value("quotapilot_target_used_bytes", labels)
                    runway = registry.get_sample_value("quotapilot_target_runway_seconds",
                                                       {**labels, "threshold": "1.0", "quantile": "0.5"})
                    forecast_per_tier = {tier: registry.get_sample_value("quotapilot_target_forecast_used_bytes", {
                        "cluster": FILESYSTEM_CLUSTER, "target": name, "path": str(path), "kind": "filesystem",
                        "tier": tier, "horizon": "1h", "quantile": "0.5"})
                        for name, path, tier in (("nvme", hot, "hot"), ("sata", warm, "warm"), ("nas", cold, "cold"))}
                    text = daemon.exposition.render().decode()   # what GET /metrics serves
                    nvme = next(o for o in ctx.poll.observations if o.target.name == "nvme")
                    forecast = ctx.forecasts.get((nvme.target, Dimension.BYTES))
                    tier = registry.get_sample_value("quotapilot_filesystem_info", {
                        "cluster": FILESYSTEM_CLUSTER, "target": "nvme", "path": str(hot), "tier": "hot"})
                    reachable = {name: registry.get_sample_value("quotapilot_filesystem_reachable", {
                        "cluster": FILESYSTEM_CLUSTER, "target": name, "tier": t})
                        for name, t in (("nvme", "hot"), ("sata", "warm"), ("nas", "cold"), ("gone", "warm"))}
                    capacity = next(s for s in daemon.stages if isinstance(s, CapacityStage)).view
        assert not [e for e in logs if e["event"] == "stage.failed"]  # growth, capacity … take the pseudo-cluster
        assert tier == 1.0
        assert (f'quotapilot_target_used_bytes{{cluster="filesystems",path="{hot}",target="nvme",kind="filesystem",'
                f'tier="hot"}} {float(nvme.used_bytes)!r}') in text
        assert reachable == {"nvme": 1.0, "sata": 1.0, "nas": 1.0, "gone": 0.0}
        plans = {plan.name: plan for plan in capacity.ordered() if plan.kind == "filesystem"}
        assert set(plans) == {"nvme", "sata", "nas"}
        at90 = plans["nvme"].threshold(0.9)
        assert at90 is not None and at90.p90 is not None  # 90 % of 4 MiB is reached within hours
        # each tier at its own thresholds, in the order the fill crosses them: hot (70 %, 85 %) at
        # 79 % then 90 %; warm on the defaults (80 %, 90 %) at 82 % then 94 %; cold (90 %, 95 %) at 90 %
        assert {step: alerts for step, alerts in utilization_by_step.items() if alerts} == {
            7: {("filesystems/nvme/utilization", "warning"), ("filesystems/sata/utilization", "warning")},
            8: {("filesystems/nvme/utilization", "critical"), ("filesystems/sata/utilization", "critical"),
                ("filesystems/nas/utilization", "warning")}}
        # the broken path: unreachable, critical, from the first poll, while the others were read
        assert ("filesystems/gone/filesystem_unreachable", "critical") in raised
        assert nvme.target.kind is TargetKind.FILESYSTEM and nvme.target.tier == "hot"
        assert used == nvme.used_bytes and used > 3.4 * MIB
        assert forecast is not None and (forecast.forecast or forecast.provisional) is not None
        assert runway is not None and runway >= 0
        assert all(value is not None and value > 0 for value in forecast_per_tier.values()), forecast_per_tier


def blocking_statvfs(hang_path: str, release: threading.Event) -> Any:
    def statvfs(path: str) -> os.statvfs_result:
        if path == hang_path:
            release.wait()
        return os.statvfs(path)
    return statvfs


class TestHungMount:
    """A statvfs that never returns (a hung NFS mount, simulated) makes that target unreachable
    within the timeout; the other targets are read in the same poll; nothing piles up."""

    async def test_hung_mount_is_unreachable_and_the_others_go_on(self, tmp_path: Path) -> None:
        (tmp_path / "ok").mkdir()
        (tmp_path / "nfs").mkdir()
        release = threading.Event()
        targets = [FilesystemTarget(name="local", path=tmp_path / "ok", tier="hot"),
                   FilesystemTarget(name="nas", path=tmp_path / "nfs", tier="cold")]
        settings = load_settings(None, filesystem={"statvfs_timeout_seconds": 0.05}).filesystem
        collector = FilesystemCollector(targets, settings, VirtualClock(),
                                        statvfs=blocking_statvfs(str(tmp_path / "nfs"), release))
        try:
            with capture_logs() as logs:
                first = await collector.poll()
                second = await collector.poll()   # still hung: no second thread on that mount
                hung = [t for t in threading.enumerate() if t.name == "statvfs:nas" and t.is_alive()]
                assert len(hung) == 1  # one blocked call on the hung mount, not one per poll
                release.set()
                for _ in range(100):
                    third = await collector.poll()
                    if not third.dropped:
                        break
        finally:
            release.set()
            collector.close()
        assert [o.target.name for o in first.observations] == ["local"]
        assert [(d.target, d.reason) for d in first.dropped] == [("nas", "unreachable")]
        assert "took over 0.05 s" in first.dropped[0].detail
        assert "still has not returned" in second.dropped[0].detail
        assert [o.target.name for o in third.observations] == ["local", "nas"]
        events = [(e["event"], e.get("target")) for e in logs if e["event"].startswith("filesystem.")]
        assert events == [("filesystem.unreachable", "nas"), ("filesystem.recovered", "nas")]


class GatedStatvfs:
    """`os.statvfs` with a gate on one path: while `hang` is set, a call on it blocks until
    `release` is set (a hung NFS mount); counts the calls per path."""

    def __init__(self, hang_path: str) -> None:
        self.hang_path = hang_path
        self.hang = threading.Event()
        self.release = threading.Event()
        self.calls: Counter[str] = Counter()

    def __call__(self, path: str) -> os.statvfs_result:
        self.calls[path] += 1
        if path == self.hang_path and self.hang.is_set():
            self.release.wait()
        return os.statvfs(path)


def published_polls(daemon: Daemon) -> int:
    cluster = daemon.snapshot.clusters.get(FILESYSTEM_CLUSTER)
    return 0 if cluster is None else cluster.health.polls


async def cycle_at(daemon: Daemon, clock: VirtualClock, t: float) -> float:
    """Move the clock to the tick at `t` and wait until the poller's cycle there has run every
    stage and published its snapshot; returns the real seconds that took."""
    before = published_polls(daemon)
    started = time.perf_counter()
    clock.set(max(t, clock.now()))
    while published_polls(daemon) == before:
        await asyncio.sleep(0.005)  # real time: the statvfs threads and their timeout, not the clock
        assert time.perf_counter() - started < 10, "the cycle never finished"
    return time.perf_counter() - started


def alert_events(logs: Sequence[MutableMapping[str, Any]], alert_id: str) -> list[str]:
    return [e["event"] for e in logs
            if e.get("alert_id") == alert_id and e["event"] in ("alert.raised", "alert.resolved")]


class TestHungMountInTheDaemon:
    """The running daemon (poller loop, supervisor, every stage, /metrics) with three filesystems,
    one of whose statvfs starts to hang: it is reported unreachable in the first cycle after it
    hangs, the other two are read in that same cycle on time, the cycle takes the timeout and no
    more, one blocked thread at most however many cycles pass, and it recovers when it answers."""

    async def test_hang_is_alerted_within_one_interval_and_the_others_go_on(self, tmp_path: Path) -> None:
        interval, timeout = 300.0, 0.2
        for name in ("nvme", "sata", "nfs"):
            (tmp_path / name).mkdir()
        settings = load_settings(None, **{
            "store": {"path": str(tmp_path / "state.db")}, "http": {"listen": "127.0.0.1:0"},
            "poll": {"interval_seconds": interval, "jitter_ratio": 0.0}, "forecast": {"workers": 0},
            "filesystem": {"statvfs_timeout_seconds": timeout},
            "filesystems": [{"name": "local", "path": str(tmp_path / "nvme"), "tier": "hot"},
                            {"name": "scratch", "path": str(tmp_path / "sata"), "tier": "warm"},
                            {"name": "nas", "path": str(tmp_path / "nfs"), "tier": "cold"}],
        })
        statvfs = GatedStatvfs(str(tmp_path / "nfs"))
        clock = VirtualClock()
        unreachable = "filesystems/nas/filesystem_unreachable"

        def reachable(daemon: Daemon) -> float | None:
            return daemon.registry.get_sample_value("quotapilot_filesystem_reachable", {
                "cluster": FILESYSTEM_CLUSTER, "target": "nas", "tier": "cold"})

        def read_at(daemon: Daemon) -> dict[str, float]:
            targets = daemon.snapshot.clusters[FILESYSTEM_CLUSTER].targets
            return {name: state.observation.t for name, state in targets.items() if state.observation is not None}

        def hung_threads() -> int:
            return sum(1 for t in threading.enumerate() if t.name == "statvfs:nas" and t.is_alive())

        with capture_logs() as logs:
            async with Daemon(settings, clock) as daemon:
                collector = daemon.collectors[FILESYSTEM_CLUSTER]
                assert isinstance(collector, FilesystemCollector)
                collector.poller.statvfs = statvfs   # our boundary: the call the poller makes
                task = asyncio.create_task(daemon.run(), name="daemon-under-test")
                try:
                    t0 = clock.now()
                    await cycle_at(daemon, clock, t0)       # the first tick, at start: all three answer
                    assert set(read_at(daemon)) == {"local", "scratch", "nas"}
                    statvfs.hang.set()
                    hung_since = clock.now()
                    seconds = await cycle_at(daemon, clock, t0 + interval)
                    cycle_t = clock.now()
                    after_hang = alert_events(logs, unreachable)
                    fresh = read_at(daemon)
                    text = daemon.exposition.render().decode()
                    reachable_while_hung = reachable(daemon)
                    longer = [await cycle_at(daemon, clock, t0 + k * interval) for k in (2, 3, 4)]  # still hung
                    threads_while_hung = hung_threads()
                    calls_while_hung = statvfs.calls[str(tmp_path / "nfs")]
                    statvfs.release.set()            # the mount answers again
                    statvfs.hang.clear()
                    for _ in range(200):
                        if not hung_threads():
                            break
                        await asyncio.sleep(0.005)
                    await cycle_at(daemon, clock, t0 + 5 * interval)
                    recovered = read_at(daemon)
                    reachable_after = reachable(daemon)
                finally:
                    statvfs.release.set()
                    daemon.stop()
                    await asyncio.wait_for(task, 10)
                skipped = daemon.poll_state[FILESYSTEM_CLUSTER].skipped_ticks
        # reported within one interval of the hang, in the first cycle after it
        assert cycle_t - hung_since <= interval
        assert after_hang == ["alert.raised"]
        assert reachable_while_hung == 0.0
        # the others were read in that cycle, stamped with its time, and are in /metrics
        assert (fresh["local"], fresh["scratch"]) == (cycle_t, cycle_t)
        assert fresh["nas"] < cycle_t   # its last good sample
        assert 'target="local",kind="filesystem",tier="hot"}' in text
        assert 'target="scratch",kind="filesystem",tier="warm"}' in text
        # the cycle waited for the timeout, not for the hung mount (every cycle here finished while
        # the mount still hung: it is released only afterwards), and never overran its tick; how
        # long past the timeout a cycle takes in real time is the machine's load, not the daemon's
        assert seconds >= timeout
        assert len(longer) == 3
        assert skipped == 0 and not [e for e in logs if e["event"] == "poll.overran"]
        # one blocked call on the hung mount, however many cycles pass: the first one after the hang
        assert (threads_while_hung, calls_while_hung) == (1, 2)   # tick 1, then tick 2's call, which hangs
        # recovery: read again in the next cycle, the alert resolved, reachable again
        assert recovered["nas"] == clock.now()
        assert alert_events(logs, unreachable) == ["alert.raised", "alert.resolved"]
        assert reachable_after == 1.0


def growth_settings(tmp_path: Path, mode: str, filesystems: list[dict[str, Any]]) -> Any:
    return load_settings(None, **{
        "store": {"path": str(tmp_path / "state.db")}, "http": {"listen": "127.0.0.1:0"},
        "poll": {"interval_seconds": HOUR, "jitter_ratio": 0.0}, "forecast": {"workers": 0},
        "policy": {"mode": mode, "overrides": [{"match": str(tmp_path / "*"), "step_bytes": "1MiB",
                                                "min_growth_bytes": "1MiB"}]},
        "filesystems": filesystems,
    })


class TestFilesystemGrowth:
    """A filesystem grows by a configured command (here: remounting a real tmpfs larger), run
    without a shell, bounded, verified by statvfs and audited; observe mode is a dry run."""

    @pytest.mark.skipif(shutil.which("mount") is None, reason="no mount(8)")
    async def test_enforce_runs_the_command_and_verifies(self, tmp_path: Path) -> None:
        with tmpfs(tmp_path / "a") as a, tmpfs(tmp_path / "b") as b, tmpfs(tmp_path / "c") as c:
            remount = ["mount", "-o", "remount,size={new_size_bytes}", "{path}"]
            settings = growth_settings(tmp_path, "enforce", [
                {"name": "a", "path": str(a), "tier": "hot", "command": remount},
                {"name": "b", "path": str(b), "tier": "warm", "command": ["false"]},
                {"name": "c", "path": str(c), "tier": "cold", "command": ["sleep", "10"], "command_timeout": 0.2}])
            for directory in (a, b, c):
                fill(directory, "data", int(3.2 * MIB))   # 80 % of 4 MiB: over grow_at 75 %
            async with Daemon(settings, VirtualClock()) as daemon:
                ctx = await daemon.poll_once(FILESYSTEM_CLUSTER)
                audit = {r["target"]: r for r in daemon.db.query("SELECT * FROM actions")}
            size_a = os.statvfs(a).f_blocks * os.statvfs(a).f_frsize
        outcomes = {o.target.name: o for o in ctx.actions}
        # 3.2 MiB / 0.70 = 4.6 MiB → +1 MiB (the step): 5 MiB
        assert (str(outcomes["a"].status), outcomes["a"].new_hard, size_a) == ("verified", 5 * MIB, 5 * MIB)
        assert str(outcomes["b"].status) == "failed" and "exited 1" in outcomes["b"].reason
        assert str(outcomes["c"].status) == "failed" and "killed after 0.2 s" in outcomes["c"].reason
        assert {name: row["status"] for name, row in audit.items()} == {"a": "verified", "b": "failed", "c": "failed"}
        assert json.loads(audit["a"]["detail"])["command"] == ["mount", "-o", f"remount,size={5 * MIB}", str(a)]

    @pytest.mark.skipif(shutil.which("mount") is None, reason="no mount(8)")
    async def test_observe_mode_is_a_dry_run(self, tmp_path: Path) -> None:
        with tmpfs(tmp_path / "a") as a:
            settings = growth_settings(tmp_path, "observe", [
                {"name": "a", "path": str(a), "command": ["mount", "-o", "remount,size={new_size_bytes}", "{path}"]}])
            fill(a, "data", int(3.2 * MIB))
            async with Daemon(settings, VirtualClock()) as daemon:
                ctx = await daemon.poll_once(FILESYSTEM_CLUSTER)
                [row] = daemon.db.query("SELECT * FROM actions")
            size = os.statvfs(a).f_blocks * os.statvfs(a).f_frsize
        [outcome] = ctx.actions
        assert (str(outcome.status), size) == ("would_grow", 4 * MIB)   # nothing ran
        assert row["status"] == "would_grow" and json.loads(row["detail"])["command"][-1] == str(a)


class TestFilesystemsOnly:
    """A deployment of filesystems without a VAST cluster is valid; with neither it is not."""

    def test_validate_for_run(self, tmp_path: Path) -> None:
        from quotapilot.daemon.commands.check_config import validate_for_run
        from quotapilot.daemon.errors import ConfigError

        validate_for_run(load_settings(None, filesystems=[{"name": "data", "path": str(tmp_path)}]))
        with pytest.raises(ConfigError) as err:
            validate_for_run(load_settings(None))
        assert err.value.field == "clusters"
