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
import sys
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
from quotapilot.daemon.fs.growth import FilesystemGrowthStage
from quotapilot.daemon.fs.poller import FILESYSTEM_CLUSTER, target_id
from quotapilot.daemon.runtime.daemon import Daemon
from quotapilot.daemon.settings import FilesystemTarget, load_settings
from quotapilot.daemon.stages.capacity import CapacityStage
from quotapilot.daemon.store.actions import ActionStore
from quotapilot.daemon.store.overrides import OverrideStore
from quotapilot.forecasting.types import Decision, DecisionKind, Dimension, TargetKind

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
        # killed after its timeout: it may have done its work, so its outcome is unknown (see TestKilledCommand…)
        assert str(outcomes["c"].status) == "unknown" and "killed after 0.2 s" in outcomes["c"].reason
        assert {name: row["status"] for name, row in audit.items()} == {"a": "verified", "b": "failed", "c": "unknown"}
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


# ------------------------------------------------------------------ trust rules and guards of the growth
GIB = 2**30
TIB = 2**40
INTERVAL = 300.0


def statvfs_of(*, size: int, used: int, fsid: int, frsize: int = 4096) -> os.statvfs_result:
    """A statvfs answer: `size` bytes of which `used` taken (none reserved), filesystem id `fsid`."""
    blocks, free = size // frsize, (size - used) // frsize
    return os.statvfs_result((frsize, frsize, blocks, free, free, 1000, 500, 500, 0, 255, fsid))


class Sequenced:
    """A statvfs whose answer the test sets; `after_command`: the answer once `marker` exists (the
    growth command the test configures creates it), for the poller and the growth stage alike."""

    def __init__(self, answer: os.statvfs_result, *, marker: Path | None = None,
                 after_command: os.statvfs_result | None = None) -> None:
        self.answer = answer
        self.marker = marker
        self.after_command = after_command

    def __call__(self, path: str) -> os.statvfs_result:
        if self.after_command is not None and self.marker is not None and self.marker.exists():
            return self.after_command
        return self.answer


def guarded_settings(tmp_path: Path, *, command: list[str], overrides: dict[str, Any], **policy: Any) -> Any:
    """Enforce mode, one cold filesystem `nas` running `command`, its policy override `overrides`."""
    (tmp_path / "nas").mkdir(exist_ok=True)
    return load_settings(None, **{
        "store": {"path": str(tmp_path / "state.db")}, "http": {"listen": "127.0.0.1:0"},
        "poll": {"interval_seconds": INTERVAL, "jitter_ratio": 0.0}, "forecast": {"workers": 0},
        "policy": {"mode": "enforce", "overrides": [{"match": "nas", **overrides}], **policy},
        "filesystems": [{"name": "nas", "path": str(tmp_path / "nas"), "tier": "cold", "command": command}],
    })


STEP_1GIB = {"step_bytes": "1GiB", "min_growth_bytes": "1GiB"}


def recorder(marker: Path) -> list[str]:
    """A growth command that only records that it ran (a line per run in `marker`)."""
    return [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('ran\\n')"]


def runs(marker: Path) -> int:
    return marker.read_text().count("ran") if marker.exists() else 0


class MountTable:
    """`os.path.ismount` at our boundary: every path is a mount point while `mounted` is set; a
    call on `hang_path` blocks while `hang` is set, until `release` is (a hung NFS mount blocks
    the lstat of its mount point as it blocks statvfs); counts the calls per path."""

    def __init__(self, *, mounted: bool = True, hang_path: str | None = None) -> None:
        self.mounted = mounted
        self.hang_path = hang_path
        self.hang = threading.Event()
        self.release = threading.Event()
        self.calls: Counter[str] = Counter()

    def __call__(self, path: str) -> bool:
        self.calls[path] += 1
        if path == self.hang_path and self.hang.is_set():
            self.release.wait()
        return self.mounted


async def polls(daemon: Daemon, clock: VirtualClock, statvfs: Sequenced,
                answers: Sequence[os.statvfs_result], every: float = INTERVAL, *,
                ismount: MountTable | None = None, mounted: Sequence[bool] = ()) -> list[Any]:
    """One cycle of the filesystems per answer (statvfs at our boundary: the poller's call and the
    growth stage's re-read), `every` seconds apart; with `ismount`, the path is a mount point at
    the n-th cycle when `mounted[n]` says so (else the real `os.path.ismount`: the test's
    directories are none)."""
    collector = daemon.collectors[FILESYSTEM_CLUSTER]
    assert isinstance(collector, FilesystemCollector)
    collector.poller.statvfs = statvfs
    if ismount is not None:
        assert len(mounted) == len(answers)
        collector.poller.ismount = ismount
    for stage in daemon.stages:
        if isinstance(stage, FilesystemGrowthStage):
            stage.statvfs = statvfs
    out = []
    for n, answer in enumerate(answers):
        statvfs.answer = answer
        if ismount is not None:
            ismount.mounted = mounted[n]
        out.append(await daemon.poll_once(FILESYSTEM_CLUSTER))
        clock.advance(every)
    return out


def raised_alerts(logs: Sequence[MutableMapping[str, Any]]) -> list[tuple[str, str]]:
    return [(e["alert_id"], e["severity"]) for e in logs if e["event"] == "alert.raised"]


def audit_rows(daemon: Daemon) -> list[tuple[str, str | None]]:
    """(status, guard) of every audit row, oldest first."""
    return [(r["status"], json.loads(r["detail"] or "{}").get("guard"))
            for r in daemon.db.query("SELECT status, detail FROM actions ORDER BY id")]


class TestManualOverridesStopFilesystemCommands:
    """DESIGN: "manual override: pause/resume per target and a global kill switch"; README:
    `policy.kill_switch` "Stop all growth actions". The kill switch (the config's or the stored
    one) and a pause of the filesystem hold its growth as they hold a quota's — guard
    `kill_switch` / `paused`, an audit row `paused` once per episode with its `blocked` event — and
    the command never runs. (Before: the filesystem growth read neither; in enforce mode the
    command ran.)"""

    async def test_config_kill_switch(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB, kill_switch=True)
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:
            first, second = await polls(daemon, clock, Sequenced(full), [full, full])
            rows = audit_rows(daemon)
        assert runs(marker) == 0, [str(a.status) for a in first.actions]
        assert [(str(a.status), a.reason.split(";")[0]) for a in first.actions] == [
            ("paused", "kill switch: policy.kill_switch in config")]
        assert [d.guard for d in second.decisions] == ["kill_switch"]
        assert rows == [("paused", "kill_switch")]   # once per episode, not every poll

    @pytest.mark.parametrize("override", ["kill_switch", "pause"])
    async def test_stored_kill_switch_or_pause(self, tmp_path: Path, override: str) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:
            overrides = OverrideStore(daemon.db)
            if override == "kill_switch":
                overrides.engage_kill_switch(now=clock.now(), reason="incident")
            else:
                overrides.pause("nas", now=clock.now(), reason="maintenance")
            [held] = await polls(daemon, clock, Sequenced(full), [full])
            rows = audit_rows(daemon)
            if override == "kill_switch":
                overrides.release_kill_switch()
            else:
                overrides.resume("nas")
            [released] = await polls(daemon, clock, Sequenced(full), [full])
        guard = "kill_switch" if override == "kill_switch" else "paused"
        assert [(str(a.status), d.guard) for a, d in zip(held.actions, held.decisions, strict=True)] == [
            ("paused", guard)]
        assert rows == [("paused", guard)]
        # lifted: the next poll grows
        assert (runs(marker), [str(a.status) for a in released.actions]) == (1, ["verify_failed"])


class TestGrowthGuards:
    """DESIGN: a growth is "at most `max_growth` per action and `max_hard_limit` per quota"; the
    filesystem growth reads these two of the target's policy as well (before, it handed its
    command any size the forecast asked for). Capped, it still grows (the reason says so); at the
    ceiling it is blocked with the quota planner's guard `max_hard_limit`, and nothing runs."""

    async def test_max_growth_bytes_bounds_a_filesystem_growth(self, tmp_path: Path) -> None:
        settings = guarded_settings(tmp_path, command=[], overrides={"max_growth_bytes": "2TiB",
                                                                     "max_hard_limit_bytes": "102TiB"})
        clock = VirtualClock()
        full = statvfs_of(size=100 * TIB, used=80 * TIB, fsid=1)   # 80 %: over grow_at 75 %
        async with Daemon(settings, clock) as daemon:
            [ctx] = await polls(daemon, clock, Sequenced(full), [full])
        [outcome] = ctx.actions
        assert str(outcome.status) == "would_grow"
        grown = (outcome.new_hard or 0) - (outcome.old_hard or 0)
        assert grown <= 2 * TIB, f"grew {grown / TIB:g} TiB to {(outcome.new_hard or 0) / TIB:g} TiB"
        assert (outcome.new_hard or 0) <= 102 * TIB
        assert "capped" in ctx.decisions[0].reason

    async def test_the_ceiling_blocks_and_nothing_runs(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker),
                                    overrides={**STEP_1GIB, "max_hard_limit_bytes": "100GiB"})
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)   # at the ceiling already
        emptied = statvfs_of(size=100 * GIB, used=50 * GIB, fsid=1)   # no growth due any more
        async with Daemon(settings, clock) as daemon:
            with capture_logs() as logs:
                first, _, _, _ = await polls(daemon, clock, Sequenced(full), [full, full, emptied, emptied])
            rows = audit_rows(daemon)
        assert runs(marker) == 0
        assert [(str(a.status), d.guard) for a, d in zip(first.actions, first.decisions, strict=True)] == [
            ("blocked", "max_hard_limit")]
        assert rows == [("blocked", "max_hard_limit")]   # once per episode
        # warned while blocked; resolved once no growth is due (the drop is held one poll, then believed)
        assert alert_events(logs, "filesystems/nas/growth_blocked") == ["alert.raised", "alert.resolved"]


class TestKilledCommandStartsACooldown:
    """A growth command killed after `command_timeout` may have done its work (lvextend extended the
    LV, then `-r`'s resize was killed): its outcome is unknown, as a quota PATCH whose answer was
    lost, and `unknown` counts as a growth for the cooldown. Recorded `failed` (before), it started
    no cooldown: the next poll ran the command again — with the README's own relative
    `lvextend -L +{grow_bytes}B`, every poll added another `grow_bytes`. A row a crash left
    `running` is settled as `unknown` when the daemon starts (as a quota's open intent is
    settled before anything else), so it counts too."""

    async def test_timed_out_command_is_not_run_again_at_the_next_poll(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        command = [sys.executable, "-c",
                   f"import time; open({str(marker)!r}, 'a').write('ran\\n'); time.sleep(30)"]
        settings = guarded_settings(tmp_path, command=command, overrides=STEP_1GIB)
        # (real time: the command's bound is real whatever the daemon's clock; no injected alternative)
        settings = settings.model_copy(update={"filesystems": tuple(
            f.model_copy(update={"command_timeout": 0.5}) for f in settings.filesystems)})
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:
            first, second = await polls(daemon, clock, Sequenced(full), [full, full])   # 5 min apart
            rows = audit_rows(daemon)
        assert [str(a.status) for a in first.actions] == ["unknown"]
        assert "killed after 0.5 s" in first.actions[0].reason
        assert rows == [("unknown", None)]
        # 5 minutes later, well inside the 6 h cooldown: not run a second time
        assert runs(marker) == 1, [str(a.status) for a in second.actions]

    async def test_a_row_a_crash_left_running_counts_after_a_restart(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:   # a crash mid-command leaves its write-ahead row
            nas = target_id(settings.filesystems[0])
            ActionStore(daemon.db).record(
                Decision(nas, Dimension.BYTES, DecisionKind.GROW, "due", clock.now(), current_used=85 * GIB,
                         current_hard=100 * GIB, new_hard=101 * GIB), mode="enforce", status="running",
                now=clock.now(), quota_id=None)
        clock.advance(INTERVAL)
        async with Daemon(settings, clock) as daemon:
            [ctx] = await polls(daemon, clock, Sequenced(full), [full])
            rows = audit_rows(daemon)
        assert runs(marker) == 0   # inside the cooldown of the growth that may have happened
        assert rows == [("unknown", None)]
        assert [(str(o.status), o.action_id) for o in ctx.settled] == [("unknown", 1)]   # its `result` event


class TestAFailedCommandWaitsForTheCooldown:
    """A growth command that exits non-zero may have done part of its work (`lvextend -r`
    extends the volume, then its resize fails; the filesystem's size does not show it): recorded
    `failed`, it started no cooldown, and the next poll ran it again — with the README's own
    relative `lvextend -L +{grow_bytes}B`, each poll took another `grow_bytes` of the volume group
    (CHANGELOG "Known" until 2026-12-05). A failed command now counts for the cooldown as a
    killed one does: run once, alerted critical once, run again after the cooldown."""

    async def test_a_command_that_exits_non_zero_is_not_run_again_at_the_next_poll(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        command = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('ran\\n'); raise SystemExit(5)"]
        settings = guarded_settings(tmp_path, command=command, overrides=STEP_1GIB)
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:
            with capture_logs() as logs:
                first, *inside = await polls(daemon, clock, Sequenced(full), [full] * 4)   # 5 min apart
            rows_inside = audit_rows(daemon)
            clock.advance(settings.policy.cooldown_seconds)
            [after] = await polls(daemon, clock, Sequenced(full), [full])
        assert [str(a.status) for a in first.actions] == ["failed"] and "exited 5" in first.actions[0].reason
        assert [[str(a.status) for a in ctx.actions] for ctx in inside] == [[], [], []]
        assert rows_inside == [("failed", None)]
        # paged once, and firing while the command waits (no resolve: it has not grown)
        assert alert_events(logs, "filesystems/nas/growth_failed") == ["alert.raised"]
        assert [e["log_level"] for e in logs if e["event"] == "filesystem.growth_failed"] == ["warning"]
        # the cooldown over: tried again (and failing again, audited again)
        assert runs(marker) == 2 and [str(a.status) for a in after.actions] == ["failed"]

    async def test_a_program_that_cannot_run_is_not_tried_every_poll(self, tmp_path: Path) -> None:
        settings = guarded_settings(tmp_path, command=[str(tmp_path / "no-such-program")], overrides=STEP_1GIB)
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:
            first, second = await polls(daemon, clock, Sequenced(full), [full, full])
            rows = audit_rows(daemon)
        assert [str(a.status) for a in first.actions] == ["failed"] and "cannot run" in first.actions[0].reason
        assert (second.actions, rows) == ([], [("failed", None)])


class TestRowsOfOtherHostsAndOldRows:
    """A fleet shares the store, and each host acts for its own `[[filesystems]]`: `open()` marked
    every `running` row of the `filesystems` pseudo-cluster `unknown` — another live host's row
    whose command was running right then too. And a filesystem's `unknown` row has nobody to
    settle it (no read tells what a killed command did), while audit pruning keeps open rows (and
    ran only with a VMS cluster): such rows outlived any retention."""

    async def test_another_hosts_running_command_is_not_settled(self, tmp_path: Path) -> None:
        from quotapilot.daemon.store.db import Database
        from quotapilot.forecasting.types import TargetId

        settings = guarded_settings(tmp_path, command=recorder(tmp_path / "ran.txt"), overrides={})  # host B
        clock = VirtualClock()
        db = Database(tmp_path / "shared.db")
        try:
            actions = ActionStore(db)
            rows = {}
            for name, path in (("nvme-host-a", "/data/hot"), (settings.filesystems[0].name, "/elsewhere")):
                other = TargetId(FILESYSTEM_CLUSTER, name, path, TargetKind.FILESYSTEM, tier="cold")
                rows[name] = actions.record(
                    Decision(other, Dimension.BYTES, DecisionKind.GROW, "due", clock.now(), current_used=85 * GIB,
                             current_hard=100 * GIB, new_hard=101 * GIB),
                    mode="enforce", status="running", now=clock.now(), quota_id=None)
            await FilesystemGrowthStage(settings, clock, actions).open()   # host B starts
            assert {name: actions.get(row).status for name, row in rows.items()} == \
                {name: "running" for name in rows}   # (another host's name; our name at another path)
        finally:
            db.close()

    async def test_an_old_unknown_row_is_pruned_by_the_filesystem_stage(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        quiet = statvfs_of(size=100 * GIB, used=10 * GIB, fsid=1)
        async with Daemon(settings, clock) as daemon:
            nas = target_id(settings.filesystems[0])
            actions = ActionStore(daemon.db)
            old = actions.record(
                Decision(nas, Dimension.BYTES, DecisionKind.GROW, "due", clock.now(), current_used=85 * GIB,
                         current_hard=100 * GIB, new_hard=101 * GIB), mode="enforce", status="running",
                now=clock.now(), quota_id=None)
            actions.mark(old, "unknown", clock.now(), "killed after 60 s: outcome unknown")
            clock.advance(settings.store.audit_retention_seconds + 86400.0)
            await polls(daemon, clock, Sequenced(quiet), [quiet])
            assert actions.get(old) is None
        assert runs(marker) == 0


class TestUnmountedMountIsNotTakenAsTruth:
    """An NFS mount that goes away leaves the bare directory on the root filesystem: statvfs then
    answers the root filesystem's numbers (another f_fsid, a size 200 times smaller). The quota
    actuator never writes on such a sample (a limit that moved without a write of ours is held,
    a jump up waits for a second sample); the filesystem growth ran its command on it at once,
    and the utilization alert fired. Now another f_fsid is "filesystem changed or not mounted"
    (unreachable) for that poll, and a second answer from it confirms it; a size that moved
    without a growth of ours, or a usage jump, is held one poll (`unconfirmed`)."""

    async def test_growth_command_not_run_on_the_sample_where_the_filesystem_changed(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        nfs = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=111)           # the NAS: 10 % used
        root = statvfs_of(size=50 * GIB, used=int(42.5 * GIB), fsid=222)  # / under it: 85 % used
        with capture_logs() as logs:
            async with Daemon(settings, clock) as daemon:
                first, second = await polls(daemon, clock, Sequenced(nfs), [nfs, root])
        assert first.actions == []
        # the second sample is another filesystem altogether: nothing should run on it
        assert ([str(a.status) for a in second.actions], marker.exists()) == ([], False)
        assert [(d.target, d.reason) for d in second.poll.dropped] == [("nas", "unreachable")]
        assert "filesystem changed or not mounted" in second.poll.dropped[0].detail
        alerts = raised_alerts(logs)
        assert ("filesystems/nas/filesystem_unreachable", "critical") in alerts
        assert not [a for a in alerts if a[0] == "filesystems/nas/utilization"]
        assert [e["event"] for e in logs if e["event"].startswith("filesystem.unreachable")] == [
            "filesystem.unreachable"]

    async def test_a_second_answer_from_the_new_filesystem_confirms_it(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        old = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=111)
        new = statvfs_of(size=50 * GIB, used=int(42.5 * GIB), fsid=333)   # re-mounted on purpose
        with capture_logs() as logs:
            async with Daemon(settings, clock) as daemon:
                _, changed, confirmed = await polls(daemon, clock, Sequenced(old), [old, new, new])
        assert ([o.target.name for o in changed.poll.observations], runs(marker)) == ([], 1)
        assert confirmed.poll.unconfirmed == frozenset()   # the new truth after one poll
        assert [str(a.status) for a in confirmed.actions] == ["verify_failed"]   # it ran (our recorder grows nothing)
        assert ("filesystems/nas/utilization", "warning") in raised_alerts(logs)
        logged = [e["event"] for e in logs if e["event"] in ("filesystem.unreachable", "filesystem.recovered")]
        assert logged == ["filesystem.unreachable", "filesystem.recovered"]   # once each

    async def test_a_size_that_moved_without_a_growth_of_ours_is_held_one_poll(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        before = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=7)
        shrunk = statvfs_of(size=int(1.1 * TIB), used=1 * TIB, fsid=7)   # same filesystem, 91 % of a tenth
        with capture_logs() as logs:
            async with Daemon(settings, clock) as daemon:
                _, held = await polls(daemon, clock, Sequenced(before), [before, shrunk])
                held_runs, held_alerts = runs(marker), raised_alerts(logs)
                [believed] = await polls(daemon, clock, Sequenced(shrunk), [shrunk])
        assert held.poll.unconfirmed == frozenset({"nas"})
        assert ([d.guard for d in held.decisions], held.actions, held_runs) == (["unconfirmed"], [], 0)
        assert not [a for a in held_alerts if a[0] == "filesystems/nas/utilization"]
        # the second sample that says so is believed: acted and alerted on
        assert (believed.poll.unconfirmed, runs(marker)) == (frozenset(), 1)
        assert ("filesystems/nas/utilization", "critical") in raised_alerts(logs)

    async def test_a_usage_jump_is_held_one_poll(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        quiet = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=7)
        jumped = statvfs_of(size=10 * TIB, used=9 * TIB, fsid=7)   # +8 TiB in 5 minutes
        async with Daemon(settings, clock) as daemon:
            _, held, believed = await polls(daemon, clock, Sequenced(quiet), [quiet, jumped, jumped])
        assert (held.poll.unconfirmed, held.actions) == (frozenset({"nas"}), [])
        assert (believed.poll.unconfirmed, runs(marker)) == (frozenset(), 1)

    async def test_a_size_our_command_grew_is_believed_at_once(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        full = statvfs_of(size=100 * GIB, used=85 * GIB, fsid=7)
        grown = statvfs_of(size=125 * GIB, used=85 * GIB, fsid=7)
        async with Daemon(settings, clock) as daemon:
            first, second = await polls(daemon, clock, Sequenced(full, marker=marker, after_command=grown),
                                        [full, grown])
        assert [str(a.status) for a in first.actions] == ["verified"]
        assert second.poll.unconfirmed == frozenset()


class TestAMountPointThatIsNoLongerOne:
    """TestUnmountedMountIsNotTakenAsTruth's gap: an NFS mount that *stays* gone. Its path was a
    mount point when first read; now statvfs answers the root filesystem under it, poll after
    poll. The f_fsid rule believed the second answer from the root filesystem (as a volume
    re-mounted on purpose): from the next poll on, the root filesystem's numbers were the NAS's,
    and in enforce mode the growth command ran sized from them. Now a path that was a mount point
    and is not one any more is unreachable ("not mounted") for as long as that lasts, and reachable
    again once it is a mount point again (then the f_fsid rule applies as before). A path that
    never was a mount point (a directory on a mount further up) keeps the f_fsid rule alone.
    `os.path.ismount` runs in the thread, and under the timeout, of the statvfs call."""

    async def test_it_stays_unreachable_and_nothing_runs_on_the_filesystem_under_it(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        nfs = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=111)           # the NAS: 10 % used
        root = statvfs_of(size=50 * GIB, used=int(42.5 * GIB), fsid=222)  # / under it: 85 %, over grow_at
        with capture_logs() as logs:
            async with Daemon(settings, clock) as daemon:
                first, *gone = await polls(daemon, clock, Sequenced(nfs), [nfs, root, root, root, root],
                                           ismount=MountTable(), mounted=[True, False, False, False, False])
                reachable = daemon.registry.get_sample_value("quotapilot_filesystem_reachable", {
                    "cluster": FILESYSTEM_CLUSTER, "target": "nas", "tier": "cold"})
                collector = daemon.collectors[FILESYSTEM_CLUSTER]
                assert isinstance(collector, FilesystemCollector)
                dropped_total = collector.dropped_total["unreachable"]
        assert [o.target.name for o in first.poll.observations] == ["nas"]
        # every poll while it is gone: unreachable, the root filesystem's numbers nowhere
        assert [[(d.target, d.reason) for d in ctx.poll.dropped] for ctx in gone] == [[("nas", "unreachable")]] * 4
        assert all(ctx.poll.dropped[0].detail.startswith("not_mounted: ") for ctx in gone), gone[-1].poll.dropped
        assert [o for ctx in gone for o in ctx.poll.observations] == []
        assert ([a for ctx in gone for a in ctx.actions], runs(marker)) == ([], 0)
        assert (reachable, dropped_total) == (0.0, 4)
        # alerted once, logged once: one transition
        assert alert_events(logs, "filesystems/nas/filesystem_unreachable") == ["alert.raised"]
        assert not [a for a in raised_alerts(logs) if a[0] == "filesystems/nas/utilization"]
        assert [(e["event"], e["reason"]) for e in logs if e["event"].startswith("filesystem.")] == [
            ("filesystem.unreachable", "not_mounted")]

    async def test_it_is_reachable_again_when_mounted_again(self, tmp_path: Path) -> None:
        marker = tmp_path / "ran.txt"
        settings = guarded_settings(tmp_path, command=recorder(marker), overrides=STEP_1GIB)
        clock = VirtualClock()
        nfs = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=111)
        root = statvfs_of(size=50 * GIB, used=int(42.5 * GIB), fsid=222)
        with capture_logs() as logs:
            async with Daemon(settings, clock) as daemon:
                *_, gone, back = await polls(daemon, clock, Sequenced(nfs), [nfs, root, root, nfs],
                                             ismount=MountTable(), mounted=[True, False, False, True])
        assert [d.reason for d in gone.poll.dropped] == ["unreachable"]
        assert ([o.target.name for o in back.poll.observations], back.poll.dropped) == (["nas"], ())
        assert back.poll.unconfirmed == frozenset()   # the filesystem it had: believed at once
        assert runs(marker) == 0
        assert alert_events(logs, "filesystems/nas/filesystem_unreachable") == ["alert.raised", "alert.resolved"]
        assert [e["event"] for e in logs if e["event"].startswith("filesystem.")] == [
            "filesystem.unreachable", "filesystem.recovered"]

    async def test_mounted_again_with_another_filesystem_the_fsid_rule_applies(self, tmp_path: Path) -> None:
        settings = guarded_settings(tmp_path, command=[], overrides=STEP_1GIB)
        clock = VirtualClock()
        nfs = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=111)
        root = statvfs_of(size=50 * GIB, used=int(42.5 * GIB), fsid=222)
        new = statvfs_of(size=20 * TIB, used=1 * TIB, fsid=333)   # another export mounted there
        async with Daemon(settings, clock) as daemon:
            _, gone, changed, confirmed = await polls(daemon, clock, Sequenced(nfs), [nfs, root, new, new],
                                                      ismount=MountTable(), mounted=[True, False, True, True])
        reasons = [[d.detail.split(":")[0] for d in ctx.poll.dropped] for ctx in (gone, changed, confirmed)]
        assert reasons == [["not_mounted"], ["changed"], []]
        assert [o.hard_limit_bytes for o in confirmed.poll.observations] == [20 * TIB]

    @pytest.mark.skipif(shutil.which("mount") is None, reason="no mount(8)")
    async def test_a_real_tmpfs_unmounted_then_mounted_again(self, tmp_path: Path) -> None:
        """Real mount(8), statvfs and ismount: unmounted, the directory is on tmp_path's filesystem;
        each tmpfs has an f_fsid of its own, so the one mounted again passes the f_fsid rule."""
        path = tmp_path / "nas"
        clock = VirtualClock()
        collector = FilesystemCollector([FilesystemTarget(name="nas", path=path, tier="cold")],
                                        load_settings(None).filesystem, clock)

        async def reason() -> str | None:
            await collector.poll()
            clock.advance(INTERVAL)
            return collector.last_unreachable[0].reason if collector.last_unreachable else None

        try:
            with capture_logs() as logs:
                with tmpfs(path):
                    reasons = [await reason()]
                reasons += [await reason() for _ in range(3)]   # unmounted: the directory under it answers
                with tmpfs(path):
                    reasons += [await reason() for _ in range(2)]
        finally:
            collector.close()
        assert reasons == [None, "not_mounted", "not_mounted", "not_mounted", "changed", None]
        assert [(e["event"], e.get("reason")) for e in logs if e["event"].startswith("filesystem.")] == [
            ("filesystem.unreachable", "not_mounted"), ("filesystem.unreachable", "changed"),
            ("filesystem.recovered", None)]

    @pytest.mark.skipif(shutil.which("mount") is None, reason="no mount(8)")
    async def test_a_path_that_never_was_a_mount_point_is_unaffected(self, tmp_path: Path) -> None:
        """A directory on a mount further up (a real tmpfs) and one on tmp_path's filesystem: read
        every poll, real statvfs and ismount."""
        with tmpfs(tmp_path / "vol") as vol:
            (vol / "nas").mkdir()
            (tmp_path / "plain").mkdir()
            clock = VirtualClock()
            collector = FilesystemCollector([FilesystemTarget(name="nas", path=vol / "nas", tier="cold"),
                                             FilesystemTarget(name="plain", path=tmp_path / "plain", tier="warm")],
                                            load_settings(None).filesystem, clock)
            results = []
            try:
                with capture_logs() as logs:
                    for step in range(4):
                        fill(vol / "nas", f"f{step}", 64 * 1024)
                        results.append(await collector.poll())
                        clock.advance(INTERVAL)
            finally:
                collector.close()
        assert [[o.target.name for o in r.observations] for r in results] == [["nas", "plain"]] * 4
        assert [r.dropped for r in results] == [()] * 4
        assert not [e for e in logs if e["event"].startswith("filesystem.")]

    async def test_a_path_that_never_was_a_mount_point_keeps_the_fsid_rule(self, tmp_path: Path) -> None:
        """Its mount further up went away (ismount says no throughout): the filesystem under it is
        unreachable for one poll and believed at the second answer, as before."""
        settings = guarded_settings(tmp_path, command=[], overrides=STEP_1GIB)
        clock = VirtualClock()
        data = statvfs_of(size=10 * TIB, used=1 * TIB, fsid=111)
        root = statvfs_of(size=50 * GIB, used=int(10 * GIB), fsid=222)
        async with Daemon(settings, clock) as daemon:
            _, changed, believed = await polls(daemon, clock, Sequenced(data), [data, root, root],
                                               ismount=MountTable(), mounted=[False, False, False])
        assert [d.detail.split(":")[0] for d in changed.poll.dropped] == ["changed"]
        assert [o.hard_limit_bytes for o in believed.poll.observations] == [50 * GIB]

    async def test_a_hung_ismount_is_bounded_like_a_hung_statvfs(self, tmp_path: Path) -> None:
        (tmp_path / "ok").mkdir()
        (tmp_path / "nfs").mkdir()
        mounts = MountTable(mounted=True, hang_path=str(tmp_path / "nfs"))
        targets = [FilesystemTarget(name="local", path=tmp_path / "ok", tier="hot"),
                   FilesystemTarget(name="nas", path=tmp_path / "nfs", tier="cold")]
        settings = load_settings(None, filesystem={"statvfs_timeout_seconds": 0.05}).filesystem
        collector = FilesystemCollector(targets, settings, VirtualClock())
        collector.poller.ismount = mounts   # our boundary, as statvfs
        try:
            with capture_logs() as logs:
                first = await collector.poll()   # both read; both mount points
                mounts.hang.set()
                hung = await collector.poll()
                still = await collector.poll()   # no second call on the hung mount
                threads = [t for t in threading.enumerate() if t.name == "statvfs:nas" and t.is_alive()]
                calls_while_hung = mounts.calls[str(tmp_path / "nfs")]
                mounts.release.set()
                for _ in range(100):
                    back = await collector.poll()
                    if not back.dropped:
                        break
        finally:
            mounts.release.set()
            collector.close()
        assert first.dropped == ()
        assert [o.target.name for o in hung.observations] == ["local"]   # the other one read in the same poll
        assert [(d.target, d.reason) for d in hung.dropped] == [("nas", "unreachable")]
        assert "took over 0.05 s" in hung.dropped[0].detail
        assert "still has not returned" in still.dropped[0].detail
        assert (len(threads), calls_while_hung) == (1, 2)
        assert [o.target.name for o in back.observations] == ["local", "nas"]
        assert [(e["event"], e.get("target")) for e in logs if e["event"].startswith("filesystem.")] == [
            ("filesystem.unreachable", "nas"), ("filesystem.recovered", "nas")]


class TestFilesystemsOnly:
    """A deployment of filesystems without a VAST cluster is valid; with neither it is not."""

    def test_validate_for_run(self, tmp_path: Path) -> None:
        from quotapilot.daemon.commands.check_config import validate_for_run
        from quotapilot.daemon.errors import ConfigError

        validate_for_run(load_settings(None, filesystems=[{"name": "data", "path": str(tmp_path)}]))
        with pytest.raises(ConfigError) as err:
            validate_for_run(load_settings(None))
        assert err.value.field == "clusters"
