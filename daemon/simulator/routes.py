"""The VMS REST endpoints the simulator serves, on aiohttp's router (`ROUTES`, a `RouteTableDef`).

Each path is served under `/api/latest/`, `/api/<vN>/` and `/api/` (no version), with or without
the trailing slash: `clusters/`, `clusters/{id}/`, `quotas/` (GET with `page`/`page_size` paging in
a DRF envelope and `path`/`name` filters, POST; both in the tenant an `X-Tenant-Name` header
names), `quotas/{id}/` (GET/PATCH/PUT/DELETE), `views/` (GET, POST), `views/{id}/`,
`viewpolicies/`, `viewpolicies/{id}/`, `monitors/ad_hoc_query/`; and
the built-in exporter's `/api/prometheusmetrics/quotas` (no version prefix, as on a VMS).
Handlers find the simulator's state under `request.app[SIM]`; authentication, faults and the
error answers are the middlewares' (`middlewares.py`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.simulator.answers import (
    bad,
    body_int,
    dumps,
    iso,
    json_body,
    json_response,
    list_response,
    not_allowed,
    not_found,
    parse_iso,
    raw_json_response,
)
from quotapilot.daemon.simulator.engine import Engine, EngineError, NotFound, parse_grace
from quotapilot.daemon.simulator.render import Renderer, quota_ids

log = get_logger(__name__)

API = r"/api{version:(?:/latest|/v\d+)?}"
"""The API prefix: `/api`, `/api/latest` or `/api/vN`."""
API_PATH = re.compile(r"^/api(?:/(?:latest|v\d+))?/(?P<rest>.*)$")
"""The same as a regex over a whole path (the middlewares count and fault requests by resource)."""
_SLASH = "{slash:/?}"
_ID = "{ident:[^/]+}"


@dataclass(frozen=True, slots=True)
class SimState:
    """What the handlers need: the engine, its renderer, and who made the request."""

    engine: Engine
    render: Renderer
    wall_offset: Callable[[], float]
    """Seconds the simulated VMS's wall clock is ahead of simulated time (scenario clock steps)."""


TENANT_HEADER = "X-Tenant-Name"
"""vastpy's tenant header: a listing holds that tenant's quotas only, a new quota is that tenant's."""

SIM = web.AppKey("simulator", SimState)
USER_KEY = web.RequestKey("sim_user", str)
"""`request[USER_KEY]`: the user the auth middleware authenticated (the write log's source)."""

ROUTES = web.RouteTableDef()

_TIME_FRAME = re.compile(r"^(\d+)([smhdDwWMY])$")
_FRAME_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "D": 86400, "w": 604800, "W": 604800,
                  "M": 30 * 86400, "Y": 365 * 86400}
_GRANULARITY = {"seconds": None, "minutes": 300.0, "hours": 3600.0, "days": 86400.0}
# analytics metrics the simulator answers (cluster-wide): bytes/s and files/s written
_WRITE_BW = "ProtoMetrics,proto_name=ProtoCommon,wr_bw"
_WRITE_IOPS = "ProtoMetrics,proto_name=ProtoCommon,wr_iops"


def source_of(request: web.Request) -> str:
    """The write log's source for a request: `api:<user>`."""
    return f"api:{request.get(USER_KEY, 'unknown')}"


def _ident(request: web.Request) -> int:
    try:
        return int(request.match_info["ident"])
    except ValueError as exc:
        raise not_found() from exc


# ------------------------------------------------------------------------------ clusters
@ROUTES.route("*", f"{API}/clusters{_SLASH}")
async def clusters(request: web.Request) -> web.StreamResponse:
    if request.method != "GET":
        raise not_allowed(request.method)
    state = request.app[SIM]
    return list_response(request, [state.engine.cluster_id], lambda ids: [dumps(state.render.cluster_json())])


@ROUTES.route("*", f"{API}/clusters/{_ID}{_SLASH}")
async def cluster(request: web.Request) -> web.StreamResponse:
    if request.method != "GET":
        raise not_allowed(request.method)
    state = request.app[SIM]
    if request.match_info["ident"] != str(state.engine.cluster_id):
        raise not_found()
    return json_response(state.render.cluster_json())


# ------------------------------------------------------------------------------ quotas
@ROUTES.route("*", f"{API}/quotas{_SLASH}")
async def quotas(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    e = state.engine
    if request.method == "GET":
        tenant = request.headers.get(TENANT_HEADER)
        return list_response(request, quota_ids(e, request.query, tenant), state.render.quotas)
    if request.method != "POST":
        raise not_allowed(request.method)
    body = await json_body(request)
    for required in ("name", "path"):
        if not isinstance(body.get(required), str) or not body.get(required):
            raise bad(required, "This field is required.")
    if "/" in body["name"]:
        raise bad("name", "must not contain '/'")
    limits = {k: body_int(body, k) for k in ("hard_limit", "soft_limit", "hard_limit_inodes",
                                              "soft_limit_inodes") if body.get(k) is not None}
    grace = 0.0
    if body.get("grace_period") not in (None, ""):
        try:
            grace = parse_grace(body["grace_period"])
        except ValueError as exc:
            raise bad("grace_period", str(exc)) from exc
    tenant = request.headers.get(TENANT_HEADER)
    if tenant is not None and tenant not in e.tenants.values():
        raise bad("tenant", f"no tenant named {tenant}")
    try:
        record = e.create_quota(
            name=body["name"], path=body["path"], grace_period_seconds=grace,
            hard_limit=limits.get("hard_limit", 0), soft_limit=limits.get("soft_limit", 0),
            hard_limit_inodes=limits.get("hard_limit_inodes", 0),
            soft_limit_inodes=limits.get("soft_limit_inodes", 0), source=source_of(request),
            tenant_id=1 if tenant is None else e.tenant(tenant))
    except EngineError as exc:
        raise bad(exc.field, exc.reason) from exc
    log.info("simulator.quota_created", quota_id=record.id, path=record.path)
    return json_response(state.render.quota_json(record), 201)


@ROUTES.get(f"/api/prometheusmetrics/quotas{_SLASH}")
async def prometheus_quotas(request: web.Request) -> web.StreamResponse:
    """The VMS's built-in Prometheus exporter, quota endpoint (text exposition format)."""
    text = request.app[SIM].render.prometheus_quotas()
    return web.Response(text=text, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def patch_quota(engine: Engine, quota_id: int, body: dict[str, Any], *, source: str,
                delayed: bool = False) -> None:
    """Validate a PATCH/PUT body like VMS and apply it (raises `ApiError` 400 naming the field).
    Also what a `delayed_apply` fault runs when the write finally lands."""
    changes: dict[str, Any] = {}
    for key in ("hard_limit", "soft_limit", "hard_limit_inodes", "soft_limit_inodes"):
        if key in body:
            changes[key] = 0 if body[key] is None else body_int(body, key)
    if "name" in body:
        if not isinstance(body["name"], str) or not body["name"] or "/" in body["name"]:
            raise bad("name", "must be a non-empty string without '/'")
        changes["name"] = body["name"]
    if "grace_period" in body:
        try:
            changes["grace_period_seconds"] = parse_grace(body["grace_period"] or 0)
        except ValueError as exc:
            raise bad("grace_period", str(exc)) from exc
    if "path" in body and quota_id in engine.quotas and body["path"] != engine.quotas[quota_id].path:
        raise bad("path", "the path of a quota cannot be changed")
    try:
        engine.patch_quota(quota_id, changes, source=source, delayed=delayed)
    except EngineError as exc:
        raise bad(exc.field, exc.reason) from exc
    log.info("simulator.quota_patched", quota_id=quota_id, source=source, delayed=delayed,
             **{k: v for k, v in changes.items() if k != "name"})


def existing_quota(engine: Engine, quota_id: int) -> None:
    """404 unless `quota_id` is a live quota (scenario or benchmark filler)."""
    if quota_id not in engine.quotas:
        try:
            engine.extra_idx_by_id(quota_id)
        except NotFound as exc:
            raise not_found() from exc


@ROUTES.route("*", f"{API}/quotas/{_ID}{_SLASH}")
async def quota(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    e = state.engine
    quota_id = _ident(request)
    existing_quota(e, quota_id)
    method = request.method
    if method == "GET":
        return raw_json_response(state.render.quotas([quota_id])[0])
    if method in ("PATCH", "PUT"):
        patch_quota(e, quota_id, await json_body(request), source=source_of(request))
        return raw_json_response(state.render.quotas([quota_id])[0])
    if method == "DELETE":
        e.delete_quota(quota_id, source=source_of(request))
        return web.Response(status=204)
    raise not_allowed(method)


# ------------------------------------------------------------------------------ views
@ROUTES.route("*", f"{API}/views{_SLASH}")
async def views(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    e = state.engine
    if request.method == "GET":
        q = request.query
        ids = [v.id for v in e.views.values() if q.get("path") in (None, v.path) and q.get("name") in (None, v.name)]
        return list_response(request, ids, lambda chunk: [dumps(state.render.view_json(i)) for i in chunk])
    if request.method != "POST":
        raise not_allowed(request.method)
    body = await json_body(request)
    if not isinstance(body.get("path"), str) or not body["path"]:
        raise bad("path", "This field is required.")
    if body.get("policy_id") is None:
        raise bad("policy_id", "This field is required.")
    policy_id = body_int(body, "policy_id")
    protocols = body.get("protocols", ["NFS"])
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise bad("protocols", "must be a list of protocol names")
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise bad("name", "must be a string")
    try:
        view = e.create_view(path=body["path"], policy_id=policy_id, name=name, protocols=protocols,
                             create_dir=bool(body.get("create_dir", True)))
    except EngineError as exc:
        raise bad(exc.field, exc.reason) from exc
    log.info("simulator.view_created", view_id=view.id, path=view.path)
    return json_response(state.render.view_json(view.id), 201)


@ROUTES.route("*", f"{API}/views/{_ID}{_SLASH}")
async def view(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    view_id = _ident(request)
    if view_id not in state.engine.views:
        raise not_found()
    if request.method != "GET":
        raise not_allowed(request.method)
    return json_response(state.render.view_json(view_id))


# ------------------------------------------------------------------------------ view policies
@ROUTES.route("*", f"{API}/viewpolicies{_SLASH}")
async def viewpolicies(request: web.Request) -> web.StreamResponse:
    if request.method != "GET":
        raise not_allowed(request.method)
    state = request.app[SIM]
    name = request.query.get("name")
    ids = [p.id for p in state.engine.policies.values() if name in (None, p.name)]
    return list_response(request, ids, lambda chunk: [dumps(state.render.policy_json(i)) for i in chunk])


@ROUTES.route("*", f"{API}/viewpolicies/{_ID}{_SLASH}")
async def viewpolicy(request: web.Request) -> web.StreamResponse:
    if request.method != "GET":
        raise not_allowed(request.method)
    state = request.app[SIM]
    policy_id = _ident(request)
    if policy_id not in state.engine.policies:
        raise not_found()
    return json_response(state.render.policy_json(policy_id))


# ------------------------------------------------------------------------------ monitors
@ROUTES.route("*", f"{API}/monitors/ad_hoc_query{_SLASH}")
async def monitors_ad_hoc_query(request: web.Request) -> web.StreamResponse:
    if request.method != "GET":
        raise not_allowed(request.method)
    state = request.app[SIM]
    return json_response(ad_hoc_query(state.engine, request.query, state.wall_offset()))


def ad_hoc_query(engine: Engine, query: Any, wall_offset: float = 0.0) -> dict[str, Any]:
    """`GET /monitors/ad_hoc_query/`: cluster write bandwidth (bytes/s) and write ops (files/s).

    Samples are the simulator's sub-steps (`granularity=seconds`, the default) or averages
    over 5 minutes / hours / days. `prop_list` in the answer names the columns of each
    sample: `["timestamp", "object_id", *metrics]`. Times in the query and the answer are the
    simulated VMS's wall clock (simulated time plus `wall_offset`, moved by scenario clock steps).
    """
    object_type = query.get("object_type")
    if object_type is None:
        raise bad("object_type", "This field is required.")
    if object_type != "cluster":
        raise bad("object_type", f"only 'cluster' is simulated, got {object_type!r}")
    now = engine.now
    if query.get("time_frame"):
        m = _TIME_FRAME.match(query["time_frame"])
        if m is None:
            raise bad("time_frame", f"not a time frame: {query['time_frame']!r} (e.g. 10m, 1h, 2D)")
        t_to = now
        t_from = now - int(m.group(1)) * _FRAME_SECONDS[m.group(2)]
    elif query.get("from_time"):
        t_from = parse_iso("from_time", query["from_time"]) - wall_offset
        t_to = parse_iso("to_time", query["to_time"]) - wall_offset if query.get("to_time") else now
    else:
        t_to, t_from = now, now - 600
    props = query.getall("prop_list", []) if hasattr(query, "getall") else query.get("prop_list", [])
    props = [p for item in props for p in str(item).split(";") if p] or [_WRITE_BW, _WRITE_IOPS]
    for p in props:
        if not (p.endswith(("wr_bw", "wr_iops"))):
            raise bad("prop_list", f"unknown metric {p!r} (the simulator answers *wr_bw and *wr_iops)")
    granularity = query.get("granularity", "seconds")
    if granularity not in _GRANULARITY:
        raise bad("granularity", "must be one of seconds, minutes, hours, days")
    aggregation = query.get("aggregation", "avg")
    if aggregation not in ("avg", "min", "max", "sum"):
        raise bad("aggregation", "must be one of avg, min, max, sum")
    times, written, files = engine.write_history(t_from, t_to)
    dt = engine.step_seconds
    bw, ops = written / dt, files / dt
    bucket = _GRANULARITY[granularity]
    if bucket is not None and len(times):
        keys = np.floor(times / bucket) * bucket
        uniq, first = np.unique(keys, return_index=True)
        ufunc = {"avg": np.add, "sum": np.add, "min": np.minimum, "max": np.maximum}[aggregation]
        counts = np.diff(np.append(first, len(times)))
        bw_r, ops_r = ufunc.reduceat(bw, first), ufunc.reduceat(ops, first)
        if aggregation == "avg":
            bw_r, ops_r = bw_r / counts, ops_r / counts
        times, bw, ops = uniq, bw_r, ops_r
    columns = [bw if p.endswith("wr_bw") else ops for p in props]
    rows = [[iso(t + wall_offset), engine.cluster_id, *(round(float(c[i]), 3) for c in columns)]
            for i, t in enumerate(times.tolist())]
    return {"prop_list": ["timestamp", "object_id", *props], "object_ids": [engine.cluster_id], "data": rows}

