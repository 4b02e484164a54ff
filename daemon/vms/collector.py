"""The VMS poll: `VmsPoller` reads one cluster and produces a `PollResult`.

One `VmsPoller` per cluster (named so because "Collector" is Prometheus's word for a metrics
source; the poll *loop* — ticks, jitter, coalesced wake-ups — is `runtime.poller.Poller`, which
calls `VmsPoller.poll()` once per tick). One poll makes a handful of requests through the
cluster's `VmsTransport`: `GET /clusters/`, `GET /quotas/` page by page (never one request per
quota) and `GET /monitors/ad_hoc_query/` for the cluster's write bandwidth.

`poll()` never raises for VMS trouble: a poll that fails after the transport's retries returns a
`PollResult` with `error` set (`reason: message`), counted per reason; so does a `GET /clusters/`
that answers no cluster (`no_cluster`: every growth needs the pool's capacity). Samples that fail
validation (`validation.py`: malformed or implausible records, a fall or a rise not yet
confirmed by the next sample — the poller keeps each target's last accepted sample, trend,
suspect jump and recent rates for those rules; every record of a VMS id that several records
claim, `contested_ids`) are dropped — never stored, forecast or acted on —,
counted per reason and logged once when a target starts being dropped and once when it is
accepted again. A hard limit that moved without a write of ours keeps its sample, held until the
next one (`validation.limit_held`: never two polls in a row; `sample.unconfirmed`, logged once per
held move); its usage is judged as any other's, and the next sample's against it. A failing bandwidth
query is not fatal (the poll goes on without it) and is logged on transitions only
(`TransitionLog`).

The actuator's and API's calls (get/patch/create quota, views, policies) are `writer`, a
`VmsWriter` on the same transport (same client, pool, retry policy and request count).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.logs import TransitionLog, get_logger
from quotapilot.daemon.runtime.cycle import DroppedSample, PollResult
from quotapilot.daemon.settings import ClusterSettings, PollSettings, VastSettings
from quotapilot.daemon.vms.errors import VmsUnavailable, error_reason
from quotapilot.daemon.vms.transport import ClientFactory, VmsTransport, make_client
from quotapilot.daemon.vms.validation import (
    RATE_WINDOW,
    Accepted,
    BadSample,
    QuotaNaming,
    Trend,
    agrees,
    capacity_sample,
    cluster_record,
    contested_ids,
    jumped,
    limit_held,
    quota_label,
    quota_sample,
    went_backwards,
)
from quotapilot.daemon.vms.writer import VmsWriter
from quotapilot.forecasting.planner import unused_promises
from quotapilot.forecasting.types import POOL_TARGET, ClusterCapacity, Observation

log = get_logger(__name__)

BANDWIDTH_PROPS: tuple[str, ...] = ("ProtoMetrics,proto_name=ProtoCommon,wr_bw",)
"""The analytics metric asked of `/monitors/ad_hoc_query/` for the cluster's write bandwidth
(bytes per second). When the answer names other columns, the first one that looks like a write
bandwidth (`bw` and `wr`/`write` in its name) is used."""


class VmsPoller:
    """Reads one VMS (see the module docstring). `poll()` never raises for VMS trouble."""

    def __init__(self, cluster: ClusterSettings, vast: VastSettings, poll: PollSettings, clock: Clock,
                 executor: Executor, *, rng: random.Random | None = None,
                 client_factory: ClientFactory = make_client,
                 stopping: asyncio.Event | None = None) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self._poll = poll
        self._clock = clock
        self.transport = VmsTransport(cluster, vast, clock, executor, rng=rng, client_factory=client_factory,
                                      stopping=stopping)
        self.writer = VmsWriter(self.transport)
        """The actuator's and the API's VMS calls (the stages' `QuotaWriter`)."""
        self.dropped_total: Counter[str] = Counter()
        """Dropped samples per reason since start (the `quotapilot_samples_dropped_total` counter)."""
        self.poll_errors_total: Counter[str] = Counter()
        """Failed polls per reason since start (the `quotapilot_poll_errors_total` counter)."""
        self._accepted: dict[str, Accepted] = {}
        self._trends: dict[str, Trend] = {}
        self._suspect_jumps: dict[str, Accepted] = {}
        self._recent_rates: dict[str, deque[float]] = {}
        self._recent_inode_rates: dict[str, deque[float]] = {}
        self._drop_state: dict[str, str] = {}
        self._judged: dict[str, Accepted] = {}
        """This poll's accepted samples as the rules judged them (`confirmed`, `limit_held`): the
        next poll's `_accepted`."""
        self._identity: dict[str, tuple[int | None, str]] = {}
        """(VMS id, path) of the quota each name last stood for: a quota deleted and re-created
        under the same name (at another path, or with a new id) is a new target, without history."""
        self._bandwidth_log = TransitionLog(log, "bandwidth")

    @property
    def requests_made(self) -> int:
        """Requests sent to this VMS since start, retries and the writer's included."""
        return self.transport.requests_made

    @property
    def listings_unsettled(self) -> int:
        """The poll's listings taken while the VMS kept changing under them
        (`VmsTransport.list_all`; the writer's lookups take none)."""
        return self.transport.listings_unsettled

    def log_tls_mode(self) -> None:
        """Say how this poller verifies the VMS; a loud warning when it does not."""
        self.transport.log_tls_mode()

    # -------------------------------------------------------------- the poll
    async def poll(self) -> PollResult:
        """One poll: cluster, every quota (paged), write bandwidth. Never raises for VMS errors."""
        t = self._clock.now()
        started = time.perf_counter()  # real elapsed time of the IO (the clock may be virtual)
        requests_before = self.requests_made
        try:
            # sequential on purpose: three requests, and no half-finished sibling to clean up
            clusters = await self.transport.get("clusters")
            if cluster_record(clusters) is None:  # nothing can grow without the pool: a failed poll
                raise VmsUnavailable("GET /clusters/ returned no cluster", reason="no_cluster")
            quotas = await self.transport.list_all("quotas")
            bandwidth = await self._bandwidth()
        except (TemporaryError, PermanentError) as exc:
            self.poll_errors_total[error_reason(exc)] += 1
            return PollResult(cluster=self.name, t=t, requests=self.requests_made - requests_before,
                              duration_seconds=time.perf_counter() - started,
                              error=f"{error_reason(exc)}: {exc}")
        observations: list[Observation] = []
        dropped: list[DroppedSample] = []
        self._judged = {}
        capacity = self._capacity(clusters, t, observations, dropped)
        seen: set[str] = set()
        contested = contested_ids(quotas)
        naming = QuotaNaming.for_listing(quotas, self.cluster.tenant)
        for number, record in enumerate(quotas, start=1):
            self._quota(number, record, t, naming, seen, contested, observations, dropped)
        if capacity is not None:  # each listed quota's unused promise, for the reserve guard
            capacity = replace(capacity, listed_unused_bytes=unused_promises(observations))
        rates = self._rates(observations, dropped)
        for sample in dropped:
            self.dropped_total[sample.reason] += 1
        self._log_drop_transitions(observations, dropped)
        return PollResult(
            cluster=self.name, t=t, observations=tuple(observations), capacity=capacity,
            ingest_bytes_per_second=bandwidth, dropped=tuple(dropped),
            requests=self.requests_made - requests_before,
            duration_seconds=time.perf_counter() - started,
            ingest_rates=rates,
            unconfirmed=frozenset(name for name, sample in self._judged.items() if not sample.believed),
            bare_names=naming.bare_names(quotas))

    async def _bandwidth(self) -> float | None:
        """The cluster's latest write bandwidth (bytes/s); None when VMS cannot say (not fatal)."""
        try:
            body = await self.transport.get("monitors/ad_hoc_query", object_type="cluster",
                                            time_frame=self._poll.bandwidth_time_frame,
                                            prop_list=list(BANDWIDTH_PROPS))
            value = parse_bandwidth(body)
        except (TemporaryError, PermanentError) as exc:
            self._bandwidth_log.failed(self.name, error_reason(exc), cluster=self.name, detail=str(exc)[:200])
            return None
        self._bandwidth_log.ok(self.name, cluster=self.name)
        return value

    # -------------------------------------------------------------- samples
    def _capacity(self, clusters: Any, t: float, observations: list[Observation],
                  dropped: list[DroppedSample]) -> ClusterCapacity | None:
        try:
            capacity, observation = capacity_sample(self.name, clusters, t)
            self._check_history(observation)
        except BadSample as bad:
            dropped.append(DroppedSample(self.name, POOL_TARGET, bad.reason, bad.detail))
            return None
        observations.append(observation)
        return capacity

    def _quota(self, number: int, record: Any, t: float, naming: QuotaNaming, seen: set[str],
               contested: Mapping[int, int], observations: list[Observation],
               dropped: list[DroppedSample]) -> None:
        """The `number`th entry of the listing, named by `naming` (the tenant's quota name, or
        another tenant's qualified); `seen`: the target names taken so far; `contested`: the VMS
        ids several records of the listing claim, and by how many."""
        if not isinstance(record, dict):
            dropped.append(DroppedSample(self.name, f"entry:{number}", "malformed",
                                         f"not a quota record: {type(record).__name__}"))
            return
        try:
            observation = quota_sample(self.name, record, t, seen, naming)
            quota_id = observation.quota_id
            if quota_id is not None and quota_id in contested:
                # which of them the id (the actuator's handle for a PATCH) names cannot be told:
                # the first one kept was grown with the other's limit. Every claimant is dropped
                raise BadSample("malformed", f"quota id {quota_id} is claimed by {contested[quota_id]} "
                                             f"records of the listing")
            self._check_history(observation)
        except BadSample as bad:
            dropped.append(DroppedSample(self.name, quota_label(record, naming), bad.reason, bad.detail))
            return
        seen.add(observation.target.name)
        observations.append(observation)

    def _check_history(self, observation: Observation) -> None:
        """Apply `went_backwards`, then `jumped`, with this target's history (`agrees` to a first
        sample's), then `limit_held`; raises `BadSample` to drop the sample. A sample kept with
        no usage history to judge it against is marked unconfirmed, one whose hard limit moved
        without a write of ours held: both are `PollResult.unconfirmed`."""
        name, used = observation.target.name, observation.used_bytes
        identity = (observation.quota_id, observation.target.path)
        if self._identity.setdefault(name, identity) != identity:
            self._forget(name)
            self._identity[name] = identity
        previous = self._accepted.get(name)
        sample = Accepted(observation.t, used, observation.used_inodes,
                          hard_limit_bytes=observation.hard_limit_bytes,
                          hard_limit_inodes=observation.hard_limit_inodes)
        if previous is not None and previous.confirmed:
            self._judge_usage(name, observation, previous, sample)
        else:
            # nothing to judge the usage against (the first poll, a restart, a quota new or
            # forgotten, another identity): kept, but unconfirmed until the next sample agrees —
            # a glitch here was grown on at once; and the next, true sample must not be dropped
            # as a fall from it
            self._trends.pop(name, None)
            self._suspect_jumps.pop(name, None)
            sample = replace(sample, confirmed=previous is not None and agrees(
                previous, sample, hard_limit_bytes=observation.hard_limit_bytes,
                tolerance_ratio=self._poll.tolerance_ratio, hard_limit_inodes=observation.hard_limit_inodes))
        if previous is not None and limit_held(previous, sample,
                                               written=self.writer.sent_hard_limits(observation.quota_id)):
            # VMS's word alone (an operator, or a glitch of one poll that paged on-call at once):
            # kept but held — its alerts held, no external change audited — for this poll. Logged
            # here, once: a glitch leaves no other trace.
            sample = replace(sample, limit_held=True)
            log.warning("sample.unconfirmed", cluster=self.name, target=name, reason="limit_changed",
                        old_hard=previous.hard_limit_bytes, new_hard=sample.hard_limit_bytes,
                        old_hard_inodes=previous.hard_limit_inodes, new_hard_inodes=sample.hard_limit_inodes)
        self._judged[name] = sample

    def _judge_usage(self, name: str, observation: Observation, previous: Accepted, sample: Accepted) -> None:
        """`went_backwards`, then `jumped`, against `previous` (whose usage has history) and this
        target's trend, suspect jump and recent rates; raises `BadSample` to drop the sample."""
        used = sample.used_bytes
        trend, drop = went_backwards(previous, used, observation.used_inodes,
                                     tolerance_ratio=self._poll.tolerance_ratio,
                                     trend=self._trends.get(name, Trend.STEADY))
        if trend is Trend.STEADY:
            self._trends.pop(name, None)
        else:
            self._trends[name] = trend
        if drop:
            raise BadSample("went_backwards", f"used {previous.used_bytes} -> {used}")
        suspect, drop = jumped(previous, self._suspect_jumps.get(name), sample,
                               hard_limit_bytes=observation.hard_limit_bytes,
                               rates=self._recent_rates.get(name, ()),
                               hard_limit_inodes=observation.hard_limit_inodes,
                               inode_rates=self._recent_inode_rates.get(name, ()),
                               tolerance_ratio=self._poll.tolerance_ratio)
        if suspect is None:
            self._suspect_jumps.pop(name, None)
        else:
            self._suspect_jumps[name] = suspect
        if drop:
            raise BadSample("unconfirmed_jump",
                            f"used {previous.used_bytes} -> {used} bytes, {previous.used_inodes} -> "
                            f"{observation.used_inodes} inodes in {observation.t - previous.t:g}s: "
                            f"beyond the plausible rise")

    def _forget(self, name: str) -> None:
        """Drop everything remembered of the quota named `name` (another quota took the name)."""
        for memory in (self._accepted, self._trends, self._suspect_jumps, self._recent_rates,
                       self._recent_inode_rates, self._drop_state, self._identity):
            memory.pop(name, None)

    def _rates(self, observations: list[Observation], dropped: list[DroppedSample]) -> dict[str, float]:
        """Net ingest (bytes/s) of each target since its previous accepted sample. Forgets the
        targets VMS no longer lists."""
        rates: dict[str, float] = {}
        accepted: dict[str, Accepted] = {}
        for obs in observations:
            name = obs.target.name
            previous = self._accepted.get(name)
            judged = self._judged[name]
            # no rate between two samples whose usage disagrees (either may be a glitch): as one
            # of the recent rates it made every later rise plausible. A held limit is no matter
            if previous is not None and (previous.confirmed or judged.confirmed) and obs.t > previous.t:
                rates[name] = (obs.used_bytes - previous.used_bytes) / (obs.t - previous.t)
                self._recent_rates.setdefault(name, deque(maxlen=RATE_WINDOW)).append(rates[name])
                if obs.used_inodes is not None and previous.used_inodes is not None:
                    inode_rate = (obs.used_inodes - previous.used_inodes) / (obs.t - previous.t)
                    self._recent_inode_rates.setdefault(name, deque(maxlen=RATE_WINDOW)).append(inode_rate)
            accepted[name] = judged
        refused = {sample.target for sample in dropped}
        for name in refused:
            if name in self._accepted and name not in accepted:
                accepted[name] = self._accepted[name]
        self._accepted = accepted
        self._recent_rates = {n: r for n, r in self._recent_rates.items() if n in accepted}
        self._recent_inode_rates = {n: r for n, r in self._recent_inode_rates.items() if n in accepted}
        # a suspect jump is remembered while its target is refused (its next sample settles it)
        self._suspect_jumps = {n: s for n, s in self._suspect_jumps.items() if n in refused}
        # a suspect fall is remembered while the target is listed; a confirmed decline only while
        # its samples are accepted
        self._trends = {n: trend for n, trend in self._trends.items()
                        if n in accepted or (trend is Trend.SUSPECT and n in refused)}
        self._drop_state = {n: reason for n, reason in self._drop_state.items() if n in accepted or n in refused}
        self._identity = {n: key for n, key in self._identity.items() if n in accepted or n in refused}
        return rates

    def _log_drop_transitions(self, observations: list[Observation], dropped: list[DroppedSample]) -> None:
        """One log line when a target starts being dropped (or for another reason), one when it
        is accepted again — never one per poll. (Not a `TransitionLog`: its events are
        `sample.dropped` / `sample.accepted`, and a `went_backwards` drop logs at info.)"""
        for sample in dropped:
            if self._drop_state.get(sample.target) != sample.reason:
                self._drop_state[sample.target] = sample.reason
                # a usage drop is usually a real delete (confirmed or not by the next poll): info
                emit = log.info if sample.reason == "went_backwards" else log.warning
                emit("sample.dropped", cluster=self.name, target=sample.target, reason=sample.reason,
                     detail=sample.detail)
        if self._drop_state:
            for obs in observations:
                if self._drop_state.pop(obs.target.name, None) is not None:
                    log.info("sample.accepted", cluster=self.name, target=obs.target.name)


def parse_bandwidth(body: Any) -> float | None:
    """Latest write bandwidth from a `MonitorData` answer: `data` rows are
    `[timestamp, object_id, *values]` in the order of `prop_list`."""
    if not isinstance(body, dict):
        raise VmsUnavailable("ad_hoc_query: not an object", reason="malformed")
    props, rows = body.get("prop_list"), body.get("data")
    if not isinstance(props, list) or not isinstance(rows, list):
        raise VmsUnavailable("ad_hoc_query: prop_list/data missing", reason="malformed")
    names = [str(p) for p in props]
    column = next((i for i, n in enumerate(names) if n in BANDWIDTH_PROPS), None)
    if column is None:
        column = next((i for i, n in enumerate(names)
                       if "bw" in n.lower() and ("wr" in n.lower() or "write" in n.lower())), None)
    if column is None:
        return None
    latest: tuple[str, float] | None = None
    for row in rows:
        if not isinstance(row, list) or not row:
            continue
        # prop_list may or may not name the leading timestamp and object id columns
        index = column if len(row) == len(names) else column + 2
        if index >= len(row):
            continue
        value = row[index]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value < 0:
            continue
        stamp = str(row[0])
        if latest is None or stamp >= latest[0]:
            latest = (stamp, float(value))
    return None if latest is None else latest[1]
