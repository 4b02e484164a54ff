"""The daemon's HTTP listener (aiohttp): `/metrics`, `/healthz`, and the routes other modules add.

`/metrics` renders the daemon's own registries (fresh per daemon; every collector in them reads
immutable state); the per-target families, the bulk of a scrape, are rendered straight from the
snapshot by `TargetText`. `/healthz` answers 200 while every cluster's last successful poll is
younger than `poll.stale_after_intervals` intervals and no supervised task crashed, else 503 with
the reasons. `/api/v1/*` belongs to `daemon/http/api/` (`add_api_routes(app, daemon)`), registered
here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from quotapilot.daemon.http.api import add_api_routes

if TYPE_CHECKING:
    from quotapilot.daemon.runtime.daemon import Daemon

DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("daemon")


async def metrics(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    parts = [daemon.target_text.render(daemon.snapshot), *(r.render_text() for r in daemon.text_renderers)]
    body = "".join(parts).encode() + generate_latest(daemon.exposition_registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON_KEY]
    healthy, report = daemon.health()
    return web.json_response(report, status=200 if healthy else 503)


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(client_max_size=daemon.settings.http.max_body_bytes)
    app[DAEMON_KEY] = daemon
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    add_api_routes(app, daemon)
    return app


class HttpServer:
    """Binds at `start()` (so a busy port fails the start, not a background task), serves until
    `close()`."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        settings = self._daemon.settings.http
        runner = web.AppRunner(build_app(self._daemon), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, settings.host, settings.port)
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
