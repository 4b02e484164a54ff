"""The `/api/v1` handlers: `Api` (one per daemon), the JSON error middleware, and
`add_api_routes`. Request bodies are `models`, read by `body.read_body`; answers are shaped by
`render`."""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import math
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.http.api.body import read_body
from quotapilot.daemon.http.api.models import (
    MAX_BYTES,
    PAUSE_MAX_SECONDS,
    KillSwitchRequest,
    PauseRequest,
    PreflightRequest,
    ReservationRequest,
    parse_seconds,
)
from quotapilot.daemon.http.api.openapi import OPENAPI_PATH
from quotapilot.daemon.http.api.render import (
    ApiError,
    OverrideView,
    Pause,
    TargetRecord,
    assessment_json,
    json_response,
    killswitch_json,
    reservation_json,
    snapshot_records,
    target_json,
    target_ref,
)
from quotapilot.daemon.http.api.write_token import WriteToken, WriteTokenUnavailable
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.runtime.leadership import Leadership
from quotapilot.daemon.runtime.snapshot import Snapshot
from quotapilot.daemon.settings import Settings
from quotapilot.daemon.store.actions import ActionStore, query_actions
from quotapilot.daemon.store.backend import Backend
from quotapilot.daemon.store.overrides import ANY, OverrideStore
from quotapilot.daemon.store.reservations import (
    Reservation,
    ReservationStatus,
    ReservationStore,
    ReservedCapacity,
    new_reservation_id,
)
from quotapilot.forecasting import preflight as pf
from quotapilot.forecasting.planner import GrowthPolicy
from quotapilot.forecasting.types import Dimension, TargetId

log = get_logger(__name__)

DEFAULT_NEEDED_FOR_SECONDS = 3600.0
M = TypeVar("M", bound=BaseModel)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="quotapilot"'}
WRITE_TOKEN_RETRY_AFTER_SECONDS = 10
"""`Retry-After` of a write refused because the token file is unreadable or empty (an operator
replacing it is usually done by then)."""
NOT_READY_RETRY_AFTER_SECONDS = 10
"""`Retry-After` (at most; the poll interval when shorter) of a request for a target the daemon
cannot know yet: a cluster it serves has had no good poll since start."""
NOT_READY_FAILED_POLLS = 3
"""After this many failed first polls of a cluster (none good since start), a target not found is
404 again, naming the cluster: the daemon cannot say more until it answers."""
BY_PATH = "by-path"
"""The `{ref}` that reads well with `?path=` (`/api/v1/targets/by-path?path=/cosmos7/raw`)."""


# ------------------------------------------------------------------------------ the daemon side
class ApiDaemon(Protocol):
    """What the API needs from the daemon (`runtime.daemon.Daemon` provides it)."""

    settings: Settings
    clock: Clock
    leadership: Leadership | None
    """Who leads which cluster (None before the daemon is entered)."""

    @property
    def db(self) -> Backend: ...

    @property
    def snapshot(self) -> Snapshot: ...

    def request_cycle(self, cluster: str) -> object:
        """Run `cluster`'s next cycle now (see `Daemon.request_cycle`)."""


# ----------------------------------------------------------------------------------- the API
Handler = Callable[[web.Request], Awaitable[web.Response]]


class Api:
    """The `/api/v1` handlers of one daemon."""

    def __init__(self, daemon: ApiDaemon) -> None:
        self.daemon = daemon
        self.reservations = ReservationStore(daemon.db)
        self.overrides = OverrideStore(daemon.db)
        self.actions = ActionStore(daemon.db)
        self._write_token = WriteToken(daemon.settings.http)
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
                    await self._authorize(request)
                return await handler(request)
            except ApiError as exc:
                return exc.response()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the daemon outlives any request
                log.exception("api.failed", path=request.path, method=request.method, error=repr(exc))
                return ApiError(500, "internal", "internal error (logged by the daemon)").response()

        return wrapped

    async def _authorize(self, request: web.Request) -> None:
        try:
            # read at use: a rotated file counts from the next request, a spoiled one refuses
            expected = await asyncio.to_thread(self._write_token.current)
        except WriteTokenUnavailable as exc:
            raise ApiError(503, "write_token_unavailable",
                           f"writes are refused: the daemon's write token file {exc.reason}",
                           headers={"Retry-After": str(WRITE_TOKEN_RETRY_AFTER_SECONDS)}) from None
        if expected is None:
            raise ApiError(403, "writes_disabled",
                           "no write token configured: set [http] write_token or write_token_file")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "unauthorized", "write endpoints need 'Authorization: Bearer <token>'",
                           headers=_CHALLENGE)
        # aiohttp hands over bytes that are not UTF-8 surrogate-escaped: back to those bytes, a
        # wrong token like any other (a plain `.encode()` raised, a 500 logging the token)
        presented = token.strip().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(presented, expected.encode("utf-8", "surrogateescape")):
            raise ApiError(401, "unauthorized", "wrong token", headers=_CHALLENGE)

    async def _body(self, request: web.Request, model: type[M], *, optional: bool = False) -> M:
        return await read_body(request, model, limit=self.settings.http.max_body_bytes, optional=optional)

    def _find(self, ref: str, cluster: str | None) -> TargetRecord:
        records = [r for r in snapshot_records(self.daemon.snapshot) if cluster is None or r.target.cluster == cluster]
        key = "path" if "/" in ref else "name"
        matches = [r for r in records if getattr(r.target, key) == ref]
        if not matches and key == "name":
            matches = [r for r in records if r.target.path == ref]
        if not matches:
            unpolled = self._check_ready(cluster)
            where = f" in cluster {cluster!r}" if cluster else ""
            unknown = f" (never polled since the start, failing: {unpolled})" if unpolled else ""
            raise ApiError(404, "unknown_target", f"no target {ref!r}{where}{unknown}", field="target")
        if len(matches) > 1:
            clusters = sorted(r.target.cluster for r in matches)
            raise ApiError(400, "ambiguous_target", f"{ref!r} exists in clusters {clusters}: give 'cluster'",
                           field="cluster")
        return matches[0]

    def _check_ready(self, cluster: str | None) -> list[str]:
        """A target not found while a cluster it may belong to has had no good poll since start
        (the daemon just (re)started, VMS slow) is not unknown: 503 `not_ready` with `Retry-After`
        (the pipeline client retries it), not a 404 its caller would give up on — until that
        cluster's first polls have failed `NOT_READY_FAILED_POLLS` times in a row (a revoked token,
        a VMS gone: the collector alert says so, and a mistyped name must not wait on it for
        ever). Returns those clusters, for the 404 to name."""
        snapshot = self.daemon.snapshot
        clusters = [] if snapshot is None else [c for c in snapshot.clusters.values()
                                                if cluster is None or c.name == cluster]
        unpolled = [c for c in clusters if c.health.last_success_t is None]
        waiting = sorted(c.name for c in unpolled if c.health.consecutive_failures < NOT_READY_FAILED_POLLS)
        if waiting:
            retry = max(1, min(NOT_READY_RETRY_AFTER_SECONDS, math.ceil(self.settings.poll.interval_seconds)))
            raise ApiError(503, "not_ready", f"cluster(s) {waiting} not polled yet since the daemon started: "
                           "the target may be there; retry shortly", headers={"Retry-After": str(retry)})
        return sorted(c.name for c in unpolled)

    def _ref(self, request: web.Request) -> tuple[str, str | None]:
        ref = request.query.get("path") or request.match_info.get("ref", "")
        if not request.query.get("path") and ref == BY_PATH:
            raise ApiError(400, "invalid", f"/{BY_PATH} needs ?path=/the/quota/path", field="path")
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
        settings = self.settings
        pause = overrides.pause_of(target)
        stale_after = settings.poll.interval_seconds * settings.poll.stale_after_intervals
        rules = settings.policy.rules_for(target.name, target.path)
        # the cooldown as the growth stage keys it: the quota's VMS id and path (a quota re-created
        # under the name inherits none), in the target's own mode (a would-grow starts none for
        # a target enforced)
        quota = (record.observation.quota_id, target.path)
        last_growth = {dim: t for (quota_id, path, dim), t
                       in actions.last_growth_by_quota(target.cluster, mode=rules.mode).items()
                       if (quota_id, path) == quota}
        return pf.TargetState(
            observation=record.observation, policy=GrowthPolicy.from_fields(rules), enforce=rules.mode == "enforce",
            forecasts=dict(record.forecasts), cluster=record.capacity,
            recent_rate_per_second=({} if record.ingest_bytes_per_second is None
                                    else {Dimension.BYTES: max(0.0, record.ingest_bytes_per_second)}),
            cluster_reserve_ratio=settings.policy.cluster_reserve_ratio,
            reserved_bytes=reserved.bytes, reserved_inodes=reserved.inodes, max_reserved=MAX_BYTES,
            paused=pause is not None, paused_until=pause.until if pause else None,
            pause_reason=(pause.reason or "paused") if pause else "",
            kill_switch=settings.policy.kill_switch or overrides.kill_switch is not None,
            stale=record.dropped or now - record.observation.t > stale_after, last_growth_at=last_growth,
            actions_last_hour=actions.rate_limit_count_since(now - 3600.0, mode=rules.mode),
            max_actions_per_hour=settings.policy.max_actions_per_hour)

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
        return json_response({"generated_at": now, "kill_switch": overrides.kill_switch is not None
                      or self.settings.policy.kill_switch,
                      "targets": targets, "clusters": sorted(clusters.values(), key=lambda c: c["cluster"])})

    async def get_target(self, request: web.Request) -> web.Response:
        ref, cluster = self._ref(request)
        record = self._find(ref, cluster)
        now = self.now()
        reserved = await asyncio.to_thread(
            self.reservations.active_reservations, record.target.cluster, record.target.name, now)
        return json_response(self._target_json(record, reserved, await self._overrides(), now))

    async def list_actions(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise ApiError(400, "invalid", "limit must be an integer 1..1000", field="limit")
        try:
            since = float(request.query["since"]) if "since" in request.query else None
        except ValueError:
            since = math.nan
        if since is not None and not math.isfinite(since):
            raise ApiError(400, "invalid", "since must be a time in epoch seconds", field="since")
        target = request.query.get("target")
        cluster = request.query.get("cluster")
        if target is not None:
            record = self._find(target, cluster)
            cluster, target = record.target.cluster, record.target.name
        rows = await asyncio.to_thread(query_actions, self.daemon.db, cluster=cluster, target=target, since=since,
                                       limit=limit)
        return json_response({"actions": rows})

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
        return json_response({"reservations": [reservation_json(r, now) for r in rows]})

    async def get_reservation(self, request: web.Request) -> web.Response:
        found = await asyncio.to_thread(self.reservations.get, request.match_info["id"])
        if found is None:
            raise ApiError(404, "unknown_reservation", "no such reservation", field="id")
        return json_response(reservation_json(found, self.now()))

    # ---------------------------------------------------------------- preflight & reservations
    async def preflight(self, request: web.Request) -> web.Response:
        body = await self._body(request, PreflightRequest)
        record = self._find(body.target, body.cluster)
        window = body.needed_for if body.needed_for is not None else DEFAULT_NEEDED_FOR_SECONDS
        now = self.now()
        assessment = await self._assess(record, body.bytes, body.inodes, window, now)
        return json_response(assessment_json(record, assessment, now))

    async def _assess(self, record: TargetRecord, request_bytes: int, request_inodes: int | None,
                      window: float, now: float) -> pf.Assessment:
        return await asyncio.to_thread(self._assessment, record, request_bytes, request_inodes, window, now)

    def _assessment(self, record: TargetRecord, request_bytes: int, request_inodes: int | None,
                    window: float, now: float) -> pf.Assessment:
        """The request judged against the target's state (store reads: runs in a thread)."""
        return pf.assess(self._read_state(record, now), request_bytes=request_bytes, request_inodes=request_inodes,
                         window_seconds=window, now=now)

    async def reserve(self, request: web.Request) -> web.Response:
        body = await self._body(request, ReservationRequest)
        fingerprint = json.loads(json.dumps(body.model_dump(exclude={"idempotency_key"})))  # as stored
        # One at a time: two reservations must not both take the last room (in this process; across
        # a fleet `ReservationStore.serialized`), and a retried key must find the first answer stored.
        async with self._reserve_lock:
            stored = await asyncio.to_thread(self.reservations.find_by_key, body.idempotency_key)
            if stored is not None and stored.replayed_at(self.now()):
                return self._replay(stored, fingerprint)
            record = self._find(body.target, body.cluster)
            answer, grows = await asyncio.to_thread(self._answer_reservation, body, fingerprint, record, stored)
        if answer.request != fingerprint:  # another request stored an answer for this key first
            return self._replay(answer, fingerprint)
        log.info("reservation.answered", id=answer.id, target=record.target.key, bytes=body.bytes,
                 status=answer.status, http_status=answer.response_status,
                 superseded=None if stored is None else stored.id)
        if answer.status == "granted" and grows:
            self._trigger_growth(record.target.cluster)
        return json_response(answer.response, status=answer.response_status)

    @staticmethod
    def _replay(stored: Reservation, fingerprint: dict[str, Any]) -> web.Response:
        """The stored answer to a key whose reservation is active; 422 for other values."""
        if stored.request != fingerprint:
            raise ApiError(422, "idempotency_key_reused",
                           "this idempotency_key was used for a different request", field="idempotency_key")
        return json_response(stored.response, status=stored.response_status)

    def _answer_reservation(self, body: ReservationRequest, fingerprint: dict[str, Any], record: TargetRecord,
                            ended: Reservation | None) -> tuple[Reservation, bool]:
        """Decide and store the answer (in a thread), serialised per cluster across the fleet, with
        the reservations read after the lock; the answer stored (another's, when one was stored
        for the key first) and whether it asks for growth. `ended`: the key's earlier answer,
        ended or refused, which gives the key up."""
        with self.reservations.serialized(record.target.cluster) as conn:
            now = self.now()
            assessment = self._assessment(record, body.bytes, body.inodes, body.ttl, now)
            reservation = self._decide_reservation(body, fingerprint, record, assessment, now)
            stored = self.reservations.record(reservation, conn=conn, supersede=ended)
        return stored, stored.id == reservation.id and assessment.plan.kind == "grow"

    def _decide_reservation(self, body: ReservationRequest, fingerprint: dict[str, Any], record: TargetRecord,
                            assessment: pf.Assessment, now: float) -> Reservation:
        plan = assessment.plan
        granted = assessment.fits_now or plan.kind == "grow"
        status: ReservationStatus
        rid = new_reservation_id()
        common = {
            "id": rid, "idempotency_key": body.idempotency_key, "target": target_ref(record.target),
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
        return json_response(reservation_json(found, self.now()))

    # ---------------------------------------------------------------- overrides
    async def pause(self, request: web.Request) -> web.Response:
        body = await self._body(request, PauseRequest, optional=True)
        ref, cluster = self._ref(request)
        record = self._find(ref, cluster)
        now = self.now()
        until = _until_time(body.until, now)
        target = record.target
        # by its name: a path may be several tenants' quotas'. A VMS rename is followed by the growth
        # stage (`stages/renames.py`). A pause of this quota stored by its path (88b95cb) is replaced,
        # unless the path is another listed quota's too: that pause holds that one as well
        await asyncio.to_thread(self.overrides.pause, target.name, now=now, cluster=target.cluster,
                                until=until, reason=body.reason, replacing=self._own_path_key(target))
        log.info("target.paused", target=record.target.key, until=until, reason=body.reason)
        return json_response({"target": target_ref(record.target), "paused": True, "paused_until": until,
                      "reason": body.reason})

    async def resume(self, request: web.Request) -> web.Response:
        ref, cluster = self._ref(request)
        record = self._find(ref, cluster)
        await asyncio.to_thread(self._resume, record.target)
        log.info("target.resumed", target=record.target.key)
        return json_response({"target": target_ref(record.target), "paused": False, "paused_until": None,
                              "reason": None})

    def _own_path_key(self, target: TargetId) -> tuple[str, ...]:
        """`target`'s path, as a key of its pauses (stored so by 88b95cb), when no other listed
        target of its cluster has that path (another tenant's quota); else none."""
        shared = any(r.target.cluster == target.cluster and r.target.path == target.path and r.target != target
                     for r in snapshot_records(self.daemon.snapshot))
        return () if shared else (target.path,)

    def _resume(self, target: TargetId) -> None:
        # a pause may have been set by name or (if the path is this target's alone) by path, on this
        # cluster or on all of them
        for key in {target.name, *self._own_path_key(target)}:
            self.overrides.resume(key, cluster=target.cluster)
            self.overrides.resume(key, cluster=ANY)

    async def get_leadership(self, request: web.Request) -> web.Response:
        """Per cluster: the lease's holder, epoch and remaining time as this instance last read
        them, and whether this instance leads it."""
        leadership = self.daemon.leadership
        return json_response({
            "generated_at": self.now(), "instance": None if leadership is None else leadership.holder,
            "clusters": [] if leadership is None else [role.as_json() for role in leadership.roles()]})

    async def get_killswitch(self, request: web.Request) -> web.Response:
        overrides = await self._overrides()
        return json_response(killswitch_json(self.settings, overrides))

    async def set_killswitch(self, request: web.Request) -> web.Response:
        body = await self._body(request, KillSwitchRequest)
        if body.enabled:
            await asyncio.to_thread(self.overrides.engage_kill_switch, now=self.now(), reason=body.reason)
        else:
            await asyncio.to_thread(self.overrides.release_kill_switch)
        log.info("killswitch.set", enabled=body.enabled, reason=body.reason)
        return json_response(killswitch_json(self.settings, await self._overrides()))

    def _target_json(self, record: TargetRecord, reserved: ReservedCapacity, overrides: OverrideView,
                     now: float) -> dict[str, Any]:
        rules = self.settings.policy.rules_for(record.target.name, record.target.path)
        return target_json(record, reserved, overrides, now, mode=rules.mode)


def _until_time(value: str | float | None, now: float) -> float | None:
    """`until` as epoch seconds: an ISO 8601 time, or a duration from now; at most
    `PAUSE_MAX_SECONDS` ahead either way."""
    if value is None or value == "":
        return None
    longest = f"{PAUSE_MAX_SECONDS // 86400}d"
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
            if parsed.timestamp() - now > PAUSE_MAX_SECONDS:
                raise ApiError(400, "invalid", f"until: must be at most {longest} ahead", field="until")
            return parsed.timestamp()
    try:
        seconds = parse_seconds(value)
    except ValueError as exc:
        raise ApiError(400, "invalid", f"until: {exc}", field="until") from None
    if not math.isfinite(seconds) or seconds < 1 or seconds > PAUSE_MAX_SECONDS:
        raise ApiError(400, "invalid", f"until: must be a duration between 1s and {longest}", field="until")
    return now + seconds


# ---------------------------------------------------------------------------------- routing
@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      ) -> web.StreamResponse:
    """aiohttp's own refusals under `/api/` (no such route, wrong method, body too large) in the
    API's JSON error shape, like every handler's; other paths are left alone."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")}
        return ApiError(exc.status, code, exc.reason, headers=headers).response()


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
        web.get("/api/v1/leadership", e(api.get_leadership)),
        web.post("/api/v1/killswitch", e(api.set_killswitch, write=True)),
    ]
    app.add_routes(routes)
    app.middlewares.append(json_errors)
    app[API_KEY] = api
    return api


API_KEY = web.AppKey("quotapilot.api", Api)
