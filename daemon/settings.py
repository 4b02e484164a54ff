"""quotapilot's configuration: one pydantic-settings model of per-concern groups.

Sources, highest priority first: `QUOTAPILOT_…` environment variables (nested with `__`, e.g.
`QUOTAPILOT_POLL__INTERVAL_SECONDS=30`), then the TOML file given with `--config` (read by
pydantic-settings' TOML source), then the defaults here; sources merge group by group. Secrets
are `SecretStr` (never printed) or `*_file` paths read at use; a path may name
`$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).

Every number is finite and in a range that means something (durations at most `MAX_SECONDS`,
polls at least 1 s apart, ratios of a limit in (0, 1]); cross-field rules live in each group's
validator. What needs the filesystem (secret files read, CA bundles loaded, the store's location)
is checked by `commands.check_config.validate_for_run`, which `run` goes through too.

This is the only module that reads the environment.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import os
import re
import string
import tomllib
import urllib.parse
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import structlog
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from quotapilot.daemon.errors import ConfigError
from quotapilot.daemon.units import parse_duration

MAX_BYTES = 2**62
"""No byte setting is larger (SQLite integers are 64-bit; nothing real comes near)."""
MAX_SECONDS = 10 * 366 * 86400.0
"""No duration setting is longer than ten years: every one is finite and means something."""
MAX_FORECAST_HORIZON_SECONDS = 366 * 86400.0
"""How far a forecast may reach (`[forecast] horizon_seconds`, `quotapilot forecast --horizon`): a
year, hourly, is 8,784 points a path; a model fitted on weeks of history says nothing useful years
out, and 20,000 weeks took minutes and 23 GB."""

def _whole_bytes(value: object) -> object:
    """TOML numbers for `ByteSize`: a finite float becomes whole bytes (`1.5e12`); `inf`/`nan` are refused."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite byte size: {value}")
        return int(value)
    return value


Bytes = Annotated[ByteSize, BeforeValidator(_whole_bytes), Field(ge=0, le=MAX_BYTES)]
"""A byte count (pydantic's `ByteSize`); config accepts `1099511627776`, `"1TiB"`, `"500 TB"`."""
Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
"""A duration in seconds; config accepts `3600`, `"1h"`, `"7d"`; finite, at most `MAX_SECONDS`."""
def _http_url(value: str) -> str:
    """An http(s) URL with a host (and a port, if any, in 1..65535): what aiohttp can request.
    Checked here, not at first use (import-history died with aiohttp's InvalidUrlClientError).
    No message quotes the value, nor urllib's (which quotes a bad port): a webhook URL's path can
    be its secret (Slack's), and check-config and `run` print these reasons."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        raise ValueError("not a URL: its host cannot be read (an IPv6 address missing its ']'?)") from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError("not a URL: its port is not a number in 1..65535") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("has white space or control characters in it")
    if not parts.hostname:
        raise ValueError("has no host: write scheme://host[:port]/path (e.g. http://prometheus:9090)")
    if port == 0:
        raise ValueError("port 0 is not a port to connect to")
    return value


def url_for_display(url: str) -> str:
    """What may be printed of a URL that can carry credentials (userinfo; a query; a path that is
    itself the secret, as in Slack's incoming webhooks): `scheme://host[:port]`, then `/…` when the
    URL goes on."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not a URL at all: nothing of it is safe to show
        return "(unreadable URL)"
    host = parts.netloc.rpartition("@")[2]
    more = "/…" if parts.path not in ("", "/") or parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{more}"


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An `http://` or `https://` URL with a host."""
_VMS_TIME_FRAME = re.compile(r"[0-9]+[smhdDwWMY]")
"""VMS's `time_frame`: a whole number and a unit (s, m, h, d/D, w/W, M, Y), as the simulator
checks it; matched whole (`fullmatch`), ASCII digits only."""


def _vms_time_frame(value: str) -> str:
    if not _VMS_TIME_FRAME.fullmatch(value):
        raise ValueError("not a VMS time frame: a whole number and a unit s, m, h, D, W, M or Y (e.g. 10m, 1h, 2D)")
    if int(value[:-1]) == 0:
        raise ValueError("must be longer than 0 (e.g. 10m, 1h, 2D): an empty window has no samples")
    return value


VmsTimeFrame = Annotated[str, AfterValidator(_vms_time_frame)]
"""A VMS analytics `time_frame`, e.g. `10m`, `1h`, `2D`."""
Ratio = Annotated[float, Field(gt=0, le=1)]
"""A fraction of a limit, in (0, 1]."""
Multiple = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
"""A finite, non-negative factor (e.g. "at most twice the observed rate")."""


class FieldProblem(ValueError):
    """A cross-field rule broken inside a group; `field` is relative to that group."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _has_control(text: str) -> bool:
    """A control character (a line break, a NUL, DEL, ...): nothing an HTTP header can carry."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in text)


def secret_problem(secret: str) -> str | None:
    """Why `secret` cannot go into an HTTP header as it is (None: it can); an empty or padded one
    is never what a server expects (every request would be refused, HTTP 401)."""
    if not secret.strip():
        return "is empty"
    if secret != secret.strip():
        return "has leading or trailing white space"
    if _has_control(secret):
        return "has a control character (a line break?) in it"
    return None


def _admits_bool(annotation: object) -> bool:
    """Whether a field's type has `bool` in it (`bool`, `bool | None`, …)."""
    return annotation is bool or any(_admits_bool(arg) for arg in get_args(annotation))


def _has_bool(value: object) -> bool:
    """A bool, or a list (a TOML array) holding one; tables are their own group's to check."""
    if isinstance(value, list | tuple):
        return any(_has_bool(item) for item in value)
    return isinstance(value, bool)


class Group(BaseModel):
    # allow_inf_nan=False: TOML has `inf` and `nan`; no setting means anything with them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: object, info: ValidationInfo) -> object:
        # pydantic's lax mode takes `true` as 1 for an int or a float: `step_bytes = true` was a
        # one-byte step. Only a field typed bool takes true/false.
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and not _admits_bool(field.annotation) and _has_bool(value):
            raise ValueError("true/false is not a value for this setting (a number or a string is)")
        return value


def expand_path(path: Path) -> Path:
    """A configured file path with `$VARS` / `${VARS}` expanded (`${CREDENTIALS_DIRECTORY}/…`
    under systemd); every `*_file` setting goes through this before use."""
    return Path(os.path.expandvars(str(path)))


def read_secret_file(path: Path) -> str:
    """Read a secret from a file (trailing newline stripped); `$VARS` in the path are expanded."""
    return expand_path(path).read_text(encoding="utf-8").strip()


def resolve_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """A secret given inline or as a file (read at use, so a rotated file is picked up)."""
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return read_secret_file(path)
    return None


def _check_files(group: BaseModel, *names: str) -> None:
    """Each named path setting, when set, must name an existing regular file (after `expand_path`):
    reading a FIFO waits for a writer, reading /dev/zero never ends."""
    for name in names:
        path = getattr(group, name)
        if path is None or expand_path(path).is_file():
            continue
        if expand_path(path).exists():
            raise FieldProblem(name, f"{path} is not a regular file")
        raise FieldProblem(name, f"cannot be read: no such file: {path}")


# --------------------------------------------------------------------------------------- VMS
_API_VERSION = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)?")
"""`api_version`: one segment of `https://{address}/api/{api_version}/` (empty: the unversioned `/api/`)."""
_ADDRESS_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _latin1(text: str) -> bool:
    """Whether `text` can be sent in an HTTP header (http.client encodes them as Latin-1)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def vms_address_problem(address: str) -> str | None:
    """Why `address` is not a VMS `host`, `host:port`, `[v6]` or `[v6]:port` (None: it is).
    vastpy requests `https://{address}/api/…`: a scheme, a path, a query or user info in it makes
    a URL that reaches no VMS."""
    if "://" in address:
        return "give host or host:port, without a scheme (vastpy always uses https)"
    if address.startswith("["):
        host, closed, rest = address[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "not an IPv6 address in brackets (e.g. '[fd00::1]:443')"
        if not closed or (rest and not rest.startswith(":")):
            return "not host:port (IPv6: '[fd00::1]:443')"
        port = rest[1:] if rest else None
    else:
        host, colon, after = address.partition(":")
        port = after if colon else None
        if port is not None and ":" in port:
            return "an IPv6 address goes in brackets: '[fd00::1]:443'"
        if not _ADDRESS_HOST.fullmatch(host):
            return "not host or host:port (a host name or an IP address; no space, '/', '?', '#' or '@')"
    if port is not None and (not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535):
        return "the port must be a number 1..65535"
    return None


class ClusterSettings(Group):
    """One VAST cluster (VMS) to watch: `[[clusters]]`."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Short name: the `cluster` label in metrics and alert ids.")
    address: str = Field(min_length=1, description="VMS host[:port] ([v6]:port for IPv6), as vastpy takes it.")
    token: SecretStr | None = Field(None, description="VMS API token (Api-Token auth).")
    token_file: Path | None = Field(None, description="File holding the VMS API token.")
    user: str | None = Field(None, description="VMS user for HTTP Basic auth (if no token).")
    password: SecretStr | None = Field(None, description="Password for `user`.")
    password_file: Path | None = Field(None, description="File holding the password for `user`.")
    tenant: str | None = Field(
        None, description="Sent as X-Tenant-Name when set: VMS lists that tenant's quotas only, under their "
        "names. Unset: every tenant's an admin sees; the default tenant's under their names, another "
        "tenant's as '<tenant>:<name>'.")
    ca_file: Path | None = Field(None, description="CA bundle that signs the VMS certificate.")
    insecure_skip_tls_verify: bool = Field(
        False, description="Do NOT verify the VMS certificate. Logged as a warning at every start.")
    api_version: str = Field("latest", description="VMS API version in the URL path.")

    @model_validator(mode="after")
    def _usable(self) -> ClusterSettings:
        sources = [self.token is not None, self.token_file is not None,
                   self.user is not None]
        if sum(sources) == 0:
            raise FieldProblem("token", "one of token, token_file or user (+ password) is required")
        if sum(sources) > 1:
            raise FieldProblem("token", "give only one of token, token_file, user")
        if self.user is not None and self.password is None and self.password_file is None:
            raise FieldProblem("password", "user needs password or password_file")
        problem = vms_address_problem(self.address)
        if problem is not None:
            raise FieldProblem("address", problem)
        # each is sent in a header of every request: the VMS would refuse every poll (HTTP 401)
        for name in ("token", "password"):
            secret: SecretStr | None = getattr(self, name)
            problem = None if secret is None else secret_problem(secret.get_secret_value())
            if problem is not None and not (name == "password" and problem.startswith("has leading")):
                raise FieldProblem(name, problem)  # (a password may begin or end with a space)
        if self.user is not None:
            problem = secret_problem(self.user) or (
                "has a ':' in it (HTTP Basic auth splits user and password there)" if ":" in self.user else None)
            if problem is not None:
                raise FieldProblem("user", problem)
        if self.tenant is not None and (_has_control(self.tenant) or not _latin1(self.tenant)):
            raise FieldProblem("tenant", "has a control character or a character an HTTP header cannot carry")
        if not _API_VERSION.fullmatch(self.api_version):
            raise FieldProblem("api_version", "must be one URL path segment, e.g. 'latest' or 'v5' "
                               "(letters, digits, '.', '_', '-')")
        _check_files(self, "token_file", "password_file", "ca_file")
        # No ca_file: the collector verifies against the system trust store. vastpy itself would
        # skip verification without a cert_file; only insecure_skip_tls_verify does that here.
        return self

    def resolved_token(self) -> str | None:
        return resolve_secret(self.token, self.token_file)

    def resolved_ca_file(self) -> Path | None:
        return None if self.ca_file is None else expand_path(self.ca_file)

    def resolved_password(self) -> str | None:
        return resolve_secret(self.password, self.password_file)


class VastSettings(Group):
    """How quotapilot talks to every VMS (`[vast]`)."""

    request_timeout_seconds: Seconds = Field(30.0, ge=0.1, le=600, description="Timeout of one VMS request.")
    max_retries: int = Field(4, ge=0, le=20, description="Retries of one request on temporary errors.")
    backoff_base_seconds: Seconds = Field(1.0, gt=0, le=3600, description="First retry delay (doubles, jittered).")
    backoff_max_seconds: Seconds = Field(60.0, gt=0, le=3600, description="Longest retry delay.")
    page_size: int = Field(1000, ge=1, le=10000, description="Quotas per page when listing.")
    threads: int = Field(4, ge=1, le=64, description="Bounded thread pool for the blocking vastpy calls.")

    @model_validator(mode="after")
    def _backoff_ordered(self) -> VastSettings:
        if self.backoff_max_seconds < self.backoff_base_seconds:
            raise FieldProblem("backoff_max_seconds", "must be >= backoff_base_seconds")
        return self


# --------------------------------------------------------------------------------------- poll
class PollSettings(Group):
    """The poll loop (`[poll]`)."""

    interval_seconds: Seconds = Field(60.0, ge=1, le=86400, description="Time between polls of one cluster.")
    jitter_ratio: float = Field(0.1, ge=0, le=0.5,
                                description="Random start offset, as a fraction of the interval.")
    stale_after_intervals: float = Field(
        3.0, gt=1, le=1000, description="/healthz fails, and nothing acts, when data is older than this.")
    bandwidth_time_frame: VmsTimeFrame = Field(
        "10m", description="time_frame of the ingest-bandwidth query: a whole number and a unit (10m, 1h, 2D).")
    tolerance_ratio: float = Field(
        0.05, ge=0, le=1,
        description="How far a counter may go backwards (as a fraction) before a sample is implausible.")


# ------------------------------------------------------------------------------------- policy
class PolicyRules(Group):
    """The growth-policy knobs that can be set globally and per target."""

    mode: Literal["observe", "enforce"] = Field(
        "observe", description="observe: decide and report only. enforce: PATCH quotas.")
    grow_at: Ratio = Field(0.75, description="Grow when the upper band crosses this within lead_time.")
    warning_at: Ratio = Field(0.80, description="Utilization alert, warning.")
    critical_at: Ratio = Field(0.90, description="Utilization alert, critical.")
    target_utilization: Ratio = Field(0.70, description="Size growth so the upper band stays under this.")
    lead_time_seconds: Seconds = Field(24 * 3600.0, description="How far ahead the trigger looks.")
    horizon_seconds: Seconds = Field(7 * 86400.0, ge=60, description="How long one growth should last.")
    step_bytes: Bytes = Field(ByteSize(2**40), gt=0, description="New hard limits are rounded up to this.")
    min_growth_bytes: Bytes = Field(ByteSize(2**40), description="Smallest growth per action.")
    max_growth_bytes: Bytes = Field(ByteSize(500 * 2**40), gt=0, description="Largest growth per action.")
    max_hard_limit_bytes: Bytes = Field(ByteSize(10 * 2**50), gt=0, description="Ceiling of any quota's hard limit.")
    step_inodes: int = Field(1_000_000, gt=0, le=MAX_BYTES, description="New inode limits are rounded up to this.")
    min_growth_inodes: int = Field(1_000_000, ge=0, le=MAX_BYTES, description="Smallest inode growth per action.")
    max_growth_inodes: int = Field(1_000_000_000, gt=0, le=MAX_BYTES, description="Largest inode growth per action.")
    max_hard_limit_inodes: int = Field(10_000_000_000, gt=0, le=MAX_BYTES, description="Ceiling of inode limits.")
    cooldown_seconds: Seconds = Field(6 * 3600.0, description="Minimum time between growths of one quota.")
    max_forecast_rate_ratio: Multiple = Field(
        2.0, description="Size a growth with at most this multiple of the last day's observed write "
        "rate, so a forecast a burst has just thrown upwards cannot size a quota for weeks (0: no cap).")

    @model_validator(mode="after")
    def _ordered(self) -> PolicyRules:
        if not self.target_utilization < self.grow_at:
            raise FieldProblem("target_utilization", "must be < grow_at")
        if not self.grow_at < self.critical_at:
            raise FieldProblem("grow_at", "must be < critical_at")
        if not self.warning_at <= self.critical_at:
            raise FieldProblem("warning_at", "must be <= critical_at")
        if self.min_growth_bytes > self.max_growth_bytes:
            raise FieldProblem("min_growth_bytes", "must be <= max_growth_bytes")
        if self.min_growth_inodes > self.max_growth_inodes:
            raise FieldProblem("min_growth_inodes", "must be <= max_growth_inodes")
        # a ceiling below one step (or one minimum growth) cuts every growth to the ceiling: no
        # new limit could be rounded to the step or grow by the minimum the policy promises; a cap
        # per action below one step cuts every growth to less than the step
        for unit in ("bytes", "inodes"):
            ceiling = getattr(self, f"max_hard_limit_{unit}")
            for floor, broken in ((f"step_{unit}", "never rounded to a step"),
                                  (f"min_growth_{unit}", "smaller than the minimum growth")):
                if ceiling < getattr(self, floor):
                    raise FieldProblem(f"max_hard_limit_{unit}",
                                       f"every growth would stop at this ceiling, {broken}: must be >= {floor}")
            if getattr(self, f"max_growth_{unit}") < getattr(self, f"step_{unit}"):
                raise FieldProblem(f"max_growth_{unit}",
                                   f"every growth would be cut to this cap, never rounded to a step: "
                                   f"must be >= step_{unit}")
        return self


class PolicyOverride(Group):
    """`[[policy.overrides]]`: policy fields for the targets whose path (or name) matches `match`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    match: str = Field(min_length=1, description="Glob on the quota path or name, e.g. '/cosmos7/temp*' "
                       "(another tenant's quota is named '<tenant>:<name>', e.g. 'acme:*').")

    @model_validator(mode="after")
    def _known_fields(self) -> PolicyOverride:
        unknown = set(self.model_extra or {}) - set(PolicyRules.model_fields)
        if unknown:
            raise FieldProblem(sorted(unknown)[0], "not a policy field")
        return self

    def matches(self, name: str, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.match) or fnmatch.fnmatchcase(name, self.match)


log = structlog.get_logger(__name__)

_CONFLICTS_LOGGED: set[tuple[str, str, tuple[str, ...]]] = set()
"""(name, path, override globs) whose clash `PolicySettings.rules_for` has logged already."""
_GLOB_SPECIAL = re.compile(r"[*?\[\]]")


def globs_may_meet(a: str, b: str) -> bool:
    """Whether one string can match both globs. A glob matches from the first character to the
    last, so two whose literal heads (before the first wildcard) or tails (after the last) differ
    where both have characters never can; otherwise they are taken to (conservative)."""
    def head(glob: str) -> str:
        found = _GLOB_SPECIAL.search(glob)
        return glob if found is None else glob[:found.start()]

    def tail(glob: str) -> str:
        found = [m.end() for m in _GLOB_SPECIAL.finditer(glob)]
        return glob[found[-1]:] if found else glob

    ha, hb, ta, tb = head(a), head(b), tail(a), tail(b)
    return (ha.startswith(hb) or hb.startswith(ha)) and (ta.endswith(tb) or tb.endswith(ta))


class PolicySettings(PolicyRules):
    """`[policy]`: the global growth policy, its per-target overrides and global guards."""

    cluster_reserve_ratio: float = Field(
        0.10, ge=0, lt=1, description="Fraction of usable capacity that must stay free after growths.")
    max_actions_per_hour: int = Field(20, ge=0, le=1_000_000, description="Global rate limit on growth actions.")
    kill_switch: bool = Field(False, description="Stop all growth actions (decisions still reported).")
    overrides: tuple[PolicyOverride, ...] = Field((), description="Per-target policy by path glob.")

    @model_validator(mode="after")
    def _overrides_valid(self) -> PolicySettings:
        for i, override in enumerate(self.overrides):
            try:
                self.rules_for("", "", only=(override,))
            except ValidationError as exc:
                problem = describe_validation_error(exc)[0]
                raise FieldProblem(f"overrides.{i}.{problem.field}", problem.reason) from None
        # A target may match several overrides (nested paths), and its rules are all of them
        # merged: two valid alone may not be together. Every rule of `PolicyRules._ordered` compares
        # two fields, each taken from the last override that sets it, so checking every pair (in
        # order) whose globs can match one string covers every set of overrides that can meet on a
        # path. (A path glob and a name glob can also meet on one target; such a clash shows only
        # at run time, where `rules_for` falls back for that target alone.)
        for j, later in enumerate(self.overrides):
            for i, earlier in enumerate(self.overrides[:j]):
                if not globs_may_meet(earlier.match, later.match):
                    continue  # separate trees: each may have its own policy
                try:
                    self.rules_for("", "", only=(earlier, later))
                except ValidationError as exc:
                    problem = describe_validation_error(exc)[0]
                    mentioned = [f for f in PolicyRules.model_fields
                                 if f == problem.field or problem.reason.endswith(f" {f}")]
                    field = next((f for f in mentioned if f in (later.model_extra or {})), problem.field)
                    raise FieldProblem(
                        f"overrides.{j}.{field}",
                        f"{problem.field} {problem.reason} for a target that policy.overrides.{i} "
                        f"({earlier.match!r}) matches too") from None
        return self

    def rules_for(self, name: str, path: str, *, only: tuple[PolicyOverride, ...] | None = None) -> PolicyRules:
        """The policy for one target: the global rules with every matching override applied in
        order (later overrides win); `only`: these overrides, whatever they match (a clash raises).

        Overrides that clash on this target (one matching its path, another its name: the load
        cannot see that) give it the global rules in observe mode — no write on a policy that is
        not valid, alerts at the global thresholds — and log the conflict once; every other
        target goes on with its own."""
        defaults = {k: getattr(self, k) for k in PolicyRules.model_fields}
        chosen = list(only) if only is not None else [o for o in self.overrides if o.matches(name, path)]
        base = dict(defaults)
        for override in chosen:
            base.update(override.model_extra or {})
        try:
            return PolicyRules.model_validate(base)
        except ValidationError as exc:
            if only is not None:
                raise
            key = (name, path, tuple(o.match for o in chosen))
            if key not in _CONFLICTS_LOGGED:
                _CONFLICTS_LOGGED.add(key)
                problem = describe_validation_error(exc)[0]
                log.error("policy.overrides_conflict", target=name, path=path, overrides=list(key[2]),
                          problem=f"{problem.field} {problem.reason}", using="the global policy, observe mode")
            return PolicyRules.model_validate(defaults | {"mode": "observe"})


# ------------------------------------------------------------------------------------- alerts
LOG_SINK_NAME = "log"
"""The built-in sink that writes every notification to the structured log (`[alerts] log_sink`)."""


class MqttSettings(Group):
    """`[alerts.mqtt]`: the MQTT sink."""

    host: str = Field(min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    topic_prefix: str = Field("quotapilot", min_length=1, description="Topics are {prefix}/{cluster}/{target}/...")
    username: str | None = Field(None, description="Broker user.")
    password: SecretStr | None = Field(None, description="Broker password.")
    password_file: Path | None = Field(None, description="File holding the broker password.")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: Path | None = Field(None, description="CA bundle for the broker's certificate.")
    client_id: str | None = Field(None, description="MQTT client id (default: quotapilot-<host>).")
    keepalive_seconds: int = Field(30, ge=5, le=65535, description="MQTT keepalive (the protocol's maximum is 65535).")
    timeout_seconds: Seconds = Field(10.0, gt=0, le=600, description="Connect/publish timeout.")
    state_min_change_ratio: float = Field(
        0.20, ge=0, le=1, description="Retained state is re-published when utilization moved this much "
        "(or at once when the last action, the quota state or the hard limit change).")

    @model_validator(mode="after")
    def _files(self) -> MqttSettings:
        _check_files(self, "password_file", "ca_file")
        return self

    def resolved_password(self) -> str | None:
        return resolve_secret(self.password, self.password_file)

    def resolved_ca_file(self) -> Path | None:
        return None if self.ca_file is None else expand_path(self.ca_file)


_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110's `token`)."""


class WebhookSettings(Group):
    """`[[alerts.webhooks]]`: one webhook receiver."""

    name: str | None = Field(None, description=(
        "Sink name in metrics, routes and the outbox (default: webhook-<index>). Name every webhook: "
        "an unnamed one is known by its position, so removing an earlier unnamed webhook hands its "
        "queued notifications to the next one; rows of a sink no longer configured are dropped at "
        "start (counted as sink_removed)."))
    url: HttpUrl = Field(description="Where to POST.")
    format: Literal["json", "alertmanager", "slack"] = Field("json", description="Payload format.")
    token: SecretStr | None = Field(None, description="Bearer token sent as Authorization.")
    token_file: Path | None = Field(None, description="File holding the bearer token.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    timeout_seconds: Seconds = Field(10.0, gt=0, le=600, description="Timeout of one POST.")
    verify_tls: bool = Field(True, description="Verify the receiver's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for the receiver's certificate.")

    @model_validator(mode="after")
    def _files(self) -> WebhookSettings:
        if self.name is not None:
            _check_webhook_name(self.name)
        # aiohttp refuses to send such a header: every delivery would fail. The value may be a
        # secret (an API key): never in the message.
        for header, value in self.headers.items():
            if not _HTTP_TOKEN.fullmatch(header):
                raise FieldProblem("headers", f"header name {header!r} is not an HTTP token "
                                   "(letters, digits, !#$%&'*+-.^_`|~; no space or ':')")
            if _has_control(value):
                raise FieldProblem("headers", f"the value of header {header!r} has a control character "
                                   "(a line break?) in it")
        _check_files(self, "token_file", "ca_file")
        return self

    def resolved_token(self) -> str | None:
        return resolve_secret(self.token, self.token_file)

    def resolved_ca_file(self) -> Path | None:
        return None if self.ca_file is None else expand_path(self.ca_file)


_RESERVED_SINK_NAMES = {LOG_SINK_NAME: "the built-in log sink", "mqtt": "the MQTT sink (events-mqtt for events)"}
_EVENT_SINK_PREFIX = "events-"
"""The event outbox's sinks are `events-<webhook name>` and `events-mqtt` (`daemon/events.py`)."""


def _check_webhook_name(name: str) -> None:
    """A webhook's name is its outbox sink; alerts and events share the outbox table, so a name
    that can equal another sink's would make two dispatchers read (and mark) the same rows."""
    if name in _RESERVED_SINK_NAMES:
        raise FieldProblem("name", f"{name!r} is reserved for {_RESERVED_SINK_NAMES[name]}")
    if name.startswith(_EVENT_SINK_PREFIX):
        raise FieldProblem("name", f"{name!r}: names starting with {_EVENT_SINK_PREFIX!r} are reserved "
                           "for the events outbox's sinks (events-webhook-<i>, events-mqtt)")


def _check_webhook_names(webhooks: tuple[WebhookSettings, ...]) -> None:
    """No two webhooks of one group share a sink: a name given twice, or one another webhook has
    by default (`webhook-<its index>`)."""
    names = [w.name or f"webhook-{i}" for i, w in enumerate(webhooks)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise FieldProblem(f"webhooks.{i}.name", f"sink {name!r} is taken by webhook {names.index(name)} "
                               "(webhook-<i> is the default of the i-th webhook)")


RetryBackoffs = Annotated[tuple[Annotated[float, Field(gt=0, le=86400)], ...], Field(min_length=1, max_length=100)]
"""Delivery retry delays of an outbox (`[alerts]`, `[events]`): at least one, each in (0, 1 day]."""


class QuietWindow(Group):
    """A daily window (UTC, "HH:MM") in which a route holds non-critical notifications."""

    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class RouteSettings(Group):
    """`[[alerts.routes]]`: which alerts go to which sinks."""

    match: str = Field("*", description="Glob on the alert's target name or path.")
    min_severity: Literal["info", "warning", "critical"] = Field("info")
    sinks: tuple[str, ...] = Field((), description="Sink names; empty means every sink.")
    quiet: tuple[QuietWindow, ...] = Field((), description="Windows that hold non-critical alerts.")


class AlertRuleSettings(Group):
    """`[alerts.rules]`: thresholds, windows, hysteresis."""

    runway_warning_seconds: Seconds = Field(72 * 3600.0, description="Quota runway (to 100 %) warning.")
    runway_critical_seconds: Seconds = Field(24 * 3600.0, description="Quota runway critical.")
    pool_runway_warning_seconds: Seconds = Field(90 * 86400.0, description="Cluster pool procurement warning.")
    pool_runway_critical_seconds: Seconds = Field(30 * 86400.0, description="Cluster pool critical.")
    hysteresis_ratio: float = Field(
        0.02, ge=0, le=0.2, description="Utilization must fall this far below a threshold to resolve.")
    runway_hysteresis_ratio: float = Field(
        0.10, ge=0, le=1, description="A runway alert resolves once the runway is this much longer than its window.")
    for_seconds: Seconds = Field(0.0, description="A condition must hold this long before firing.")
    renotify_seconds: Seconds = Field(4 * 3600.0, description="Re-send a firing alert this often.")
    renotify_warning_seconds: Seconds = Field(
        24 * 3600.0, description="Re-send a firing warning this often (critical: renotify_seconds; info: never).")
    pool_renotify_seconds: Seconds = Field(
        24 * 3600.0, description="Cluster pool alerts (procurement) are re-sent at most this often.")
    anomaly_margin_ratio: Multiple = Field(
        1.0, description="Ingest above the forecast's p90 × (1 + this), or below its p10 ÷ (1 + this), "
        "over anomaly_samples polls is anomalous.")
    anomaly_floor_bytes_per_second: float = Field(
        1024.0 * 1024.0, ge=0, le=MAX_BYTES,
        description="Smallest rate difference (bytes/s) that can count as anomalous.")
    anomaly_samples: int = Field(
        6, ge=1, le=10_000, description="Polls per ingest-anomaly window (what was written over them is judged).")
    collector_failed_intervals: int = Field(
        3, ge=1, le=10_000, description="Failed polls in a row before a collector alert.")
    runway_beyond_horizon_resolve_seconds: Seconds = Field(
        86400.0, description="A firing runway alert whose window is longer than the forecast horizon (the "
        "pool's) is not resolved by one forecast that sees no crossing; it resolves once none has for this long.")


class AlertSettings(Group):
    """`[alerts]`: rules, sinks and routes."""

    rules: AlertRuleSettings = Field(default_factory=AlertRuleSettings)
    mqtt: MqttSettings | None = None
    webhooks: tuple[WebhookSettings, ...] = ()
    routes: tuple[RouteSettings, ...] = ()
    log_sink: bool = Field(
        True, description="Also deliver every notification, through the outbox, to the structured log "
        "(event `alert.notified`, sink `log`): the journal shows every alert even with no other sink.")
    retry_backoffs_seconds: RetryBackoffs = Field(
        (1, 2, 5, 10, 30, 60, 120, 300), description="Delivery retry delays per sink (jittered); the last one repeats.")
    max_age_seconds: Seconds = Field(
        7 * 86400.0, gt=0, description="Undelivered notifications older than this are dropped (and counted).")

    @model_validator(mode="after")
    def _webhook_names(self) -> AlertSettings:
        _check_webhook_names(self.webhooks)
        return self

    def sink_names(self) -> list[str]:
        """The names routes may use: `log` (when on), `mqtt` (when set), each webhook's name."""
        names = [LOG_SINK_NAME] if self.log_sink else []
        if self.mqtt is not None:
            names.append("mqtt")
        names.extend(w.name or f"webhook-{i}" for i, w in enumerate(self.webhooks))
        return names


# --------------------------------------------------------------------------------- http & co
class HttpSettings(Group):
    """`[http]`: the daemon's HTTP listener (/metrics, /healthz, /api/v1)."""

    listen: str = Field("127.0.0.1:9187", description="host:port to listen on ([::1]:9187 for IPv6; port 0: any).")
    write_token: SecretStr | None = Field(None, description="Bearer token for write endpoints.")
    write_token_file: Path | None = Field(None, description="File holding the write token.")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=64 * 2**20, description="Largest accepted request body.")
    header_timeout_seconds: Seconds = Field(
        10.0, ge=0.1, le=600,
        description="A connection that has not sent a complete request's headers this long after it opened, "
                    "or after the previous answer, is closed (slowloris); so is an idle keep-alive connection.")

    @model_validator(mode="after")
    def _valid(self) -> HttpSettings:
        try:
            parse_listen(self.listen)
        except ValueError as exc:
            raise FieldProblem("listen", str(exc)) from None
        if self.write_token is not None:
            if self.write_token_file is not None:
                raise FieldProblem("write_token", "give only one of write_token, write_token_file")
            problem = secret_problem(self.write_token.get_secret_value())
            if problem == "is empty":
                raise FieldProblem("write_token", "is empty (leave it unset to refuse every write)")
            if problem is not None:
                raise FieldProblem("write_token", problem)
        _check_files(self, "write_token_file")
        return self

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    def resolved_write_token(self) -> str | None:
        return resolve_secret(self.write_token, self.write_token_file)


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port` (`[v6]:port` for IPv6) as `(host, port)`; ValueError saying what is wrong."""
    if listen.startswith("["):
        host, closed, rest = listen[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise ValueError(f"not host:port: {listen!r} (IPv6: '[::1]:9187')")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
        port_text = rest[1:]
    else:
        host, colon, port_text = listen.rpartition(":")
        if not colon or not host:
            raise ValueError(f"not host:port: {listen!r} (e.g. '127.0.0.1:9187')")
        if ":" in host:
            raise ValueError(f"an IPv6 address goes in brackets: '[{host}]:{port_text}'")
        if not _HOSTNAME.match(host):
            raise ValueError(f"not a host name or IPv4 address: {host!r}")
        if host.replace(".", "").isdigit():  # "25" or "127.1" would resolve by inet_aton's old rules
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"not an IPv4 address (a.b.c.d): {host!r}") from None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"the port must be a number 0..65535, not {port_text!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"the port must be 0..65535, not {port}")
    return host, port


LIBPQ_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
"""libpq connection parameters that are secrets: refused in `[store] url` as `user:password@` is,
and dropped from any such URL printed (`store.postgres.redact`)."""


class StoreSettings(Group):
    """`[store]`: the state store — SQLite (`path`, one host) or PostgreSQL (`url`, a fleet)."""

    path: Path = Field(Path("/var/lib/quotapilot/state.db"), description="SQLite database file.")
    raw_retention_seconds: Seconds = Field(3 * 86400.0, ge=3600, description="Keep every poll sample this long.")
    hourly_retention_seconds: Seconds = Field(70 * 86400.0, description="Keep hourly downsampled history this long.")
    audit_retention_seconds: Seconds = Field(400 * 86400.0, ge=86400, description="Keep the audit trail this long.")
    # --- PostgreSQL (a fleet of instances; issue 15) ---
    url: str | None = Field(
        None, description="postgresql://user@host:port/db?sslmode=verify-full&sslrootcert=… selects PostgreSQL "
        "instead of `path`; query parameters are libpq's, passed through (TLS). No password in the URL.")
    password: SecretStr | None = Field(None, description="PostgreSQL password (else libpq's PGPASSWORD/.pgpass).")
    password_file: Path | None = Field(None, description="File holding the PostgreSQL password.")
    instance_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]+$", description="This instance in lease rows (default: the host name).")
    lease_seconds: Seconds = Field(15.0, gt=0, description="A cluster's lease lasts this long unless renewed.")
    lease_renew_seconds: Seconds = Field(5.0, gt=0, description="The leader renews its leases this often.")
    connect_timeout_seconds: Seconds = Field(5.0, gt=0, description="Give up connecting to PostgreSQL after this.")
    statement_timeout_seconds: Seconds = Field(
        10.0, gt=0, description="A PostgreSQL statement taking longer fails (a partition must not hang a write).")
    pool_max_size: int = Field(4, ge=1, le=64, description="PostgreSQL connections per instance, at most.")

    @model_validator(mode="after")
    def _postgres(self) -> StoreSettings:
        if self.url is not None:
            if not self.url.startswith(("postgresql://", "postgres://")):
                raise FieldProblem("url", "must start with postgresql://")
            authority = self.url.split("://", 1)[1].split("/", 1)[0]
            query = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query, keep_blank_values=True)
            if ("@" in authority and ":" in authority.rsplit("@", 1)[0]) or \
                    any(key.lower() in LIBPQ_SECRET_PARAMETERS for key, _ in query):
                raise FieldProblem("url", "put the password in password or password_file, not in the URL")
        if self.password is not None and self.password_file is not None:
            raise FieldProblem("password", "give only one of password, password_file")
        if self.hourly_retention_seconds < self.raw_retention_seconds:
            raise FieldProblem("hourly_retention_seconds", "must be >= raw_retention_seconds (it is the longer memory)")
        if self.lease_renew_seconds * 2 > self.lease_seconds:
            raise FieldProblem("lease_renew_seconds", "must be at most half of lease_seconds")
        _check_files(self, "password_file")
        return self

    @property
    def is_postgres(self) -> bool:
        return self.url is not None

    def resolved_password(self) -> str | None:
        return resolve_secret(self.password, self.password_file)


class LogSettings(Group):
    """`[log]`."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON otherwise (systemd).")


class ForecastSettings(Group):
    """`[forecast]`: the forecasting service."""

    thresholds: tuple[Ratio, ...] = Field(
        (0.75, 0.90, 1.00), min_length=1, max_length=20,
        description="Runway thresholds (of the limit), each in (0, 1]; 1.0 (full) is required.")
    horizon_seconds: Seconds = Field(14 * 86400.0, ge=3600, le=MAX_FORECAST_HORIZON_SECONDS,
                                     description="How far forecasts reach.")
    step_seconds: Seconds = Field(3600.0, ge=60, le=86400, description="Model step (samples are resampled to it).")
    refit_interval_seconds: Seconds = Field(6 * 3600.0, ge=60, description="Full refit of every model this often.")
    workers: int = Field(2, ge=0, le=64, description="Process-pool size for refits (0: in-process).")

    @model_validator(mode="after")
    def _consistent(self) -> ForecastSettings:
        if len(set(self.thresholds)) != len(self.thresholds):
            raise FieldProblem("thresholds", "has a threshold twice")
        if 1.0 not in self.thresholds:
            raise FieldProblem("thresholds", "must include 1.0: runway alerts and /api/v1 read the runway to full")
        if self.horizon_seconds < 2 * self.step_seconds:
            raise FieldProblem("horizon_seconds", "must cover at least two steps (2 × step_seconds)")
        return self


class DaemonSettings(Group):
    """`[daemon]`: supervision."""

    shutdown_timeout_seconds: Seconds = Field(
        10.0, gt=0, le=3600, description="SIGTERM: drain within this, then cancel.")


class ManagedView(Group):
    """`[[views]]`: a view (and its quota) the daemon ensures exists, in enforce mode."""

    cluster: str | None = Field(None, description="Cluster name (default: the only one).")
    path: str = Field(pattern=r"^/", description="View path.")
    name: str | None = Field(None, description="Quota/view name (default: from the path).")
    policy: str = Field("default", description="View policy name.")
    protocols: tuple[str, ...] = Field(("NFS",), description="View protocols.")
    hard_limit_bytes: Bytes = Field(ByteSize(10 * 2**40), gt=0, description="Initial quota hard limit.")
    soft_limit_bytes: Bytes | None = Field(None, description="Initial soft limit (default 90 % of hard).")
    hard_limit_inodes: int | None = Field(None, gt=0, le=MAX_BYTES, description="Initial inode limit.")


class HistorySettings(Group):
    """`[history]`: usage history from a Prometheus that already scrapes quotapilot or VAST, for a
    warm start (day-one forecasts) and for `quotapilot replay --prometheus`. Off without a URL."""

    prometheus_url: HttpUrl | None = Field(None, description="Prometheus base URL, e.g. http://prometheus:9090.")
    bearer_token_file: Path | None = Field(None, description="File holding a bearer token for Prometheus.")
    basic_auth_user: str | None = Field(None, description="HTTP Basic user for Prometheus.")
    basic_auth_password_file: Path | None = Field(None, description="File holding the Basic auth password.")
    ca_file: Path | None = Field(None, description="CA bundle that signs Prometheus' certificate.")
    lookback: Seconds = Field(28 * 86400.0, gt=0, description="How far back to import (seconds or '28d').")
    step_seconds: Seconds = Field(300.0, gt=0, description="query_range resolution.")
    max_points_per_query: int = Field(
        11_000, ge=2, le=11_000, description="Points per series per query_range (Prometheus refuses > 11,000).")
    source: Literal["quotapilot", "vast"] = Field(
        "quotapilot", description="Default queries and labels: quotapilot's own metrics, or VAST's exporter's.")
    used_bytes_query: str | None = Field(None, description="PromQL for used bytes (default: by `source`).")
    hard_limit_bytes_query: str | None = Field(None, description="PromQL for the hard limit (replay).")
    used_inodes_query: str | None = Field(None, description="PromQL for used inodes (empty string: none).")
    cluster_label: str | None = Field(None, description="Label naming the cluster (default: cluster).")
    name_label: str | None = Field(None, description="Label naming the quota (default: target; vast: none).")
    path_label: str = Field("path", min_length=1, description="Label holding the quota path.")
    tenant_label: str | None = Field(
        None, pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$",
        description="Label naming the quota's tenant (default: vast: tenant_name; quotapilot: none; empty "
        "string: none). With name_label, a series of another tenant than the cluster's `tenant` (else the "
        "default one) is named '<tenant>:<name>', as the daemon's poll names that quota.")
    timeout_seconds: Seconds = Field(30.0, gt=0, description="Timeout of one Prometheus request.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries of one request on temporary errors.")
    backoff_base_seconds: Seconds = Field(1.0, gt=0, description="First retry delay (doubles, jittered).")
    retry_interval_seconds: Seconds = Field(
        600.0, gt=0, description="When the warm start fails (Prometheus down), try again this often.")
    start_timeout_seconds: Seconds = Field(
        20.0, gt=0, description="How long the daemon waits for the warm start before starting cold.")

    @model_validator(mode="after")
    def _auth_files(self) -> HistorySettings:
        if self.prometheus_url is not None and "@" in urllib.parse.urlsplit(self.prometheus_url).netloc:
            # it would be printed wherever the URL is: in logs, in errors
            raise FieldProblem("prometheus_url", "put no user or password in the URL: use basic_auth_user "
                               "with basic_auth_password_file, or bearer_token_file")
        if self.basic_auth_user is not None and self.basic_auth_password_file is None:
            raise FieldProblem("basic_auth_password_file", "required with basic_auth_user")
        if self.bearer_token_file is not None and self.basic_auth_user is not None:
            raise FieldProblem("bearer_token_file", "give a bearer token or basic auth, not both")
        _check_files(self, "bearer_token_file", "basic_auth_password_file")
        return self


def _parse_plan_duration(value: object) -> float:
    """A duration that may also be given in years (`"1y"` = 365 days) or months (`"6mo"` = 30
    days each): procurement and planning horizons are long."""
    if isinstance(value, str):
        text = value.strip().lower()
        for unit, seconds in (("mo", 30 * 86400.0), ("y", 365 * 86400.0)):
            number = text.removesuffix(unit).strip()
            if text.endswith(unit) and number.replace(".", "", 1).isdigit():
                return float(number) * seconds
    return parse_duration(value)


PlanSeconds = Annotated[float, BeforeValidator(_parse_plan_duration), Field(ge=0, le=MAX_SECONDS)]
"""A duration in seconds; config accepts `3600`, `"8w"`, `"6mo"`, `"1y"`; at most `MAX_SECONDS`
(ten years: the plan keeps a daily band to its horizon, and its dates must stay printable)."""


class CapacitySettings(Group):
    """`[capacity]`: pool capacity planning (per VMS cluster pool and per filesystem)."""

    thresholds: tuple[Ratio, ...] = Field(
        (0.8, 0.9), min_length=1, description="Planning thresholds (of usable capacity); the lowest is the "
        "one an expansion must be installed before.")
    procurement_lead_time: PlanSeconds | None = Field(
        None, description="Time from order to installed capacity, e.g. \"8w\"; with it the plan has an "
        "order-by date (the pessimistic threshold date minus this).")
    plan_horizon: PlanSeconds = Field(
        365 * 86400.0, gt=0, description="How long an expansion should last, e.g. \"1y\".")
    price_per_tb: float | None = Field(
        None, ge=0, description="Price of one TB (10^12 bytes) of usable capacity, once.")
    price_per_tb_month: float | None = Field(
        None, ge=0, description="Price of one TB of usable capacity per month (leases, cloud).")
    alert_lead_time: PlanSeconds = Field(
        30 * 86400.0, description="The \"order capacity by …\" alert fires this long before the order-by "
        "date (critical once it has passed).")
    alert_for: PlanSeconds = Field(
        86400.0, description="The order alert fires once its condition has held this long (a young "
        "forecast swings).")

    @model_validator(mode="after")
    def _thresholds_once(self) -> CapacitySettings:
        if len(set(self.thresholds)) != len(self.thresholds):  # as [forecast] thresholds: one plan row each
            raise FieldProblem("thresholds", "has a threshold twice")
        return self

    @model_validator(mode="after")
    def _lead_within_horizon(self) -> CapacitySettings:
        # the plan sees threshold crossings only up to now + plan_horizon: with a longer lead time,
        # a crossing past the horizon whose order is already due (crossing - lead < now) is never seen
        if self.procurement_lead_time is not None and self.procurement_lead_time > self.plan_horizon:
            raise FieldProblem("procurement_lead_time", "is longer than the plan horizon, so an order due for "
                               "a crossing beyond the horizon would be missed: must be <= plan_horizon")
        return self


class EventSettings(Group):
    """`[events]`: every decision (growth intent, result, blocked), alert transition and mode change
    as a JSON event (`deploy/events.schema.json`), delivered at least once through the outbox."""

    mqtt: MqttSettings | None = Field(
        None, description="Publish events on this broker as {topic_prefix}/events/<type>, QoS 1 "
        "(`[events.mqtt]`, the same fields as `[alerts.mqtt]`).")
    webhooks: tuple[WebhookSettings, ...] = Field(
        (), description="POST every event (as JSON) to these receivers (`[[events.webhooks]]`; format is ignored).")
    retry_backoffs_seconds: RetryBackoffs = Field(
        (1, 2, 5, 10, 30, 60, 120, 300), description="Delivery retry delays per sink (jittered); the last one repeats.")
    max_age_seconds: Seconds = Field(
        7 * 86400.0, description="Undelivered events older than this are dropped (and counted).")

    @model_validator(mode="after")
    def _webhook_names(self) -> EventSettings:
        _check_webhook_names(self.webhooks)
        return self


class FilesystemTarget(Group):
    """`[[filesystems]]`: a mounted filesystem watched like a quota (bytes and inodes from statvfs)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Short name: the `target` label in metrics and alert ids.")
    path: Path = Field(description="The mount point (or any directory on the filesystem).")
    tier: Literal["hot", "warm", "cold"] = Field("warm", description="Storage tier: the `tier` label; "
                                                 "selects the tier's alert thresholds.")
    warning_at: Ratio | None = Field(None, description="Utilization warning (default: the tier's).")
    critical_at: Ratio | None = Field(None, description="Utilization critical (default: the tier's).")
    command: tuple[str, ...] = Field(
        (), description="Growth action, run without a shell in enforce mode (e.g. [\"lvextend\", \"-L\", "
        "\"+{grow_bytes}B\", \"/dev/vg/data\"]); placeholders {name} {path} {grow_bytes} {new_size_bytes}. "
        "Empty: recommendations only (audited as would_grow).")
    command_timeout: Seconds = Field(60.0, gt=0, description="The growth command is killed after this.")

    @model_validator(mode="after")
    def _usable(self) -> FilesystemTarget:
        # statvfs and the command would resolve a relative path against the daemon's working
        # directory (`/` under systemd), not where check-config was run
        if not self.path.is_absolute():
            raise FieldProblem("path", f"must be an absolute path (a mount point), not {str(self.path)!r}")
        if self.warning_at is not None and self.critical_at is not None and self.warning_at > self.critical_at:
            raise FieldProblem("warning_at", "must be <= critical_at")
        for i, argument in enumerate(self.command):
            problem = _placeholder_problem(argument)
            if problem is not None:
                raise FieldProblem(f"command.{i}", problem)
        return self


COMMAND_PLACEHOLDERS = ("name", "path", "grow_bytes", "new_size_bytes")
"""What a `[[filesystems]] command` argument may name (`fs.growth.command_line` fills them in)."""


def _placeholder_problem(argument: str) -> str | None:
    """Why `argument.format(name=…, path=…, …)` would fail or insert something else (None: fine)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(argument) if field is not None]
        unknown = next((field for field in fields if field not in COMMAND_PLACEHOLDERS), None)
        if unknown is not None:
            return (f"unknown placeholder {{{unknown}}} in {argument!r} (known: "
                    + ", ".join(f"{{{name}}}" for name in COMMAND_PLACEHOLDERS) + ")")
        argument.format(**dict.fromkeys(COMMAND_PLACEHOLDERS, "0"))
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        return f"not a valid placeholder in {argument!r} ({exc}; write {{{{ and }}}} for literal braces)"
    return None


DEFAULT_TIER_THRESHOLDS = (0.8, 0.9)
"""(warning_at, critical_at) of every tier unless `[filesystem] tier_thresholds` says otherwise."""


class FilesystemSettings(Group):
    """`[filesystem]`: how filesystems are polled and tiers alerted."""

    statvfs_timeout_seconds: Seconds = Field(
        5.0, gt=0, description="A statvfs that takes longer (a hung NFS mount) makes the target unreachable.")
    tier_thresholds: dict[str, tuple[Ratio, Ratio]] = Field(
        default_factory=lambda: dict.fromkeys(("hot", "warm", "cold"), DEFAULT_TIER_THRESHOLDS),
        description="(warning_at, critical_at) of utilization per tier.")

    def thresholds(self, tier: str, warning_at: float | None = None,
                   critical_at: float | None = None) -> tuple[float, float]:
        """(warning_at, critical_at) of a filesystem of `tier`: those given (its own), else its tier's."""
        warning, critical = self.tier_thresholds.get(tier, DEFAULT_TIER_THRESHOLDS)
        return (float(warning if warning_at is None else warning_at),
                float(critical if critical_at is None else critical_at))

    @model_validator(mode="after")
    def _tiers(self) -> FilesystemSettings:
        for tier, (warning, critical) in self.tier_thresholds.items():
            if tier not in ("hot", "warm", "cold"):
                raise FieldProblem("tier_thresholds", f"unknown tier {tier!r} (hot, warm, cold)")
            if warning > critical:
                raise FieldProblem("tier_thresholds", f"{tier}: warning must be <= critical")
        return self


# ----------------------------------------------------------------------------------- the root
class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="QUOTAPILOT_", env_nested_delimiter="__", extra="forbid", frozen=True, allow_inf_nan=False)

    clusters: tuple[ClusterSettings, ...] = Field((), description="The VMSs to watch.")
    vast: VastSettings = Field(default_factory=VastSettings)
    poll: PollSettings = Field(default_factory=PollSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    views: tuple[ManagedView, ...] = ()
    history: HistorySettings = Field(default_factory=HistorySettings)
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    events: EventSettings = Field(default_factory=EventSettings)
    filesystems: tuple[FilesystemTarget, ...] = Field((), description="Mounted filesystems to watch.")
    filesystem: FilesystemSettings = Field(default_factory=FilesystemSettings)

    @model_validator(mode="after")
    def _cross_group(self) -> Settings:
        names = [c.name for c in self.clusters]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldProblem(f"clusters.{i}.name", f"duplicate cluster name {name!r}")
        for i, view in enumerate(self.views):
            if view.cluster is None and len(self.clusters) > 1:
                raise FieldProblem(f"views.{i}.cluster", "required when several clusters are configured")
            if view.cluster is not None and view.cluster not in names:
                raise FieldProblem(f"views.{i}.cluster", f"no cluster named {view.cluster!r}")
        # a filesystem's name is its target: its series, its alerts, the growth command run for it
        filesystem_names = [f.name for f in self.filesystems]
        for i, target in enumerate(self.filesystems):
            if target.name in filesystem_names[:i]:
                raise FieldProblem(f"filesystems.{i}.name", f"duplicate filesystem name {target.name!r}")
            # one threshold of its own, the other its tier's (both its own: `FilesystemTarget._usable`)
            warning, critical = self.filesystem.thresholds(target.tier, target.warning_at, target.critical_at)
            if warning > critical and target.critical_at is None:
                raise FieldProblem(f"filesystems.{i}.warning_at",
                                   f"must be <= the {target.tier} tier's critical_at, {critical:g}")
            if warning > critical and target.warning_at is None:
                raise FieldProblem(f"filesystems.{i}.critical_at",
                                   f"must be >= the {target.tier} tier's warning_at, {warning:g}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: the environment, then keyword overrides (the demo's, tests'), then the
        # `--config` TOML file (pydantic-settings merges them group by group).
        config_file = _CONFIG_FILE.get()
        if config_file is None:
            return (env_settings, init_settings)
        return (env_settings, init_settings, ConfigFileSource(settings_cls, config_file))


_CONFIG_FILE: ContextVar[Path | None] = ContextVar("quotapilot_config_file", default=None)
"""The `--config` file of the `load_settings()` call in progress (pydantic-settings builds its
sources in a classmethod, so the path travels beside the call)."""


class ConfigFileSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source for the `--config` file, with every way of failing to read
    it a `ConfigError` on `--config` (the library skips a missing file; a config named on the
    command line must exist)."""

    def __init__(self, settings_cls: type[BaseSettings], config_file: Path) -> None:
        if not config_file.exists():
            raise ConfigError("--config", f"no such file: {config_file}")
        if not config_file.is_file():
            raise ConfigError("--config", f"{config_file} cannot be read: not a regular file")
        try:
            super().__init__(settings_cls, toml_file=config_file)
        except OSError as exc:
            raise ConfigError("--config", f"{config_file} cannot be read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("--config", f"{config_file} is not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError("--config", f"{config_file}: arrays or tables nested too deeply") from None


def describe_validation_error(exc: ValidationError) -> list[ConfigError]:
    """Turn pydantic's errors into `ConfigError`s whose `field` is the dotted config path."""
    problems: list[ConfigError] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):
            prefix = ".".join(loc)
            field = f"{prefix}.{problem.field}" if prefix else problem.field
            reason = problem.reason
            # name the other field with the same prefix: "policy.grow_at: must be < policy.critical_at"
            for other in (*PolicyRules.model_fields, *ClusterSettings.model_fields,
                          *CapacitySettings.model_fields):
                if reason.endswith(f" {other}") and not reason.endswith(f", {other}") and prefix:
                    reason = reason[: -len(other)] + f"{prefix}.{other}"
        else:
            field = ".".join(loc) or "(root)"
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown setting"
        problems.append(ConfigError(field, reason))
    return problems


def read_config_file(config_file: Path) -> dict[str, Any]:
    """The TOML file as a dict, read as `load_settings` reads `--config` (`ConfigFileSource`); a
    missing or malformed file is a `ConfigError` on `--config`. The demo layers a user's file over
    its own settings with this."""
    return dict(ConfigFileSource(Settings, config_file).toml_data)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from an optional TOML file, the environment and `overrides`.

    Raises `ConfigError` naming the first problem (all of them in `.problems`) on invalid input.
    """
    token = _CONFIG_FILE.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first, *others = describe_validation_error(exc)
        raise ConfigError(first.field, first.reason, others=others) from None
    except (SettingsError, RecursionError) as exc:
        raise _environment_problem(exc) from None
    finally:
        _CONFIG_FILE.reset(token)


def _environment_problem(exc: SettingsError | RecursionError) -> ConfigError:
    """A `QUOTAPILOT_…` variable that pydantic-settings could not decode as JSON (a list or a
    group given whole, e.g. `QUOTAPILOT_CLUSTERS`), named with what is wrong with it."""
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    field = re.search(r'field "([^"]+)"', str(exc)) if isinstance(exc, SettingsError) else None
    wanted = prefix + field.group(1).upper() if field else prefix
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(wanted) or not value.lstrip().startswith(("[", "{")):
            continue
        try:
            json.loads(value)
        except RecursionError:
            return ConfigError(name, "JSON nested too deeply")
        except ValueError as err:
            return ConfigError(name, f"not valid JSON: {err}")
    if isinstance(exc, RecursionError):
        return ConfigError("(environment)", "a QUOTAPILOT_ value is nested too deeply")
    return ConfigError(wanted, f"cannot be decoded: {exc.__cause__ or exc}")


def systemd_notify_environment() -> tuple[str | None, int | None]:
    """`(NOTIFY_SOCKET, WATCHDOG_USEC)` as systemd sets them for a `Type=notify` service; the
    watchdog only when `WATCHDOG_PID` is unset or names this process."""
    socket_path = os.environ.get("NOTIFY_SOCKET") or None
    watchdog: int | None = None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is None or pid == str(os.getpid()):
        try:
            watchdog = int(os.environ.get("WATCHDOG_USEC", "")) or None
        except ValueError:
            watchdog = None
    return socket_path, watchdog
