"""The HTTP listener itself (`daemon.http.server`), over real sockets on a free loopback port:
requests aiohttp's parser refuses before any middleware runs answer in the API's JSON error
shape, and a connection that does not finish a request's headers in time is closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from quotapilot.daemon.http.server import HealthFunction, HttpServer
from quotapilot.daemon.settings import HttpSettings, load_settings


def healthy() -> tuple[bool, dict[str, Any]]:
    return True, {"status": "ok"}


@contextlib.asynccontextmanager
async def serving(health: HealthFunction = healthy, **http_fields: Any) -> AsyncIterator[HttpServer]:
    """`HttpServer` on 127.0.0.1, any port, with these `[http]` fields."""
    http = HttpServer(HttpSettings(listen="127.0.0.1:0", **http_fields), lambda: b"# metrics\n", health)
    await http.start()
    try:
        yield http
    finally:
        await http.close()


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    async with serving() as http:
        yield http


@pytest.fixture
async def impatient() -> AsyncIterator[HttpServer]:
    """A server that waits 0.2 s for a request's headers."""
    async with serving(header_timeout_seconds=0.2) as http:
        yield http


async def exchange(server: HttpServer, raw: bytes) -> bytes:
    """Write `raw` on a fresh connection; everything the server sends until it closes."""
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


def parse_reply(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


OVERLONG = b"a" * 9000  # aiohttp's limit for a request line or a header line is 8190 bytes

REFUSED = {
    "overlong URL": b"GET /" + OVERLONG + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "overlong header line": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + OVERLONG + b"\r\n\r\n",
    "overlong header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + OVERLONG + b": 1\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                        + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    "malformed request line": b"GET /healthz HTTP/1.1 trailing\r\nHost: x\r\n\r\n",
    "not HTTP at all": b"HELLO\r\n\r\n",
    "bad HTTP version": b"GET /healthz HTTP/9\r\nHost: x\r\n\r\n",
    "space in a header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    "control character in a header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
    "HTTP/1.1 without Host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "API path, overlong URL": b"GET /api/v1/targets/" + OVERLONG + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


class TestParserRejectionsAreJson:
    """What aiohttp's HTTP parser refuses (before routing, so before the API's `json_errors`
    middleware) was its own `400 Bad Request` in text/plain; it is the API's JSON error now."""

    @pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
    async def test_400_in_the_api_error_shape(self, server: HttpServer, raw: bytes) -> None:
        status, headers, body = parse_reply(await exchange(server, raw))
        assert status == 400
        assert headers["content-type"].split(";")[0] == "application/json"
        assert headers["connection"].lower() == "close"
        error = json.loads(body)["error"]
        assert {"code", "message"} <= set(error)
        assert error["message"]

    async def test_an_overlong_line_is_named_as_such(self, server: HttpServer) -> None:
        _, _, body = parse_reply(await exchange(server, REFUSED["overlong URL"]))
        error = json.loads(body)["error"]
        assert (error["code"], "8190" in error["message"]) == ("line_too_long", True)

    async def test_other_refusals_are_bad_request(self, server: HttpServer) -> None:
        _, _, body = parse_reply(await exchange(server, REFUSED["malformed request line"]))
        assert json.loads(body)["error"]["code"] == "bad_request"

    async def test_a_sound_request_is_still_served(self, server: HttpServer) -> None:
        status, _, body = parse_reply(
            await exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        assert (status, json.loads(body)) == (200, {"status": "ok"})

    async def test_a_crashing_handler_is_a_json_500(self) -> None:
        """The same hook answers a handler's unexpected exception (aiohttp's text/plain 500 before)."""
        def broken() -> tuple[bool, dict[str, Any]]:
            raise RuntimeError("health broke")

        async with serving(health=broken) as http:
            status, headers, body = parse_reply(await exchange(http, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        content_type = headers["content-type"].split(";")[0]
        assert (status, content_type, json.loads(body)["error"]["code"]) == (500, "application/json", "internal")
        assert b"health broke" not in body


class TestHeaderTimeout:
    """`[http] header_timeout_seconds`: a client that opened a connection and sends its headers a
    byte at a time (slowloris) held it open until aiohttp's hour-long keep-alive timeout."""

    @staticmethod
    async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert server.port is not None
        return await asyncio.open_connection("127.0.0.1", server.port)

    @staticmethod
    async def closed_after(started: float, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           dribble: bytes = b"") -> tuple[bytes, float]:
        """Write `dribble` a byte every 20 ms until the server closes; (what it sent, seconds since
        `started`). A close with dribbled bytes still unread is a reset (RST, not FIN): closed too."""

        async def dribbler() -> None:
            for byte in dribble:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.02)  # a slow client, not a test waiting for time

        task = asyncio.create_task(dribbler(), name="slowloris")
        try:
            try:
                sent = await asyncio.wait_for(reader.read(), 2)
            except ConnectionResetError:
                sent = b""
            return sent, time.monotonic() - started
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            writer.close()
            await asyncio.gather(writer.wait_closed(), return_exceptions=True)

    async def test_headers_a_byte_at_a_time_are_cut_off(self, impatient: HttpServer) -> None:
        started = time.monotonic()
        reader, writer = await self.connect(impatient)
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        sent, seconds = await self.closed_after(started, reader, writer, dribble=b"X-Slow: " + b"a" * 200)
        assert (sent, 0.19 < seconds < 1.5) == (b"", True)

    async def test_a_silent_connection_is_closed(self, impatient: HttpServer) -> None:
        started = time.monotonic()
        reader, writer = await self.connect(impatient)
        sent, seconds = await self.closed_after(started, reader, writer)
        assert (sent, 0.19 < seconds < 1.5) == (b"", True)

    async def test_the_next_request_on_a_kept_alive_connection_too(self, impatient: HttpServer) -> None:
        reader, writer = await self.connect(impatient)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        status, headers, _ = parse_reply(head)
        await reader.readexactly(int(headers["content-length"]))
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        sent, seconds = await self.closed_after(started, reader, writer, dribble=b"X-Slow: " + b"a" * 200)
        assert (status, sent, seconds < 1.5) == (200, b"", True)

    async def test_headers_in_time_are_served(self) -> None:
        async with serving(header_timeout_seconds=2) as http:
            reader, writer = await self.connect(http)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\n")
                await asyncio.sleep(0.05)  # split across two reads, well within the timeout
                writer.write(b"Host: x\r\nConnection: close\r\n\r\n")
                status, _, body = parse_reply(await asyncio.wait_for(reader.read(), 2))
            finally:
                writer.close()
                await writer.wait_closed()
        assert (status, json.loads(body)) == (200, {"status": "ok"})

    def test_the_default_is_ten_seconds(self) -> None:
        assert HttpSettings().header_timeout_seconds == 10.0

    @pytest.mark.parametrize(("value", "seconds"), [(0.2, 0.2), ("30s", 30.0), ("10m", 600.0)])
    def test_a_duration_is_accepted(self, value: object, seconds: float) -> None:
        assert load_settings(http={"header_timeout_seconds": value}).http.header_timeout_seconds == seconds
