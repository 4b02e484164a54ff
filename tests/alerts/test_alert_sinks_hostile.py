"""The sinks against receivers that misbehave: a webhook that redirects or answers with an endless
body (a real aiohttp server), an MQTT target no topic can carry (a real Mosquitto)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from alert_receivers import Broker, serve_app

from quotapilot.alerts.errors import SinkRejected, SinkUnavailable
from quotapilot.alerts.sinks.mqtt import MqttConfig, MqttSink
from quotapilot.alerts.sinks.webhook import WebhookConfig, WebhookSink

PAYLOAD: dict[str, Any] = {"id": "c1/raw/utilization", "dedup_key": "c1/raw/utilization#1",
                           "cluster": "c1", "target": "raw", "status": "firing"}


class HostileReceiver:
    """Records every request (method, path, body length); `/redirect/<code>` answers a redirect
    to `/ok` on another host name (`localhost`) with a secret-looking path, `/endless` streams a
    2xx body until the client goes away."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int]] = []
        self.base = ""
        self.endless_done = asyncio.Event()
        self.endless_bytes = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.method, request.path, len(body)))
        if request.path.startswith("/redirect/"):
            code = int(request.path.rsplit("/", 1)[1])
            port = request.url.port
            return web.Response(status=code, headers={"Location": f"http://localhost:{port}/ok/s3cr3t-path"})
        if request.path == "/endless":
            response = web.StreamResponse()
            await response.prepare(request)
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(4096):  # 4 GiB: "until the client goes away"
                    await response.write(chunk)
                    self.endless_bytes += len(chunk)
            except (ConnectionError, RuntimeError):
                pass
            finally:
                self.endless_done.set()
            return response
        return web.Response(text="ok")


@pytest.fixture
async def hostile() -> AsyncIterator[HostileReceiver]:
    receiver = HostileReceiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    async with serve_app(app) as base:
        receiver.base = base
        yield receiver


class TestWebhookRedirects:
    """aiohttp followed a 301/302/303 and turned the POST into a GET without a body: the
    notification was lost and marked delivered. A redirect is now a failed delivery."""

    @pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
    async def test_a_redirect_is_not_followed_and_not_delivered(
            self, hostile: HostileReceiver, code: int) -> None:
        sink = WebhookSink(WebhookConfig(name="w", url=f"{hostile.base}/redirect/{code}", timeout_seconds=2))
        try:
            with pytest.raises(SinkUnavailable) as raised:
                await sink.send(PAYLOAD)
        finally:
            await sink.close()
        assert [("POST", f"/redirect/{code}")] == [(m, p) for m, p, _ in hostile.requests]
        message = str(raised.value)
        assert f"HTTP {code}" in message
        assert "localhost" in message  # the Location's host says where it points ...
        assert "s3cr3t" not in message  # ... but its path may be a secret (Slack's is)


class TestWebhookResponseBody:
    async def test_a_2xx_body_is_not_read_whole(self, hostile: HostileReceiver) -> None:
        """A 300 MB answer added 617 MB RSS: the body was read into memory. An endless one
        now costs a bounded read, and the send returns at once instead of timing out."""
        sink = WebhookSink(WebhookConfig(name="w", url=f"{hostile.base}/endless", timeout_seconds=5))
        try:
            await sink.send(PAYLOAD)
        finally:
            await sink.close()
        await asyncio.wait_for(hostile.endless_done.wait(), timeout=5)
        assert hostile.endless_bytes < 256 * 2**20


class TestMqttUnpublishableTargets:
    """paho raised ValueError (topic over 65,535 bytes) or UnicodeEncodeError (a lone surrogate)
    past the sink's error translation: the row was retried until max_age with a traceback each
    time, and the whole sink backed off. Such a notification can never be published: rejected."""

    @pytest.mark.parametrize("target", ["x" * 70_000, "bad\udcffsurrogate"], ids=["long", "surrogate"])
    async def test_is_rejected(self, broker: Broker, target: str) -> None:
        sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="qp", timeout_seconds=2))
        try:
            with pytest.raises(SinkRejected):
                await sink.send({**PAYLOAD, "target": target})
            await sink.send(PAYLOAD)  # the connection is still good for the next one
        finally:
            await sink.close()

    @pytest.mark.parametrize("target", ["x" * 70_000, "bad\udcffsurrogate"], ids=["long", "surrogate"])
    async def test_state_is_rejected(self, broker: Broker, target: str) -> None:
        sink = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port, topic_prefix="qp", timeout_seconds=2))
        try:
            with pytest.raises(SinkRejected):
                await sink.send_state("c1", target, {"used_bytes": 1})
        finally:
            await sink.close()
