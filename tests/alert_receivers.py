"""Real receivers for the alert tests (tests/alerts, and the daemon's in tests/daemon): a Mosquitto
broker on a free port (never the shared 1883), an aiomqtt subscriber, and an aiohttp HTTP(S)
receiver. Fixtures wrapping them are in tests/alerts/conftest.py."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from aiohttp import web


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """`mosquitto -c <conf>` listening on 127.0.0.1:<port>; `stop()`/`start()` simulate an outage."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Subscriber:
    """Collects every message under a topic filter: (topic, payload, retain)."""

    messages: list[tuple[str, Any, bool]] = field(default_factory=list)

    def alerts(self) -> list[dict[str, Any]]:
        return [p for t, p, _ in self.messages if t.endswith("/alert")]

    def on(self, suffix: str) -> list[tuple[str, Any, bool]]:
        return [m for m in self.messages if m[0].endswith(suffix)]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (test helper)
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; got {self.messages}")
            await asyncio.sleep(0.01)


async def subscribe(port: int, topic: str) -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-sub-{port}-{time.monotonic_ns()}") as c:
            await c.subscribe(topic, qos=1)
            ready.set()
            async for message in c.messages:
                raw = message.payload
                text = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                sub.messages.append((str(message.topic), value, bool(message.retain)))

    task = asyncio.create_task(listen(), name="mqtt-test-subscriber")
    await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, timeout=5,
                       return_when=asyncio.FIRST_COMPLETED)
    try:
        yield sub
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)


@dataclass
class Receiver:
    """An aiohttp server recording POSTs; `statuses` are answered first, then 200."""

    url: str = ""
    posts: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    attempts: int = 0

    def bodies(self) -> list[Any]:
        return [body for _, _, body in self.posts]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (test helper)
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; got {self.posts}")
            await asyncio.sleep(0.01)


@asynccontextmanager
async def serve_app(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port until the block ends; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def run_receiver(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Receiver]:
    """An HTTP receiver on a free loopback port (HTTPS with `ssl_context`), until closed."""
    receiver = Receiver()

    async def handle(request: web.Request) -> web.Response:
        receiver.attempts += 1
        body = await request.json()
        if receiver.statuses:
            return web.Response(status=receiver.statuses.pop(0), text="not now")
        receiver.posts.append((request.path, dict(request.headers), body))
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    async with serve_app(app, ssl_context) as base:
        receiver.url = f"{base}/hook"
        yield receiver
