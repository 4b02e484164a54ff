"""Usage history from Prometheus: which queries, which series is which target, and the import.

Two sources have default queries (`[history] source`, each query and label overridable):

- `quotapilot` — quotapilot's own `quotapilot_target_used_bytes` (+ `_hard_limit_bytes`,
  `_used_inodes`), labels `cluster`, `target`, `path`: a moved or rebuilt host keeps its history.
- `vast` — the VMS's built-in exporter (`/api/prometheusmetrics/quotas`): `vast_quota_used_capacity`,
  `vast_quota_hard_limit`, `vast_quota_used_inodes`, labels `cluster`, `path` and `tenant_name`.
  Source: the queries of VAST's own Grafana dashboards (github.com/vast-data/vast-grafana-dashboards,
  `dashboards/5.4.3/Capacity  Utilization.json`, panel "Quotas utilization"), which also show the
  labels `guid` and `title` ("Quota Name"); not checked against a live exporter. No label is
  documented as the quota *name*, so a series is matched by path to a target the store already
  knows (`name_label = "title"` opts into names: VMS's own, another tenant's qualified by
  `tenant_name` as the poll qualifies it, so an import before the first poll lands where the poll
  looks, `acme:scratch`; see `TargetMatcher`); its `cluster` label is the VAST cluster's name, so
  with one `[[clusters]]` entry the series belong to it when they carry its name, no cluster
  label, or one other name (the exporter's for our VMS); where a Prometheus holds several
  clusters' series, the ones naming another cluster are reported as unmatched.

The import goes into the store's hourly tier (`ObservationStore.import_history`: INSERT OR
IGNORE, so local samples win and a second import adds nothing). The forecast stage warm-starts a
new series from the store, so an import before the first cycle is a day-one forecast.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.history.prometheus import PrometheusClient, RangeSeries
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.settings import HistorySettings, Settings, url_for_display
from quotapilot.daemon.store.observations import ObservationStore
from quotapilot.daemon.vms.validation import TENANT_SEPARATOR, BadSample, QuotaNaming, named_by_tenant_id
from quotapilot.forecasting.types import POOL_TARGET, Observation, TargetId, TargetKind

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Queries:
    """The PromQL per dimension and the labels that identify a target."""

    used_bytes: str
    hard_limit_bytes: str | None
    used_inodes: str | None
    cluster_label: str | None
    name_label: str | None
    path_label: str
    tenant_label: str | None = None
    """The quota's tenant, read with `name_label` only: a name label that is VMS's quota name
    (VAST's `title`) is qualified by it as the poll qualifies another tenant's quota."""


SOURCE_DEFAULTS: dict[str, Queries] = {
    "quotapilot": Queries("quotapilot_target_used_bytes", "quotapilot_target_hard_limit_bytes",
                          "quotapilot_target_used_inodes", "cluster", "target", "path"),
    "vast": Queries("vast_quota_used_capacity", "vast_quota_hard_limit", "vast_quota_used_inodes",
                    "cluster", None, "path", "tenant_name"),
}


def queries_for(settings: HistorySettings) -> Queries:
    """The source's defaults with every query/label the config sets (an empty string: none)."""
    base = SOURCE_DEFAULTS[settings.source]

    def pick(value: str | None, default: str | None) -> str | None:
        if value is None:
            return default
        return value or None

    return Queries(
        used_bytes=settings.used_bytes_query or base.used_bytes,
        hard_limit_bytes=pick(settings.hard_limit_bytes_query, base.hard_limit_bytes),
        used_inodes=pick(settings.used_inodes_query, base.used_inodes),
        cluster_label=pick(settings.cluster_label, base.cluster_label),
        name_label=pick(settings.name_label, base.name_label),
        path_label=settings.path_label,
        tenant_label=pick(settings.tenant_label, base.tenant_label))


def name_from_path(path: str) -> str:
    """A display name for a path-only series (as the growth stage names a managed view)."""
    return path.strip("/").replace("/", "-") or "root"


@dataclass(slots=True)
class TargetMatcher:
    """Series labels → a target: by (cluster, name) when the series has a name label, else by
    (cluster, path) among `known` targets (or, with `derive_names`, a name made from the path).

    A name is the target name the daemon's poll gives that quota: `QuotaNaming`'s, with the tenant
    from `tenant_label` and the cluster's configured tenant (`tenants`) as home — a home tenant's
    quota by its name, another tenant's as `<tenant>:<name>`, before the first poll as after it.
    The store's targets at the series' path do not override it: one there under another name is
    not what the poll calls the quota now (a bare `projects` left in the raw tier from before
    0198d09, beside the `acme:projects` polled since). They decide only what the series cannot
    say: a tenant whose name is no prefix is named by VMS's tenant id (`tenant<id>:<name>`),
    which no series carries — matched to such a target at its path, else to nothing; a series
    with no tenant label goes to a `<tenant>:<name>` target at its path, else by its name. A
    series the poll would refuse (its qualified name is a home quota's) matches nothing. Not
    told apart: a default tenant renamed (home under any name: the poll reads its id) is named
    as another tenant's. A series with no name label goes to the target at its path, the one
    last in `known` (`known_targets`: the newest) where several are."""

    queries: Queries
    clusters: Sequence[str]
    known: Sequence[TargetId] = ()
    derive_names: bool = False
    tenants: Mapping[str, str | None] = field(default_factory=dict)
    """The configured `tenant` per cluster (absent or None: the default tenant is home)."""
    _by_path: dict[tuple[str, str], list[TargetId]] = field(default_factory=dict, init=False)
    _namings: dict[str, QuotaNaming] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for target in self.known:
            if target.kind is TargetKind.QUOTA:
                self._by_path.setdefault((target.cluster, target.path), []).append(target)

    _exporter_name: str | None = field(default=None, init=False)
    _names_seen: bool = field(default=False, init=False)

    def learn(self, series: Sequence[RangeSeries]) -> None:
        """Read the cluster names a query's series carry. With one configured cluster, the
        exporter may call our VMS something else (VAST's label is the VAST cluster's name, not
        ours): a lone name that is not ours is taken as that; with several names (a Prometheus
        scraping more clusters), only ours is ours."""
        if self.queries.cluster_label and len(self.clusters) == 1:
            names = {value for s in series if (value := s.label(self.queries.cluster_label)) is not None}
            self._names_seen = True
            self._exporter_name = next(iter(names)) if len(names) == 1 else None
        # the home quotas' names, as a poll reads them from its listing (see `QuotaNaming.for_listing`)
        records: dict[str, list[dict[str, str]]] = {}
        for s in series:
            if (cluster := self.cluster_of(s)) is not None:
                records.setdefault(cluster, []).append(self._record(s))
        self._namings = {cluster: QuotaNaming.for_listing(listing, self.tenants.get(cluster))
                         for cluster, listing in records.items()}

    def cluster_of(self, series: RangeSeries) -> str | None:
        value = series.label(self.queries.cluster_label) if self.queries.cluster_label else None
        if len(self.clusters) == 1:
            only = self.clusters[0]
            if value is None or value == only or not self._names_seen or value == self._exporter_name:
                return only
            return None
        if not self.clusters:
            return value or "prometheus"
        return value if value in self.clusters else None

    def match(self, series: RangeSeries) -> TargetId | None:
        cluster = self.cluster_of(series)
        path = series.label(self.queries.path_label)
        if cluster is None:
            return None
        name = series.label(self.queries.name_label) if self.queries.name_label else None
        at_path = self._by_path.get((cluster, path), []) if path is not None else []
        if name is not None:
            if name == POOL_TARGET and path == "/":
                return None
            return self._named(cluster, name, path, series, at_path)
        if path is None:
            return None
        if at_path:
            return at_path[-1]
        return TargetId(cluster, name_from_path(path), path) if self.derive_names else None

    def _named(self, cluster: str, name: str, path: str | None, series: RangeSeries,
               at_path: Sequence[TargetId]) -> TargetId | None:
        """The target of a series named `name` (VMS's quota name), as `TargetMatcher` says."""
        record = self._record(series)
        naming = self._namings.get(cluster) or QuotaNaming(self.tenants.get(cluster))
        tenant = record.get("tenant_name")
        qualifier = naming.qualifier(record)
        if tenant is not None and qualifier is not None and qualifier != tenant:
            # no prefix (QuotaNaming's fallback, for a record with no tenant id): the poll reads the id
            return next((t for t in reversed(at_path) if named_by_tenant_id(t.name, name)), None)
        if tenant is None:
            qualified = [t for t in at_path if t.name.endswith(f"{TENANT_SEPARATOR}{name}")]
            if qualified:
                return qualified[-1]  # the poll qualified it by a tenant the series does not name
        try:
            target_name = naming.target_name(record)
        except BadSample:
            return None  # the poll refuses this quota: its history is nobody's
        return next((t for t in at_path if t.name == target_name), TargetId(cluster, target_name, path or f"/{name}"))

    def _record(self, series: RangeSeries) -> dict[str, str]:
        """The series as the part of a VMS quota record that `QuotaNaming` reads."""
        record: dict[str, str] = {}
        if self.queries.name_label and (name := series.label(self.queries.name_label)) is not None:
            record["name"] = name
        if self.queries.tenant_label and (tenant := series.label(self.queries.tenant_label)) is not None:
            record["tenant_name"] = tenant
        return record

    @staticmethod
    def describe(series: RangeSeries) -> str:
        return "{" + ",".join(f'{k}="{v}"' for k, v in series.labels if k != "__name__") + "}"


@dataclass(slots=True)
class FetchedHistory:
    """What a fetch found: observations per matched target, and the series nobody matched."""

    observations: dict[TargetId, list[Observation]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    hard_limits: dict[TargetId, dict[float, float]] = field(default_factory=dict)
    """The hard-limit series per target, `t -> bytes`, as Prometheus has it: 0 is "no limit", a step
    with no point is not known (the observations read both as None)."""


async def fetch_history(client: PrometheusClient, queries: Queries, matcher: TargetMatcher, *,
                        start: float, end: float, on_chunk: Callable[[], None] | None = None) -> FetchedHistory:
    """Run the queries over `[start, end]` and join them per target and step time.

    Several series can be one target: every instance of a fleet serves the same targets' metrics
    (the series differ in `instance`), as does an HA pair of Prometheus servers. They are merged
    into one value per step time (the largest: usage is never under-stated), not appended."""
    step = client.settings.step_seconds
    start = math.floor(start / step) * step  # on the step grid, so chunks and re-imports line up
    used = await client.query_range(queries.used_bytes, start, end, step, on_chunk=on_chunk)
    matcher.learn(used)
    extra: dict[str, dict[TargetId, dict[float, float]]] = {}
    for dimension, query in (("hard", queries.hard_limit_bytes), ("inodes", queries.used_inodes)):
        by_target: dict[TargetId, dict[float, float]] = {}
        if query is not None:
            for series in await client.query_range(query, start, end, step, on_chunk=on_chunk):
                target = matcher.match(series)
                if target is not None:
                    _merge_points(by_target.setdefault(target, {}), series.points)
        extra[dimension] = by_target
    fetched = FetchedHistory(hard_limits=extra["hard"])
    used_by_target: dict[TargetId, dict[float, float]] = {}
    for series in used:
        target = matcher.match(series)
        if target is None:
            fetched.unmatched.append(TargetMatcher.describe(series))
            continue
        _merge_points(used_by_target.setdefault(target, {}), series.points)
    for target, points in used_by_target.items():
        hard, inodes = extra["hard"].get(target, {}), extra["inodes"].get(target, {})
        fetched.observations[target] = [
            Observation(target=target, t=t, used_bytes=int(value),
                        hard_limit_bytes=int(h) if (h := hard.get(t)) is not None and h > 0 else None,
                        used_inodes=int(i) if (i := inodes.get(t)) is not None else None)
            for t, value in sorted(points.items())]
    return fetched


def _merge_points(into: dict[float, float], points: Sequence[tuple[float, float]]) -> None:
    """Add one series' points to a target's `t -> value`, the larger value where two share a step
    (non-finite and negative values dropped)."""
    for t, value in points:
        if math.isfinite(value) and value >= 0:
            kept = into.get(t)
            into[t] = value if kept is None else max(kept, value)


@dataclass(slots=True)
class ImportSummary:
    """What an import did (`import-history`'s summary; the warm start's log line)."""

    targets_matched: list[str] = field(default_factory=list)
    samples_fetched: int = 0
    samples_imported: int = 0
    targets_cold: list[str] = field(default_factory=list)
    """Known targets with no history in Prometheus: they start cold."""
    unmatched_series: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"targets_matched": sorted(self.targets_matched), "samples_fetched": self.samples_fetched,
                "samples_imported": self.samples_imported, "targets_cold": sorted(self.targets_cold),
                "unmatched_series": sorted(self.unmatched_series), "dry_run": self.dry_run}


def known_targets(store: ObservationStore, clusters: Sequence[str]) -> list[TargetId]:
    """The store's quota targets, the newest sample last: where two share a path (a name the poll
    no longer gives, still in the raw tier), the last is the one polled since."""
    newest_last = sorted((obs for cluster in clusters for obs in store.latest(cluster)), key=lambda obs: obs.t)
    return [obs.target for obs in newest_last if obs.target.kind is TargetKind.QUOTA]


async def import_history(settings: Settings, store: ObservationStore, *, now: float, since_seconds: float,
                         dry_run: bool = False, client: PrometheusClient | None = None,
                         on_chunk: Callable[[], None] | None = None,
                         on_start: Callable[[int], None] | None = None) -> ImportSummary:
    """Fetch `since_seconds` of history up to `now` and import it (unless `dry_run`).

    Raises `TemporaryError` (Prometheus down, slow, 5xx after retries) or `PermanentError`."""
    clusters = [c.name for c in settings.clusters]
    known = await asyncio.to_thread(known_targets, store, clusters)
    queries = queries_for(settings.history)
    matcher = TargetMatcher(queries, clusters, known, tenants={c.name: c.tenant for c in settings.clusters})
    async with contextlib.AsyncExitStack() as stack:
        prom = client if client is not None else await stack.enter_async_context(PrometheusClient(settings.history))
        if on_start is not None:
            step = prom.settings.step_seconds
            per_query = prom.chunks(math.floor((now - since_seconds) / step) * step, now)
            on_start(per_query * (1 + (queries.hard_limit_bytes is not None) + (queries.used_inodes is not None)))
        fetched = await fetch_history(prom, queries, matcher, start=now - since_seconds, end=now, on_chunk=on_chunk)
    summary = ImportSummary(dry_run=dry_run, unmatched_series=fetched.unmatched)
    rows = [obs for observations in fetched.observations.values() for obs in observations]
    summary.samples_fetched = len(rows)
    summary.targets_matched = [t.key for t, obs in fetched.observations.items() if obs]
    summary.targets_cold = [t.key for t in known if not fetched.observations.get(t)]
    if not dry_run and rows:
        summary.samples_imported = await asyncio.to_thread(store.import_history, rows)
    return summary


# --------------------------------------------------------------------------- warm start
TaskAdder = Callable[[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]], None]


async def warm_start_from_history(settings: Settings, store: ObservationStore, clock: Clock,
                                  add_task: TaskAdder) -> ImportSummary | None:
    """The daemon's start hook (before the first cycle): import `[history] lookback` from
    Prometheus, bounded by `start_timeout_seconds`. If Prometheus is down or slow the daemon starts
    cold (`history.import_failed`, once) and a supervised task retries every
    `retry_interval_seconds` until one import succeeds. Without `prometheus_url`: nothing."""
    history = settings.history
    if history.prometheus_url is None:
        return None
    summary = await _attempt(settings, store, clock, within_seconds=history.start_timeout_seconds)
    if summary is not None:
        return summary
    log.warning("history.import_failed", prometheus_url=url_for_display(history.prometheus_url), starting="cold",
                retry_in_seconds=history.retry_interval_seconds)

    async def retry(stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await _wait(clock.sleep(history.retry_interval_seconds), stopping)
            if stopping.is_set():
                return
            # in the background, a slow Prometheus may take every retry it is allowed
            bound = history.timeout_seconds * (history.max_retries + 1) * 4
            if await _attempt(settings, store, clock, within_seconds=bound, quiet=True) is not None:
                await stopping.wait()  # done; a supervised task that returns early reads as a fault
                return

    add_task("history-import", retry)
    return None


async def _wait(sleeping: Awaitable[None], stopping: asyncio.Event) -> None:
    sleeper = asyncio.ensure_future(sleeping)
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (sleeper, stopper):
            future.cancel()
        await asyncio.gather(sleeper, stopper, return_exceptions=True)


async def _attempt(settings: Settings, store: ObservationStore, clock: Clock, *, within_seconds: float,
                   quiet: bool = False) -> ImportSummary | None:
    try:
        async with asyncio.timeout(within_seconds):
            summary = await import_history(settings, store, now=clock.now(),
                                           since_seconds=settings.history.lookback)
    except (TemporaryError, PermanentError, TimeoutError, OSError) as exc:
        if not quiet:
            log.warning("history.unavailable", error=str(exc) or type(exc).__name__)
        return None
    log.info("history.imported", targets_matched=len(summary.targets_matched),
             samples_imported=summary.samples_imported, targets_cold=len(summary.targets_cold),
             unmatched_series=len(summary.unmatched_series))
    return summary


# ------------------------------------------------------------------------------ replay
def traces_from_history(fetched: FetchedHistory, *, initial_limit: int | None = None) -> list[Any]:
    """`TargetTrace`s for `quotapilot replay --prometheus`: the hard limits as `TargetTrace.from_samples`
    reads them (a step with no limit point keeps the limit before; 0 is no limit)."""
    from quotapilot.forecasting.replay import TargetTrace

    traces = []
    names = [target.name for target in fetched.observations]
    for target, rows in sorted(fetched.observations.items(), key=lambda kv: kv[0].key):
        if len(rows) < 2:
            continue
        # from the limit series itself: the observations read 0 ("no limit") as None, as a gap
        points = fetched.hard_limits.get(target, {})
        hards = [int(h) if (h := points.get(o.t)) is not None else None for o in rows]
        name = target.name if names.count(target.name) == 1 else f"{target.cluster}-{target.name}"
        traces.append(TargetTrace.from_samples(name, [o.t for o in rows], [o.used_bytes for o in rows], hards,
                                               initial_limit=initial_limit, path=target.path))
    return traces


def fetch_traces(settings: Settings, *, since_seconds: float, initial_limit: int | None = None,
                 now: float | None = None) -> list[Any]:
    """Blocking: the history of every series the queries return, as replay traces (names made
    from the path where the series has no name label)."""
    import time

    async def go() -> FetchedHistory:
        end = time.time() if now is None else now
        queries = queries_for(settings.history)
        matcher = TargetMatcher(queries, [c.name for c in settings.clusters], derive_names=True,
                                tenants={c.name: c.tenant for c in settings.clusters})
        async with PrometheusClient(settings.history) as prom:
            return await fetch_history(prom, queries, matcher, start=end - since_seconds, end=end)

    return traces_from_history(asyncio.run(go()), initial_limit=initial_limit)


# ------------------------------------------------------------------- a target seen late
class HistoryBackedLoader:
    """A forecast-stage `history_loader` (`(target) -> [(t, used_bytes, used_inodes), ...]`) that
    reads the store and, when a new target has less than `min_local_seconds` of local history,
    first imports from Prometheus — so a target that appears after start (a new quota, or one the
    VAST mapping could not match before its first poll) is warm-started too.

    Blocking (the stage calls loaders in a worker thread). One import serves every target of a
    cycle's batch: after an attempt, success or not, the next one waits `retry_interval_seconds`;
    an attempt is bounded by `start_timeout_seconds` and never raises (the target starts cold)."""

    def __init__(self, settings: Settings, store: ObservationStore, clock: Clock, *,
                 reach_seconds: float, min_local_seconds: float = 2 * 86400.0) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.reach_seconds = reach_seconds
        self.min_local_seconds = min_local_seconds
        self.last_attempt: float | None = None
        self.imports = 0

    def __call__(self, target: TargetId) -> list[tuple[float, int, int | None]]:
        now = self.clock.now()
        local = self.store.history(target, since=now - self.reach_seconds)
        if self.settings.history.prometheus_url is None or _span(local) >= self.min_local_seconds:
            return local
        due = self.last_attempt is None or now - self.last_attempt >= self.settings.history.retry_interval_seconds
        if not due:
            return local
        self.last_attempt = now
        summary = asyncio.run(_attempt(self.settings, self.store, self.clock,
                                       within_seconds=self.settings.history.start_timeout_seconds))
        if summary is None:
            return local
        self.imports += 1
        return self.store.history(target, since=now - self.reach_seconds)


def _span(points: Sequence[tuple[float, int, int | None]]) -> float:
    return points[-1][0] - points[0][0] if len(points) >= 2 else 0.0
