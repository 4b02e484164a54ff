"""Simulator scenarios: a cluster and, per view path, a quota and the writes that land in it.

A scenario is a TOML file (the built-in ones live in `scenarios/*.toml`, shipped as package
data). Byte sizes accept units (`"5TB"`, `"20TiB"`), durations too (`"7d"`). Parsing errors
raise `ScenarioError(field, reason)` with the dotted path of the offending key, e.g.
`views[0].ingest.ramp_days: must be >= 0`.

```toml
[scenario]
name = "example"
step_seconds = 60          # the fixed absolute integration grid (simulated seconds)

[cluster]
name = "vast-sim"
usable_capacity = "2PB"    # physical usable capacity of the pool
used = "500TB"             # logical data outside the simulated views
drr = 1.3                  # data reduction ratio: logical / physical

[[views]]
path = "/example/raw"
quota_name = "example-raw" # no "/" in quota names; unique within a tenant
tenant = "default"         # the VMS tenant of the view and its quota: "default" is id 1, others get
                           # ids 2, 3, ... in order of appearance
quota = { hard_limit = "20TB", soft_limit = "18TB", hard_limit_inodes = 50_000_000, grace_period = "7d" }
initial = { used = "12TB", files = 1_000_000 }

[views.ingest]
bytes_per_day = "5TB"      # rate at day 0 ...
end_bytes_per_day = "50TB" # ... ramping linearly to this over ramp_days (trend = "linear" | "exponential")
ramp_days = 30
mean_file_size = "256MB"  # files/s = bytes/s / mean_file_size (or files_per_day = N)
daily_profile = [...]      # 24 relative weights by UTC hour (normalised to mean 1)
weekly_profile = [...]     # 7 relative weights Monday..Sunday (normalised to mean 1)
noise = 0.2                # relative sigma of a log-normal factor per sub-step
follows = "/example/other" # optional: rate = fraction x that view's rate (before its noise)
fraction = 0.4
bursts = [{ at_day = 3.5, duration_hours = 2, multiplier = 4 }, { at_day = 5, duration_hours = 1, bytes = "4TB" }]
random_bursts = { per_day = 0.5, duration_hours = 1, multiplier = 3 }
steps = [{ at_day = 10, factor = 3 }]

[[views.deletes]]          # scheduled sweeps: keep `keep_fraction` of the data
every = "daily"            # or "weekly" (with weekday = 0..6, Monday = 0)
at_hour = 2.0              # UTC
keep_fraction = 0.0

[[events]]                 # timed events, `at` after the start (a duration: "36h", "2.5d", seconds)
at = "2d"
action = "operator_patch"  # a human changes a quota: hard_limit (and soft_limit), or factor = 1.5
path = "/example/raw"
factor = 0.9
# action = "create_quota"   path, name (default from the path), hard_limit, soft_limit, tenant
# action = "delete_quota"   path
# action = "rename_quota"   path, new_name
# action = "recreate_quota" path, new_path: deleted, then created under the same name at new_path
# action = "clock_step"     seconds (negative: back): the simulated VMS's wall clock steps, and
#                           `SimulatorServer.on_clock_step` hooks are called (a soak steps the
#                           daemon's wall clock with it)

[[faults]]                 # fault rules active from the start (see faults.py for the kinds)
kind = "error"
rate = 0.01
start = "1d"               # optional window, durations after the start
end = "3d"
```
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.simulator.faults import FaultError, Faults
from quotapilot.daemon.units import parse_bytes, parse_duration

BUILTIN_SCENARIOS = ("cosmos7", "step3x", "burst20", "lull_surge", "churn")
DEFAULT_TENANT = "default"
"""The tenant every VAST cluster has (id 1): a view or quota names no tenant → this one."""
EVENT_ACTIONS = ("create_quota", "delete_quota", "rename_quota", "recreate_quota", "operator_patch", "clock_step")


class ScenarioError(ConfigError):
    """A scenario file is invalid; `field` is the dotted path of the offending key."""


@dataclass(frozen=True)
class ClusterSpec:
    name: str = "vast-sim"
    usable_capacity_bytes: int = 2 * 10**15
    used_bytes: int = 0
    drr: float = 1.0
    sw_version: str = "5.2.0-sim"


@dataclass(frozen=True)
class QuotaSpec:
    hard_limit_bytes: int
    soft_limit_bytes: int
    hard_limit_inodes: int = 0
    soft_limit_inodes: int = 0
    grace_period_seconds: float = 0.0


@dataclass(frozen=True)
class Burst:
    at_day: float
    duration_hours: float
    multiplier: float = 1.0
    extra_bytes: int = 0


@dataclass(frozen=True)
class RandomBursts:
    per_day: float = 0.0
    duration_hours: float = 1.0
    multiplier: float = 3.0


@dataclass(frozen=True)
class Step:
    at_day: float
    factor: float


@dataclass(frozen=True)
class IngestSpec:
    bytes_per_day: float = 0.0
    end_bytes_per_day: float | None = None
    ramp_days: float = 0.0
    trend: str = "linear"
    mean_file_size_bytes: float = 64 * 2**20
    files_per_day: float | None = None
    daily_profile: tuple[float, ...] = (1.0,) * 24
    weekly_profile: tuple[float, ...] = (1.0,) * 7
    noise: float = 0.0
    follows: str | None = None
    fraction: float = 1.0
    bursts: tuple[Burst, ...] = ()
    random_bursts: RandomBursts = field(default_factory=RandomBursts)
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class DeleteSpec:
    every: str = "daily"
    at_hour: float = 0.0
    weekday: int = 0
    keep_fraction: float = 0.0


@dataclass(frozen=True)
class ViewSpec:
    path: str
    quota_name: str
    quota: QuotaSpec | None
    view_name: str
    policy: str = "default"
    protocols: tuple[str, ...] = ("NFS",)
    initial_used_bytes: int = 0
    initial_files: int = 0
    ingest: IngestSpec = field(default_factory=IngestSpec)
    deletes: tuple[DeleteSpec, ...] = ()
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class EventSpec:
    """A timed event: `at_seconds` after the start."""

    at_seconds: float
    action: str
    path: str | None = None
    name: str | None = None
    new_name: str | None = None
    new_path: str | None = None
    hard_limit_bytes: int | None = None
    soft_limit_bytes: int | None = None
    factor: float | None = None
    seconds: float = 0.0
    tenant: str = DEFAULT_TENANT
    """`create_quota`: the tenant of the new quota."""


@dataclass(frozen=True)
class FaultSpec:
    """A fault rule of the scenario: `Faults.add(kind, **options)` with its window
    (`start_seconds`/`end_seconds`) counted from the start instead of in epoch seconds."""

    kind: str
    start_seconds: float | None = None
    end_seconds: float | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    cluster: ClusterSpec
    views: tuple[ViewSpec, ...]
    step_seconds: float = 60.0
    description: str = ""
    events: tuple[EventSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()


_MAX_NUMBER = 1e15
"""Numbers in a scenario are finite and at most this (a sanity bound, not a physical one)."""
_MAX_BYTES = 10**21


class _Table:
    """A TOML table plus its dotted location, so every error names the field."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, Mapping):
            raise ScenarioError(where or "scenario", "must be a table")
        self.raw: Mapping[str, Any] = raw
        self.where = where
        self.used: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.raw.get(key, default)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value:
            raise ScenarioError(self.at(key), "must be a non-empty string")
        return value

    def number(self, key: str, default: float, *, minimum: float | None = None,
               maximum: float | None = None) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(self.at(key), f"must be a number, got {value!r}")
        if not math.isfinite(value) or abs(value) > _MAX_NUMBER:
            raise ScenarioError(self.at(key), f"must be a finite number of at most {_MAX_NUMBER:g}, got {value!r}")
        if minimum is not None and value < minimum:
            raise ScenarioError(self.at(key), f"must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise ScenarioError(self.at(key), f"must be <= {maximum}, got {value!r}")
        return float(value)

    def size(self, key: str, default: int | None = 0) -> int:
        value = self.get(key, default)
        if value is None:
            raise ScenarioError(self.at(key), "is required")
        try:
            parsed = parse_bytes(value)
        except (ValueError, OverflowError) as exc:
            raise ScenarioError(self.at(key), str(exc) or "not a byte size") from exc
        if parsed < 0:
            raise ScenarioError(self.at(key), "must be >= 0")
        if parsed > _MAX_BYTES:
            raise ScenarioError(self.at(key), f"must be at most {_MAX_BYTES} bytes (1 ZB)")
        return parsed

    def duration(self, key: str, default: float = 0.0) -> float:
        try:
            seconds = parse_duration(self.get(key, default))
        except (ValueError, OverflowError) as exc:
            raise ScenarioError(self.at(key), str(exc) or "not a duration") from exc
        if not 0 <= seconds <= _MAX_NUMBER:
            raise ScenarioError(self.at(key), f"must be between 0 and {_MAX_NUMBER:g}")
        return seconds

    def table(self, key: str) -> _Table:
        return _Table(self.get(key, {}), self.at(key))

    def tables(self, key: str) -> list[_Table]:
        value = self.get(key, [])
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list):
            raise ScenarioError(self.at(key), "must be a list of tables")
        return [_Table(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]

    def profile(self, key: str, length: int) -> tuple[float, ...]:
        value = self.get(key, None)
        if value is None:
            return (1.0,) * length
        if (not isinstance(value, list) or len(value) != length
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)):
            raise ScenarioError(self.at(key), f"must be a list of {length} non-negative numbers")
        mean = sum(value) / length
        if mean <= 0:
            raise ScenarioError(self.at(key), "must not be all zero")
        return tuple(float(v) / mean for v in value)

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ScenarioError(self.at(unknown[0]), "unknown key")


def _parse_ingest(t: _Table) -> IngestSpec:
    trend = t.get("trend", "linear")
    if trend not in ("linear", "exponential"):
        raise ScenarioError(t.at("trend"), "must be 'linear' or 'exponential'")
    end = t.size("end_bytes_per_day", None) if t.has("end_bytes_per_day") else None
    files_per_day = t.number("files_per_day", 0.0, minimum=0) if t.has("files_per_day") else None
    bursts = []
    for b in t.tables("bursts"):
        bursts.append(Burst(
            at_day=b.number("at_day", 0.0, minimum=0),
            duration_hours=b.number("duration_hours", 1.0, minimum=1e-9),
            multiplier=b.number("multiplier", 1.0, minimum=0),
            extra_bytes=b.size("bytes", 0)))
        b.reject_unknown()
    rb = t.table("random_bursts")
    random_bursts = RandomBursts(
        per_day=rb.number("per_day", 0.0, minimum=0),
        duration_hours=rb.number("duration_hours", 1.0, minimum=1e-9),
        multiplier=rb.number("multiplier", 3.0, minimum=0))
    rb.reject_unknown()
    steps = []
    for s in t.tables("steps"):
        steps.append(Step(at_day=s.number("at_day", 0.0, minimum=0), factor=s.number("factor", 1.0, minimum=0)))
        s.reject_unknown()
    follows = t.get("follows")
    if follows is not None and not isinstance(follows, str):
        raise ScenarioError(t.at("follows"), "must be a view path")
    spec = IngestSpec(
        bytes_per_day=float(t.size("bytes_per_day", 0)),
        end_bytes_per_day=None if end is None else float(end),
        ramp_days=t.number("ramp_days", 0.0, minimum=0),
        trend=trend,
        mean_file_size_bytes=float(t.size("mean_file_size", 64 * 2**20)) or 1.0,
        files_per_day=files_per_day,
        daily_profile=t.profile("daily_profile", 24),
        weekly_profile=t.profile("weekly_profile", 7),
        noise=t.number("noise", 0.0, minimum=0, maximum=2),
        follows=follows,
        fraction=t.number("fraction", 1.0, minimum=0),
        bursts=tuple(bursts),
        random_bursts=random_bursts,
        steps=tuple(steps),
    )
    if spec.trend == "exponential" and spec.end_bytes_per_day is not None and (
            spec.bytes_per_day <= 0 or spec.end_bytes_per_day <= 0):
        raise ScenarioError(t.at("bytes_per_day"), "an exponential trend needs positive start and end rates")
    t.reject_unknown()
    return spec


def name_of_path(path: str) -> str:
    """The default quota or view name of a path: `/a/b` → `a-b`, `/` → `root`."""
    return path.strip("/").replace("/", "-") or "root"


def _parse_view(t: _Table) -> ViewSpec:
    path = t.string("path")
    if not path.startswith("/"):
        raise ScenarioError(t.at("path"), f"must be an absolute path, got {path!r}")
    quota_name = t.string("quota_name", name_of_path(path))
    if "/" in quota_name:
        raise ScenarioError(t.at("quota_name"), "must not contain '/'")
    quota: QuotaSpec | None = None
    if t.has("quota"):
        q = t.table("quota")
        hard = q.size("hard_limit", None)
        soft = q.size("soft_limit", hard)
        if soft > hard:
            raise ScenarioError(q.at("soft_limit"), "must be <= hard_limit")
        hard_inodes = int(q.number("hard_limit_inodes", 0, minimum=0))
        soft_inodes = int(q.number("soft_limit_inodes", hard_inodes, minimum=0))
        if hard_inodes and soft_inodes > hard_inodes:
            raise ScenarioError(q.at("soft_limit_inodes"), "must be <= hard_limit_inodes")
        quota = QuotaSpec(hard, soft, hard_inodes, soft_inodes, q.duration("grace_period", 0.0))
        q.reject_unknown()
    initial = t.table("initial")
    used = initial.size("used", 0)
    files = int(initial.number("files", 0, minimum=0))
    initial.reject_unknown()
    protocols = t.get("protocols", ["NFS"])
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise ScenarioError(t.at("protocols"), "must be a list of strings")
    deletes = []
    for d in t.tables("deletes"):
        every = d.get("every", "daily")
        if every not in ("daily", "weekly"):
            raise ScenarioError(d.at("every"), "must be 'daily' or 'weekly'")
        deletes.append(DeleteSpec(
            every=every,
            at_hour=d.number("at_hour", 0.0, minimum=0, maximum=23.999),
            weekday=int(d.number("weekday", 0, minimum=0, maximum=6)),
            keep_fraction=d.number("keep_fraction", 0.0, minimum=0, maximum=1)))
        d.reject_unknown()
    spec = ViewSpec(
        path=path, quota_name=quota_name, quota=quota,
        view_name=t.string("view_name", quota_name),
        policy=t.string("policy", "default"),
        protocols=tuple(protocols),
        initial_used_bytes=used, initial_files=files,
        ingest=_parse_ingest(t.table("ingest")),
        deletes=tuple(deletes),
        tenant=t.string("tenant", DEFAULT_TENANT))
    t.reject_unknown()
    return spec


_MAX_SECONDS = 100 * 365 * 86400.0
"""Times and durations in a scenario are bounded (a century): beyond that they mean nothing."""


def _seconds(t: _Table, key: str, *, signed: bool = False) -> float:
    value = t.get(key)
    if isinstance(value, str) and signed and value.startswith("-"):
        seconds = -_parse_duration_at(t, key, value[1:])
    else:
        seconds = _parse_duration_at(t, key, value)
    if not -_MAX_SECONDS <= seconds <= _MAX_SECONDS or (seconds < 0 and not signed):
        raise ScenarioError(t.at(key), f"must be {'within' if signed else 'between 0 and'} 100 years, got {value!r}")
    return seconds


def _parse_duration_at(t: _Table, key: str, value: object) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise ScenarioError(t.at(key), str(exc)) from exc
    if seconds != seconds:
        raise ScenarioError(t.at(key), "must be a number")
    return seconds


def _optional_string(t: _Table, key: str) -> str | None:
    return t.string(key) if t.has(key) else None


def _quota_path(t: _Table, key: str) -> str:
    path = t.string(key)
    if not path.startswith("/"):
        raise ScenarioError(t.at(key), f"must be an absolute path, got {path!r}")
    return path


def _parse_event(t: _Table) -> EventSpec:
    if not t.has("at"):
        raise ScenarioError(t.at("at"), "is required (a duration after the start, e.g. '36h')")
    at = _seconds(t, "at")
    action = t.get("action")
    if action not in EVENT_ACTIONS:
        raise ScenarioError(t.at("action"), f"must be one of {', '.join(EVENT_ACTIONS)}")
    if action == "clock_step":
        if not t.has("seconds"):
            raise ScenarioError(t.at("seconds"), "is required (the step, negative for back)")
        event = EventSpec(at, action, seconds=_seconds(t, "seconds", signed=True))
        t.reject_unknown()
        return event
    path = _quota_path(t, "path")
    name = new_name = new_path = None
    hard = soft = None
    factor = None
    tenant = DEFAULT_TENANT
    if action == "create_quota":
        name = t.string("name", name_of_path(path))
        if "/" in name:
            raise ScenarioError(t.at("name"), "must not contain '/'")
        tenant = t.string("tenant", DEFAULT_TENANT)
        hard = t.size("hard_limit", 0)
        soft = t.size("soft_limit", hard)
        if hard and soft > hard:
            raise ScenarioError(t.at("soft_limit"), "must be <= hard_limit")
    elif action == "rename_quota":
        new_name = t.string("new_name")
        if "/" in new_name:
            raise ScenarioError(t.at("new_name"), "must not contain '/'")
    elif action == "recreate_quota":
        new_path = _quota_path(t, "new_path")
    elif action == "operator_patch":
        if t.has("factor") == t.has("hard_limit"):
            raise ScenarioError(t.at("factor"), "give either factor or hard_limit")
        if t.has("factor"):
            factor = t.number("factor", 1.0, minimum=0.001, maximum=1000.0)
        else:
            hard = t.size("hard_limit", None)
            soft = t.size("soft_limit", hard) if t.has("soft_limit") else None
            if soft is not None and hard and soft > hard:
                raise ScenarioError(t.at("soft_limit"), "must be <= hard_limit")
    event = EventSpec(at, action, path=path, name=name, new_name=new_name, new_path=new_path,
                      hard_limit_bytes=hard, soft_limit_bytes=soft, factor=factor, tenant=tenant)
    t.reject_unknown()
    return event


def _parse_fault(t: _Table) -> FaultSpec:
    """The table's units parsed here; the rule itself checked by the simulator's own `Faults.add`."""
    kind = t.get("kind")
    options: dict[str, Any] = {"rate": t.number("rate", 1.0, minimum=0.0, maximum=1.0),
                               "status": int(t.number("status", 503, minimum=500, maximum=599)),
                               "retry_after": int(t.number("retry_after", 1, minimum=0, maximum=86400))}
    if t.has("count"):
        options["count"] = t.get("count")
    for name in ("path", "method", "match"):
        if t.has(name):
            options[name] = _optional_string(t, name)
    if t.has("seconds"):
        options["seconds"] = t.number("seconds", 0.0, minimum=0.0, maximum=600.0)
    if t.has("apply_after"):
        options["apply_after"] = _seconds(t, "apply_after")
    values = t.get("values", {})
    if not isinstance(values, Mapping):
        raise ScenarioError(t.at("values"), "must be a table of field names to values")
    if values:
        options["values"] = dict(values)
    try:
        Faults().add(kind, **options)
    except FaultError as exc:
        raise ScenarioError(t.at(exc.field), exc.reason) from None
    spec = FaultSpec(kind=kind, start_seconds=_seconds(t, "start") if t.has("start") else None,
                     end_seconds=_seconds(t, "end") if t.has("end") else None,
                     options=tuple(sorted((k, tuple(sorted(v.items())) if k == "values" else v)
                                          for k, v in options.items())))
    t.reject_unknown()
    return spec


def parse_scenario(raw: Mapping[str, Any], default_name: str = "custom") -> Scenario:
    """Build a `Scenario` from parsed TOML, raising `ScenarioError` naming the bad field."""
    root = _Table(raw, "")
    head = root.table("scenario")
    name = head.string("name", default_name)
    step = head.number("step_seconds", 60.0, minimum=1.0, maximum=3600.0)
    description = head.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError("scenario.description", "must be a string")
    head.reject_unknown()
    c = root.table("cluster")
    cluster = ClusterSpec(
        name=c.string("name", "vast-sim"),
        usable_capacity_bytes=c.size("usable_capacity", 2 * 10**15),
        used_bytes=c.size("used", 0),
        drr=c.number("drr", 1.0, minimum=0.1),
        sw_version=c.string("sw_version", "5.2.0-sim"))
    if cluster.usable_capacity_bytes <= 0:
        raise ScenarioError("cluster.usable_capacity", "must be > 0")
    c.reject_unknown()
    views = tuple(_parse_view(v) for v in root.tables("views"))
    if not views:
        raise ScenarioError("views", "at least one view is required")
    paths = [v.path for v in views]
    for i, view in enumerate(views):
        if paths.index(view.path) != i:
            raise ScenarioError(f"views[{i}].path", f"duplicate path {view.path!r}")
        follows = view.ingest.follows
        if follows is not None and (follows not in paths or follows == view.path):
            raise ScenarioError(f"views[{i}].ingest.follows", f"no other view with path {follows!r}")
        if follows is not None and views[paths.index(follows)].ingest.follows is not None:
            raise ScenarioError(f"views[{i}].ingest.follows", "may not follow a view that itself follows another")
    names = [(v.tenant, v.quota_name) for v in views if v.quota is not None]
    if len(set(names)) != len(names):
        raise ScenarioError("views", "quota names must be unique within a tenant")
    events = tuple(sorted((_parse_event(e) for e in root.tables("events")), key=lambda e: e.at_seconds))
    faults = tuple(_parse_fault(f) for f in root.tables("faults"))
    root.reject_unknown()
    return Scenario(name=name, cluster=cluster, views=views, step_seconds=step, description=description,
                    events=events, faults=faults)


def load_scenario(source: str | Path | Scenario) -> Scenario:
    """A built-in scenario by name (`cosmos7`, `step3x`, `burst20`, `lull_surge`), a TOML file, or
    an already-built `Scenario`."""
    if isinstance(source, Scenario):
        return source
    if isinstance(source, str) and source in BUILTIN_SCENARIOS:
        text = resources.files("quotapilot.daemon.simulator").joinpath(f"scenarios/{source}.toml").read_text()
        default_name = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ScenarioError("scenario", f"no built-in scenario or file named {str(source)!r} "
                                f"(built-in: {', '.join(BUILTIN_SCENARIOS)})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError("scenario", f"cannot read {str(source)!r}: {exc}") from exc
        default_name = path.stem
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("scenario", f"not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses per nesting level
        raise ScenarioError("scenario", "not valid TOML: nested too deeply") from exc
    return parse_scenario(raw, default_name)
