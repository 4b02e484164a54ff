"""The simulated cluster: the ground truth behind the simulator's REST answers.

One `Engine` holds a cluster pool of finite usable capacity, directory quotas (bytes and inodes,
hard and soft limits, grace periods), views and view policies, and the write streams of a
`Scenario` landing in the views' paths.

Time. Writes are integrated lazily, on a fixed absolute grid of `scenario.step_seconds`
(multiples of the step since the epoch): every request first calls `advance_to(clock.now())`,
which integrates all whole sub-steps that ended by then, running the actions scheduled on the
engine's timeline (`schedule`: scenario events, late writes) at their time. What the streams offer
comes from the ingest model (`ingest.py`), whose random parts are a counter-based hash of (seed,
stream, step index), so the same seed gives the same run whatever the timing or the number of the
requests that drove it. Every quota write, applied or refused, goes to the write log (`truth.py`).

Enforcement. In each sub-step a stream offers bytes and files to its path; the quota accepts what
fits under its hard limits (bytes and inodes) and what the pool still holds, and refuses the
rest. Refused writes are the *write failures* the growth policy is judged by. A quota whose soft
limit is exceeded for longer than its grace period is `GRACE_EXPIRED` and refuses all writes
until usage drops under the soft limit again. A limit changed by PATCH applies from the next
sub-step on (the engine is integrated up to the request time before the change).

Scale. Scenario streams are integrated step by step (numpy over the streams, and whole batches at
once while nothing can hit a limit). `extra_quotas` (benchmark filler) follow a closed form
`used(t) = min(hard, used0 + rate * (t - t0))`, cost nothing until listed, and are not part of
the write-failure and utilization ground truth.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from quotapilot.daemon.simulator.ingest import IngestModel
from quotapilot.daemon.simulator.scenario import DEFAULT_TENANT, Scenario, ViewSpec, name_of_path
from quotapilot.daemon.simulator.truth import WriteLog, WriteRecord

FloatArray = npt.NDArray[np.float64]
TB = 10**12
_DAY = 86400.0
_FILE_QUANTUM = 1024.0  # files are counted in 1/1024ths (exact binary fractions)
_UNIT = float(2**32)  # utilization sums are kept as integers of 2**-32


class EngineError(ValueError):
    """A refused request, as VMS answers 400: `field` names the offending field."""

    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


class NotFound(LookupError):
    """No such object (404)."""




@dataclass
class QuotaRecord:
    """A directory quota. Limits of 0 mean "no limit", as in VMS."""

    id: int
    name: str
    path: str
    hard_limit: int
    soft_limit: int
    hard_limit_inodes: int = 0
    soft_limit_inodes: int = 0
    grace_period_seconds: float = 0.0
    guid: str = ""
    stream: int | None = None
    soft_since: float | None = None  # when the soft limit was first exceeded (grace timer)
    tenant_id: int = 1


@dataclass
class ViewRecord:
    id: int
    name: str
    path: str
    policy_id: int
    protocols: list[str]
    guid: str = ""
    bucket: str = ""
    create_dir: bool = True
    tenant_id: int = 1


@dataclass
class PolicyRecord:
    id: int
    name: str
    guid: str = ""


@dataclass
class _PathStats:
    """Ground-truth accumulators for one quota path."""

    write_failures: int = 0
    bytes_refused: float = 0.0
    files_refused: float = 0.0
    bytes_written: float = 0.0
    limits: list[tuple[float, int | None]] = field(default_factory=list)
    util_sum: int = 0  # in units of 2**-32
    util_samples: int = 0
    util_peak: float = 0.0


def grace_text(seconds: float) -> str:
    """'7d', '90m', ... as VMS shows grace periods."""
    if seconds <= 0:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def parse_grace(value: object) -> float:
    """VMS grace periods: '90m', '7d', '3600s', or seconds."""
    if isinstance(value, bool):
        raise ValueError("not a grace period")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        if text and text[-1] in units and text[:-1].isdigit():
            return float(int(text[:-1]) * units[text[-1]])
        if text.isdigit():
            return float(text)
    raise ValueError(f"not a grace period: {value!r} (e.g. '90m', '7d')")


class Engine:
    """The simulated VAST cluster. Not thread-safe: use it from one event loop."""

    def __init__(self, scenario: Scenario, *, seed: int = 0, start: float, extra_quotas: int = 0) -> None:
        self.scenario = scenario
        self.seed = seed
        self.step_seconds = dt = float(scenario.step_seconds)
        self.origin = math.floor(start / dt) * dt
        self._steps_done = 0
        self.cluster_id = 1
        self.cluster_guid = str(uuid.UUID(int=(seed * 7919 + 1) & (2**128 - 1)))
        spec = scenario.cluster
        self.usable_capacity_bytes = spec.usable_capacity_bytes
        self.base_used_bytes = float(spec.used_bytes)
        self.drr = spec.drr

        views = scenario.views
        self.stream_paths = [v.path for v in views]
        self.used_bytes: FloatArray = np.array([float(v.initial_used_bytes) for v in views])
        self.used_files: FloatArray = np.array([float(v.initial_files) for v in views])
        self.ingest = IngestModel(scenario, seed=seed, origin=self.origin)

        self.tenants: dict[int, str] = {1: DEFAULT_TENANT}
        """Tenant names by id: the default tenant is 1, the scenario's others follow in order."""
        self.policies: dict[int, PolicyRecord] = {}
        self.views: dict[int, ViewRecord] = {}
        self.quotas: dict[int, QuotaRecord] = {}
        self._stats: dict[str, _PathStats] = {}
        self._next_id = {"policy": 1, "view": 1, "quota": 1}
        self.writes = WriteLog()
        """Every quota write applied or refused, with its source (the ground truth of writes)."""
        self._timeline: list[tuple[float, int, Callable[[], None]]] = []
        self._timeline_seq = itertools.count()
        self._policy("default")
        for view in views:
            self._add_view_from_spec(view)
        for view in views:
            if view.quota is not None:
                q = view.quota
                self.create_quota(name=view.quota_name, path=view.path, hard_limit=q.hard_limit_bytes,
                                  soft_limit=q.soft_limit_bytes, hard_limit_inodes=q.hard_limit_inodes,
                                  soft_limit_inodes=q.soft_limit_inodes,
                                  grace_period_seconds=q.grace_period_seconds, _validate=False,
                                  tenant_id=self.tenant(view.tenant))

        # benchmark filler: closed-form quotas, ids after the scenario's
        self.extra_base_id = self._next_id["quota"]
        self._next_id["quota"] += extra_quotas
        rng = np.random.default_rng(seed + 1_000_003)
        self.extra_used0: FloatArray = rng.uniform(0.1e9, 10e9, extra_quotas)
        self.extra_rate: FloatArray = rng.uniform(0.0, 2e9, extra_quotas) / _DAY
        self.extra_hard: npt.NDArray[np.int64] = np.ceil(
            (self.extra_used0 + self.extra_rate * 365 * _DAY) * 3 / 1e9).astype(np.int64) * 10**9
        self.extra_soft: npt.NDArray[np.int64] = (self.extra_hard // 10) * 9
        self.extra_alive = np.ones(extra_quotas, dtype=bool)

        self._refresh_limits()
        # ground truth
        self.write_failures_total = 0
        self.pool_refused_bytes = 0.0
        self._util_sum = 0  # in units of 2**-32
        self._util_samples = 0
        self._util_peak = 0.0
        self._min_free = float(self.usable_capacity_bytes)
        self._written = np.zeros(4096)
        self._written_files = np.zeros(4096)

    # -- objects -------------------------------------------------------------------------------

    def _new_id(self, kind: str) -> int:
        value = self._next_id[kind]
        self._next_id[kind] = value + 1
        return value

    def _guid(self, kind: str, ident: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"quotapilot-sim/{self.seed}/{kind}/{ident}"))

    def tenant(self, name: str) -> int:
        """The id of the tenant named `name`, added (with the next id) when it is new."""
        for ident, known in self.tenants.items():
            if known == name:
                return ident
        ident = max(self.tenants) + 1
        self.tenants[ident] = name
        return ident

    def _policy(self, name: str) -> PolicyRecord:
        for p in self.policies.values():
            if p.name == name:
                return p
        ident = self._new_id("policy")
        p = PolicyRecord(ident, name, self._guid("policy", ident))
        self.policies[ident] = p
        return p

    def _add_view_from_spec(self, view: ViewSpec) -> None:
        policy = self._policy(view.policy)
        ident = self._new_id("view")
        self.views[ident] = ViewRecord(ident, view.view_name, view.path, policy.id, list(view.protocols),
                                       self._guid("view", ident), tenant_id=self.tenant(view.tenant))

    def create_view(self, *, path: str, policy_id: int, name: str | None = None,
                    protocols: list[str] | None = None, create_dir: bool = True) -> ViewRecord:
        if not path.startswith("/"):
            raise EngineError("path", "must be an absolute path")
        if policy_id not in self.policies:
            raise EngineError("policy_id", f"view policy {policy_id} does not exist")
        if any(v.path == path for v in self.views.values()):
            raise EngineError("path", f"a view with path {path} already exists")
        ident = self._new_id("view")
        record = ViewRecord(ident, name or name_of_path(path), path, policy_id,
                            list(protocols or ["NFS"]), self._guid("view", ident), create_dir=create_dir)
        self.views[ident] = record
        return record

    def create_quota(self, *, name: str, path: str, hard_limit: int = 0, soft_limit: int = 0,
                     hard_limit_inodes: int = 0, soft_limit_inodes: int = 0,
                     grace_period_seconds: float = 0.0, _validate: bool = True,
                     source: str | None = None, tenant_id: int = 1) -> QuotaRecord:
        """POST /quotas/: a quota of tenant `tenant_id` on `path` (usage is the path's current
        usage; a name is unique within its tenant, a path on the cluster). `source` (who asked)
        puts the creation in the write log."""
        if _validate:
            if not path.startswith("/"):
                raise EngineError("path", "must be an absolute path")
            if any(q.path == path for q in self.quotas.values()) or self.extra_index(path=path) is not None:
                raise EngineError("path", f"a quota on {path} already exists")
            if tenant_id not in self.tenants:
                raise EngineError("tenant_id", f"tenant {tenant_id} does not exist")
            if any(q.name == name and q.tenant_id == tenant_id for q in self.quotas.values()) or (
                    tenant_id == 1 and self.extra_index(name=name) is not None):
                raise EngineError("name", f"a quota named {name} already exists")
            _check_limits(hard_limit, soft_limit, "")
            _check_limits(hard_limit_inodes, soft_limit_inodes, "_inodes")
        ident = self._new_id("quota")
        stream = self.stream_paths.index(path) if path in self.stream_paths else None
        record = QuotaRecord(ident, name, path, hard_limit, soft_limit, hard_limit_inodes, soft_limit_inodes,
                             grace_period_seconds, self._guid("quota", ident), stream, tenant_id=tenant_id)
        self.quotas[ident] = record
        stats = self._stats.setdefault(path, _PathStats())
        stats.limits.append((self.now, hard_limit or None))
        self._refresh_limits()
        if source is not None:
            self.writes.add(WriteRecord(self.now, source, "create", ident, name, path,
                                        changes={"hard_limit": hard_limit, "soft_limit": soft_limit},
                                        used_bytes=int(self.quota_usage(record)[0])))
        return record

    def patch_quota(self, quota_id: int, changes: dict[str, Any], *, source: str = "api",
                    delayed: bool = False) -> None:
        """PATCH /quotas/{id}/: validated like VMS (400 naming the field; never below usage).
        The write log records it, applied or refused, with `source`."""
        record = self.quotas.get(quota_id)
        if record is None:
            self._patch_extra(quota_id, changes)
            return
        before = {k: getattr(record, k) for k in ("hard_limit", "soft_limit", "hard_limit_inodes",
                                                  "soft_limit_inodes", "name")}
        used_b, _ = self.quota_usage(record)
        entry = WriteRecord(self.now, source, "patch", quota_id, record.name, record.path, changes=dict(changes),
                            before=before, used_bytes=int(used_b), delayed=delayed)
        try:
            self._patch_record(record, changes)
        except EngineError as exc:
            self.writes.add(replace_record(entry, applied=False, refusal=f"{exc.field}: {exc.reason}"))
            raise
        self.writes.add(entry)

    def _patch_record(self, record: QuotaRecord, changes: dict[str, Any]) -> None:
        new = {k: getattr(record, k) for k in ("hard_limit", "soft_limit", "hard_limit_inodes",
                                               "soft_limit_inodes", "name", "grace_period_seconds")}
        new.update(changes)
        used_b, used_f = self.quota_usage(record)
        if "hard_limit" in changes and new["hard_limit"] and new["hard_limit"] < record.hard_limit \
                and new["hard_limit"] < used_b:
            raise EngineError("hard_limit", f"hard limit {new['hard_limit']} is lower than the used capacity "
                                            f"{int(used_b)}")
        if "hard_limit_inodes" in changes and new["hard_limit_inodes"] \
                and new["hard_limit_inodes"] < record.hard_limit_inodes and new["hard_limit_inodes"] < used_f:
            raise EngineError("hard_limit_inodes", f"inode hard limit {new['hard_limit_inodes']} is lower than "
                                                   f"the used inodes {int(used_f)}")
        _check_limits(new["hard_limit"], new["soft_limit"], "")
        _check_limits(new["hard_limit_inodes"], new["soft_limit_inodes"], "_inodes")
        if new["name"] != record.name and any(q.name == new["name"] and q.tenant_id == record.tenant_id
                                              for q in self.quotas.values()):
            raise EngineError("name", f"a quota named {new['name']} already exists")
        for key, value in new.items():
            setattr(record, key, value)
        self._update_soft(record, at=self.now)
        if "hard_limit" in changes:
            self._stats.setdefault(record.path, _PathStats()).limits.append((self.now, record.hard_limit or None))
        self._refresh_limits()

    def delete_quota(self, quota_id: int, *, source: str = "api") -> None:
        record = self.quotas.pop(quota_id, None)
        if record is None:
            idx = self.extra_idx_by_id(quota_id)
            self.extra_alive[idx] = False
            return
        self._stats.setdefault(record.path, _PathStats()).limits.append((self.now, None))
        self._refresh_limits()
        self.writes.add(WriteRecord(self.now, source, "delete", quota_id, record.name, record.path,
                                    before={"hard_limit": record.hard_limit, "soft_limit": record.soft_limit},
                                    used_bytes=int(self.quota_usage(record)[0])))

    def quota_by_path(self, path: str) -> QuotaRecord | None:
        """The scenario quota on `path`, if any."""
        return next((q for q in self.quotas.values() if q.path == path), None)

    def quota_by_name(self, name: str) -> QuotaRecord | None:
        return next((q for q in self.quotas.values() if q.name == name), None)

    # -- extra (benchmark) quotas -----------------------------------------------------------------

    @property
    def extra_count(self) -> int:
        return len(self.extra_alive)

    def extra_idx_by_id(self, quota_id: int) -> int:
        idx = quota_id - self.extra_base_id
        if not (0 <= idx < self.extra_count) or not self.extra_alive[idx]:
            raise NotFound(f"quota {quota_id}")
        return idx

    def extra_index(self, *, path: str | None = None, name: str | None = None) -> int | None:
        """The live benchmark quota with this path (or name), if any."""
        text, render = (path, self.extra_path) if path is not None else (name, self.extra_name)
        if text is None:
            return None
        digits = text.rsplit("q", 1)[-1]
        if not digits.isdigit():
            return None
        idx = int(digits)
        if idx < self.extra_count and self.extra_alive[idx] and render(idx) == text:
            return idx
        return None

    @staticmethod
    def extra_name(idx: int) -> str:
        return f"bench-q{idx:05d}"

    def extra_guid(self, idx: int) -> str:
        return self._guid("bench-quota", idx)

    @staticmethod
    def extra_path(idx: int) -> str:
        return f"/bench/q{idx:05d}"

    def extra_used(self, idx: npt.NDArray[np.int64] | slice | None = None, t: float | None = None) -> FloatArray:
        sel: Any = slice(None) if idx is None else idx
        elapsed = max(0.0, (self.now if t is None else t) - self.origin)
        used: FloatArray = np.minimum(self.extra_hard[sel].astype(np.float64),
                                      self.extra_used0[sel] + self.extra_rate[sel] * elapsed)
        return used

    def _patch_extra(self, quota_id: int, changes: dict[str, Any]) -> None:
        idx = self.extra_idx_by_id(quota_id)
        hard = int(changes.get("hard_limit", self.extra_hard[idx]))
        soft = int(changes.get("soft_limit", self.extra_soft[idx]))
        _check_limits(hard, soft, "")
        if "hard_limit" in changes and hard < self.extra_hard[idx] and hard < self.extra_used(np.array([idx]))[0]:
            raise EngineError("hard_limit", "hard limit is lower than the used capacity")
        self.extra_hard[idx] = hard
        self.extra_soft[idx] = soft

    # -- limits and usage -----------------------------------------------------------------------

    def _refresh_limits(self) -> None:
        n = len(self.stream_paths)
        inf = np.inf
        self._hard_b = np.full(n, inf)
        self._hard_f = np.full(n, inf)
        self._quota_of_stream: dict[int, QuotaRecord] = {}
        self._util_hard_other = 0.0  # hard limits of quotas on paths with no stream (used 0)
        for q in self.quotas.values():
            if q.stream is None:
                self._util_hard_other += q.hard_limit
                continue
            s = q.stream
            self._quota_of_stream[s] = q
            self._hard_b[s] = q.hard_limit or inf
            self._hard_f[s] = q.hard_limit_inodes or inf
        self._util_hard = np.where(np.isfinite(self._hard_b), self._hard_b, 0.0)
        self._util_hard_total = float(self._util_hard.sum()) + self._util_hard_other

    def quota_usage(self, record: QuotaRecord) -> tuple[float, float]:
        if record.stream is None:
            return 0.0, 0.0
        return float(self.used_bytes[record.stream]), float(self.used_files[record.stream])

    def quota_state(self, record: QuotaRecord) -> str:
        used_b, used_f = self.quota_usage(record)
        hard_b = bool(record.hard_limit) and used_b >= record.hard_limit
        hard_f = bool(record.hard_limit_inodes) and used_f >= record.hard_limit_inodes
        if hard_b and hard_f:
            return "HARD_BOTH_EXCEEDED"
        if hard_b:
            return "HARD_EXCEEDED"
        if hard_f:
            return "INODE_HARD_EXCEEDED"
        if (record.grace_period_seconds > 0 and record.soft_since is not None
                and self.now - record.soft_since >= record.grace_period_seconds):
            return "GRACE_EXPIRED"
        soft_b = bool(record.soft_limit) and used_b > record.soft_limit
        soft_f = bool(record.soft_limit_inodes) and used_f > record.soft_limit_inodes
        if soft_b and soft_f:
            return "SOFT_BOTH_EXCEEDED"
        if soft_b:
            return "SOFT_EXCEEDED"
        if soft_f:
            return "INODE_SOFT_EXCEEDED"
        return "OK"

    @property
    def now(self) -> float:
        """The simulated time integrated so far (a point on the step grid)."""
        return self.origin + self._steps_done * self.step_seconds

    def logical_used_bytes(self, t: float | None = None) -> float:
        """Logical pool usage, the benchmark filler taken at `t` (default: `now`)."""
        extra = float(self.extra_used(t=t)[self.extra_alive].sum()) if self.extra_count else 0.0
        return self.base_used_bytes + float(self.used_bytes.sum()) + extra

    def physical_used_bytes(self, t: float | None = None) -> float:
        return self.logical_used_bytes(t) / self.drr

    # -- integration ----------------------------------------------------------------------------

    def schedule(self, t: float, action: Callable[[], None]) -> None:
        """Run `action()` when integration reaches simulated time `t` (the engine is integrated up
        to the last grid point at or before `t` first). Scenario events, delayed writes and fault
        windows go through here, so they happen at their time whatever the request pattern."""
        heapq.heappush(self._timeline, (t, next(self._timeline_seq), action))

    @property
    def next_scheduled(self) -> float | None:
        """The time of the next scheduled action, if any."""
        return self._timeline[0][0] if self._timeline else None

    def advance_to(self, t: float) -> None:
        """Integrate every whole sub-step that ends at or before `t` (never goes back), running
        the scheduled actions that fall due on the way, in time order."""
        while self._timeline and self._timeline[0][0] <= t:
            due, _, action = heapq.heappop(self._timeline)
            self._advance_grid(due)
            action()
        self._advance_grid(t)

    def _advance_grid(self, t: float) -> None:
        target = math.floor((t - self.origin) / self.step_seconds)
        chunk = 20_000  # bounds memory when jumping far ahead
        while self._steps_done < target:
            n = min(chunk, target - self._steps_done)
            self._integrate(n)

    def _ensure_history(self, total: int) -> None:
        if total > len(self._written):
            size = max(total, 2 * len(self._written))
            self._written = np.concatenate([self._written, np.zeros(size - len(self._written))])
            self._written_files = np.concatenate([self._written_files,
                                                  np.zeros(size - len(self._written_files))])

    def _integrate(self, n: int) -> None:
        k0 = self._steps_done
        ks = np.arange(k0, k0 + n, dtype=np.int64)
        offered_b, offered_f, keep = self.ingest.offered(ks)
        # Whole bytes and files in 1/1024ths: sums of such floats are exact (far below 2**53), so
        # integrating in one batch or in many gives bit-identical results.
        offered_b = np.round(offered_b)
        offered_f = np.round(offered_f * _FILE_QUANTUM) / _FILE_QUANTUM
        self._ensure_history(k0 + n)
        sweep_rows = np.flatnonzero((keep < 1.0).any(axis=1))
        bounds = [0, *[int(r) for r in sweep_rows if r > 0], n]
        for a, b in itertools.pairwise(bounds):
            if a == b:
                continue
            if (keep[a] < 1.0).any():
                self.used_bytes = np.floor(self.used_bytes * keep[a])
                self.used_files = np.floor(self.used_files * keep[a] * _FILE_QUANTUM) / _FILE_QUANTUM
                for rec in self.quotas.values():
                    if rec.stream is not None and keep[a][rec.stream] < 1.0:
                        self._update_soft(rec, at=self.origin + (k0 + a) * self.step_seconds)
            if not self._segment(k0 + a, offered_b[a:b], offered_f[a:b]):
                for j in range(a, b):
                    self._slow_step(k0 + j, offered_b[j], offered_f[j])
        self._steps_done = k0 + n

    def _update_soft(self, rec: QuotaRecord, at: float) -> None:
        used_b, used_f = self.quota_usage(rec)
        exceeded = (bool(rec.soft_limit) and used_b > rec.soft_limit) or (
            bool(rec.soft_limit_inodes) and used_f > rec.soft_limit_inodes)
        if not exceeded:
            rec.soft_since = None
        elif rec.soft_since is None:
            rec.soft_since = at

    def _pool_room_logical(self, t: float) -> float:
        return max(0.0, self.usable_capacity_bytes * self.drr - self.logical_used_bytes(t))

    def _capped(self, s: int, ob: FloatArray, of: FloatArray, writable: int) -> tuple[FloatArray, FloatArray]:
        """What stream `s` gets accepted in a segment: everything until a hard limit (bytes or
        inodes) is reached, the part that fits in that step, nothing after (a full quota refuses
        all writes until usage drops, and usage only drops at sweeps, which end segments).
        Steps from `writable` on are blocked (grace expired)."""
        acc_b = ob.copy()
        acc_f = of.copy()
        acc_b[writable:] = 0.0
        acc_f[writable:] = 0.0
        room_b = max(self._hard_b[s] - self.used_bytes[s], 0.0)
        room_f = max(self._hard_f[s] - self.used_files[s], 0.0)
        cb = np.cumsum(acc_b)
        cf = np.cumsum(acc_f)
        fits = (cb <= room_b) & (cf <= room_f)
        if fits.all():
            return acc_b, acc_f
        j = int(np.argmin(fits))
        rem_b = room_b - (cb[j - 1] if j else 0.0)
        rem_f = room_f - (cf[j - 1] if j else 0.0)
        frac_b = rem_b / ob[j] if ob[j] > 0 else 1.0
        frac_f = rem_f / of[j] if of[j] > 0 else 1.0
        if frac_b <= frac_f:
            acc_b[j] = rem_b
            acc_f[j] = min(rem_f, math.floor(of[j] * frac_b * _FILE_QUANTUM) / _FILE_QUANTUM)
        else:
            acc_f[j] = rem_f
            acc_b[j] = min(rem_b, float(math.floor(ob[j] * frac_f)))
        acc_b[j + 1:] = 0.0
        acc_f[j + 1:] = 0.0
        return acc_b, acc_f

    def _segment(self, k_first: int, ob: FloatArray, of: FloatArray) -> bool:
        """Integrate steps with no sweep in between at once (numpy over steps and streams).
        Returns False, doing nothing, when the pool could run out in the segment."""
        n, s_count = ob.shape
        dt = self.step_seconds
        acc_b = np.empty_like(ob)
        acc_f = np.empty_like(of)
        for s in range(s_count):
            acc_b[:, s], acc_f[:, s] = self._capped(s, ob[:, s], of[:, s], n)
            rec = self._quota_of_stream.get(s)
            if rec is None or rec.grace_period_seconds <= 0:
                continue
            since = rec.soft_since
            if since is None:
                over = self._over_soft(rec, self.used_bytes[s] + np.cumsum(acc_b[:, s]),
                                       self.used_files[s] + np.cumsum(acc_f[:, s]))
                if over.any():
                    since = self.origin + (k_first + int(np.argmax(over)) + 1) * dt
            if since is not None:
                writable = max(0, math.ceil((since + rec.grace_period_seconds - self.origin) / dt - k_first))
                if writable < n:
                    acc_b[:, s], acc_f[:, s] = self._capped(s, ob[:, s], of[:, s], writable)
        t_end = self.origin + (k_first + n) * dt
        if float(acc_b.sum()) > self._pool_room_logical(t_end):
            return False
        used_k = self.used_bytes + np.cumsum(acc_b, axis=0)  # usage at the end of each step
        files_k = self.used_files + np.cumsum(acc_f, axis=0)
        refused_b = ob - acc_b
        refused_f = of - acc_f
        failures = np.where((refused_b > 0.5) | (refused_f > 0.5), np.maximum(1.0, np.round(refused_f)), 0.0)
        for s, path in enumerate(self.stream_paths):
            rec = self._quota_of_stream.get(s)
            if rec is None:
                continue
            stats = self._stats[path]
            stats.bytes_written += float(acc_b[:, s].sum())
            stats.bytes_refused += float(refused_b[:, s].sum())
            stats.files_refused += float(refused_f[:, s].sum())
            count = int(failures[:, s].sum())
            stats.write_failures += count
            self.write_failures_total += count
            if rec.soft_since is None:
                over = self._over_soft(rec, used_k[:, s], files_k[:, s])
                if over.any():
                    rec.soft_since = self.origin + (k_first + int(np.argmax(over)) + 1) * dt
        self._sample(used_k)
        self._written[k_first:k_first + n] = acc_b.sum(axis=1)
        self._written_files[k_first:k_first + n] = acc_f.sum(axis=1)
        self.used_bytes = used_k[-1].copy()
        self.used_files = files_k[-1].copy()
        self._min_free = min(self._min_free, self.usable_capacity_bytes - self.physical_used_bytes(t_end))
        return True

    @staticmethod
    def _over_soft(rec: QuotaRecord, used_b: FloatArray, used_f: FloatArray) -> npt.NDArray[np.bool_]:
        over = np.zeros(len(used_b), dtype=bool)
        if rec.soft_limit:
            over |= used_b > rec.soft_limit
        if rec.soft_limit_inodes:
            over |= used_f > rec.soft_limit_inodes
        return over

    def _slow_step(self, k: int, ob: FloatArray, of: FloatArray) -> None:
        """One step when the pool may run out: what fits the quotas, scaled to what the pool holds."""
        t_start = self.origin + k * self.step_seconds
        t_end = t_start + self.step_seconds
        blocked = np.zeros(len(ob), dtype=bool)
        for rec in self.quotas.values():
            if (rec.stream is not None and rec.grace_period_seconds > 0 and rec.soft_since is not None
                    and t_start - rec.soft_since >= rec.grace_period_seconds):
                blocked[rec.stream] = True
        with np.errstate(divide="ignore", invalid="ignore"):
            room_b = np.maximum(self._hard_b - self.used_bytes, 0.0)
            room_f = np.maximum(self._hard_f - self.used_files, 0.0)
            frac = np.minimum(1.0, np.where(ob > 0, room_b / ob, 1.0))
            frac = np.minimum(frac, np.where(of > 0, room_f / of, 1.0))
        frac[blocked] = 0.0
        want = float((frac * ob).sum())
        pool = self._pool_room_logical(t_end)
        pool_scale = min(1.0, pool / want) if want > 0 else 1.0
        acc_b = np.minimum(np.floor(frac * ob * pool_scale), room_b)
        acc_f = np.minimum(np.floor(frac * of * pool_scale * _FILE_QUANTUM) / _FILE_QUANTUM, room_f)
        self.pool_refused_bytes += float(np.floor(frac * ob).sum() - acc_b.sum())
        self.used_bytes = self.used_bytes + acc_b
        self.used_files = self.used_files + acc_f
        refused_b = ob - acc_b
        refused_f = of - acc_f
        for s, path in enumerate(self.stream_paths):
            if s not in self._quota_of_stream:
                continue
            stats = self._stats[path]
            stats.bytes_written += float(acc_b[s])
            if refused_b[s] > 0.5 or refused_f[s] > 0.5:
                failures = max(1, round(float(refused_f[s])))
                stats.write_failures += failures
                stats.bytes_refused += float(refused_b[s])
                stats.files_refused += float(refused_f[s])
                self.write_failures_total += failures
        self._sample(self.used_bytes[np.newaxis, :])
        self._written[k] = float(acc_b.sum())
        self._written_files[k] = float(acc_f.sum())
        for rec in self.quotas.values():
            if rec.stream is not None:
                self._update_soft(rec, at=t_end)
        self._min_free = min(self._min_free, self.usable_capacity_bytes - self.physical_used_bytes(t_end))

    def _sample(self, used_k: FloatArray) -> None:
        """Utilization statistics at the end of each sub-step (rows of `used_k`), summed in exact
        integer units of 2**-32 so batching never changes the result."""
        if self._util_hard_total <= 0:
            return
        hard = self._util_hard
        ratio_total = (used_k * (hard > 0)).sum(axis=1) / self._util_hard_total
        self._util_sum += int(np.round(ratio_total * _UNIT).astype(np.int64).sum())
        self._util_samples += len(used_k)
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where(hard > 0, used_k / np.where(hard > 0, hard, 1.0), 0.0)
        self._util_peak = max(self._util_peak, float(per.max(initial=0.0)))
        for rec in self.quotas.values():
            stats = self._stats[rec.path]
            if rec.stream is None:
                if rec.hard_limit:
                    stats.util_samples += len(used_k)
                continue
            if hard[rec.stream] <= 0:
                continue
            col = per[:, rec.stream]
            stats.util_sum += int(np.round(col * _UNIT).astype(np.int64).sum())
            stats.util_samples += len(col)
            stats.util_peak = max(stats.util_peak, float(col.max()))

    # -- monitoring -----------------------------------------------------------------------------

    def write_history(self, t_from: float, t_to: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(step start times, bytes written, files written) for the integrated steps in [t_from, t_to)."""
        dt = self.step_seconds
        a = max(0, math.ceil((t_from - self.origin) / dt))
        b = min(self._steps_done, math.floor((t_to - self.origin) / dt))
        if b <= a:
            empty = np.zeros(0)
            return empty, empty, empty
        times = self.origin + np.arange(a, b, dtype=np.float64) * dt
        return times, self._written[a:b].copy(), self._written_files[a:b].copy()

    # -- ground truth -----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What happened so far — the ground truth growth policies and benchmarks score against.

        - `write_failures`: refused write operations over all scenario quotas: in each sub-step
          in which a quota refused anything, the number of files it refused (at least 1).
          `write_failures_by_path`, `bytes_refused` (total) and `bytes_refused_by_path` likewise.
        - `limits_over_time`: per quota path, `(t, hard_limit)` for the initial limit and every
          change (`None` = no limit / quota deleted).
        - `mean_utilization`: time-average, over all sub-steps, of sum(used) / sum(hard_limit)
          over all quotas with a hard limit (capacity-weighted: the fraction of the allocated quota
          that is actually in use). `mean_utilization_by_path`: time-average of used / hard_limit
          per path. `peak_utilization`: max over time and quotas of used / hard_limit.
        Benchmark filler quotas (`extra_quotas`) are not included.
        """
        by_path: dict[str, Any] = {}
        for rec in self.quotas.values():
            used_b, used_f = self.quota_usage(rec)
            by_path[rec.path] = {
                "name": rec.name, "hard_limit": rec.hard_limit, "soft_limit": rec.soft_limit,
                "used_capacity": int(used_b), "used_inodes": int(used_f), "state": self.quota_state(rec)}
        stats = self._stats
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "start": self.origin,
            "now": self.now,
            "simulated_days": (self.now - self.origin) / _DAY,
            "step_seconds": self.step_seconds,
            "write_failures": self.write_failures_total,
            "write_failures_by_path": {p: s.write_failures for p, s in stats.items()},
            "bytes_refused": int(sum(s.bytes_refused for s in stats.values())),
            "bytes_refused_by_path": {p: int(s.bytes_refused) for p, s in stats.items()},
            "bytes_written_by_path": {p: int(s.bytes_written) for p, s in stats.items()},
            "limits_over_time": {p: list(s.limits) for p, s in stats.items()},
            "mean_utilization": self._util_sum / _UNIT / self._util_samples if self._util_samples else 0.0,
            "mean_utilization_by_path": {p: (s.util_sum / _UNIT / s.util_samples if s.util_samples else 0.0)
                                         for p, s in stats.items()},
            "peak_utilization": self._util_peak,
            "peak_utilization_by_path": {p: s.util_peak for p, s in stats.items()},
            "utilization_samples": self._util_samples,
            "quotas": by_path,
            "writes": self.writes.summary(),
            "cluster": {
                "usable_capacity_bytes": self.usable_capacity_bytes,
                "logical_used_bytes": int(self.logical_used_bytes()),
                "physical_used_bytes": int(self.physical_used_bytes()),
                "free_usable_capacity": int(self.usable_capacity_bytes - self.physical_used_bytes()),
                "min_free_usable_capacity": int(self._min_free),
                "pool_refused_bytes": int(self.pool_refused_bytes),
                "quotas_allocated_capacity": int(self.quotas_allocated()),
            },
        }

    def quotas_allocated(self) -> float:
        total = float(sum(q.hard_limit for q in self.quotas.values()))
        if self.extra_count:
            total += float(self.extra_hard[self.extra_alive].sum())
        return total

    def quotas_used(self) -> float:
        total = sum(self.quota_usage(q)[0] for q in self.quotas.values())
        if self.extra_count:
            total += float(self.extra_used()[self.extra_alive].sum())
        return total


def replace_record(record: WriteRecord, **changes: Any) -> WriteRecord:
    return dataclasses.replace(record, **changes)


def _check_limits(hard: object, soft: object, suffix: str) -> None:
    for name, value in ((f"hard_limit{suffix}", hard), (f"soft_limit{suffix}", soft)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise EngineError(name, f"must be a non-negative integer, got {value!r}")
    assert isinstance(hard, int) and isinstance(soft, int)
    if hard and soft and soft > hard:
        raise EngineError(f"soft_limit{suffix}", f"soft limit {soft} must not exceed the hard limit {hard}")

