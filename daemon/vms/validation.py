"""Sample validation: what a VMS answer must look like before it becomes an `Observation`.

Pure functions of records (no IO, no clock, no logging): a sample that is malformed or
implausible raises `BadSample` with one of `DROP_REASONS`, and the poller drops it (never stored,
never acted on), counts it and logs the transition. The rules that need history take it as
arguments (and the two that drop return what the poller should remember next), so the state lives
with the poller and the rules stay functions:

- `went_backwards`: a fall beyond `tolerance_ratio` is dropped until the next sample confirms it;
- `jumped`: a rise (of bytes or inodes) beyond what the target's own rates make plausible
  (`plausible_rise`) is dropped as `unconfirmed_jump` until the next sample agrees with it. One
  glitch reading 99 % of a quota that is really at 70 % would otherwise be grown at once, and
  would inflate every rate after it;
- `limit_held`: a hard limit that moved without a write of ours (`limit_changed`) leaves its
  sample kept but held (`Accepted.limit_held`) — unless the sample before it was held itself, so
  no two polls in a row are held for a limit: a one-poll glitch is held and the return from it
  believed, a lasting change is believed on the poll that repeats it, a limit that moves at every
  poll (a script, an expansion phasing in) every other poll. A limit-only change leaves the usage
  rules as they were: they judge the next sample against this one as against any other.
  `last_believed_limits` replays the rule over a quota's stored samples: after a restart, the
  limits last believed (not the last read: a change held once before the restart is still a
  change) are what the next ones are judged against.

A target's first sample (nothing to judge its usage against) is kept but unconfirmed
(`Accepted.confirmed`) until the next one agrees with its usage (`agrees`).

Targets are named per listing by `QuotaNaming`: a quota of the tenant the daemon works in (the
configured one, else VAST's default tenant) by its VMS name, another tenant's as
`<tenant name>:<name>` (`tenant<id>:<name>` when VMS gives no usable tenant name), so one name in
two tenants is two targets and neither name moves when a third tenant takes or frees it.

A quota whose `used` is far above its hard limit (`USED_OVER_HARD_IMPLAUSIBLE` times) is
`implausible`: VMS lets usage pass the hard limit only by what was in flight when it was reached
(and a soft limit's grace never lets it pass the hard one), so 14 TB used under a 1 TB hard limit
is a wrong record, and planning from it would send a "growth" below usage.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from quotapilot.forecasting.types import POOL_TARGET, ClusterCapacity, Observation, TargetId, TargetKind

DROP_REASONS: tuple[str, ...] = ("malformed", "negative", "zero_limit", "implausible", "went_backwards",
                                 "unconfirmed_jump")
"""Every `reason` a sample can be dropped for (`BadSample`); the metric starts each at 0.
`zero_limit` is the pool's usable capacity of 0 only: a quota's limit of 0 is "no limit" (`quota_sample`)."""

USED_OVER_HARD_IMPLAUSIBLE = 1.5
"""`used > 1.5 × hard_limit` is a wrong record, not an over-run. A quota may legitimately report a
little over its hard limit (writes in flight when it was reached, a limit just lowered below
usage by an operator); half as much again is far beyond that (issue 13 saw 14 TB under 1 TB)."""

JUMP_SAFETY_FACTOR = 4.0
"""A rise is plausible up to this many times the target's robust recent rate × the elapsed time."""

JUMP_FLOOR_RATIO = 0.02
"""...and always up to 2 % of its hard limit per sample, so the ordinary noise of a quiet quota is
never held back (a quiet quota that starts a real ingest waits one poll at most: the next sample
agrees). A counter without a limit (VMS's "no limit") has no other scale than its usage: 2 % of the
previous sample's. With the floors alone (`agrees`, which judges a target's first samples), a quota
without a byte limit that wrote more than 1 GiB a poll never had a sample confirmed."""

JUMP_FLOOR_BYTES = 2**30
"""...and always up to 1 GiB (for a tiny quota, or a nearly empty one without a limit)."""

JUMP_FLOOR_INODES = 10_000
"""...and, for the inode counter, always up to 10,000 files."""

RATE_WINDOW = 24
"""How many of a target's latest accepted rates (one per poll) `plausible_rise` looks at."""


class BadSample(Exception):
    """A sample that must not be believed. `reason` is one of `DROP_REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the rules remember of a target's last accepted sample."""

    t: float
    used_bytes: int
    used_inodes: int | None
    confirmed: bool = True
    """Whether its usage has history: a sample before it judged it (`went_backwards`, `jumped`) or
    agreed with it (`agrees`). A target's first sample — nothing to judge it against — is kept but
    unconfirmed, and the next sample is held to the first-sample rule (`agrees`) rather than to
    the rules with history."""
    hard_limit_bytes: int | None = None
    hard_limit_inodes: int | None = None
    """The hard limits the sample reported (the pool's: its usable capacity), for `limit_held`."""
    limit_held: bool = False
    """Whether its hard limit moved without a write of ours and waits for the next sample
    (`limit_held`). Says nothing of its usage: the next sample's usage is judged against it."""

    @property
    def believed(self) -> bool:
        """Usage confirmed and limit not held: something may be written, fired or resolved on it."""
        return self.confirmed and not self.limit_held


HardLimits = tuple[int | None, int | None]
"""A quota's hard limits (bytes, inodes); None where there is none (or none is known)."""


class Trend(enum.Enum):
    """Where a target's usage stands for the `went_backwards` rule."""

    STEADY = "steady"
    SUSPECT = "suspect"
    """The last sample fell and was dropped; the next one settles it."""
    DECLINING = "declining"
    """A fall was confirmed; further falls are believed."""


INT64_MAX = 2**63 - 1
"""VMS's integer fields are `format: int64` (the OpenAPI schema); a larger value is garbage, and
the store's 64-bit integers could not hold it (the store stage failed on 1e19 bytes)."""


def _int_field(record: Mapping[str, Any], key: str, *, required: bool) -> int | None:
    """An integer field of a VMS record; raises `BadSample` when malformed."""
    value = record.get(key)
    if value is None:
        if required:
            raise BadSample("malformed", f"{key} missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadSample("malformed", f"{key}={value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadSample("malformed", f"{key}={value!r} is not finite")
    if value < 0:
        raise BadSample("negative", f"{key}={value}")
    if value > INT64_MAX:
        raise BadSample("malformed", f"{key}={value!r} is beyond the schema's int64")
    return int(value)


def contested_ids(quotas: Iterable[object]) -> dict[int, int]:
    """The VMS ids that more than one record of a listing claims, with the number of claimants.
    An identical repeat (same id, name and path: a page shift) is no claimant of its own: the
    transport removed it (`VmsTransport.list_all`). Ids are read as `quota_sample` reads them."""
    claims: Counter[int] = Counter()
    for record in quotas:
        try:
            quota_id = _int_field(record, "id", required=False) if isinstance(record, dict) else None
        except BadSample:  # no readable id: nothing to contest; its own drop
            continue
        if quota_id is not None:
            claims[quota_id] += 1
    return {quota_id: claimants for quota_id, claimants in claims.items() if claimants > 1}


def cluster_record(clusters: Any) -> dict[str, Any] | None:
    """The cluster's record in a `GET /clusters/` answer (a list, an object or a page envelope);
    None when the answer holds no cluster (the poller fails the poll: `no_cluster`)."""
    record = clusters[0] if isinstance(clusters, list) and clusters else clusters
    if isinstance(clusters, dict) and isinstance(clusters.get("results"), list):
        record = clusters["results"][0] if clusters["results"] else None
    return record if isinstance(record, dict) and record else None


def capacity_sample(cluster: str, clusters: Any, t: float) -> tuple[ClusterCapacity, Observation]:
    """The cluster pool from a `GET /clusters/` answer (a list, an object or a page envelope)."""
    record = cluster_record(clusters)
    if record is None:
        raise BadSample("malformed", "GET /clusters/ returned no cluster")
    usable = _int_field(record, "usable_capacity_bytes", required=True)
    free = _int_field(record, "free_usable_capacity", required=True)
    allocated = _int_field(record, "quotas_allocated_capacity", required=False)
    quotas_used = _int_field(record, "quotas_used_capacity", required=False)
    assert usable is not None and free is not None
    if usable == 0:
        raise BadSample("zero_limit", "usable_capacity_bytes=0")
    if free > usable:
        raise BadSample("implausible", f"free_usable_capacity={free} > usable_capacity_bytes={usable}")
    state = record.get("state")
    capacity = ClusterCapacity(cluster=cluster, t=t, usable_bytes=usable, used_bytes=usable - free,
                               free_bytes=free, quotas_allocated_bytes=allocated,
                               state=state if isinstance(state, str) else "UNKNOWN", drr=_drr(record.get("drr")),
                               quotas_used_bytes=quotas_used)
    observation = Observation(target=TargetId(cluster, POOL_TARGET, "/", TargetKind.POOL), t=t,
                              used_bytes=capacity.used_bytes, hard_limit_bytes=usable, state=capacity.state)
    return capacity, observation


DEFAULT_TENANT_ID = 1
DEFAULT_TENANT_NAME = "default"
"""VAST's default tenant: the home of a daemon configured with no tenant."""

TENANT_SEPARATOR = ":"
"""Between the tenant and the quota name of another tenant's target (`acme:scratch`). Not "/":
alert ids are `cluster/target/kind`, MQTT topics `prefix/cluster/target/...`, and the API reads a
target ref holding "/" as a path."""
TENANT_ID_PREFIX = "tenant"
"""Another tenant whose name cannot prefix a target name (it holds ":" or "/") is named by its VMS
id: `tenant7:scratch`."""


def named_by_tenant_id(target_name: str, name: str) -> bool:
    """Whether `target_name` is the quota `name` of a tenant named by its id (`TENANT_ID_PREFIX`),
    as `QuotaNaming.qualifier` names it."""
    prefix, separator, rest = target_name.partition(TENANT_SEPARATOR)
    tenant_id = prefix.removeprefix(TENANT_ID_PREFIX)
    return bool(separator) and rest == name and tenant_id != prefix and tenant_id.isascii() and tenant_id.isdigit()


@dataclass(frozen=True, slots=True)
class QuotaNaming:
    """How the quotas of one `GET /quotas/` listing are named as targets.

    Home is the tenant the daemon works in: `tenant` (the configured one, sent as X-Tenant-Name:
    VMS then lists that tenant's quotas only), else the default tenant (id 1). A home quota's
    target name is its VMS name — what a single-tenant deployment always saw, in metrics, alert
    ids, the API, per-target config and the audit. Another tenant's is qualified:
    `<tenant_name>:<name>`, or `tenant<tenant_id>:<name>` when VMS gives no tenant name (or one
    holding ":" or "/"). A tenant's names depend on that tenant alone, so they hold when another
    tenant creates or deletes a quota of the same name."""

    tenant: str | None = None
    """The configured tenant; None: the default tenant is home."""
    home_names: frozenset[str] = frozenset()
    """The names the home tenant's quotas have in this listing: a qualified name that is one of
    them (a home quota named `acme:scratch`) is refused, so the home quota keeps its name
    whatever the listing order."""

    @classmethod
    def for_listing(cls, records: Iterable[object], tenant: str | None) -> QuotaNaming:
        plain = cls(tenant)
        return cls(tenant, frozenset(
            name for record in records if isinstance(record, Mapping)
            and isinstance(name := record.get("name"), str) and name and plain.qualifier(record) is None))

    def qualifier(self, record: Mapping[str, Any]) -> str | None:
        """What another tenant's quota name is prefixed with; None for a home quota."""
        tenant_id = record.get("tenant_id")
        if isinstance(tenant_id, bool) or not isinstance(tenant_id, int):
            tenant_id = None
        tenant_name = record.get("tenant_name")
        if not isinstance(tenant_name, str) or not tenant_name:
            tenant_name = None
        if self.tenant is not None:
            # the listing is the configured tenant's: a record says otherwise by its name only
            home = tenant_name is None or tenant_name == self.tenant
        elif tenant_id is not None:
            home = tenant_id == DEFAULT_TENANT_ID
        else:
            home = tenant_name is None or tenant_name == DEFAULT_TENANT_NAME
        if home:
            return None
        if tenant_name is not None and not _unsafe_in_name(tenant_name):
            return tenant_name
        if tenant_id is not None:
            return f"{TENANT_ID_PREFIX}{tenant_id}"
        assert tenant_name is not None  # not home: the record named its tenant one way or the other
        return tenant_name.replace(TENANT_SEPARATOR, "_").replace("/", "_")

    def target_name(self, record: Mapping[str, Any]) -> str:
        """The record's target name; raises `BadSample` when it has no name, or when its
        qualified name is a home quota's name."""
        name = record.get("name")
        if not isinstance(name, str) or not name:
            raise BadSample("malformed", "name missing")
        qualified = self.qualified(name, record)
        if not _is_text(qualified):
            raise BadSample("malformed", f"name {qualified!a} is not valid Unicode")
        if qualified != name and qualified in self.home_names:
            home = "the default tenant" if self.tenant is None else f"tenant {self.tenant!r}"
            raise BadSample("malformed", f"quota name {qualified!r} of {home} is this quota's target name")
        return qualified

    def qualified(self, name: str, record: Mapping[str, Any]) -> str:
        """`name` as the target name of `record`'s quota (unchecked)."""
        qualifier = self.qualifier(record)
        return name if qualifier is None else f"{qualifier}{TENANT_SEPARATOR}{name}"

    def bare_names(self, records: Iterable[object]) -> dict[str, tuple[str, ...]]:
        """Each name another tenant's quota has in this listing → the target names of the quotas
        so named: the name itself first when a home quota has it, then every other tenant's
        `<tenant>:<name>` (sorted; a record refused by `target_name` has none). What the bare name
        meant before other tenants' quotas were qualified (0198d09): a pause or a policy override
        made then names such a quota by it. Empty when every quota is a home quota."""
        qualified: dict[str, set[str]] = {}
        for record in records:
            if not isinstance(record, Mapping) or self.qualifier(record) is None:
                continue
            try:
                target = self.target_name(record)
            except BadSample:
                continue
            qualified.setdefault(record["name"], set()).add(target)
        return {name: ((name,) if name in self.home_names else ()) + tuple(sorted(targets))
                for name, targets in qualified.items()}


SINGLE_TENANT = QuotaNaming()
"""The naming of a daemon configured with no tenant, before it saw a listing."""


def _is_text(text: str) -> bool:
    """Whether `text` is text UTF-8 can carry: JSON may escape a lone surrogate ("\\udcff"), which
    decodes to a str that no label, store row or MQTT topic can hold (one such quota name took down
    the whole /metrics answer)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _unsafe_in_name(text: str) -> bool:
    return TENANT_SEPARATOR in text or "/" in text


def quota_label(record: Mapping[str, Any], naming: QuotaNaming = SINGLE_TENANT) -> str:
    """How a quota record is named in a drop: its target name; its VMS id (`id:<n>`) when it has
    no name, or when its qualified name is a home quota's (refused by `QuotaNaming.target_name`).
    Everything reading `PollResult.dropped` by target name (the planner's `dropped` guard, the
    pre-flight's staleness, the drop log) would take the home quota for dropped."""
    try:
        return naming.target_name(record)
    except BadSample:
        return f"id:{record.get('id')}"


def quota_sample(cluster: str, record: Mapping[str, Any], t: float, seen: set[str],
                 naming: QuotaNaming = SINGLE_TENANT) -> Observation:
    """A directory quota from one `GET /quotas/` record; `seen` holds the target names already
    taken this poll (a repeated tenant and name is malformed); `naming` names it (`QuotaNaming`).

    A limit of 0 (or none: the schema requires only `name` and `path`) is VMS's "no limit", the
    simulator's and the history importer's reading too: its field is None. A quota without a byte
    limit (one that limits only the file count, or one kept for accounting) is watched like any
    other — its usage stored, forecast and exported — and has no bytes series to grow or alert on
    (`TargetInput.series`, `SeriesInput.utilization_ratio`: no limit, no ratio). Dropped as
    `zero_limit` at every poll, it was never watched, and the drop counter read as VMS sending
    garbage. Only the pool's usable capacity of 0 is one (`capacity_sample`)."""
    name = naming.target_name(record)
    path = record.get("path")
    if not isinstance(path, str) or not path.startswith("/") or not _is_text(path):
        raise BadSample("malformed", f"path={path!a}")
    if name in seen or name == POOL_TARGET:
        raise BadSample("malformed", f"duplicate quota name {name!r}")
    used = _int_field(record, "used_capacity", required=True)
    hard = _int_field(record, "hard_limit", required=False) or None  # 0, null or absent: no byte limit
    soft = _int_field(record, "soft_limit", required=False)
    used_inodes = _int_field(record, "used_inodes", required=False)
    hard_inodes = _int_field(record, "hard_limit_inodes", required=False)
    soft_inodes = _int_field(record, "soft_limit_inodes", required=False)
    quota_id = _int_field(record, "id", required=False)
    assert used is not None
    if hard is not None and used > hard * USED_OVER_HARD_IMPLAUSIBLE:
        raise BadSample("implausible", f"used_capacity={used} > {USED_OVER_HARD_IMPLAUSIBLE:g} x hard_limit={hard}")
    if soft is not None and hard is not None and soft > hard:
        raise BadSample("implausible", f"soft_limit={soft} > hard_limit={hard}")
    if soft_inodes and hard_inodes and soft_inodes > hard_inodes:  # 0: no limit, nothing to compare
        raise BadSample("implausible", f"soft_limit_inodes={soft_inodes} > hard_limit_inodes={hard_inodes}")
    state = record.get("state")
    if state is not None and not isinstance(state, str):
        raise BadSample("malformed", f"state={state!r}")
    grace = record.get("grace_period")
    return Observation(
        target=TargetId(cluster, name, path), t=t, used_bytes=used, hard_limit_bytes=hard,
        soft_limit_bytes=soft or None, used_inodes=used_inodes,
        hard_limit_inodes=hard_inodes or None, soft_limit_inodes=soft_inodes or None,
        state=state or "OK", quota_id=quota_id,
        grace_period=grace if isinstance(grace, str) else None)


def went_backwards(previous: Accepted | None, used_bytes: int, used_inodes: int | None, *,
                   tolerance_ratio: float, trend: Trend) -> tuple[Trend, bool]:
    """(the target's next trend, whether this sample is dropped as `went_backwards`).

    A counter that falls by more than `tolerance_ratio` is suspect and its sample dropped; the
    next sample is accepted whatever it says: still down confirms a real delete (temp swept),
    back up shows the dropped one was a glitch; while a confirmed decline goes on, each further
    fall is believed. One bad reading never becomes truth."""
    if previous is None:
        return trend, False
    fell = used_bytes < previous.used_bytes * (1 - tolerance_ratio)
    if not fell and used_inodes is not None and previous.used_inodes is not None:
        fell = used_inodes < previous.used_inodes * (1 - tolerance_ratio)
    if not fell:
        return Trend.STEADY, False
    if trend is not Trend.STEADY:
        return Trend.DECLINING, False  # a confirmed decline: further falls are believed
    return Trend.SUSPECT, True


def robust_rate(rates: Sequence[float]) -> float:
    """The highest of `rates` (bytes/s) once the single highest is set aside (with fewer than three,
    the highest): a high rate the target has shown more than once, not one outlier. Never negative."""
    rising = sorted((r for r in rates if r > 0), reverse=True)
    if not rising:
        return 0.0
    return rising[1] if len(rising) >= 3 else rising[0]


def plausible_rise(rate_per_second: float, elapsed_seconds: float, hard_limit: int | None, *,
                   floor: int = JUMP_FLOOR_BYTES) -> float:
    """How much usage may rise in `elapsed_seconds` without confirmation (bytes, or inodes with
    `floor=JUMP_FLOOR_INODES`): `max(JUMP_SAFETY_FACTOR × rate × elapsed, JUMP_FLOOR_RATIO ×
    hard_limit, floor)`, `rate` being the target's `robust_rate` over its recent accepted rates.
    (`jumped` passes a counter without a limit its previous usage as `hard_limit`.)"""
    by_rate = JUMP_SAFETY_FACTOR * max(0.0, rate_per_second) * max(0.0, elapsed_seconds)
    return max(by_rate, JUMP_FLOOR_RATIO * (hard_limit or 0), float(floor))


def _rise(previous: tuple[float, int], suspect: tuple[float, int] | None, sample: tuple[float, int], *,
          hard_limit: int | None, rates: Sequence[float], tolerance_ratio: float, floor: int) -> bool:
    """One counter's side of `jumped`: True when `sample` (t, value) is a suspect jump."""
    rate = robust_rate(rates)
    if sample[1] - previous[1] <= plausible_rise(rate, sample[0] - previous[0], hard_limit, floor=floor):
        return False
    if suspect is not None and sample[0] > suspect[0] > previous[0]:
        implied = (suspect[1] - previous[1]) / (suspect[0] - previous[0])
        if sample[1] >= suspect[1] * (1 - tolerance_ratio) and sample[1] - suspect[1] <= plausible_rise(
                max(rate, implied), sample[0] - suspect[0], hard_limit, floor=floor):
            return False  # the second sample agrees: a real jump (a bulk copy, an ingest start)
    return True


def jumped(previous: Accepted | None, suspect: Accepted | None, sample: Accepted, *,
           hard_limit_bytes: int | None, rates: Sequence[float], tolerance_ratio: float,
           hard_limit_inodes: int | None = None, inode_rates: Sequence[float] = ()) -> tuple[Accepted | None, bool]:
    """(the target's next suspect jump, whether `sample` is dropped as `unconfirmed_jump`).

    A sample whose bytes (or inodes) rose from the previous accepted one by more than
    `plausible_rise` (at the `robust_rate` of `rates` / `inode_rates`, the target's recent accepted
    rates) is suspect: it is dropped and remembered. The next sample settles it: back near the old
    level (plausible from `previous`) → the suspect was a glitch, forgotten; near the suspect (not
    below it by more than `tolerance_ratio`, and not above it by more than is plausible at the
    rate the jump itself implied) → the jump is confirmed and this sample accepted; anything else
    is a new suspect. Without history (`previous` None) nothing can be judged: accepted."""
    if previous is None:
        return None, False
    suspect_bytes = None if suspect is None else (suspect.t, suspect.used_bytes)
    # no limit (None): the usage is the scale of the floor ratio (JUMP_FLOOR_RATIO)
    jump = _rise((previous.t, previous.used_bytes), suspect_bytes, (sample.t, sample.used_bytes),
                 hard_limit=hard_limit_bytes or previous.used_bytes, rates=rates, tolerance_ratio=tolerance_ratio,
                 floor=JUMP_FLOOR_BYTES)
    if not jump and sample.used_inodes is not None and previous.used_inodes is not None:
        suspect_inodes = None if suspect is None or suspect.used_inodes is None \
            else (suspect.t, suspect.used_inodes)
        jump = _rise((previous.t, previous.used_inodes), suspect_inodes, (sample.t, sample.used_inodes),
                     hard_limit=hard_limit_inodes or previous.used_inodes, rates=inode_rates,
                     tolerance_ratio=tolerance_ratio, floor=JUMP_FLOOR_INODES)
    return (sample, True) if jump else (None, False)


def limit_changed(previous: Accepted, sample: Accepted, *, written: HardLimits = (None, None)) -> bool:
    """Whether a hard limit of `sample` (bytes or inodes) differs from `previous`'s, and is not
    the one a write of ours sent (`written`: our last write's hard limits for this quota). Such a
    limit is VMS's word alone — an operator's change, or a glitch (1 GiB for a 100 TB quota, one
    poll long, paged on-call at once). A limit we wrote is our growth landing: believed at once,
    so the read that shows it resolves its alerts."""
    pairs = ((previous.hard_limit_bytes, sample.hard_limit_bytes, written[0]),
             (previous.hard_limit_inodes, sample.hard_limit_inodes, written[1]))
    return any(limit != before and (ours is None or limit != ours) for before, limit, ours in pairs)


def limit_held(previous: Accepted, sample: Accepted, *, written: HardLimits = (None, None)) -> bool:
    """Whether `sample` waits for the next poll because of its hard limit: it moved
    (`limit_changed`) and `previous` was not held itself. At most one poll in a row is held, so
    a limit is never held for good: a glitch G between true limits L is held and the return to L
    believed; a lasting change is held once and believed on the poll that repeats it; a limit
    moving at every poll is believed every other poll (each believed move judged as an external
    change)."""
    return not previous.limit_held and limit_changed(previous, sample, written=written)


def last_believed_limits(history: Iterable[HardLimits],
                         ours: Callable[[HardLimits], HardLimits]) -> HardLimits | None:
    """The hard limits of the last of a quota's samples `limit_held` believed, replaying it over
    `history` (the samples' hard limits, oldest first; the first taken as believed); None for no
    history. `ours(limits)`: those of `limits` a write of ours sent (None where not), asked only
    of limits that moved. What a restart recovers the baseline of external changes from: the last
    limit *read* may be one held once (a glitch, or an operator's change not yet believed)."""
    previous: Accepted | None = None
    believed: HardLimits | None = None
    for limits in history:
        sample = Accepted(0.0, 0, None, hard_limit_bytes=limits[0], hard_limit_inodes=limits[1])
        if previous is not None and (previous.hard_limit_bytes, previous.hard_limit_inodes) != limits \
                and limit_held(previous, sample, written=ours(limits)):
            sample = replace(sample, limit_held=True)
        else:
            believed = limits
        previous = sample
    return believed


def agrees(previous: Accepted, sample: Accepted, *, hard_limit_bytes: int | None, tolerance_ratio: float,
           hard_limit_inodes: int | None = None) -> bool:
    """Whether `sample`'s usage confirms `previous`'s, a target's first: no fall beyond
    `tolerance_ratio`, no rise beyond the plausible (`jumped`'s rules, without recent rates: the
    floors alone). Limits are not compared (`limit_held` judges them, whatever the usage): held
    to agree on them too, a first sample followed by a moving limit was never confirmed."""
    _, fell = went_backwards(previous, sample.used_bytes, sample.used_inodes, tolerance_ratio=tolerance_ratio,
                             trend=Trend.STEADY)
    _, rose = jumped(previous, None, sample, hard_limit_bytes=hard_limit_bytes, rates=(),
                     tolerance_ratio=tolerance_ratio, hard_limit_inodes=hard_limit_inodes)
    return not (fell or rose)


def _drr(value: object) -> float | None:
    """VMS's data reduction ratio, when it is a plausible one (>= 1 is not required: a pool of
    incompressible data with metadata overhead may report slightly below 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    ratio = float(value)
    return ratio if math.isfinite(ratio) and ratio > 0 else None
