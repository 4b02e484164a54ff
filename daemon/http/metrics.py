"""Prometheus metrics of the daemon core, computed from the immutable snapshot at scrape time.

`SnapshotCollector.collect()` reads the snapshot it is handed and yields metric families; it does
no IO and changes nothing, so a scrape can never disturb a poll. Names are a contract (README):

per target (labels cluster, target, path, kind, tier) — one series per quota or filesystem
(kind "quota" or "filesystem"; tier "" for a quota):
  quotapilot_target_used_bytes, quotapilot_target_hard_limit_bytes,
  quotapilot_target_soft_limit_bytes, quotapilot_target_utilization_ratio,
  quotapilot_target_used_inodes, quotapilot_target_hard_limit_inodes,
  quotapilot_target_ingest_rate_bytes_per_second
per cluster (label cluster):
  quotapilot_cluster_usable_bytes, quotapilot_cluster_used_bytes, quotapilot_cluster_free_bytes,
  quotapilot_cluster_ingest_bytes_per_second,
  quotapilot_poll_duration_seconds (histogram), quotapilot_poll_errors_total{reason},
  quotapilot_last_successful_poll_timestamp_seconds, quotapilot_samples_dropped_total{reason}
  (both with every reason the collector can emit, from 0),
  quotapilot_vms_requests_total, quotapilot_vms_listings_unsettled_total,
  quotapilot_poll_consecutive_failures
self: quotapilot_build_info{version,python}, quotapilot_stage_errors_total{stage},
  quotapilot_stage_seconds_total{stage}, quotapilot_task_crashed{task}
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol, TypeVar, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from quotapilot.daemon import __version__
from quotapilot.daemon.logs import TransitionLog, get_logger
from quotapilot.daemon.runtime.snapshot import ClusterState, Snapshot, TargetState
from quotapilot.daemon.vms.errors import POLL_ERROR_REASONS
from quotapilot.daemon.vms.validation import DROP_REASONS
from quotapilot.forecasting.types import TargetId

log = get_logger(__name__)
_T = TypeVar("_T")

TARGET_LABELS = ["cluster", "target", "path", "kind", "tier"]

_TARGET_GAUGES: tuple[tuple[str, str], ...] = (
    ("quotapilot_target_used_bytes", "Bytes used in the quota (VMS used_capacity)."),
    ("quotapilot_target_hard_limit_bytes", "Hard limit of the quota in bytes."),
    ("quotapilot_target_soft_limit_bytes", "Soft limit of the quota in bytes."),
    ("quotapilot_target_utilization_ratio", "Used bytes divided by the hard limit."),
    ("quotapilot_target_used_inodes", "Files and directories in the quota."),
    ("quotapilot_target_hard_limit_inodes", "Hard limit of the quota on files and directories."),
    ("quotapilot_target_ingest_rate_bytes_per_second",
     "Net growth of the quota's usage between the last two accepted samples (negative after deletes)."),
)


class TargetCollector(Collector):
    """The per-target families (one series per quota and metric: the bulk of a scrape).

    `collect()` serves the registry API (`registry.get_sample_value`); `/metrics` renders the same
    families with `TargetText`, which is ~10× faster at 10,000 quotas and caches per snapshot."""

    def __init__(self, get_snapshot: Callable[[], Snapshot]) -> None:
        self._get_snapshot = get_snapshot

    def collect(self) -> Iterator[Metric]:
        yield from _target_families(self._get_snapshot())


class SnapshotCollector(Collector):
    """The cluster and self families from `get_snapshot()` and `get_crashes()`."""

    def __init__(self, get_snapshot: Callable[[], Snapshot],
                 get_crashes: Callable[[], Mapping[str, object]] = dict,
                 get_collect_errors: Callable[[], Mapping[str, int]] = dict) -> None:
        self._get_snapshot = get_snapshot
        self._get_crashes = get_crashes
        self._get_collect_errors = get_collect_errors

    def collect(self) -> Iterator[Metric]:
        snapshot = self._get_snapshot()
        yield from _cluster_families(snapshot)
        build = GaugeMetricFamily("quotapilot_build_info", "quotapilot version (value is always 1).",
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        stage_errors = CounterMetricFamily(
            "quotapilot_stage_errors", "Poll cycles in which a stage raised (the later stages still ran).",
            labels=["stage"])
        for stage, count in sorted(snapshot.stage_errors_total.items()):
            stage_errors.add_metric([stage], float(count))
        yield stage_errors
        stage_seconds = CounterMetricFamily(
            "quotapilot_stage_seconds", "Wall time spent in each stage of the poll cycle.", labels=["stage"])
        for stage, seconds in sorted(snapshot.stage_seconds_total.items()):
            stage_seconds.add_metric([stage], seconds)
        yield stage_seconds
        collect_errors = CounterMetricFamily(
            "quotapilot_metrics_collect_errors", "Scrapes in which a metrics collector raised (its families left out).",
            labels=["collector"])
        for name, count in sorted(self._get_collect_errors().items()):
            collect_errors.add_metric([name], float(count))
        yield collect_errors
        crashed = GaugeMetricFamily("quotapilot_task_crashed",
                                    "1 for each supervised task that crashed or, still running, keeps "
                                    "failing (see /healthz).",
                                    labels=["task"])
        for task in sorted(self._get_crashes()):
            crashed.add_metric([task], 1.0)
        yield crashed


@runtime_checkable
class RendersText(Protocol):
    """A collector whose largest families can be rendered straight to exposition text (the fast
    path of /metrics); `collect()` still yields every family, `collect_rest()` the others."""

    def render_text(self) -> str: ...

    def collect_rest(self) -> Iterable[Metric]: ...


class GuardedCollector(Collector):
    """Another part's collector, isolated: if its `collect()` raises, the scrape goes on without
    its families (logged when it starts failing and when it recovers; counted in
    `quotapilot_metrics_collect_errors_total{collector}`) instead of failing /metrics as a whole."""

    def __init__(self, inner: Collector, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or type(inner).__name__
        self.errors = 0
        self._failures = TransitionLog(log, "metrics", failed_level="error", failed_event="metrics.collect_failed",
                                       recovered_event="metrics.collect_recovered", once_per_outage=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(self.inner.collect)

    @property
    def renders_text(self) -> bool:
        """Whether the inner collector renders its big families itself (`RendersText`)."""
        return isinstance(self.inner, RendersText)

    def render_text(self) -> str:
        """The inner collector's self-rendered families ("" if it has none or fails)."""
        inner = self.inner
        return self._guard(inner.render_text, "") if isinstance(inner, RendersText) else ""

    def rest(self) -> Collector:
        """A collector of the families `render_text()` leaves out, guarded like this one."""
        inner = self.inner
        if not isinstance(inner, RendersText):
            return self
        guard, collect_rest = self, inner.collect_rest

        class _Rest(Collector):
            def collect(self) -> Iterator[Metric]:
                return guard._families(collect_rest)

        return _Rest()

    def _families(self, produce: Callable[[], Iterable[Metric]]) -> Iterator[Metric]:
        no_families: list[Metric] = []
        return iter(self._guard(lambda: list(produce()), no_families))

    def _guard(self, produce: Callable[[], _T], fallback: _T) -> _T:
        try:
            produced = produce()
        except Exception as exc:
            self.errors += 1
            self._failures.failed(self.name, str(exc), exc_info=True, collector=self.name)
            return fallback
        self._failures.ok(self.name, collector=self.name)
        return produced


def _target_values(state: TargetState) -> tuple[float | None, ...]:
    """The per-target metric values, in `_TARGET_GAUGES` order (None: no sample)."""
    obs = state.observation
    if obs is None:
        return (None,) * len(_TARGET_GAUGES)
    hard = obs.hard_limit_bytes
    return (
        float(obs.used_bytes),
        None if hard is None else float(hard),
        None if obs.soft_limit_bytes is None else float(obs.soft_limit_bytes),
        None if not hard else obs.used_bytes / hard,
        None if obs.used_inodes is None else float(obs.used_inodes),
        None if obs.hard_limit_inodes is None else float(obs.hard_limit_inodes),
        state.ingest_rate_bytes_per_second,
    )


def _target_families(snapshot: Snapshot) -> Iterator[Metric]:
    families = [Metric(name, doc, "gauge") for name, doc in _TARGET_GAUGES]
    for cluster in snapshot.clusters.values():
        for state in cluster.targets.values():
            labels = {"cluster": cluster.name, "target": state.target.name, "path": state.target.path,
                      **extra_target_labels(state.target)}
            for family, value in zip(families, _target_values(state), strict=True):
                if value is not None:
                    family.add_sample(family.name, labels, value)
    yield from families


def extra_target_labels(target: TargetId) -> dict[str, str]:
    """The `kind` ("quota", "pool", "filesystem") and `tier` labels every per-target series carries
    after cluster, target and path. `tier` is a filesystem's tier and "" for the others: one label
    set per family, and Prometheus stores an empty label as no label, so `{tier=""}` selects
    exactly the targets without a tier."""
    return {"kind": str(target.kind), "tier": target.tier or ""}


def format_sample_value(value: float) -> str:
    """A sample value as Prometheus text writes it."""
    if math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"


def escape_label_value(value: str) -> str:
    """A label value escaped for Prometheus text."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class TargetText:
    """Prometheus text of the per-target families, rendered straight from the snapshot and cached
    per cluster state (a cluster that did not poll since the last scrape costs nothing)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[ClusterState, list[str]]] = {}

    def _cluster_chunks(self, cluster: ClusterState) -> list[str]:
        cached = self._cache.get(cluster.name)
        if cached is not None and cached[0] is cluster:
            return cached[1]
        lines: list[list[str]] = [[] for _ in _TARGET_GAUGES]
        name_label = escape_label_value(cluster.name)
        for state in cluster.targets.values():
            extra = "".join(f',{key}="{escape_label_value(value)}"'
                            for key, value in extra_target_labels(state.target).items())
            labels = (f'{{cluster="{name_label}",path="{escape_label_value(state.target.path)}",'
                      f'target="{escape_label_value(state.target.name)}"{extra}}} ')
            for out, value in zip(lines, _target_values(state), strict=True):
                if value is not None:
                    out.append(labels + format_sample_value(value))
        chunks = ["".join(f"{metric}{line}\n" for line in out)
                  for (metric, _), out in zip(_TARGET_GAUGES, lines, strict=True)]
        self._cache[cluster.name] = (cluster, chunks)
        return chunks

    def render(self, snapshot: Snapshot) -> str:
        per_cluster = [self._cluster_chunks(c) for c in snapshot.clusters.values()]
        for gone in set(self._cache) - set(snapshot.clusters):
            del self._cache[gone]
        parts: list[str] = []
        for index, (metric, doc) in enumerate(_TARGET_GAUGES):
            parts.append(f"# HELP {metric} {doc}\n# TYPE {metric} gauge\n")
            parts.extend(chunks[index] for chunks in per_cluster)
        return "".join(parts)


def _cluster_families(snapshot: Snapshot) -> Iterator[Metric]:
    usable = GaugeMetricFamily("quotapilot_cluster_usable_bytes", "Usable capacity of the cluster pool.",
                               labels=["cluster"])
    used = GaugeMetricFamily("quotapilot_cluster_used_bytes",
                             "Used part of the usable capacity (usable minus free).", labels=["cluster"])
    free = GaugeMetricFamily("quotapilot_cluster_free_bytes", "Free usable capacity of the cluster pool.",
                             labels=["cluster"])
    bandwidth = GaugeMetricFamily("quotapilot_cluster_ingest_bytes_per_second",
                                  "Cluster write bandwidth as reported by VMS analytics.", labels=["cluster"])
    last_ok = GaugeMetricFamily("quotapilot_last_successful_poll_timestamp_seconds",
                                "When the last poll of the cluster succeeded (epoch seconds).",
                                labels=["cluster"])
    failures = GaugeMetricFamily("quotapilot_poll_consecutive_failures",
                                 "Polls of the cluster that failed in a row.", labels=["cluster"])
    errors = CounterMetricFamily("quotapilot_poll_errors", "Failed polls, by reason.",
                                 labels=["cluster", "reason"])
    dropped = CounterMetricFamily("quotapilot_samples_dropped",
                                  "Samples refused as malformed or implausible, by reason.",
                                  labels=["cluster", "reason"])
    requests = CounterMetricFamily("quotapilot_vms_requests", "Requests made to the VMS (retries included).",
                                   labels=["cluster"])
    unsettled = CounterMetricFamily("quotapilot_vms_listings_unsettled",
                                    "Listings (of quotas) taken while the VMS kept changing under them (their "
                                    "count still moved between pages after the restarts).", labels=["cluster"])
    durations = HistogramMetricFamily("quotapilot_poll_duration_seconds",
                                      "Wall time of one poll (all its VMS requests).", labels=["cluster"])
    for cluster in snapshot.clusters.values():
        labels = [cluster.name]
        if cluster.capacity is not None:
            usable.add_metric(labels, float(cluster.capacity.usable_bytes))
            used.add_metric(labels, float(cluster.capacity.used_bytes))
            free.add_metric(labels, float(cluster.capacity.free_bytes))
        if cluster.ingest_bytes_per_second is not None:
            bandwidth.add_metric(labels, cluster.ingest_bytes_per_second)
        if cluster.health.last_success_t is not None:
            last_ok.add_metric(labels, cluster.health.last_success_t)
        failures.add_metric(labels, float(cluster.health.consecutive_failures))
        # every reason the collector can emit starts at 0, so `increase()` sees the first error
        poll_errors = dict.fromkeys(POLL_ERROR_REASONS, 0) | dict(cluster.poll_errors_total)
        for reason, count in sorted(poll_errors.items()):
            errors.add_metric([cluster.name, reason], float(count))
        samples_dropped = dict.fromkeys(DROP_REASONS, 0) | dict(cluster.samples_dropped_total)
        for reason, count in sorted(samples_dropped.items()):
            dropped.add_metric([cluster.name, reason], float(count))
        requests.add_metric(labels, float(cluster.requests_total))
        unsettled.add_metric(labels, float(cluster.listings_unsettled_total))
        histogram = cluster.poll_duration
        durations.add_metric(labels, [(le, float(n)) for le, n in histogram.cumulative()],
                             histogram.total)
    yield from (usable, used, free, bandwidth, last_ok, failures, errors, dropped, requests, unsettled, durations)


class Exposition:
    """The `/metrics` body: the per-target families as text straight from the snapshot
    (`TargetText`), the self-rendered families of `text_renderers`, then everything else in
    `registry` (which holds the core collector and the rest of the stages' families)."""

    def __init__(self, get_snapshot: Callable[[], Snapshot], registry: CollectorRegistry,
                 text_renderers: Iterable[GuardedCollector] = ()) -> None:
        self._get_snapshot = get_snapshot
        self._registry = registry
        self._target_text = TargetText()
        self._text_renderers = tuple(text_renderers)

    def render(self) -> bytes:
        parts = [self._target_text.render(self._get_snapshot()), *(r.render_text() for r in self._text_renderers)]
        return "".join(parts).encode() + generate_latest(self._registry)
