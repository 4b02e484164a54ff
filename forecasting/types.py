"""Plain data shared by every layer: what a target is, what was observed, what was forecast.

Frozen dataclasses only; no behaviour that does IO. `forecasting` and `alerts.rules` take these
as input, `daemon` produces them from VMS and consumes the results.
"""

from __future__ import annotations

import enum
import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

POOL_TARGET = "pool"
"""Target name of the cluster capacity pool (its path label is "/")."""


class TargetKind(enum.StrEnum):
    QUOTA = "quota"
    POOL = "pool"
    FILESYSTEM = "filesystem"


class Dimension(enum.StrEnum):
    """What a series measures: bytes of capacity or inodes (file counts)."""

    BYTES = "bytes"
    INODES = "inodes"


@dataclass(frozen=True, slots=True)
class TargetId:
    """Identity of a watched target: a directory quota, or a cluster's capacity pool.

    `name` is the VMS quota name (or `POOL_TARGET`) — another tenant's than the one the daemon
    works in as `<tenant>:<name>` (`daemon.vms.validation.QuotaNaming`); it is the `target` label
    in metrics and the middle part of alert ids `cluster/target/kind`. `path` is the quota path ("/" for the pool).
    """

    cluster: str
    name: str
    path: str
    kind: TargetKind = TargetKind.QUOTA
    tier: str | None = None
    """A filesystem's storage tier ("hot", "warm", "cold"); None for quotas and pools."""

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.name}"


@dataclass(frozen=True, slots=True)
class Observation:
    """One validated sample of a target, as the collector read it from VMS.

    For the pool: `used_bytes` is the logical space in use and `hard_limit_bytes` the usable
    capacity; inode fields are None. `t` is epoch seconds on the daemon's clock.
    """

    target: TargetId
    t: float
    used_bytes: int
    hard_limit_bytes: int | None
    soft_limit_bytes: int | None = None
    used_inodes: int | None = None
    hard_limit_inodes: int | None = None
    soft_limit_inodes: int | None = None
    state: str = "OK"
    quota_id: int | None = None
    grace_period: str | None = None

    @property
    def utilization_ratio(self) -> float | None:
        if not self.hard_limit_bytes:
            return None
        return self.used_bytes / self.hard_limit_bytes

    @property
    def inode_utilization_ratio(self) -> float | None:
        if not self.hard_limit_inodes or self.used_inodes is None:
            return None
        return self.used_inodes / self.hard_limit_inodes


@dataclass(frozen=True, slots=True)
class ClusterCapacity:
    """The pool every quota draws from, as read from `GET /clusters/`."""

    cluster: str
    t: float
    usable_bytes: int
    used_bytes: int
    free_bytes: int
    quotas_allocated_bytes: int | None = None
    """What the quotas' hard limits add up to (VMS's `quotas_allocated_capacity`)."""
    state: str = "ONLINE"
    drr: float | None = None
    """Data reduction ratio (logical / physical) as VMS reports it (`drr`); None when absent."""
    quotas_used_bytes: int | None = None
    """What the quotas hold (VMS's `quotas_used_capacity`): with the allocation, their unused promises."""
    listed_unused_bytes: int | None = None
    """The unused promises of the quotas the poll listed, each its own: Σ max(0, hard − used)
    (VMS's two totals net a quota over its limit against another's unused limit)."""


QUANTILES: tuple[str, ...] = ("p10", "p50", "p90")
"""Quantile labels used everywhere (metrics, API, CLI JSON). p90 is the pessimistic path."""


class StepTimes(Sequence[float]):
    """`t0 + step_seconds * k` for k = 1 … n, none past `end` (a horizon that is not a whole number
    of steps: the last point is the horizon), computed on access (a forecast's grid in 40 bytes
    instead of n floats). Values equal numpy's `t0 + step * np.arange(1, n + 1)` bit for bit."""

    __slots__ = ("end", "n", "step_seconds", "t0")

    def __init__(self, t0: float, step_seconds: float, n: int, end: float = math.inf) -> None:
        self.t0, self.step_seconds, self.n, self.end = float(t0), float(step_seconds), n, float(end)

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[float, ...]: ...
    def __getitem__(self, index: int | slice) -> float | tuple[float, ...]:
        if isinstance(index, slice):
            return tuple(min(self.t0 + self.step_seconds * float(k + 1), self.end)
                         for k in range(*index.indices(self.n)))
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError("StepTimes index out of range")
        return min(self.t0 + self.step_seconds * float(index + 1), self.end)

    def __iter__(self) -> Iterator[float]:
        t0, step, end = self.t0, self.step_seconds, self.end
        return (min(t0 + step * float(k), end) for k in range(1, self.n + 1))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepTimes):
            return (self.t0, self.step_seconds, self.n, self.end) == (other.t0, other.step_seconds, other.n, other.end)
        if isinstance(other, Sequence):
            return len(other) == self.n and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to sequences, which do not all hash

    def __repr__(self) -> str:
        end = "" if self.end == math.inf else f", end={self.end!r}"
        return f"StepTimes(t0={self.t0!r}, step_seconds={self.step_seconds!r}, n={self.n}{end})"

    def __reduce__(self) -> tuple[type[StepTimes], tuple[float, float, int]]:
        return StepTimes, (self.t0, self.step_seconds, self.n)


def float_array(values: Iterable[float]) -> Sequence[float]:
    """A compact read-as-sequence of floats (8 bytes a value, Python floats on access) for
    `Forecast` paths; a tuple of floats costs 32 bytes a value."""
    return array("d", values)


@dataclass(frozen=True, slots=True)
class Forecast:
    """Cumulative usage forecast of one series: one point per model step after `t0`.

    `p10 <= p50 <= p90` at every step. `model` names what produced it; `fallback` says why a
    simpler model was used (None when the preferred one was). The paths are read-only sequences
    of floats: the forecaster stores them compactly (`StepTimes`, `float_array`), tests and
    callers may pass tuples; nothing mutates them.
    """

    t0: float
    step_seconds: float
    times: Sequence[float]
    p10: Sequence[float]
    p50: Sequence[float]
    p90: Sequence[float]
    model: str
    fallback: str | None = None

    def at(self, t: float, quantile: str = "p50") -> float | None:
        """The forecast level at time `t` (step interpolated), or None beyond the horizon."""
        times = self.times
        n = len(times)
        if not n:
            return None
        first, last = times[0], times[n - 1]
        if t > last:
            return None
        series: Sequence[float] = getattr(self, quantile)
        if t <= first:
            return series[0]
        idx = int((t - first) // self.step_seconds)
        idx = min(idx, n - 2)
        t_a, t_b = times[idx], times[idx + 1]
        frac = (t - t_a) / (t_b - t_a) if t_b > t_a else 0.0
        return series[idx] + frac * (series[idx + 1] - series[idx])


@dataclass(frozen=True, slots=True)
class Runway:
    """When a series crosses `threshold_ratio` of its limit, per quantile path.

    Times are epoch seconds; None means "not within the horizon" (a value, not an error). The p90
    path is the pessimistic one (crosses first), p10 the optimistic one.
    """

    threshold_ratio: float
    p10: float | None
    p50: float | None
    p90: float | None
    horizon_end: float


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    """What the forecaster knows about one series (a target's bytes or inodes) at `t`.

    `forecast` is None when there is not enough history (`reason` says so). `runways` has one
    entry per configured threshold, ordered by threshold. `rate_per_second` is the model's
    current ingest rate (p50), the increment per second the forecast starts from.
    """

    target: TargetId
    dimension: Dimension
    t: float
    limit: float | None
    forecast: Forecast | None
    runways: tuple[Runway, ...] = ()
    rate_per_second: float | None = None
    reason: str | None = None
    provisional: Forecast | None = None
    """While `forecast` is None for lack of history: a labelled stopgap (`model` "predict_linear",
    a `fallback` reason, a wide band) for metrics and the API. Nothing acts on it: the planner and
    the alert rules read `forecast` and `runways` only."""
    provisional_runways: tuple[Runway, ...] = ()
    """The runways of `provisional`."""

    def runway(self, threshold_ratio: float) -> Runway | None:
        for runway in self.runways:
            if abs(runway.threshold_ratio - threshold_ratio) < 1e-9:
                return runway
        return None


class DecisionKind(enum.StrEnum):
    NONE = "none"
    GROW = "grow"
    BLOCKED = "blocked"
    SHRINK_CANDIDATE = "shrink_candidate"


@dataclass(frozen=True, slots=True)
class Decision:
    """The planner's verdict for one series this cycle, with the numbers that led to it.

    For GROW, `new_hard`/`new_soft` are the limits to set. `urgency_seconds` is the time until
    the upper band reaches the hard limit (smaller is more urgent; None: not within horizon).
    """

    target: TargetId
    dimension: Dimension
    kind: DecisionKind
    reason: str
    t: float
    current_used: int | None = None
    current_hard: int | None = None
    current_soft: int | None = None
    new_hard: int | None = None
    new_soft: int | None = None
    urgency_seconds: float | None = None
    numbers: tuple[tuple[str, float], ...] = ()
    guard: str | None = None
    """For BLOCKED (and guard-trimmed GROW): which guard — stale, dropped, paused, kill_switch,
    cooldown, rate_limit, cluster_reserve, max_hard_limit."""

    @property
    def growth(self) -> int:
        if self.kind is not DecisionKind.GROW or self.new_hard is None or self.current_hard is None:
            return 0
        return self.new_hard - self.current_hard


class ActionStatus(enum.StrEnum):
    """Outcome of one growth action, as recorded in the audit trail."""

    WOULD_GROW = "would_grow"      # observe mode
    VERIFIED = "verified"          # PATCHed and read back
    VERIFY_FAILED = "verify_failed"
    FAILED = "failed"              # PATCH refused or errored
    REPLANNED = "replanned"        # someone changed the quota between plan and act
    BLOCKED = "blocked"            # a guard said no
    PAUSED = "paused"              # manual override
    UNKNOWN = "unknown"            # sent, answer lost, re-read inconclusive: frozen until a read settles it
    # an earlier row (`unknown`, or an intent a crash left open) settled by a later re-read:
    RECONCILED = "reconciled"      # found applied
    ABANDONED = "abandoned"        # not applied, and no request of ours can still land
    EXTERNAL_CHANGE = "external_change"  # the limit moved to neither: changed by someone else


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    target: TargetId
    dimension: Dimension
    status: ActionStatus
    t: float
    reason: str
    old_hard: int | None = None
    new_hard: int | None = None
    action_id: int | None = None
    """The audit row this outcome records (its `result` event's); None when no row of ours does."""
    guard: str | None = None
    """A blocked outcome's guard (`Decision.guard`): the alert rules alert only some (a cooldown is intended)."""
    intent_committed: bool = False
    """An enforce growth whose write-ahead `intent` row, and its `intent` event, are committed —
    also when `action_id` is None because the row is left to another instance to settle (deposed
    between the intent and the PATCH): its events are on disk, its `result` is not ours."""
