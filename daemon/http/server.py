"""The daemon's HTTP listener (aiohttp): `/metrics`, `/healthz`, and `/api/v1`.

The server is built with explicit collaborators, never the daemon: a `/metrics` renderer (the
`Exposition` of `http/metrics.py`, reading immutable state only), a health function (`/healthz`:
200 when healthy, else 503 with the reasons; the logic is `runtime/health.py`), the HTTP
settings, and the API's collaborators (`ApiDaemon`, the contract of `http/api/`, which
registers the `/api/v1/*` routes).

Connections are served by `JsonErrorRequestHandler` (aiohttp's own, with two changes): what
aiohttp's HTTP parser refuses before any route or middleware sees it — an overlong request line
or header, too many headers, a malformed request line, bad bytes in a header — is answered in the
API's JSON error shape, not in text/plain; and a connection that has not sent a complete
request's headers within `[http] header_timeout_seconds` (of connecting, or of the previous
answer) is closed, so a client dribbling its headers (slowloris) cannot hold it open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from prometheus_client import CONTENT_TYPE_LATEST

from quotapilot.daemon.http.api import ApiDaemon, add_api_routes
from quotapilot.daemon.http.api.render import ApiError
from quotapilot.daemon.http.capacity import CapacityProvider, add_capacity_routes
from quotapilot.daemon.settings import HttpSettings

HealthFunction = Callable[[], tuple[bool, dict[str, Any]]]
"""() → (healthy, the /healthz report)."""

MetricsRenderer = Callable[[], bytes]
"""() → the /metrics body in Prometheus text format."""


def build_app(http: HttpSettings, render_metrics: MetricsRenderer, health: HealthFunction,
              api: ApiDaemon | None = None, capacity: CapacityProvider | None = None) -> web.Application:
    """The aiohttp application; `api=None` serves no `/api/v1` routes, `capacity=None` no
    `/api/v1/capacity`."""
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render_metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        healthy, report = health()
        return web.json_response(report, status=200 if healthy else 503)

    app = web.Application(client_max_size=http.max_body_bytes)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if api is not None:
        add_api_routes(app, api)
    if capacity is not None:
        add_capacity_routes(app, capacity)
    return app


class JsonErrorRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, answering its own refusals in the API's JSON error shape.

    `handle_error` is where aiohttp turns a request its parser refused (always 400), a handler's
    unexpected exception (500) or a handler's timeout (504) into an answer; aiohttp still logs it
    and closes the connection. aiohttp's parser does not say whether an overlong line was the
    request line or a header, so both are 400 `line_too_long` (not 414/431)."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if an answer was begun
        if isinstance(exc, LineTooLong):
            error = ApiError(status, "line_too_long",
                             f"the request line and each header are limited to {self.max_line_size} bytes")
        elif isinstance(exc, HttpProcessingError) and status < 500:
            error = ApiError(status, "bad_request", exc.message or "not a valid HTTP request")
        elif status == 504:
            error = ApiError(status, "timeout", "the request took too long")
        else:
            error = ApiError(status, "internal", "internal error (logged by the daemon)")
        error.headers["Connection"] = "close"  # aiohttp answers in HTTP/1.0 here, where close is only implied
        response = error.response()
        response.force_close()
        return response


class HttpServer:
    """Binds at `start()` (so a busy port fails the start, not a background task), serves until
    `close()`."""

    def __init__(self, http: HttpSettings, render_metrics: MetricsRenderer, health: HealthFunction,
                 api: ApiDaemon | None = None, capacity: CapacityProvider | None = None) -> None:
        self.settings = http
        self._capacity = capacity
        self._render_metrics = render_metrics
        self._health = health
        self._api = api
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.port: int | None = None

    def build_app(self) -> web.Application:
        """A fresh application with this server's collaborators (tests serve it with aiohttp's TestServer)."""
        return build_app(self.settings, self._render_metrics, self._health, self._api, self._capacity)

    async def start(self) -> None:
        runner = web.AppRunner(self.build_app(), handle_signals=False)
        await runner.setup()
        # What a TCPSite does, but with our protocol class: aiohttp takes no handler class.
        connections = runner.server
        assert connections is not None  # set by setup()
        loop = asyncio.get_running_loop()
        # keepalive_timeout: aiohttp closes a connection still waiting for a complete request
        # (headers) this long after it opened or after the previous answer, however many
        # bytes trickle in; the body has its own limit (http/api/body.py).
        timeout_seconds = self.settings.header_timeout_seconds

        def connection() -> JsonErrorRequestHandler:
            return JsonErrorRequestHandler(connections, loop=loop, keepalive_timeout=timeout_seconds,
                                           access_log=None)  # type: ignore[arg-type]  # None: no access log (aiohttp's documented value; annotated Logger)

        try:
            listener = await loop.create_server(connection, self.settings.host, self.settings.port, backlog=128)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        self.port = int(listener.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._runner is not None and self._listener is not None:
            runner, self._runner = self._runner, None
            listener, self._listener = self._listener, None
            listener.close()  # accept no more; then aiohttp ends the open connections gracefully
            await runner.cleanup()
            await listener.wait_closed()
