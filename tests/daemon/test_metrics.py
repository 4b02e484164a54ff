"""Metrics from the immutable snapshot: names, labels, values; the fast text path equals the
registry's; promtool accepts the exposition."""

from __future__ import annotations

import shutil
import subprocess
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from quotapilot.daemon.http.metrics import GuardedCollector, SnapshotCollector, TargetCollector, TargetText
from quotapilot.daemon.runtime.snapshot import (
    ClusterState,
    HistogramState,
    PollHealth,
    Snapshot,
    TargetState,
)
from quotapilot.daemon.vms.errors import POLL_ERROR_REASONS
from quotapilot.daemon.vms.validation import DROP_REASONS
from quotapilot.forecasting.types import ClusterCapacity, Observation, TargetId, TargetKind

TIB = 2**40


def snapshot() -> Snapshot:
    targets = {}
    for name, path, used in (("raw", "/c/raw", 60 * TIB), ("odd", '/c/we"ird\\path', 1), ("new", "/c/new", 0)):
        target = TargetId("c", name, path)
        observation = Observation(target, 1000.0, used, 100 * TIB, 90 * TIB, 10, 1000, 900)
        targets[name] = TargetState(target, observation, 5e6 if name == "raw" else None)
    targets["gone"] = TargetState(TargetId("c", "gone", "/c/gone"), None)
    durations = HistogramState().observe(0.2).observe(3.0)
    cluster = ClusterState(
        "c", health=PollHealth(last_success_t=1000.0, consecutive_failures=0, polls=2),
        capacity=ClusterCapacity("c", 1000.0, 1000 * TIB, 400 * TIB, 600 * TIB),
        targets=MappingProxyType(targets),
        samples_dropped_total=MappingProxyType({"negative": 2}),
        poll_errors_total=MappingProxyType({"timeout": 1}), poll_duration=durations, requests_total=7,
        listings_unsettled_total=2)
    disk = TargetId("filesystems", "nvme", "/mnt/nvme", TargetKind.FILESYSTEM, tier="hot")
    filesystems = ClusterState("filesystems", targets=MappingProxyType({"nvme": TargetState(
        disk, Observation(disk, 1000.0, 3 * TIB, 4 * TIB, None, 50, 100, None))}))
    return Snapshot(t=1000.0, clusters=MappingProxyType({"c": cluster, "filesystems": filesystems}),
                    stage_errors_total=MappingProxyType({"growth": 1}))


@pytest.fixture
def registry() -> CollectorRegistry:
    snap = snapshot()
    registry = CollectorRegistry()
    registry.register(TargetCollector(lambda: snap))
    registry.register(SnapshotCollector(lambda: snap, lambda: {"alerts": object()}))
    return registry


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class TestFamilies:
    """Names and labels are the README's contract; values come straight from the snapshot."""

    def test_target_metrics(self, registry: CollectorRegistry) -> None:
        labels = {"cluster": "c", "target": "raw", "path": "/c/raw", "kind": "quota", "tier": ""}
        assert registry.get_sample_value("quotapilot_target_used_bytes", labels) == 60 * TIB
        assert registry.get_sample_value("quotapilot_target_hard_limit_bytes", labels) == 100 * TIB
        assert registry.get_sample_value("quotapilot_target_soft_limit_bytes", labels) == 90 * TIB
        assert registry.get_sample_value("quotapilot_target_utilization_ratio", labels) == 0.6
        assert registry.get_sample_value("quotapilot_target_used_inodes", labels) == 10
        assert registry.get_sample_value("quotapilot_target_hard_limit_inodes", labels) == 1000
        assert registry.get_sample_value("quotapilot_target_ingest_rate_bytes_per_second", labels) == 5e6
        no_rate = {"cluster": "c", "target": "new", "path": "/c/new", "kind": "quota", "tier": ""}
        assert registry.get_sample_value("quotapilot_target_ingest_rate_bytes_per_second", no_rate) is None
        never = {"cluster": "c", "target": "gone", "path": "/c/gone", "kind": "quota", "tier": ""}
        assert registry.get_sample_value("quotapilot_target_used_bytes", never) is None

    def test_kind_and_tier_label_every_target(self, registry: CollectorRegistry) -> None:
        """One label set per family: a quota is `kind="quota", tier=""`, a filesystem carries its
        kind and tier (issue 18), so one query serves both and `{kind="quota"}` tells them apart."""
        disk = {"cluster": "filesystems", "target": "nvme", "path": "/mnt/nvme", "kind": "filesystem", "tier": "hot"}
        assert registry.get_sample_value("quotapilot_target_utilization_ratio", disk) == 0.75
        assert registry.get_sample_value("quotapilot_target_used_inodes", disk) == 50
        [family] = [f for f in registry.collect() if f.name == "quotapilot_target_used_bytes"]
        label_sets = {tuple(sorted(sample.labels)) for sample in family.samples}
        assert label_sets == {("cluster", "kind", "path", "target", "tier")}
        assert {(s.labels["kind"], s.labels["tier"]) for s in family.samples} == {("quota", ""), ("filesystem", "hot")}

    def test_cluster_and_self_metrics(self, registry: CollectorRegistry) -> None:
        c = {"cluster": "c"}
        assert registry.get_sample_value("quotapilot_cluster_usable_bytes", c) == 1000 * TIB
        assert registry.get_sample_value("quotapilot_cluster_used_bytes", c) == 400 * TIB
        assert registry.get_sample_value("quotapilot_cluster_free_bytes", c) == 600 * TIB
        assert registry.get_sample_value("quotapilot_last_successful_poll_timestamp_seconds", c) == 1000.0
        assert registry.get_sample_value("quotapilot_poll_errors_total", {"cluster": "c", "reason": "timeout"}) == 1
        assert registry.get_sample_value("quotapilot_samples_dropped_total",
                                              {"cluster": "c", "reason": "negative"}) == 2
        assert registry.get_sample_value("quotapilot_poll_duration_seconds_count", c) == 2
        assert registry.get_sample_value("quotapilot_poll_duration_seconds_sum", c) == 3.2
        assert registry.get_sample_value("quotapilot_poll_duration_seconds_bucket", {**c, "le": "0.25"}) == 1
        assert registry.get_sample_value("quotapilot_poll_duration_seconds_bucket", {**c, "le": "+Inf"}) == 2
        assert registry.get_sample_value("quotapilot_vms_requests_total", c) == 7
        assert registry.get_sample_value("quotapilot_vms_listings_unsettled_total", c) == 2
        assert registry.get_sample_value("quotapilot_stage_errors_total", {"stage": "growth"}) == 1
        assert registry.get_sample_value("quotapilot_task_crashed", {"task": "alerts"}) == 1
        build = [s for f in registry.collect() if f.name == "quotapilot_build_info" for s in f.samples]
        assert len(build) == 1 and build[0].value == 1.0

    def test_error_counters_start_at_zero(self, registry: CollectorRegistry) -> None:
        """Every reason the collector can emit has a sample from the start (Prometheus' advice for
        counters with known labels: `increase()` then sees the first error)."""
        for reason in POLL_ERROR_REASONS:
            expected = 1 if reason == "timeout" else 0
            assert registry.get_sample_value("quotapilot_poll_errors_total",
                                             {"cluster": "c", "reason": reason}) == expected
        for reason in DROP_REASONS:
            expected = 2 if reason == "negative" else 0
            assert registry.get_sample_value("quotapilot_samples_dropped_total",
                                             {"cluster": "c", "reason": reason}) == expected

    def test_collect_changes_nothing(self) -> None:
        snap = snapshot()
        before = repr(snap)
        collector = TargetCollector(lambda: snap)
        assert list(collector.collect()) and list(collector.collect())
        assert before == repr(snap)


class TestTargetText:
    """The fast /metrics path renders exactly what the registry would, escaping included."""

    def test_same_samples_as_the_registry(self) -> None:
        snap = snapshot()
        registry = CollectorRegistry()
        registry.register(TargetCollector(lambda: snap))
        expected = samples(generate_latest(registry).decode())
        text = TargetText().render(snap)
        assert expected == samples(text)
        assert ("quotapilot_target_used_bytes", (("cluster", "c"), ("kind", "quota"), ("path", '/c/we"ird\\path'),
                                                 ("target", "odd"), ("tier", ""))) in samples(text)
        assert 'target="nvme",kind="filesystem",tier="hot"} 3298534883328.0' in text

    def test_cached_per_cluster_state(self) -> None:
        snap = snapshot()
        text = TargetText()
        first = text.render(snap)
        assert first == text.render(snap)
        assert text._cache["c"][0] is snap.clusters["c"]

    @pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
    def test_promtool_accepts_the_exposition(self, registry: CollectorRegistry) -> None:
        snap = snapshot()
        rest = CollectorRegistry()
        rest.register(SnapshotCollector(lambda: snap))
        body = TargetText().render(snap).encode() + generate_latest(rest)
        result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr


class Broken:
    def __init__(self) -> None:
        self.fail = True

    def collect(self) -> list[GaugeMetricFamily]:
        if self.fail:
            raise RuntimeError("bug in a collector")
        family = GaugeMetricFamily("quotapilot_other_thing", "Something else.")
        family.add_metric([], 1.0)
        return [family]


class TestGuardedCollector:
    """A collector of another part that raises leaves the scrape intact, counted and logged once."""

    def test_failure_is_isolated(self) -> None:
        snap = snapshot()
        broken = Broken()
        guarded = GuardedCollector(broken, "broken")  # type: ignore[arg-type]
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(lambda: snap, dict, lambda: {"broken": guarded.errors}))
        registry.register(guarded)
        with capture_logs() as logs:
            generate_latest(registry)
            body = generate_latest(registry).decode()
            broken.fail = False
            generate_latest(registry)
        assert "quotapilot_cluster_usable_bytes" in body
        assert 'quotapilot_metrics_collect_errors_total{collector="broken"} 1.0' in body  # as of the last scrape
        assert [e["event"] for e in logs] == ["metrics.collect_failed", "metrics.collect_recovered"]
        assert registry.get_sample_value("quotapilot_other_thing") == 1.0
