"""The pipeline API: `/api/v1` on the daemon's aiohttp server.

Read endpoints (targets, actions, reservations, the OpenAPI document) are open on the listen
address; every write endpoint needs `Authorization: Bearer <[http] write_token>`. Bodies are
JSON, validated with pydantic (400 naming the field), size-limited (413); an unknown target is
404; any unexpected error becomes a 500 JSON answer and a log line, never a crashed daemon. The
document `daemon/http/openapi.json` describes every route and is what `/api/v1/openapi.json` serves.

Targets are addressed by quota name (`/api/v1/targets/cosmos7-raw`), by URL-encoded path
(`/api/v1/targets/%2Fcosmos7%2Fraw`), or by `?path=/cosmos7/raw` (the `{ref}` segment is then
ignored; `by-path` reads well). With several clusters, `?cluster=` (or a `cluster` body field)
picks one when a name is ambiguous.

The handlers read the daemon's latest immutable snapshot (through `ApiDaemon`, a small
documented interface) and the store; the fit arithmetic is `daemon.preflight` (pure).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.snapshot import Snapshot
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.store.actions import ActionStore, query_actions
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.overrides import ANY, Override, OverrideStore
from quotapilot.daemon.store.reservations import (
    Reservation,
    ReservationStatus,
    ReservationStore,
    ReservedCapacity,
    new_reservation_id,
)
from quotapilot.daemon.units import parse_bytes, parse_duration
from quotapilot.forecasting import preflight as pf
from quotapilot.forecasting.planner import GrowthPolicy
from quotapilot.forecasting.types import (
    ActionOutcome,
    ClusterCapacity,
    Decision,
    Dimension,
    Observation,
    SeriesForecast,
    TargetId,
)

log = get_logger(__name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
MAX_BYTES = 2**62  # SQLite integers are 64-bit; nothing real is larger
MAX_TTL_SECONDS = 30 * 86400.0
DEFAULT_NEEDED_FOR_SECONDS = 3600.0
BODY_READ_TIMEOUT_SECONDS = 10.0


# ------------------------------------------------------------------------------ the daemon side
class ApiDaemon(Protocol):
    """What the API needs from the daemon (`daemon.app.Daemon` provides it)."""

    settings: Settings
    clock: Clock

    @property
    def db(self) -> Backend: ...

    @property
    def snapshot(self) -> Snapshot: ...

    def request_cycle(self, cluster: str) -> object:
        """Run `cluster`'s next cycle now (see `Daemon.request_cycle`)."""


@dataclass(frozen=True, slots=True)
class TargetRecord:
    """One quota as the latest snapshot knows it."""

    observation: Observation
    capacity: ClusterCapacity | None = None
    forecasts: Mapping[Dimension, SeriesForecast] = field(default_factory=dict)
    decisions: Mapping[Dimension, Decision] = field(default_factory=dict)
    last_action: ActionOutcome | None = None
    ingest_bytes_per_second: float | None = None
    dropped: bool = False

    @property
    def target(self) -> TargetId:
        return self.observation.target


def snapshot_records(snapshot: Snapshot | None) -> list[TargetRecord]:
    """The quotas of a snapshot that have an accepted observation (none before the first poll)."""
    if snapshot is None:
        return []
    records: list[TargetRecord] = []
    for cluster in snapshot.clusters.values():
        for state in cluster.targets.values():
            if state.observation is None:
                continue
            records.append(TargetRecord(
                observation=state.observation, capacity=cluster.capacity, forecasts=state.forecasts,
                decisions=state.decisions, last_action=state.last_action,
                ingest_bytes_per_second=state.ingest_rate_bytes_per_second, dropped=state.dropped is not None))
    return records


# --------------------------------------------------------------------------------- request models
# The accepted spellings are exactly the patterns in openapi.json, so the document and the code
# agree on what is valid (the schema fuzz test holds them to it).
_BYTE_STRING = re.compile(
    r"^([0-9]{1,18}(\.[0-9]{1,3})? ?B|[0-9]{1,15}(\.[0-9]{1,3})? ?Ki?B|[0-9]{1,12}(\.[0-9]{1,3})? ?Mi?B"
    r"|[0-9]{1,9}(\.[0-9]{1,3})? ?Gi?B|[0-9]{1,6}(\.[0-9]{1,3})? ?Ti?B|[0-9]{1,3}(\.[0-9]{1,3})? ?Pi?B)$")
_DURATION_STRING = re.compile(r"^[0-9]{1,6} ?(s|m|h|d)$")


def _bytes(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer number of bytes or a string like '40TB'")
    if isinstance(value, str) and not _BYTE_STRING.match(value):
        raise ValueError("not a byte size: use an integer or e.g. '40TB', '1.5TiB'")
    return parse_bytes(value)


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be seconds or a string like '6h'")
    if isinstance(value, str) and not _DURATION_STRING.match(value):
        raise ValueError("not a duration: use seconds or e.g. '90s', '15m', '6h', '2d'")
    return parse_duration(value)


ByteCount = Annotated[int, BeforeValidator(_bytes), Field(ge=0, le=MAX_BYTES)]
Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=MAX_TTL_SECONDS, allow_inf_nan=False)]
Count = Annotated[int, Strict(), Field(ge=0, le=MAX_BYTES)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreflightRequest(Body):
    target: StrictStr = Field(min_length=1, max_length=4096, description="Quota name or path.")
    cluster: StrictStr | None = Field(None, max_length=256)
    bytes: ByteCount
    inodes: Count | None = None
    needed_for: Duration | None = None


class ReservationRequest(Body):
    target: StrictStr = Field(min_length=1, max_length=4096)
    cluster: StrictStr | None = Field(None, max_length=256)
    bytes: ByteCount
    inodes: Count | None = None
    ttl: Annotated[float, BeforeValidator(_seconds), Field(gt=0, le=MAX_TTL_SECONDS, allow_inf_nan=False)]
    idempotency_key: StrictStr = Field(min_length=1, max_length=256)


class PauseRequest(Body):
    until: StrictStr | StrictFloat | StrictInt | None = Field(
        None, description="ISO 8601 time, a duration ('12h') or seconds.")
    reason: StrictStr = Field("", max_length=1000)


class KillSwitchRequest(Body):
    enabled: StrictBool
    reason: StrictStr = Field("", max_length=1000)


M = TypeVar("M", bound=BaseModel)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="quotapilot"'}


class ApiError(Exception):
    """An answer other than success, with a JSON body `{"error": {"code", "message", "field"?}}`."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return _json({"error": error}, status=self.status, headers=self.headers)


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body, allow_nan=False), status=status, content_type="application/json",
                        headers=headers)


# ----------------------------------------------------------------------------------- the API
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Api:
    """The `/api/v1` handlers of one daemon."""

    def __init__(self, daemon: ApiDaemon) -> None:
        self.daemon = daemon
        self.reservations = ReservationStore(daemon.db)
        self.overrides = OverrideStore(daemon.db)
        self.actions = ActionStore(daemon.db)
        self._write_token: str | None = None
        self._write_token_problem = "no write token configured: set [http] write_token or write_token_file"
        try:
            self._write_token = daemon.settings.http.resolved_write_token() or None
        except OSError as exc:
            self._write_token_problem = f"the write token file cannot be read: {exc.strerror}"
            log.warning("api.write_token_unreadable", error=str(exc))
        self._reserve_lock = asyncio.Lock()
        self._openapi: bytes | None = None

    @property
    def settings(self) -> Settings:
        return self.daemon.settings

    def now(self) -> float:
        return self.daemon.clock.now()

    # ---------------------------------------------------------------- plumbing
    def endpoint(self, handler: Handler, *, write: bool = False) -> Handler:
        """Wrap a handler: auth for writes, typed errors to JSON, nothing unexpected escapes."""

        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.Response:
            try:
                if write:
                    self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return exc.response()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the daemon outlives any request
                log.exception("api.failed", path=request.path, method=request.method, error=repr(exc))
                return ApiError(500, "internal", "internal error (logged by the daemon)").response()

        return wrapped

    def _authorize(self, request: web.Request) -> None:
        if self._write_token is None:
            raise ApiError(403, "writes_disabled", self._write_token_problem)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "write endpoints need 'Authorization: Bearer <token>'",
                           headers=_CHALLENGE)
        if not hmac.compare_digest(token.strip().encode(), self._write_token.encode()):
            raise ApiError(401, "unauthorized", "wrong token", headers=_CHALLENGE)

    async def _body(self, request: web.Request, model: type[M], *, optional: bool = False) -> M:
        """The JSON body as `model`; with `optional`, an empty body means `{}`."""
        limit = self.settings.http.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_SECONDS):
                while size <= limit:
                    chunk = await request.content.read(limit + 1 - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except TimeoutError:
            raise ApiError(408, "body_timeout", "the request body did not arrive in time") from None
        raw = b"".join(chunks)
        if len(raw) > limit:
            raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
        try:
            payload = json.loads(raw) if raw.strip() else ({} if optional else None)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_json", f"the body is not JSON: {exc}", field="body") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object", field="body")
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            field_name = ".".join(str(p) for p in first["loc"]) or "body"
            reason = first["msg"]
            if first["type"] == "extra_forbidden":
                reason = "unknown field"
            raise ApiError(400, "invalid", f"{field_name}: {reason}", field=field_name) from None

    def _find(self, ref: str, cluster: str | None) -> TargetRecord:
        records = [r for r in snapshot_records(self.daemon.snapshot) if cluster is None or r.target.cluster == cluster]
        key = "path" if "/" in ref else "name"
        matches = [r for r in records if getattr(r.target, key) == ref]
        if not matches and key == "name":
            matches = [r for r in records if r.target.path == ref]
        if not matches:
            where = f" in cluster {cluster!r}" if cluster else ""
            raise ApiError(404, "unknown_target", f"no target {ref!r}{where}", field="target")
        if len(matches) > 1:
            clusters = sorted(r.target.cluster for r in matches)
            raise ApiError(400, "ambiguous_target", f"{ref!r} exists in clusters {clusters}: give 'cluster'",
                           field="cluster")
        return matches[0]

    def _ref(self, request: web.Request) -> tuple[str, str | None]:
        ref = request.query.get("path") or request.match_info.get("ref", "")
        return ref, request.query.get("cluster")

    # ---------------------------------------------------------------- state
    async def _overrides(self) -> OverrideView:
        return await asyncio.to_thread(self._read_overrides, self.now())

    def _read_overrides(self, now: float) -> OverrideView:
        active = self.overrides.active(now)
        switch = next((o for o in active if o.is_kill_switch), None)
        return OverrideView(tuple(active), None if switch is None else Pause(switch.paused_until, switch.reason,
                                                                              switch.created_at))

    def _read_state(self, record: TargetRecord, now: float) -> pf.TargetState:
        """The target's state for `preflight.assess`: snapshot + store (run in a thread)."""
        target = record.target
        reserved = self.reservations.active_reservations(target.cluster, target.name, now)
        overrides = self._read_overrides(now)
        actions = self.actions
        last_growth = {dim: t for (name, dim), t in actions.last_growth_at(target.cluster).items()
                       if name == target.name}
        settings = self.settings
        pause = overrides.pause_of(target)
        stale_after = settings.poll.interval_seconds * settings.poll.stale_after_intervals
        rules = settings.policy.rules_for(target.name, target.path)
        return pf.TargetState(
            observation=record.observation, policy=GrowthPolicy.from_fields(rules), enforce=rules.mode == "enforce",
            forecasts=dict(record.forecasts), cluster=record.capacity,
            recent_rate_per_second=({} if record.ingest_bytes_per_second is None
                                    else {Dimension.BYTES: max(0.0, record.ingest_bytes_per_second)}),
            cluster_reserve_ratio=settings.policy.cluster_reserve_ratio,
            reserved_bytes=reserved.bytes, reserved_inodes=reserved.inodes,
            paused=pause is not None, paused_until=pause.until if pause else None,
            pause_reason=(pause.reason or "paused") if pause else "",
            kill_switch=settings.policy.kill_switch or overrides.kill_switch is not None,
            stale=record.dropped or now - record.observation.t > stale_after, last_growth_at=last_growth,
            actions_last_hour=actions.count_since(now - 3600.0),
            max_actions_per_hour=settings.policy.max_actions_per_hour)

    def _target_json(self, record: TargetRecord, reserved: ReservedCapacity, overrides: OverrideView,
                     now: float) -> dict[str, Any]:
        obs = record.observation
        target = obs.target
        rules = self.settings.policy.rules_for(target.name, target.path)
        pause = overrides.pause_of(target)
        bytes_forecast = record.forecasts.get(Dimension.BYTES)
        full = bytes_forecast.runway(1.0) if bytes_forecast is not None else None
        decision = record.decisions.get(Dimension.BYTES)
        action = record.last_action
        return {
            "cluster": target.cluster, "name": target.name, "path": target.path,
            "used_bytes": obs.used_bytes, "hard_limit_bytes": obs.hard_limit_bytes,
            "soft_limit_bytes": obs.soft_limit_bytes, "utilization_ratio": _finite(obs.utilization_ratio),
            "used_inodes": obs.used_inodes, "hard_limit_inodes": obs.hard_limit_inodes,
            "inode_utilization_ratio": _finite(obs.inode_utilization_ratio),
            "ingest_rate_bytes_per_second": _finite(record.ingest_bytes_per_second),
            "state": obs.state, "observed_at": obs.t, "data_age_seconds": max(0.0, now - obs.t),
            "runway_seconds": {q: _until(getattr(full, q), now) if full else None for q in ("p10", "p50", "p90")},
            "runways": [
                {"threshold_ratio": r.threshold_ratio,
                 **{f"{q}_seconds": _until(getattr(r, q), now) for q in ("p10", "p50", "p90")}}
                for r in (bytes_forecast.runways if bytes_forecast is not None else ())],
            "forecast_model": (bytes_forecast.forecast.model if bytes_forecast is not None
                               and bytes_forecast.forecast is not None else None),
            "mode": rules.mode,
            "paused": pause is not None, "paused_until": pause.until if pause else None,
            "pause_reason": pause.reason if pause else None,
            "reserved_bytes": reserved.bytes, "reserved_inodes": reserved.inodes, "reservations": reserved.count,
            "decision": None if decision is None else {
                "kind": decision.kind.value, "reason": decision.reason, "guard": decision.guard,
                "new_hard_limit_bytes": decision.new_hard, "urgency_seconds": _finite(decision.urgency_seconds)},
            "last_action": None if action is None else {
                "status": action.status.value, "at": action.t, "reason": action.reason,
                "dimension": action.dimension.value, "old_hard": action.old_hard, "new_hard": action.new_hard},
        }

    # ---------------------------------------------------------------- read endpoints
    async def list_targets(self, request: web.Request) -> web.Response:
        now = self.now()
        records = snapshot_records(self.daemon.snapshot)
        cluster = request.query.get("cluster")
        if cluster is not None:
            records = [r for r in records if r.target.cluster == cluster]
        totals = await asyncio.to_thread(self.reservations.active_totals, now)
        overrides = await self._overrides()
        targets = [self._target_json(r, totals.get((r.target.cluster, r.target.name), ReservedCapacity()),
                                     overrides, now) for r in records]
        targets.sort(key=lambda t: (t["cluster"], t["path"]))
        clusters = {}
        for r in records:
            if r.capacity is not None:
                cap = r.capacity
                clusters[cap.cluster] = {"cluster": cap.cluster, "usable_bytes": cap.usable_bytes,
                                         "used_bytes": cap.used_bytes, "free_bytes": cap.free_bytes,
                                         "observed_at": cap.t}
        return _json({"generated_at": now, "kill_switch": overrides.kill_switch is not None
                      or self.settings.policy.kill_switch,
                      "targets": targets, "clusters": sorted(clusters.values(), key=lambda c: c["cluster"])})

    async def get_target(self, request: web.Request) -> web.Response:
        ref, cluster = self._ref(request)
        record = self._find(ref, cluster)
        now = self.now()
        reserved = await asyncio.to_thread(
            self.reservations.active_reservations, record.target.cluster, record.target.name, now)
        return _json(self._target_json(record, reserved, await self._overrides(), now))

    async def list_actions(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
            since = float(request.query["since"]) if "since" in request.query else None
        except ValueError:
            raise ApiError(400, "invalid", "limit must be an integer and since epoch seconds", field="limit") from None
        if not 1 <= limit <= 1000 or (since is not None and not math.isfinite(since)):
            raise ApiError(400, "invalid", "limit must be 1..1000", field="limit")
        target = request.query.get("target")
        cluster = request.query.get("cluster")
        if target is not None:
            record = self._find(target, cluster)
            cluster, target = record.target.cluster, record.target.name
        rows = await asyncio.to_thread(query_actions, self.daemon.db, cluster=cluster, target=target, since=since,
                                       limit=limit)
        return _json({"actions": rows})

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = await asyncio.to_thread(OPENAPI_PATH.read_bytes)
        return web.Response(body=self._openapi, content_type="application/json")

    async def list_reservations(self, request: web.Request) -> web.Response:
        now = self.now()
        target = request.query.get("target")
        cluster = request.query.get("cluster")
        name = None
        if target is not None:
            record = self._find(target, cluster)
            cluster, name = record.target.cluster, record.target.name
        rows = await asyncio.to_thread(self.reservations.list_active, now, cluster=cluster, target=name)
        return _json({"reservations": [_reservation_json(r, now) for r in rows]})

    async def get_reservation(self, request: web.Request) -> web.Response:
        found = await asyncio.to_thread(self.reservations.get, request.match_info["id"])
        if found is None:
            raise ApiError(404, "unknown_reservation", "no such reservation", field="id")
        return _json(_reservation_json(found, self.now()))

    # ---------------------------------------------------------------- preflight & reservations
    async def preflight(self, request: web.Request) -> web.Response:
        body = await self._body(request, PreflightRequest)
        record = self._find(body.target, body.cluster)
        window = body.needed_for if body.needed_for is not None else DEFAULT_NEEDED_FOR_SECONDS
        now = self.now()
        assessment = await self._assess(record, body.bytes, body.inodes, window, now)
        return _json(_assessment_json(record, assessment, now))

    async def _assess(self, record: TargetRecord, request_bytes: int, request_inodes: int | None,
                      window: float, now: float) -> pf.Assessment:
        state = await asyncio.to_thread(self._read_state, record, now)
        return pf.assess(state, request_bytes=request_bytes, request_inodes=request_inodes,
                         window_seconds=window, now=now)

    async def reserve(self, request: web.Request) -> web.Response:
        body = await self._body(request, ReservationRequest)
        fingerprint = json.loads(json.dumps(body.model_dump(exclude={"idempotency_key"})))  # as stored
        # One at a time: two reservations must not both take the last room, and a retried key
        # must find the first answer stored.
        async with self._reserve_lock:
            stored = await asyncio.to_thread(self.reservations.find_by_key, body.idempotency_key)
            if stored is not None:
                if stored.request != fingerprint:
                    raise ApiError(422, "idempotency_key_reused",
                                   "this idempotency_key was used for a different request", field="idempotency_key")
                return _json(stored.response, status=stored.response_status)
            record = self._find(body.target, body.cluster)
            now = self.now()
            assessment = await self._assess(record, body.bytes, body.inodes, body.ttl, now)
            reservation = self._decide_reservation(body, fingerprint, record, assessment, now)
            stored = await asyncio.to_thread(self.reservations.record, reservation)
        log.info("reservation.answered", id=stored.id, target=record.target.key, bytes=body.bytes,
                 status=stored.status, http_status=stored.response_status)
        if stored.status == "granted" and assessment.plan.kind == "grow":
            self._trigger_growth(record.target.cluster)
        return _json(stored.response, status=stored.response_status)

    def _decide_reservation(self, body: ReservationRequest, fingerprint: dict[str, Any], record: TargetRecord,
                            assessment: pf.Assessment, now: float) -> Reservation:
        plan = assessment.plan
        granted = assessment.fits_now or plan.kind == "grow"
        status: ReservationStatus
        rid = new_reservation_id()
        common = {
            "id": rid, "idempotency_key": body.idempotency_key, "target": _target_ref(record.target),
            "bytes": body.bytes,
            "inodes": body.inodes or 0, "ttl_seconds": body.ttl, "created_at": now,
            "fits_now": assessment.fits_now, "fits_over_ttl": assessment.fits, "action": plan.as_json(),
        }
        if granted:
            status, http_status = "granted", 201
            response = {**common, "status": "granted", "expires_at": now + body.ttl}
        else:
            status = "refused"
            http_status = 507 if plan.guard in pf.HARD_GUARDS else 409
            response = {**common, "status": "refused", "expires_at": None, "guard": plan.guard,
                        "reason": plan.reason, "earliest_at": plan.earliest_at,
                        "error": {"code": "reservation_refused", "message": plan.reason}}
        return Reservation(
            id=rid, idempotency_key=body.idempotency_key, cluster=record.target.cluster, target=record.target.name,
            bytes=body.bytes, inodes=body.inodes or 0, status=status, response_status=http_status,
            response=json.loads(json.dumps(response, allow_nan=False)),
            request=fingerprint, created_at=now,
            expires_at=now + body.ttl if granted else now, released_at=None)

    def _trigger_growth(self, cluster: str) -> None:
        """Ask the daemon for an early cycle so the planner sees the new demand now, not at the
        next poll (`request_cycle` only wakes the cluster's poller: it never waits on VMS)."""
        try:
            self.daemon.request_cycle(cluster)
        except Exception as exc:  # the reservation stands; the next poll grows
            log.warning("reservation.trigger_failed", cluster=cluster, error=repr(exc))

    async def release(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        found = await asyncio.to_thread(self.reservations.release, rid, self.now())
        if found is None:
            raise ApiError(404, "unknown_reservation", "no such reservation", field="id")
        log.info("reservation.released", id=rid, status=found.status)
        return _json(_reservation_json(found, self.now()))

    # ---------------------------------------------------------------- overrides
    async def pause(self, request: web.Request) -> web.Response:
        body = await self._body(request, PauseRequest, optional=True)
        ref, cluster = self._ref(request)
        record = self._find(ref, cluster)
        now = self.now()
        until = _until_time(body.until, now)
        await asyncio.to_thread(self.overrides.pause, record.target.name, now=now, cluster=record.target.cluster,
                                until=until, reason=body.reason)
        log.info("target.paused", target=record.target.key, until=until, reason=body.reason)
        return _json({"target": _target_ref(record.target), "paused": True, "paused_until": until,
                      "reason": body.reason})

    async def resume(self, request: web.Request) -> web.Response:
        ref, cluster = self._ref(request)
        record = self._find(ref, cluster)
        await asyncio.to_thread(self._resume, record.target)
        log.info("target.resumed", target=record.target.key)
        return _json({"target": _target_ref(record.target), "paused": False, "paused_until": None, "reason": None})

    def _resume(self, target: TargetId) -> None:
        # a pause may have been set by name or by path, on this cluster or on all of them
        for key in {target.name, target.path}:
            self.overrides.resume(key, cluster=target.cluster)
            self.overrides.resume(key, cluster=ANY)

    async def get_killswitch(self, request: web.Request) -> web.Response:
        overrides = await self._overrides()
        return _json(_killswitch_json(self.settings, overrides))

    async def set_killswitch(self, request: web.Request) -> web.Response:
        body = await self._body(request, KillSwitchRequest)
        if body.enabled:
            await asyncio.to_thread(self.overrides.engage_kill_switch, now=self.now(), reason=body.reason)
        else:
            await asyncio.to_thread(self.overrides.release_kill_switch)
        log.info("killswitch.set", enabled=body.enabled, reason=body.reason)
        return _json(_killswitch_json(self.settings, await self._overrides()))


# ------------------------------------------------------------------------------- JSON shapes
def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _until(t: float | None, now: float) -> float | None:
    return None if t is None or not math.isfinite(t) else max(0.0, t - now)


def _target_ref(target: TargetId) -> dict[str, str]:
    return {"cluster": target.cluster, "name": target.name, "path": target.path}


def _killswitch_json(settings: Settings, overrides: OverrideView) -> dict[str, Any]:
    switch = overrides.kill_switch
    return {"enabled": settings.policy.kill_switch or switch is not None,
            "from_config": settings.policy.kill_switch,
            "reason": switch.reason if switch else None, "since": switch.since if switch else None}


def _reservation_json(r: Reservation, now: float) -> dict[str, Any]:
    return {"id": r.id, "idempotency_key": r.idempotency_key, "cluster": r.cluster, "target": r.target,
            "bytes": r.bytes, "inodes": r.inodes, "status": r.effective_status(now), "created_at": r.created_at,
            "expires_at": r.expires_at, "released_at": r.released_at}


def _assessment_json(record: TargetRecord, a: pf.Assessment, now: float) -> dict[str, Any]:
    inodes = next((d for d in a.dimensions if d.dimension is Dimension.INODES), None)
    earliest = now if a.fits else a.plan.earliest_at
    return {
        "target": _target_ref(record.target), "fits": a.fits, "fits_now": a.fits_now,
        "needed_for_seconds": a.window_seconds, "forecast_quantile": pf.FORECAST_QUANTILE,
        "bytes": a.bytes.as_json(), "inodes": inodes.as_json() if inodes else None,
        "action": a.plan.as_json(), "earliest_fit_at": earliest,
        "data_age_seconds": max(0.0, now - record.observation.t), "evaluated_at": now,
    }


def _until_time(value: str | float | None, now: float) -> float | None:
    """`until` as epoch seconds: an ISO 8601 time, or a duration from now."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                raise ApiError(400, "invalid", "until: an ISO time needs a timezone (e.g. Z)", field="until")
            if parsed.timestamp() <= now:
                raise ApiError(400, "invalid", "until: must be in the future", field="until")
            return parsed.timestamp()
    try:
        seconds = _seconds(value)
    except ValueError as exc:
        raise ApiError(400, "invalid", f"until: {exc}", field="until") from None
    if not math.isfinite(seconds) or seconds < 1 or seconds > 400 * 86400:
        raise ApiError(400, "invalid", "until: must be a duration between 1s and 400d", field="until")
    return now + seconds


# --------------------------------------------------------------------------- the overrides in force
@dataclass(frozen=True, slots=True)
class Pause:
    until: float | None
    reason: str
    since: float


@dataclass(frozen=True, slots=True)
class OverrideView:
    """The overrides in force at one time: pauses by (cluster, target name), and the kill switch."""

    overrides: tuple[Override, ...] = ()
    kill_switch: Pause | None = None

    def pause_of(self, target: TargetId) -> Pause | None:
        for override in self.overrides:
            if not override.is_kill_switch and override.applies_to(target):
                return Pause(override.paused_until, override.reason, override.created_at)
        return None


# ---------------------------------------------------------------------------------- routing
def add_api_routes(app: web.Application, daemon: ApiDaemon) -> Api:
    """Register every `/api/v1` route on `app` (called by `daemon.http`)."""
    api = Api(daemon)
    e = api.endpoint
    routes = [
        web.get("/api/v1/openapi.json", e(api.openapi)),
        web.get("/api/v1/targets", e(api.list_targets)),
        web.get("/api/v1/targets/{ref}", e(api.get_target)),
        web.post("/api/v1/targets/{ref}/pause", e(api.pause, write=True)),
        web.post("/api/v1/targets/{ref}/resume", e(api.resume, write=True)),
        web.get("/api/v1/actions", e(api.list_actions)),
        web.post("/api/v1/preflight", e(api.preflight)),
        web.get("/api/v1/reservations", e(api.list_reservations)),
        web.post("/api/v1/reservations", e(api.reserve, write=True)),
        web.get("/api/v1/reservations/{id}", e(api.get_reservation)),
        web.delete("/api/v1/reservations/{id}", e(api.release, write=True)),
        web.get("/api/v1/killswitch", e(api.get_killswitch)),
        web.post("/api/v1/killswitch", e(api.set_killswitch, write=True)),
    ]
    app.add_routes(routes)
    app[API_KEY] = api
    return api


API_KEY = web.AppKey("quotapilot.api", Api)
