"""The VAST collector: the only module that talks to a VMS (through vastpy).

One `Collector` per cluster. vastpy is synchronous and opens a new TCP+TLS connection per
request, so every call runs in a bounded thread pool shared by all collectors, and one poll makes
a handful of requests: `GET /clusters/`, `GET /quotas/` page by page (never one request per
quota) and `GET /monitors/ad_hoc_query/` for the cluster's write bandwidth.

Errors are typed at this boundary: `VmsUnavailable` (a `TemporaryError`: network trouble, 5xx,
429, a body that is not JSON) is retried here with jittered exponential backoff that honours
`Retry-After`; `VmsRefused` (a `PermanentError`: 401, 403, 400, 404, ...) is not. Both carry a
short `reason` that becomes the `reason` label of `quotapilot_poll_errors_total`.

Samples that are malformed or implausible are dropped (never stored, never acted on), counted per
reason and logged once when a target starts being dropped and once when it recovers.

TLS is always verified: against `ca_file` when configured, else against the system trust store.
vastpy's default without `cert_file` is *no verification at all*; the only way to get that here is
`insecure_skip_tls_verify = true`, which is logged as a warning every time a collector starts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
import vastpy

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.errors import PermanentError, TemporaryError
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.pipeline_client import parse_retry_after
from quotapilot.daemon.runtime.cycle import DroppedSample, PollResult
from quotapilot.daemon.runtime.supervisor import sleep_unless
from quotapilot.daemon.settings import ClusterSettings, PollSettings, VastSettings
from quotapilot.forecasting.types import (
    POOL_TARGET,
    ClusterCapacity,
    Observation,
    TargetId,
    TargetKind,
)

log = get_logger(__name__)

T = TypeVar("T")

BANDWIDTH_PROPS: tuple[str, ...] = ("ProtoMetrics,proto_name=ProtoCommon,wr_bw",)
"""The analytics metric asked of `/monitors/ad_hoc_query/` for the cluster's write bandwidth
(bytes per second). When the answer names other columns, the first one that looks like a write
bandwidth (`bw` and `wr`/`write` in its name) is used."""

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class VmsUnavailable(TemporaryError):
    """The VMS did not answer usefully this time: retry later. `reason` is a metric label."""

    def __init__(self, message: str, *, reason: str, delay: float | None = None) -> None:
        super().__init__(message, delay=delay)
        self.reason = reason


class VmsRefused(PermanentError):
    """The VMS refused the request; retrying will not help. `status` is the HTTP status (if any)."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def error_reason(exc: BaseException) -> str:
    """The metric label for an error raised by a collector call."""
    return getattr(exc, "reason", None) or type(exc).__name__.lower()


# ------------------------------------------------------------------------------ vastpy client
class _VmsClient(vastpy.VASTClient):  # type: ignore[misc]
    """vastpy's client with what a daemon needs and vastpy 0.3.22 lacks: a timeout per request,
    no hidden urllib3 retries (ours honour `Retry-After`), connections kept alive between requests,
    and the response headers kept on `RESTFailure` (as `.headers`) so `Retry-After` can be read.
    URL building, auth headers, JSON handling and the error type are vastpy's own. The settings
    are class attributes because vastpy builds child clients with `self.__class__(...)`;
    `make_client` makes one class per collector."""

    timeout_seconds: float = 30.0
    verify_system_trust: bool = False
    pool_size: int = 4
    pools: dict[str, urllib3.PoolManager]
    """One connection pool per client class (i.e. per cluster), shared by its child clients and
    the pool threads (urllib3 pools are thread-safe): vastpy's new TCP+TLS connection per request
    costs more than the request itself."""

    def _pool_manager(self) -> urllib3.PoolManager:
        pools = type(self).pools
        manager = pools.get("vms")
        if manager is None:
            common: dict[str, Any] = {"timeout": urllib3.Timeout(total=self.timeout_seconds),
                                      "retries": False, "maxsize": self.pool_size}
            if self._cert_file:
                manager = urllib3.PoolManager(ca_certs=self._cert_file, server_hostname=self._cert_server_name,
                                              **common)
            elif self.verify_system_trust:
                manager = urllib3.PoolManager(ssl_context=system_trust_context(), **common)
            else:  # insecure_skip_tls_verify: explicit, warned about at start
                manager = urllib3.PoolManager(cert_reqs="CERT_NONE", **common)
                urllib3.disable_warnings(category=urllib3.exceptions.InsecureRequestWarning)
            manager = pools.setdefault("vms", manager)
        return manager

    def request(self, method: str, fields: dict[str, Any] | None = None,
                data: dict[str, Any] | None = None) -> Any:
        pm = self._pool_manager()
        if self._token:
            headers = {"authorization": f"Api-Token {self._token}"}
        else:
            headers = urllib3.make_headers(basic_auth=self._user + ":" + self._password)
        if self._tenant:
            headers["X-Tenant-Name"] = self._tenant
        body = None
        if data:
            headers["Content-Type"] = "application/json"
            body = json.dumps(data).encode("utf-8")
        field_list: list[tuple[str, Any]] | None = None
        if fields:
            field_list = []
            for key, value in fields.items():
                if isinstance(value, list):
                    field_list.extend((key, item) for item in value)
                else:
                    field_list.append((key, value))
        version_path = f"/{self._version}" if self._version else ""
        url = f"https://{self._address}/{self._url}{version_path}/"
        response = pm.request(method, url, headers=headers, fields=field_list, body=body)
        if response.status not in vastpy.SUCCESS_CODES:
            failure = vastpy.RESTFailure(method, self._url, field_list, response.status, response.data)
            failure.headers = dict(response.headers)
            raise failure
        payload = response.data
        if "application/json" in response.headers.get("Content-Type", "") and payload:
            return json.loads(payload.decode("utf-8"))
        return payload


def system_trust_context() -> ssl.SSLContext:
    """Verification against the system's CA store; certifi's bundle when the system has none (a
    slim container). Never an unverified context."""
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        try:
            import certifi
        except ImportError:
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


def make_client(cluster: ClusterSettings, timeout_seconds: float, pool_size: int = 4) -> vastpy.VASTClient:
    """A vastpy client for one cluster, verifying TLS unless explicitly told not to; up to
    `pool_size` connections are kept alive."""
    resolved = cluster.resolved_ca_file()
    ca_file = None if resolved is None else str(resolved)
    client_class = type("VmsClient", (_VmsClient,), {
        "timeout_seconds": timeout_seconds,
        "verify_system_trust": ca_file is None and not cluster.insecure_skip_tls_verify,
        "pool_size": pool_size,
        "pools": {},
    })
    if cluster.insecure_skip_tls_verify:
        ca_file = None
    credentials: dict[str, Any]
    token = cluster.resolved_token()
    if token is not None:
        credentials = {"token": token}
    else:
        credentials = {"user": cluster.user, "password": cluster.resolved_password()}
    return client_class(address=cluster.address, cert_file=ca_file, tenant=cluster.tenant,
                        version=cluster.api_version, **credentials)


def _retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    value = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    return parse_retry_after(value, time.time())


POLL_ERROR_REASONS: tuple[str, ...] = (
    "throttled", "server_error", "http_error", "auth", "not_found", "refused", "tls", "connection",
    "timeout", "truncated", "malformed", "unexpected")
"""Every `reason` a failed poll can have (`classify`); the metric starts each at 0."""
DROP_REASONS: tuple[str, ...] = ("malformed", "negative", "zero_limit", "implausible", "went_backwards")
"""Every `reason` a sample can be dropped for (`_Bad`); the metric starts each at 0."""


def classify(exc: BaseException) -> TemporaryError | PermanentError:
    """Translate what vastpy/urllib3 raised into our typed errors."""
    if isinstance(exc, vastpy.RESTFailure):
        status = int(exc.status)
        body = exc.data.decode("utf-8", "replace")[:200] if isinstance(exc.data, bytes) else str(exc.data)
        message = f"{exc.method} {exc.url}: HTTP {status} {body}"
        if status in _RETRYABLE_STATUS:
            reason = "throttled" if status == 429 else "server_error" if status >= 500 else "http_error"
            return VmsUnavailable(message, reason=reason,
                                  delay=_retry_after_seconds(getattr(exc, "headers", None)))
        reason = "auth" if status in (401, 403) else "not_found" if status == 404 else "refused"
        return VmsRefused(message, reason=reason, status=status)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return VmsRefused(f"certificate not accepted: {exc}", reason="tls")
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # (a ConnectTimeoutError subclass)
        return VmsUnavailable(str(exc), reason="connection")
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return VmsUnavailable(str(exc), reason="timeout")
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | OSError):
        return VmsUnavailable(str(exc), reason="connection")
    if isinstance(exc, _Truncated):
        return VmsUnavailable(f"truncated listing: {exc}", reason="truncated")
    if isinstance(exc, ValueError | UnicodeDecodeError):  # body said JSON but is not
        return VmsUnavailable(f"malformed response: {exc}", reason="malformed")
    return VmsUnavailable(f"{type(exc).__name__}: {exc}", reason="unexpected")


# ------------------------------------------------------------------------------ validation
@dataclass(frozen=True, slots=True)
class _Accepted:
    t: float
    used_bytes: int
    used_inodes: int | None


def _drr(value: object) -> float | None:
    """VMS's data reduction ratio, when it is a plausible one (>= 1 is not required: a pool of
    incompressible data with metadata overhead may report slightly below 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    ratio = float(value)
    return ratio if math.isfinite(ratio) and ratio > 0 else None


def _int_field(record: Mapping[str, Any], key: str, *, required: bool) -> int | None:
    """An integer field of a VMS record; raises `_Bad` when malformed."""
    value = record.get(key)
    if value is None:
        if required:
            raise _Bad("malformed", f"{key} missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad("malformed", f"{key}={value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad("malformed", f"{key}={value!r} is not finite")
    if value < 0:
        raise _Bad("negative", f"{key}={value}")
    return int(value)


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------------------ the collector
class Collector:
    """Reads one VMS. `poll()` never raises for VMS trouble: it returns a `PollResult` with
    `error` set. The write/read helpers for the actuator and the API raise `TemporaryError` /
    `PermanentError` after the same retry policy."""

    def __init__(self, cluster: ClusterSettings, vast: VastSettings, poll: PollSettings, clock: Clock,
                 executor: Executor, *, rng: random.Random | None = None,
                 client_factory: Callable[[ClusterSettings, float, int], Any] = make_client,
                 stopping: asyncio.Event | None = None) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self._vast = vast
        self._poll = poll
        self._clock = clock
        self._executor = executor
        self._rng = rng or random.Random()
        self._stopping = stopping if stopping is not None else asyncio.Event()
        """Set on shutdown: retries stop waiting and the last error is raised at once."""
        self._client_factory = client_factory
        self._client = client_factory(cluster, vast.request_timeout_seconds, vast.threads)
        self._credential = self._current_credential()
        self.requests_made = 0
        self.dropped_total: Counter[str] = Counter()
        """Dropped samples per reason since start (the `quotapilot_samples_dropped_total` counter)."""
        self.poll_errors_total: Counter[str] = Counter()
        """Failed polls per reason since start (the `quotapilot_poll_errors_total` counter)."""
        self._accepted: dict[str, _Accepted] = {}
        self._suspect_backwards: set[str] = set()
        self._declining: set[str] = set()
        self._drop_state: dict[str, str] = {}
        self._bandwidth_failing = False

    def log_tls_mode(self) -> None:
        """Say how this collector verifies the VMS; a loud warning when it does not."""
        if self.cluster.insecure_skip_tls_verify:
            log.warning("tls.verification_disabled", cluster=self.name, address=self.cluster.address,
                        hint="insecure_skip_tls_verify is set: the VMS certificate is NOT verified")
        elif self.cluster.ca_file is None:
            log.info("tls.verified", cluster=self.name, address=self.cluster.address, trust="system store")
        else:
            log.info("tls.verified", cluster=self.name, address=self.cluster.address, trust=str(self.cluster.ca_file))

    # -------------------------------------------------------------- requests with retries
    async def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run `fn(client)` (one blocking vastpy call) in the pool, retrying temporary failures.
        `fn` gets the current client, so a retry after a credential reload uses the new one."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            self.requests_made += 1
            try:
                return await loop.run_in_executor(self._executor, fn, self._client)
            except Exception as exc:
                error = classify(exc)
                if isinstance(error, VmsRefused) and error.reason == "auth" and self._reload_credentials():
                    continue  # the token (or password) file was rotated: try the new one at once
                if isinstance(error, PermanentError) or attempt >= self._vast.max_retries:
                    raise error from exc
                delay = self._backoff(attempt, error.delay)
                log.debug("request.retried", cluster=self.name, request=what, attempt=attempt + 1,
                          delay_seconds=round(delay, 3), error=str(error)[:200])
                attempt += 1
                if not await sleep_unless(self._clock, delay, self._stopping):
                    raise error from exc

    def _current_credential(self) -> str | None:
        try:
            return self.cluster.resolved_token() or self.cluster.resolved_password()
        except OSError:
            return None

    def _reload_credentials(self) -> bool:
        """After a 401: when the secret file now holds another credential, use it (True)."""
        if self.cluster.token_file is None and self.cluster.password_file is None:
            return False
        credential = self._current_credential()
        if credential is None or credential == self._credential:
            return False
        self._client = self._client_factory(self.cluster, self._vast.request_timeout_seconds,
                                            self._vast.threads)
        self._credential = credential
        log.info("credentials.reloaded", cluster=self.name)
        return True

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Jittered exponential backoff (half to full of the doubling delay); a server's
        `Retry-After` is honoured (capped at `backoff_max_seconds`)."""
        cap = self._vast.backoff_max_seconds
        if retry_after is not None:
            return min(cap, retry_after)
        ceiling: float = min(cap, self._vast.backoff_base_seconds * 2.0 ** attempt)
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _get(self, resource: str, **params: Any) -> Any:
        return await self._call(f"GET {resource}", lambda client: client[resource].get(**params))

    # -------------------------------------------------------------- the poll
    async def poll(self) -> PollResult:
        """One poll: cluster, every quota (paged), write bandwidth. Never raises for VMS errors."""
        t = self._clock.now()
        started = time.perf_counter()  # real elapsed time of the IO (the clock may be virtual)
        requests_before = self.requests_made
        try:
            # sequential on purpose: three requests, and no half-finished sibling to clean up
            clusters = await self._get("clusters")
            quotas = await self._list_all("quotas")
            bandwidth = await self._bandwidth()
        except (TemporaryError, PermanentError) as exc:
            self.poll_errors_total[error_reason(exc)] += 1
            return PollResult(cluster=self.name, t=t, requests=self.requests_made - requests_before,
                              duration_seconds=time.perf_counter() - started,
                              error=f"{error_reason(exc)}: {exc}")
        observations: list[Observation] = []
        dropped: list[DroppedSample] = []
        capacity = self._capacity(clusters, t, observations, dropped)
        seen: set[str] = set()
        for record in quotas:
            self._quota(record, t, seen, observations, dropped)
        rates = self._rates(observations, dropped)
        for sample in dropped:
            self.dropped_total[sample.reason] += 1
        self._log_drop_transitions(observations, dropped)
        return PollResult(
            cluster=self.name, t=t, observations=tuple(observations), capacity=capacity,
            ingest_bytes_per_second=bandwidth, dropped=tuple(dropped),
            requests=self.requests_made - requests_before,
            duration_seconds=time.perf_counter() - started,
            ingest_rates=rates)

    async def _list_all(self, resource: str, **filters: Any) -> list[dict[str, Any]]:
        """Every object of a list endpoint, following `next` page by page. A page shorter than
        the envelope's `count` implies is refetched like any temporary failure."""
        page_size = self._vast.page_size
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            fetch = functools.partial(_fetch_page, resource, page, page_size, filters)
            body = await self._call(f"GET {resource} page {page}", fetch)
            if isinstance(body, list):  # a VMS that ignores paging answers the plain array
                return [item for item in body if isinstance(item, dict)]
            items.extend(item for item in body["results"] if isinstance(item, dict))
            if not body.get("next") or not body["results"]:
                return _unique_by_id(items)
            page += 1
            if page > body["count"] // page_size + 2:
                raise VmsUnavailable(f"GET {resource}: more pages than count={body['count']} allows",
                                     reason="malformed")

    async def _bandwidth(self) -> float | None:
        """The cluster's latest write bandwidth (bytes/s); None when VMS cannot say (not fatal)."""
        try:
            body = await self._get("monitors/ad_hoc_query", object_type="cluster",
                                   time_frame=self._poll.bandwidth_time_frame,
                                   prop_list=list(BANDWIDTH_PROPS))
            value = _parse_bandwidth(body)
        except (TemporaryError, PermanentError) as exc:
            if not self._bandwidth_failing:
                log.warning("bandwidth.failed", cluster=self.name, error=str(exc)[:200])
            self._bandwidth_failing = True
            return None
        if self._bandwidth_failing:
            log.info("bandwidth.recovered", cluster=self.name)
            self._bandwidth_failing = False
        return value

    # -------------------------------------------------------------- samples
    def _capacity(self, clusters: Any, t: float, observations: list[Observation],
                  dropped: list[DroppedSample]) -> ClusterCapacity | None:
        record = clusters[0] if isinstance(clusters, list) and clusters else clusters
        if isinstance(clusters, dict) and isinstance(clusters.get("results"), list):
            record = clusters["results"][0] if clusters["results"] else None
        try:
            if not isinstance(record, dict):
                raise _Bad("malformed", "GET /clusters/ returned no cluster")
            usable = _int_field(record, "usable_capacity_bytes", required=True)
            free = _int_field(record, "free_usable_capacity", required=True)
            allocated = _int_field(record, "quotas_allocated_capacity", required=False)
            assert usable is not None and free is not None
            if usable == 0:
                raise _Bad("zero_limit", "usable_capacity_bytes=0")
            if free > usable:
                raise _Bad("implausible", f"free_usable_capacity={free} > usable_capacity_bytes={usable}")
            used = usable - free
            self._check_backwards(POOL_TARGET, used, None)
        except _Bad as bad:
            dropped.append(DroppedSample(self.name, POOL_TARGET, bad.reason, bad.detail))
            return None
        state = record.get("state")
        capacity = ClusterCapacity(cluster=self.name, t=t, usable_bytes=usable, used_bytes=used,
                                   free_bytes=free, quotas_allocated_bytes=allocated,
                                   state=state if isinstance(state, str) else "UNKNOWN",
                                   drr=_drr(record.get("drr")))
        observations.append(Observation(
            target=TargetId(self.name, POOL_TARGET, "/", TargetKind.POOL), t=t,
            used_bytes=used, hard_limit_bytes=usable, state=capacity.state))
        return capacity

    def _quota(self, record: dict[str, Any], t: float, seen: set[str],
               observations: list[Observation], dropped: list[DroppedSample]) -> None:
        name = record.get("name")
        label = name if isinstance(name, str) and name else f"id:{record.get('id')}"
        try:
            path = record.get("path")
            if not isinstance(name, str) or not name:
                raise _Bad("malformed", "name missing")
            if not isinstance(path, str) or not path.startswith("/"):
                raise _Bad("malformed", f"path={path!r}")
            if name in seen or name == POOL_TARGET:
                raise _Bad("malformed", f"duplicate quota name {name!r}")
            used = _int_field(record, "used_capacity", required=True)
            hard = _int_field(record, "hard_limit", required=True)
            soft = _int_field(record, "soft_limit", required=False)
            used_inodes = _int_field(record, "used_inodes", required=False)
            hard_inodes = _int_field(record, "hard_limit_inodes", required=False)
            soft_inodes = _int_field(record, "soft_limit_inodes", required=False)
            quota_id = _int_field(record, "id", required=False)
            assert used is not None
            if hard == 0:
                raise _Bad("zero_limit", "hard_limit=0")
            if soft is not None and hard is not None and soft > hard:
                raise _Bad("implausible", f"soft_limit={soft} > hard_limit={hard}")
            state = record.get("state")
            if state is not None and not isinstance(state, str):
                raise _Bad("malformed", f"state={state!r}")
            grace = record.get("grace_period")
            self._check_backwards(name, used, used_inodes)
        except _Bad as bad:
            dropped.append(DroppedSample(self.name, label, bad.reason, bad.detail))
            return
        seen.add(name)
        observations.append(Observation(
            target=TargetId(self.name, name, path), t=t, used_bytes=used, hard_limit_bytes=hard,
            soft_limit_bytes=soft or None, used_inodes=used_inodes,
            hard_limit_inodes=hard_inodes or None, soft_limit_inodes=soft_inodes or None,
            state=state or "OK", quota_id=quota_id,
            grace_period=grace if isinstance(grace, str) else None))

    def _check_backwards(self, name: str, used: int, used_inodes: int | None) -> None:
        """A counter that falls by more than `tolerance_ratio` is suspect and its sample dropped;
        the next sample is accepted whatever it says: still down confirms a real delete (temp
        swept), back up shows the dropped one was a glitch; while a confirmed decline goes on,
        each further fall is believed. One bad reading never becomes truth."""
        previous = self._accepted.get(name)
        if previous is None:
            return
        tolerance = self._poll.tolerance_ratio
        fell = used < previous.used_bytes * (1 - tolerance)
        if not fell and used_inodes is not None and previous.used_inodes is not None:
            fell = used_inodes < previous.used_inodes * (1 - tolerance)
        if not fell:
            self._suspect_backwards.discard(name)
            self._declining.discard(name)
            return
        if name in self._suspect_backwards or name in self._declining:
            self._suspect_backwards.discard(name)
            self._declining.add(name)  # a confirmed decline: further falls are believed
            return
        self._suspect_backwards.add(name)
        raise _Bad("went_backwards", f"used {previous.used_bytes} -> {used}")

    def _rates(self, observations: list[Observation], dropped: list[DroppedSample]) -> dict[str, float]:
        """Net ingest (bytes/s) of each target since its previous accepted sample. Forgets the
        targets VMS no longer lists."""
        rates: dict[str, float] = {}
        accepted: dict[str, _Accepted] = {}
        for obs in observations:
            name = obs.target.name
            previous = self._accepted.get(name)
            if previous is not None and obs.t > previous.t:
                rates[name] = (obs.used_bytes - previous.used_bytes) / (obs.t - previous.t)
            accepted[name] = _Accepted(obs.t, obs.used_bytes, obs.used_inodes)
        refused = {sample.target for sample in dropped}
        for name in refused:
            if name in self._accepted and name not in accepted:
                accepted[name] = self._accepted[name]
        self._accepted = accepted
        self._suspect_backwards = {n for n in self._suspect_backwards if n in accepted or n in refused}
        self._drop_state = {n: reason for n, reason in self._drop_state.items() if n in accepted or n in refused}
        self._declining &= set(accepted)
        return rates

    def _log_drop_transitions(self, observations: list[Observation], dropped: list[DroppedSample]) -> None:
        """One log line when a target starts being dropped (or for another reason), one when it
        is accepted again — never one per poll."""
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

    # -------------------------------------------------------------- actuator / API calls
    async def get_quota(self, quota_id: int) -> dict[str, Any]:
        """`GET /quotas/{id}/` (re-read before acting)."""
        return _as_dict(await self._get(f"quotas/{quota_id}"), "quota")

    async def list_quotas(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every quota (paged), or the ones on `path`."""
        filters = {} if path is None else {"path": path}
        return await self._list_all("quotas", **filters)

    async def patch_quota(self, quota_id: int, *, hard_limit: int | None = None,
                          soft_limit: int | None = None, hard_limit_inodes: int | None = None,
                          soft_limit_inodes: int | None = None) -> dict[str, Any]:
        """`PATCH /quotas/{id}/` with only the given limits."""
        changes = {k: v for k, v in {"hard_limit": hard_limit, "soft_limit": soft_limit,
                                     "hard_limit_inodes": hard_limit_inodes,
                                     "soft_limit_inodes": soft_limit_inodes}.items() if v is not None}
        if not changes:
            raise ValueError("patch_quota needs at least one limit")
        body = await self._call(f"PATCH quotas/{quota_id}",
                                lambda client: client[f"quotas/{quota_id}"].patch(**changes))
        return body if isinstance(body, dict) else await self.get_quota(quota_id)

    async def create_quota(self, name: str, path: str, hard_limit: int, soft_limit: int,
                           hard_limit_inodes: int | None = None) -> dict[str, Any]:
        """`POST /quotas/`."""
        fields: dict[str, Any] = {"name": name, "path": path, "hard_limit": hard_limit,
                                  "soft_limit": soft_limit}
        if hard_limit_inodes is not None:
            fields["hard_limit_inodes"] = hard_limit_inodes
        return _as_dict(await self._call("POST quotas", lambda client: client["quotas"].post(**fields)), "quota")

    async def list_views(self) -> list[dict[str, Any]]:
        """Every view (paged)."""
        return await self._list_all("views")

    async def create_view(self, path: str, name: str, policy_id: int,
                          protocols: list[str] | tuple[str, ...]) -> dict[str, Any]:
        """`POST /views/` (creating the directory)."""
        fields = {"path": path, "name": name, "policy_id": policy_id, "protocols": list(protocols),
                  "create_dir": True}
        return _as_dict(await self._call("POST views", lambda client: client["views"].post(**fields)), "view")

    async def find_view_policy(self, name: str) -> dict[str, Any] | None:
        """The view policy called `name`, or None."""
        body = await self._get("viewpolicies", name=name)
        candidates = body.get("results", []) if isinstance(body, dict) else body
        if not isinstance(candidates, list):
            raise VmsUnavailable("GET viewpolicies: not a list", reason="malformed")
        for policy in candidates:
            if isinstance(policy, dict) and policy.get("name") == name:
                return policy
        return None


def _unique_by_id(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A listing without the repeats a page shift causes (an object deleted while paging moves
    the next page's first object onto the previous page)."""
    seen: set[Any] = set()
    unique = []
    for item in items:
        ident = item.get("id")
        if ident is not None and ident in seen:
            continue
        seen.add(ident)
        unique.append(item)
    return unique


class _Truncated(ValueError):
    """A page with fewer objects than its envelope promises."""


def _fetch_page(resource: str, page: int, page_size: int, filters: Mapping[str, Any], client: Any) -> Any:
    """GET one page and check it (in the pool thread, so a bad page is retried like any failure)."""
    body = client[resource].get(page=page, page_size=page_size, **filters)
    if isinstance(body, list):
        return body
    if not isinstance(body, dict) or not isinstance(body.get("results"), list) \
            or isinstance(body.get("count"), bool) or not isinstance(body.get("count"), int):
        raise ValueError(f"page {page}: not a page envelope (results, count)")
    expected = min(page_size, max(0, body["count"] - (page - 1) * page_size))
    if len(body["results"]) < expected:
        raise _Truncated(f"page {page}: {len(body['results'])} objects, count={body['count']} implies {expected}")
    return body


def _as_dict(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise VmsUnavailable(f"expected a {what} object, got {type(body).__name__}", reason="malformed")
    return body


def _parse_bandwidth(body: Any) -> float | None:
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
