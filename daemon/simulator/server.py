"""The simulator's HTTPS server: the VMS REST endpoints quotapilot uses, answered from an `Engine`.

```python
async with SimulatorServer(scenario="cosmos7", clock=VirtualClock(), seed=0) as sim:
    client = vastpy.VASTClient(address=sim.address, token=sim.token, cert_file=str(sim.ca_file))
```

Served under `/api/latest/`, `/api/<vN>/` and `/api/` (no version): `clusters/`, `quotas/`
(`page`/`page_size` paging with a DRF envelope, `path`/`name` filters), `quotas/{id}/`
(GET/PATCH/DELETE), `views/`, `views/{id}/`, `viewpolicies/`, `monitors/ad_hoc_query/`.
Outside `/api` (same credentials): `/_sim/faults` (GET list, POST add a rule, DELETE clear),
`/_sim/faults/{id}` (DELETE), `/_sim/summary` (the engine's ground truth), `/_sim/token/expire`
(POST: the current API token stops working, a new one is issued).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hmac
import ipaddress
import json
import re
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import numpy as np
from aiohttp import web

from quotapilot.daemon.clock import Clock, SystemClock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.simulator.engine import TB, Engine, EngineError, NotFound, QuotaRecord, grace_text, parse_grace
from quotapilot.daemon.simulator.faults import FaultError, FaultRule, Faults
from quotapilot.daemon.simulator.scenario import Scenario, load_scenario
from quotapilot.daemon.simulator.tls import TlsFiles, make_certificates, server_context

log = get_logger(__name__)

_API_PREFIX = re.compile(r"^/api(?:/(?:latest|v\d+))?/(?P<rest>.*)$")
_JSON = "application/json"
Handler = Callable[[web.Request, list[str]], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: status and a DRF-style JSON body."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


def _bad(field: str, reason: str) -> ApiError:
    return ApiError(400, {field: [reason]})


def _not_found() -> ApiError:
    return ApiError(404, {"detail": "Not found."})


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_response(payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(payload).encode(), status=status, content_type=_JSON, headers=headers)


def _raw_json_response(text: str, status: int = 200) -> web.Response:
    return web.Response(body=text.encode(), status=status, content_type=_JSON)


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(field: str, text: str) -> float:
    try:
        value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(field, f"not an ISO time: {text!r} (e.g. 2021-01-15T13:41:52Z)") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


_TIME_FRAME = re.compile(r"^(\d+)([smhdDwWMY])$")
_FRAME_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "D": 86400, "w": 604800, "W": 604800,
                  "M": 30 * 86400, "Y": 365 * 86400}
_GRANULARITY = {"seconds": None, "minutes": 300.0, "hours": 3600.0, "days": 86400.0}
# analytics metrics the simulator answers (cluster-wide): bytes/s and files/s written
_WRITE_BW = "ProtoMetrics,proto_name=ProtoCommon,wr_bw"
_WRITE_IOPS = "ProtoMetrics,proto_name=ProtoCommon,wr_iops"


def _int_param(query: Mapping[str, str], name: str, default: int | None, minimum: int = 1) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise _bad(name, f"A valid integer is required, got {raw!r}.") from exc
    if value < minimum:
        raise _bad(name, f"Ensure this value is greater than or equal to {minimum}.")
    return value


def _body_int(body: Mapping[str, Any], name: str) -> int:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(name, f"A valid non-negative integer is required, got {value!r}.")
    return value


class SimulatorServer:
    """The built-in VMS simulator: an `Engine` behind an HTTPS aiohttp server on loopback.

    `start()`/`stop()` may be repeated: a restarted server keeps its port, CA, token and state.
    """

    def __init__(self, scenario: str | Path | Scenario = "cosmos7", *, clock: Clock | None = None, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0, extra_quotas: int = 0,
                 state_dir: Path | None = None, user: str = "admin", password: str | None = None,
                 token: str | None = None) -> None:
        self.scenario = load_scenario(scenario)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.seed = seed
        self.host = host
        self.port = port
        self.engine = Engine(self.scenario, seed=seed, start=self.clock.now(), extra_quotas=extra_quotas)
        self.faults = Faults(seed)
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.token = token if token is not None else secrets.token_hex(20)
        self._expired_tokens: set[str] = set()
        self._state_dir_arg = state_dir
        self._state_dir: Path | None = None
        self._own_state_dir = False
        self._tls: TlsFiles | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._prefix_cache: dict[int, tuple[tuple[str, str, int], str]] = {}
        self.requests: Counter[str] = Counter()  # "GET quotas" -> count, for tests and benchmarks

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` as vastpy's `address` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The private CA (PEM) that signed the server certificate: vastpy's `cert_file`."""
        if self._tls is None:
            raise RuntimeError("the simulator has not been started")
        return self._tls.ca_file

    @property
    def running(self) -> bool:
        return self._runner is not None

    def client_info(self) -> dict[str, Any]:
        """Everything a client needs (what `quotapilot simulator --json` prints)."""
        return {"address": self.address, "ca_file": str(self.ca_file), "token": self.token,
                "user": self.user, "password": self.password, "scenario": self.scenario.name}

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._tls is None:
            if self._state_dir_arg is None:
                self._state_dir = Path(tempfile.mkdtemp(prefix="quotapilot-sim-"))
                self._own_state_dir = True
            else:
                self._state_dir = self._state_dir_arg
            hostnames, addresses = ["localhost"], ["127.0.0.1", "::1"]
            try:
                if ipaddress.ip_address(self.host).compressed not in addresses:
                    addresses.append(self.host)
            except ValueError:
                hostnames.append(self.host)
            self._tls = make_certificates(self._state_dir, tuple(hostnames), tuple(addresses))
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=1024**2)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # vastpy drops each connection after one request; idle ones need not linger long
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5,
                               keepalive_timeout=15.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=server_context(self._tls),
                           reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        log.info("simulator.started", address=self.address, scenario=self.scenario.name, seed=self.seed)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()
        log.info("simulator.stopped", address=self.address)

    async def close(self) -> None:
        """Stop and remove the temporary state directory (if the simulator made it)."""
        await self.stop()
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._tls = None
            self._state_dir = None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def expire_token(self) -> str:
        """The current API token stops working (401 "Token has expired."); returns the new one."""
        self._expired_tokens.add(self.token)
        self.token = secrets.token_hex(20)
        return self.token

    # -- request handling -------------------------------------------------------------------------

    def _auth_error(self, request: web.Request) -> ApiError | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "api-token" and value:
            if hmac.compare_digest(value, self.token):
                return None
            if value in self._expired_tokens:
                return ApiError(401, {"detail": "Token has expired."})
            return ApiError(401, {"detail": "Invalid token."})
        if scheme.lower() == "basic" and value:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return ApiError(401, {"detail": "Invalid basic header."})
            if hmac.compare_digest(user, self.user) and hmac.compare_digest(password, self.password):
                return None
            return ApiError(401, {"detail": "Invalid username/password."})
        return ApiError(401, {"detail": "Authentication credentials were not provided."},
                        {"WWW-Authenticate": 'Basic realm="api"'})

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            auth = self._auth_error(request)
            if request.path.startswith("/_sim/"):
                if auth is not None:
                    raise auth
                return await self._admin(request)
            match = _API_PREFIX.match(request.path)
            if match is None:
                raise _not_found()
            parts = [p for p in match.group("rest").split("/") if p]
            resource = parts[0] if parts else ""
            self.requests[f"{request.method} {resource}"] += 1
            self.engine.advance_to(self.clock.now())
            latency, fault = self.faults.pick(request.method, request.path, self.engine.now)
            if latency > 0:
                await self._wait(latency)
            if fault is not None and fault.kind != "truncated_page":
                return await self._apply_fault(request, fault)
            if auth is not None:
                raise auth
            response = await self._route(request, parts)
            if fault is not None:  # truncated_page
                return self._truncate(response)
            return response
        except ApiError as exc:
            return _json_response(exc.body, exc.status, exc.headers)
        except Exception:  # a simulator bug must still answer like VMS would: JSON, 500
            log.exception("simulator.request_failed", method=request.method, path=request.path)
            return _json_response({"detail": "Internal server error."}, 500)

    async def _wait(self, seconds: float) -> None:
        """Real waiting that ends early when the server stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _apply_fault(self, request: web.Request, fault: FaultRule) -> web.StreamResponse:
        kind = fault.kind
        if kind == "error":
            return _json_response({"detail": "Internal server error (simulated)."}, fault.status)
        if kind == "rate_limit":
            return _json_response(
                {"detail": f"Request was throttled. Expected available in {fault.retry_after} seconds."}, 429,
                {"Retry-After": str(fault.retry_after)})
        if kind == "token_expired":
            return _json_response({"detail": "Token has expired."}, 401)
        if kind == "malformed":
            return web.Response(body=b'{"detail": "ok", "results": [{"id": 1, "name": "cosm', content_type=_JSON)
        if kind == "timeout":
            await self._wait(30.0 if fault.seconds is None else fault.seconds)
        # drop (and a timeout that has waited): close the connection without an answer
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # aiohttp treats a cancelled handler on a lost connection quietly

    @staticmethod
    def _truncate(response: web.StreamResponse) -> web.StreamResponse:
        if not isinstance(response, web.Response) or response.body is None:
            return response
        assert isinstance(response.body, bytes)
        payload = json.loads(response.body)
        if isinstance(payload, list):
            payload = payload[: len(payload) // 2]
        elif isinstance(payload, dict) and isinstance(payload.get("results"), list):
            payload["results"] = payload["results"][: len(payload["results"]) // 2]
        else:
            return response
        return _json_response(payload, response.status)

    async def _route(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        method = request.method
        if not parts:
            raise _not_found()
        resource, rest = parts[0], parts[1:]
        table: dict[str, Handler] = {
            "clusters": self._clusters, "quotas": self._quotas, "views": self._views,
            "viewpolicies": self._viewpolicies, "monitors": self._monitors,
        }
        handler = table.get(resource)
        if handler is None or len(rest) > 1:
            raise _not_found()
        if method not in ("GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"):
            raise self._not_allowed(method)
        return await handler(request, rest)

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, {"detail": f"JSON parse error - {exc}"}) from exc
        if not isinstance(body, dict):
            raise ApiError(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        return body

    def _not_allowed(self, method: str) -> ApiError:
        return ApiError(405, {"detail": f'Method "{method}" not allowed.'})

    def _list_response(self, request: web.Request, items: list[Any],
                       render: Callable[[list[Any]], list[str]]) -> web.Response:
        """A plain JSON array, or the DRF paging envelope when `page_size` is given. `render` turns
        items into JSON texts."""
        query = request.query
        page_size = _int_param(query, "page_size", None)
        if page_size is None:
            return _raw_json_response("[" + ",".join(render(items)) + "]")
        page = _int_param(query, "page", 1)
        assert page is not None
        count = len(items)
        last_page = max(1, -(-count // page_size))
        if page > last_page:
            raise ApiError(404, {"detail": "Invalid page."})
        chunk = items[(page - 1) * page_size: page * page_size]

        def link(number: int) -> str | None:
            if not 1 <= number <= last_page:
                return None
            params = [(k, v) for k, v in query.items() if k != "page"] + [("page", str(number))]
            return f"https://{request.host}{request.path}?{urlencode(params)}"

        head = _dumps({"count": count, "next": link(page + 1), "previous": link(page - 1)})[:-1]
        return _raw_json_response(f'{head},"results":[{",".join(render(chunk))}]}}')

    # -- resources ------------------------------------------------------------------------------

    def cluster_json(self) -> dict[str, Any]:
        e = self.engine
        usable = e.usable_capacity_bytes
        logical_used = int(e.logical_used_bytes())
        physical_used = int(e.physical_used_bytes())
        free = max(0, usable - physical_used)
        logical_total = usable * e.drr
        return {
            "id": e.cluster_id, "guid": e.cluster_guid, "name": e.scenario.cluster.name,
            "title": e.scenario.cluster.name, "state": "ONLINE", "sw_version": e.scenario.cluster.sw_version,
            "build": f"release-{e.scenario.cluster.sw_version}", "psnt": "SIM0000001",
            "mgmt_vip": self.host, "url": f"https://{self.address}/api/clusters/{e.cluster_id}",
            "usable_capacity_bytes": int(usable), "usable_capacity_tb": round(usable / TB, 3),
            "free_usable_capacity": int(free), "free_usable_capacity_tb": round(free / TB, 3),
            "physical_space": int(usable), "physical_space_tb": round(usable / TB, 3),
            "physical_space_in_use": int(physical_used), "physical_space_in_use_tb": round(physical_used / TB, 3),
            "physical_space_in_use_percent": round(100.0 * physical_used / usable, 2),
            "free_physical_space": float(int(free)),
            "logical_space": int(logical_total), "logical_space_tb": round(logical_total / TB, 3),
            "logical_space_in_use": int(logical_used), "logical_space_in_use_tb": round(logical_used / TB, 3),
            "logical_space_in_use_percent": round(100.0 * logical_used / logical_total, 2),
            "free_logical_space": float(int(max(0.0, logical_total - logical_used))),
            "drr": round(e.drr, 2), "drr_text": f"1:{e.drr:.1f}",
            "quotas_allocated_capacity": int(e.quotas_allocated()),
            "quotas_used_capacity": int(e.quotas_used()),
            "uptime": str(datetime.timedelta(seconds=int(e.now - e.origin))),
        }

    def _quota_prefix(self, ident: int, guid: str, name: str, path: str) -> str:
        """The fields of a quota that rarely change, serialised once (listing 10,000 quotas must be
        cheap): the JSON object without its closing brace."""
        cached = self._prefix_cache.get(ident)
        if cached is not None and cached[0] == (name, path, self.port):
            return cached[1]
        static = {
            "id": ident, "guid": guid, "name": name, "title": name, "path": path,
            "url": f"https://{self.address}/api/quotas/{ident}",
            "cluster": self.engine.scenario.cluster.name, "cluster_id": self.engine.cluster_id,
            "tenant_id": 1, "tenant_name": "default", "system_id": ident,
            "enable_alarms": True, "is_user_quota": False, "internal": False,
            "num_exceeded_users": 0, "num_blocked_users": 0, "sync_state": "SYNCHRONIZED",
        }
        prefix = _dumps(static)[:-1]
        self._prefix_cache[ident] = ((name, path, self.port), prefix)
        return prefix

    def _quota_fragment(self, prefix: str, *, hard: int, soft: int, hard_inodes: int, soft_inodes: int,
                        used_b: float, used_f: float, state: str, grace: float, time_to_block: str) -> str:
        """One quota as a JSON text: `prefix` plus the fields that move."""
        blocks = -(-int(used_b) // 32768) * 32768  # usage counted in 32 KiB blocks
        if hard and used_b <= hard:
            blocks = min(blocks, hard)  # a full quota reads exactly its limit
        effective = int(blocks / self.engine.drr)
        inodes = int(used_f)
        percent = 100 * blocks // hard if hard else 0
        percent_inodes = 100 * inodes // hard_inodes if hard_inodes else 0
        grace_str = grace_text(grace)
        pretty = state.replace("_", " ").title()
        return (f'{prefix},"hard_limit":{hard},"soft_limit":{soft},"hard_limit_inodes":{hard_inodes},'
                f'"soft_limit_inodes":{soft_inodes},"used_capacity":{blocks},'
                f'"used_capacity_tb":{round(blocks / TB, 6)!r},"used_effective_capacity":{effective},'
                f'"used_effective_capacity_tb":{round(effective / TB, 6)!r},"used_limited_capacity":{blocks},'
                f'"used_inodes":{inodes},"percent_capacity":{percent},"percent_inodes":{percent_inodes},'
                f'"state":"{state}","pretty_state":"{pretty}","grace_period":"{grace_str}",'
                f'"pretty_grace_period":"{grace_str}","time_to_block":"{time_to_block}"}}')

    def _record_fragment(self, record: QuotaRecord) -> str:
        used_b, used_f = self.engine.quota_usage(record)
        state = self.engine.quota_state(record)
        time_to_block = ""
        if record.grace_period_seconds > 0 and record.soft_since is not None and state.endswith("SOFT_EXCEEDED"):
            left = record.soft_since + record.grace_period_seconds - self.engine.now
            time_to_block = grace_text(max(60.0, left // 60 * 60))
        prefix = self._quota_prefix(record.id, record.guid, record.name, record.path)
        return self._quota_fragment(prefix, hard=record.hard_limit, soft=record.soft_limit,
                                    hard_inodes=record.hard_limit_inodes, soft_inodes=record.soft_limit_inodes,
                                    used_b=used_b, used_f=used_f, state=state, grace=record.grace_period_seconds,
                                    time_to_block=time_to_block)

    def quota_json(self, record: QuotaRecord) -> dict[str, Any]:
        """One quota as VMS shows it."""
        value: dict[str, Any] = json.loads(self._record_fragment(record))
        return value

    def _render_quotas(self, ids: list[int]) -> list[str]:
        """Quotas `ids` as JSON texts (scenario quotas from their records, benchmark quotas from
        the engine's closed form, vectorised)."""
        e = self.engine
        extra_idx = np.array([i - e.extra_base_id for i in ids if i not in e.quotas], dtype=np.int64)
        extra_used = iter(e.extra_used(extra_idx).tolist() if len(extra_idx) else [])
        out = []
        for ident in ids:
            record = e.quotas.get(ident)
            if record is not None:
                out.append(self._record_fragment(record))
                continue
            idx = ident - e.extra_base_id
            used = next(extra_used)
            hard, soft = int(e.extra_hard[idx]), int(e.extra_soft[idx])
            state = "HARD_EXCEEDED" if used >= hard else "SOFT_EXCEEDED" if used > soft else "OK"
            prefix = self._prefix_cache.get(ident)
            text = prefix[1] if prefix is not None and prefix[0][2] == self.port else self._quota_prefix(
                ident, e.extra_guid(idx), e.extra_name(idx), e.extra_path(idx))
            out.append(self._quota_fragment(text, hard=hard, soft=soft, hard_inodes=0, soft_inodes=0,
                                            used_b=used, used_f=used / 2**20, state=state, grace=0.0,
                                            time_to_block=""))
        return out

    def _quota_ids(self, query: Mapping[str, str]) -> list[int]:
        e = self.engine
        path, name = query.get("path"), query.get("name")
        if path is not None or name is not None:
            ids = [q.id for q in e.quotas.values()
                   if (path is None or q.path == path) and (name is None or q.name == name)]
            idx = e.extra_index(path=path) if path is not None else e.extra_index(name=name)
            if idx is not None and (name is None or e.extra_name(idx) == name):  # extra_index checked path
                ids.append(e.extra_base_id + idx)
            return sorted(ids)
        ids = sorted(e.quotas)
        if e.extra_count:
            extra = (np.flatnonzero(e.extra_alive) + e.extra_base_id).tolist()
            ids = sorted(ids + extra) if ids and ids[-1] > e.extra_base_id else ids + extra
        for key, field in (("path__contains", "path"), ("name__contains", "name")):
            needle = query.get(key)
            if needle is not None:
                ids = [i for i in ids if needle in self._quota_text_field(i, field)]
        return ids

    def _quota_text_field(self, ident: int, field: str) -> str:
        e = self.engine
        record = e.quotas.get(ident)
        if record is not None:
            return record.path if field == "path" else record.name
        idx = ident - e.extra_base_id
        return e.extra_path(idx) if field == "path" else e.extra_name(idx)

    async def _clusters(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if request.method != "GET":
            raise self._not_allowed(request.method)
        if rest:
            if rest[0] != str(self.engine.cluster_id):
                raise _not_found()
            return _json_response(self.cluster_json())
        return self._list_response(request, [self.engine.cluster_id], lambda ids: [_dumps(self.cluster_json())])

    async def _quotas(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        e = self.engine
        method = request.method
        if not rest:
            if method == "GET":
                return self._list_response(request, self._quota_ids(request.query), self._render_quotas)
            if method == "POST":
                body = await self._json_body(request)
                for required in ("name", "path"):
                    if not isinstance(body.get(required), str) or not body.get(required):
                        raise _bad(required, "This field is required.")
                if "/" in body["name"]:
                    raise _bad("name", "must not contain '/'")
                limits = {k: _body_int(body, k) for k in ("hard_limit", "soft_limit", "hard_limit_inodes",
                                                          "soft_limit_inodes") if body.get(k) is not None}
                grace = 0.0
                if body.get("grace_period") not in (None, ""):
                    try:
                        grace = parse_grace(body["grace_period"])
                    except ValueError as exc:
                        raise _bad("grace_period", str(exc)) from exc
                try:
                    record = e.create_quota(
                        name=body["name"], path=body["path"], grace_period_seconds=grace,
                        hard_limit=limits.get("hard_limit", 0), soft_limit=limits.get("soft_limit", 0),
                        hard_limit_inodes=limits.get("hard_limit_inodes", 0),
                        soft_limit_inodes=limits.get("soft_limit_inodes", 0))
                except EngineError as exc:
                    raise _bad(exc.field, exc.reason) from exc
                log.info("simulator.quota_created", quota_id=record.id, path=record.path)
                return _json_response(self.quota_json(record), 201)
            raise self._not_allowed(method)
        try:
            quota_id = int(rest[0])
        except ValueError as exc:
            raise _not_found() from exc
        if quota_id not in e.quotas:
            try:
                e.extra_idx_by_id(quota_id)
            except NotFound as exc:
                raise _not_found() from exc
        if method == "GET":
            return _raw_json_response(self._render_quotas([quota_id])[0])
        if method in ("PATCH", "PUT"):
            body = await self._json_body(request)
            changes: dict[str, Any] = {}
            for key in ("hard_limit", "soft_limit", "hard_limit_inodes", "soft_limit_inodes"):
                if key in body:
                    changes[key] = 0 if body[key] is None else _body_int(body, key)
            if "name" in body:
                if not isinstance(body["name"], str) or not body["name"] or "/" in body["name"]:
                    raise _bad("name", "must be a non-empty string without '/'")
                changes["name"] = body["name"]
            if "grace_period" in body:
                try:
                    changes["grace_period_seconds"] = parse_grace(body["grace_period"] or 0)
                except ValueError as exc:
                    raise _bad("grace_period", str(exc)) from exc
            if "path" in body and quota_id in e.quotas and body["path"] != e.quotas[quota_id].path:
                raise _bad("path", "the path of a quota cannot be changed")
            try:
                e.patch_quota(quota_id, changes)
            except EngineError as exc:
                raise _bad(exc.field, exc.reason) from exc
            log.info("simulator.quota_patched", quota_id=quota_id, **{k: v for k, v in changes.items()
                                                                      if k != "name"})
            return _raw_json_response(self._render_quotas([quota_id])[0])
        if method == "DELETE":
            e.delete_quota(quota_id)
            return web.Response(status=204)
        raise self._not_allowed(method)

    def view_json(self, view_id: int) -> dict[str, Any]:
        e = self.engine
        v = e.views[view_id]
        used = float(e.used_bytes[e.stream_paths.index(v.path)]) if v.path in e.stream_paths else 0.0
        policy = e.policies[v.policy_id]
        return {
            "id": v.id, "guid": v.guid, "name": v.name, "title": v.name, "path": v.path, "alias": "",
            "url": f"https://{self.address}/api/views/{v.id}", "policy_id": v.policy_id, "policy": policy.name,
            "protocols": list(v.protocols), "bucket": v.bucket, "tenant_id": 1, "tenant_name": "default",
            "cluster": e.scenario.cluster.name, "cluster_id": e.cluster_id, "create_dir": v.create_dir,
            "logical_capacity": int(used), "physical_capacity": int(used / e.drr), "directory": True,
            "share": "", "sync": "SYNCHRONIZED",
        }

    async def _views(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        e = self.engine
        if not rest:
            if request.method == "GET":
                q = request.query
                ids = [v.id for v in e.views.values()
                       if q.get("path") in (None, v.path) and q.get("name") in (None, v.name)]
                return self._list_response(request, ids, lambda chunk: [_dumps(self.view_json(i)) for i in chunk])
            if request.method == "POST":
                body = await self._json_body(request)
                if not isinstance(body.get("path"), str) or not body["path"]:
                    raise _bad("path", "This field is required.")
                if body.get("policy_id") is None:
                    raise _bad("policy_id", "This field is required.")
                policy_id = _body_int(body, "policy_id")
                protocols = body.get("protocols", ["NFS"])
                if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
                    raise _bad("protocols", "must be a list of protocol names")
                name = body.get("name")
                if name is not None and not isinstance(name, str):
                    raise _bad("name", "must be a string")
                try:
                    view = e.create_view(path=body["path"], policy_id=policy_id, name=name, protocols=protocols,
                                         create_dir=bool(body.get("create_dir", True)))
                except EngineError as exc:
                    raise _bad(exc.field, exc.reason) from exc
                log.info("simulator.view_created", view_id=view.id, path=view.path)
                return _json_response(self.view_json(view.id), 201)
            raise self._not_allowed(request.method)
        try:
            view_id = int(rest[0])
        except ValueError as exc:
            raise _not_found() from exc
        if view_id not in e.views:
            raise _not_found()
        if request.method != "GET":
            raise self._not_allowed(request.method)
        return _json_response(self.view_json(view_id))

    def policy_json(self, policy_id: int) -> dict[str, Any]:
        p = self.engine.policies[policy_id]
        return {"id": p.id, "guid": p.guid, "name": p.name, "title": p.name,
                "url": f"https://{self.address}/api/viewpolicies/{p.id}", "tenant_id": 1,
                "tenant_name": "default", "cluster": self.engine.scenario.cluster.name,
                "cluster_id": self.engine.cluster_id, "flavor": "NFS"}

    async def _viewpolicies(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if request.method != "GET":
            raise self._not_allowed(request.method)
        policies = self.engine.policies
        if rest:
            try:
                policy_id = int(rest[0])
            except ValueError as exc:
                raise _not_found() from exc
            if policy_id not in policies:
                raise _not_found()
            return _json_response(self.policy_json(policy_id))
        name = request.query.get("name")
        ids = [p.id for p in policies.values() if name in (None, p.name)]
        return self._list_response(request, ids, lambda chunk: [_dumps(self.policy_json(i)) for i in chunk])

    async def _monitors(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        if rest != ["ad_hoc_query"]:
            raise _not_found()
        if request.method != "GET":
            raise self._not_allowed(request.method)
        return _json_response(self.ad_hoc_query(request.query))

    def ad_hoc_query(self, query: Any) -> dict[str, Any]:
        """`GET /monitors/ad_hoc_query/`: cluster write bandwidth (bytes/s) and write ops (files/s).

        Samples are the simulator's sub-steps (`granularity=seconds`, the default) or averages
        over 5 minutes / hours / days. `prop_list` in the answer names the columns of each
        sample: `["timestamp", "object_id", *metrics]`.
        """
        object_type = query.get("object_type")
        if object_type is None:
            raise _bad("object_type", "This field is required.")
        if object_type != "cluster":
            raise _bad("object_type", f"only 'cluster' is simulated, got {object_type!r}")
        now = self.engine.now
        if query.get("time_frame"):
            m = _TIME_FRAME.match(query["time_frame"])
            if m is None:
                raise _bad("time_frame", f"not a time frame: {query['time_frame']!r} (e.g. 10m, 1h, 2D)")
            t_to = now
            t_from = now - int(m.group(1)) * _FRAME_SECONDS[m.group(2)]
        elif query.get("from_time"):
            t_from = _parse_iso("from_time", query["from_time"])
            t_to = _parse_iso("to_time", query["to_time"]) if query.get("to_time") else now
        else:
            t_to, t_from = now, now - 600
        props = query.getall("prop_list", []) if hasattr(query, "getall") else query.get("prop_list", [])
        props = [p for item in props for p in str(item).split(";") if p] or [_WRITE_BW, _WRITE_IOPS]
        for p in props:
            if not (p.endswith(("wr_bw", "wr_iops"))):
                raise _bad("prop_list", f"unknown metric {p!r} (the simulator answers *wr_bw and *wr_iops)")
        granularity = query.get("granularity", "seconds")
        if granularity not in _GRANULARITY:
            raise _bad("granularity", "must be one of seconds, minutes, hours, days")
        aggregation = query.get("aggregation", "avg")
        if aggregation not in ("avg", "min", "max", "sum"):
            raise _bad("aggregation", "must be one of avg, min, max, sum")
        times, written, files = self.engine.write_history(t_from, t_to)
        dt = self.engine.step_seconds
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
        rows = [[_iso(t), self.engine.cluster_id, *(round(float(c[i]), 3) for c in columns)]
                for i, t in enumerate(times.tolist())]
        return {"prop_list": ["timestamp", "object_id", *props], "object_ids": [self.engine.cluster_id],
                "data": rows}

    # -- admin (outside /api) ---------------------------------------------------------------------

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p][1:]
        method = request.method
        if parts == ["faults"]:
            if method == "GET":
                return _json_response([r.as_dict() for r in self.faults.rules])
            if method == "POST":
                body = await self._json_body(request)
                try:
                    rule = self.faults.add_from_json(body)
                except (FaultError, TypeError) as exc:
                    field = exc.field if isinstance(exc, FaultError) else "body"
                    raise _bad(field, str(exc)) from exc
                return _json_response(rule.as_dict(), 201)
            if method == "DELETE":
                self.faults.clear()
                return web.Response(status=204)
        elif len(parts) == 2 and parts[0] == "faults" and method == "DELETE":
            if not parts[1].isdigit() or not self.faults.remove(int(parts[1])):
                raise _not_found()
            return web.Response(status=204)
        elif parts == ["summary"] and method == "GET":
            self.engine.advance_to(self.clock.now())
            return _json_response(self.engine.summary())
        elif parts == ["token", "expire"] and method == "POST":
            return _json_response({"token": self.expire_token()})
        raise _not_found()
