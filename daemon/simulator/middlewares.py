"""The simulator's aiohttp middlewares, outermost first:

1. `errors`: every error answers like VMS (DRF JSON): `ApiError` as given, the router's 404/405
   as DRF's texts, and a simulator bug as JSON 500 (logged).
2. `faults`: for `/api/...` requests only: counts the request (`server.requests`), brings the
   engine up to the clock (scheduled events included), then applies the fault rules that match
   (`faults.py`): latency, an error answer instead of the real one, a dropped connection, a write
   applied late, or a changed answer.
3. `auth`: `/api/...` and `/_sim/...` need the API token (`Authorization: Api-Token ...`) or basic
   auth; the authenticated user is left in `request[USER_KEY]` (the write log's source). Faults
   come before auth, as a proxy or an overloaded VMS would answer before checking credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.simulator.answers import JSON, ApiError, json_response, not_allowed, not_found
from quotapilot.daemon.simulator.engine import Engine
from quotapilot.daemon.simulator.faults import FaultRule, Faults
from quotapilot.daemon.simulator.routes import API_PATH, USER_KEY, patch_quota, source_of

log = get_logger(__name__)


class FaultHost(Protocol):
    """What the fault and auth middlewares need of the server."""

    engine: Engine
    faults: Faults

    def count_request(self, key: str) -> None: ...

    def sync(self) -> None: ...

    async def wait(self, seconds: float) -> None: ...

    def authenticate(self, request: web.Request) -> str: ...


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, exc.status, exc.headers)
    except web.HTTPNotFound:
        return json_response(not_found().body, 404)
    except web.HTTPMethodNotAllowed:
        if request.path.startswith("/_sim/"):  # the admin endpoints answer an unknown method 404
            return json_response(not_found().body, 404)
        return json_response(not_allowed(request.method).body, 405)
    except web.HTTPException:
        raise
    except Exception:  # a simulator bug must still answer like VMS would: JSON, 500
        log.exception("simulator.request_failed", method=request.method, path=request.path)
        return json_response({"detail": "Internal server error."}, 500)


def make_faults(host: FaultHost) -> Middleware:
    @web.middleware
    async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = API_PATH.match(request.path)
        if match is None:
            return await handler(request)
        parts = [p for p in match.group("rest").split("/") if p]
        host.count_request(f"{request.method} {parts[0] if parts else ''}")
        host.sync()
        latency, fault = host.faults.pick(request.method, request.path, host.engine.now)
        if latency > 0:
            await host.wait(latency)
        if fault is None:
            return await handler(request)
        kind = fault.kind
        if kind == "delayed_apply":
            return await _delay_write(host, request, fault, parts)
        if kind == "applied_answer_lost":
            with contextlib.suppress(ApiError):
                await handler(request)  # carried out (or refused); the answer never leaves
            await host.wait(fault.seconds or 0.0)
            return _drop(request)
        if kind in ("truncated_page", "rewrite", "empty"):
            return _change_answer(await handler(request), fault)
        return await _fail(host, request, fault)
    return faults


def make_auth(host: FaultHost) -> Middleware:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/") or API_PATH.match(request.path):
            request[USER_KEY] = host.authenticate(request)  # raises ApiError 401
        return await handler(request)
    return auth


def _drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError  # aiohttp treats a cancelled handler on a lost connection quietly


async def _fail(host: FaultHost, request: web.Request, fault: FaultRule) -> web.StreamResponse:
    kind = fault.kind
    if kind == "error":
        return json_response({"detail": "Internal server error (simulated)."}, fault.status)
    if kind == "rate_limit":
        return json_response(
            {"detail": f"Request was throttled. Expected available in {fault.retry_after} seconds."}, 429,
            {"Retry-After": str(fault.retry_after)})
    if kind == "token_expired":
        return json_response({"detail": "Token has expired."}, 401)
    if kind == "malformed":
        return web.Response(body=b'{"detail": "ok", "results": [{"id": 1, "name": "cosm', content_type=JSON)
    if kind == "timeout":
        await host.wait(30.0 if fault.seconds is None else fault.seconds)
    return _drop(request)  # drop, and a timeout that has waited


async def _delay_write(host: FaultHost, request: web.Request, fault: FaultRule,
                       parts: list[str]) -> web.StreamResponse:
    """Accept a quota PATCH/PUT, apply it `apply_after` simulated seconds from now, drop the
    connection (after holding it `seconds`). Anything else is just dropped."""
    if request.method in ("PATCH", "PUT") and len(parts) == 2 and parts[0] == "quotas" and parts[1].isdigit():
        request[USER_KEY] = host.authenticate(request)
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            engine, quota_id, source = host.engine, int(parts[1]), source_of(request)
            due = engine.now + fault.apply_after

            def land() -> None:
                if quota_id not in engine.quotas:
                    log.info("simulator.delayed_write_lost", quota_id=quota_id, reason="quota deleted")
                    return
                try:
                    patch_quota(engine, quota_id, body, source=source, delayed=True)
                except ApiError as exc:
                    log.info("simulator.delayed_write_refused", quota_id=quota_id, error=str(exc))

            engine.schedule(due, land)
            log.info("simulator.write_delayed", quota_id=quota_id, due=due)
    await host.wait(fault.seconds or 0.0)
    return _drop(request)


def _change_answer(response: web.StreamResponse, fault: FaultRule) -> web.StreamResponse:
    if not isinstance(response, web.Response) or response.body is None or response.status >= 300:
        return response
    assert isinstance(response.body, bytes)
    payload = json.loads(response.body)
    items: list[Any] | None = None
    if isinstance(payload, list):
        items = payload
    elif isinstance(payload, dict) and isinstance(payload.get("results"), list):
        items = payload["results"]
    if fault.kind == "rewrite":
        assert fault.values is not None
        for obj in items if items is not None else [payload]:
            if isinstance(obj, dict) and (fault.match is None or fault.match in (obj.get("name"), obj.get("path"))):
                obj.update(fault.values)
        return json_response(payload, response.status)
    if items is None:
        return response
    keep = 0 if fault.kind == "empty" else len(items) // 2
    del items[keep:]
    if fault.kind == "empty" and isinstance(payload, dict):
        payload.update({"count": 0, "next": None, "previous": None})
    return json_response(payload, response.status)
