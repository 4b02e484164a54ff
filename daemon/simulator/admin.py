"""The simulator's admin endpoints, outside `/api` (same credentials):

- `GET /_sim/faults` (the rules), `POST /_sim/faults` (add one: `{"kind": "error", "rate": 0.5}`),
  `DELETE /_sim/faults` (clear), `DELETE /_sim/faults/{id}`;
- `GET /_sim/summary`: the engine's ground truth (`Engine.summary()`);
- `GET /_sim/writes`: every quota write applied or refused, with its source (`truth.py`);
- `POST /_sim/token/expire`: the current API token stops working, a new one is issued.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from quotapilot.daemon.simulator.answers import bad, json_body, json_response
from quotapilot.daemon.simulator.engine import Engine
from quotapilot.daemon.simulator.faults import FaultError, Faults


class AdminHost(Protocol):
    engine: Engine
    faults: Faults

    def sync(self) -> None: ...

    def expire_token(self) -> str: ...


ADMIN = web.AppKey("simulator_admin", AdminHost)
ROUTES = web.RouteTableDef()


@ROUTES.get("/_sim/faults")
async def list_faults(request: web.Request) -> web.StreamResponse:
    return json_response([r.as_dict() for r in request.app[ADMIN].faults.rules])


@ROUTES.post("/_sim/faults")
async def add_fault(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    try:
        rule = request.app[ADMIN].faults.add_from_json(body)
    except (FaultError, TypeError) as exc:
        field = exc.field if isinstance(exc, FaultError) else "body"
        raise bad(field, str(exc)) from exc
    return json_response(rule.as_dict(), 201)


@ROUTES.delete("/_sim/faults")
async def clear_faults(request: web.Request) -> web.StreamResponse:
    request.app[ADMIN].faults.clear()
    return web.Response(status=204)


@ROUTES.delete("/_sim/faults/{rule_id}")
async def remove_fault(request: web.Request) -> web.StreamResponse:
    rule_id = request.match_info["rule_id"]
    if not rule_id.isdigit() or not request.app[ADMIN].faults.remove(int(rule_id)):
        raise web.HTTPNotFound()
    return web.Response(status=204)


@ROUTES.get("/_sim/summary")
async def summary(request: web.Request) -> web.StreamResponse:
    host = request.app[ADMIN]
    host.sync()
    return json_response(host.engine.summary())


@ROUTES.get("/_sim/writes")
async def writes(request: web.Request) -> web.StreamResponse:
    host = request.app[ADMIN]
    host.sync()
    return json_response([r.as_dict() for r in host.engine.writes.records])


@ROUTES.post("/_sim/token/expire")
async def expire_token(request: web.Request) -> web.StreamResponse:
    return json_response({"token": request.app[ADMIN].expire_token()})
