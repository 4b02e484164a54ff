"""The daemon's HTTP listener (aiohttp): `/metrics`, `/healthz`, and `/api/v1`.

The server is built with explicit collaborators, never the daemon: a `/metrics` renderer (the
`Exposition` of `http/metrics.py`, reading immutable state only), a health function (`/healthz`:
200 when healthy, else 503 with the reasons; the logic is `runtime/health.py`), the HTTP
settings, and the API's collaborators (`ApiDaemon`, the contract of `http/api/`, which
registers the `/api/v1/*` routes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from quotapilot.daemon.http.api import ApiDaemon, add_api_routes
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
        self.port: int | None = None

    def build_app(self) -> web.Application:
        """A fresh application with this server's collaborators (tests serve it with aiohttp's TestServer)."""
        return build_app(self.settings, self._render_metrics, self._health, self._api, self._capacity)

    async def start(self) -> None:
        runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
