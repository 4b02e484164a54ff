"""The webhook sink: one HTTP POST per notification (aiohttp client).

Formats: `json` (our schema, as is), `alertmanager` (a `postableAlerts` list to Alertmanager's
`/api/v2/alerts`; a URL with no path gets that path appended), `slack` (incoming-webhook text).
Errors become the `quotapilot.alerts.errors` hierarchy: connection trouble, timeouts, 5xx, 408,
429 and auth/404 (a configuration a human will fix — retrying loses nothing) are temporary;
other 4xx reject the notification.

Redirects are not followed: aiohttp would turn a POST answered by 301/302/303 into a GET without
a body (the notification lost, yet "delivered"), and following a 307/308 would send the payload
and the bearer token wherever the receiver points. Any 3xx is a misconfigured URL, which by the
taxonomy above is temporary (`SinkUnavailable`, retried with backoff and logged once as
`alert_sink.unavailable`, like 401/403/404): the notification waits in the outbox until a human
fixes the URL, rather than being dropped. The error names only the Location's host, never the
URL: a webhook URL's path is often itself the secret (Slack's).

A response body is read only up to `_BODY_READ_LIMIT` bytes (a 2xx is not read at all beyond
that; an error's first 200 characters go into the error message), so a receiver answering with
a huge or endless body costs no memory.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from quotapilot.alerts.errors import SinkRejected, SinkTimeout, SinkUnavailable
from quotapilot.alerts.formats import to_alertmanager, to_slack

Format = Literal["json", "alertmanager", "slack"]
_RETRYABLE_4XX = {401, 403, 404, 408, 425, 429}
_BODY_READ_LIMIT = 4096
"""At most this much of a response body is read (bytes)."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    name: str
    url: str
    format: Format = "json"
    token: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 10.0
    verify_tls: bool = True
    ca_file: Path | None = None


async def _body_start(response: aiohttp.ClientResponse) -> bytes:
    """Up to `_BODY_READ_LIMIT` bytes of the body (a body that ends sooner lets the connection be
    reused; a longer one is cut off and its connection closed on release)."""
    chunks: list[bytes] = []
    size = 0
    while size < _BODY_READ_LIMIT:
        chunk = await response.content.read(_BODY_READ_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _location_host(value: str | None) -> str:
    """Where a redirect points, without its path or query (which may carry a secret)."""
    if not value:
        return "no Location"
    try:
        host = urlsplit(value).hostname
    except ValueError:
        host = None
    return f"Location host {host}" if host else "a relative Location"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; our own backoff is good enough


class WebhookSink:
    """POSTs notifications to one URL. The session is created on first use (inside the loop)."""

    publishes_state = False

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.name = config.name
        self.url = config.url
        if config.format == "alertmanager" and urlsplit(config.url).path in ("", "/"):
            parts = urlsplit(config.url)
            self.url = urlunsplit((parts.scheme, parts.netloc, "/api/v2/alerts", parts.query, ""))
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https://"):
            return True
        if not self.config.verify_tls:
            return False
        context = ssl.create_default_context(
            cafile=str(self.config.ca_file) if self.config.ca_file else None)
        return context

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json", "User-Agent": "quotapilot-alerts/1",
                       **self.config.headers}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
                connector=aiohttp.TCPConnector(ssl=self._ssl(), limit=64))
        return self._session

    def body(self, payload: Mapping[str, Any]) -> Any:
        """What goes on the wire for this sink's format."""
        if self.config.format == "alertmanager":
            return to_alertmanager(dict(payload))
        if self.config.format == "slack":
            return to_slack(dict(payload))
        return dict(payload)

    async def send(self, payload: Mapping[str, Any]) -> None:
        session = self._session_now()
        try:
            async with session.post(self.url, json=self.body(payload), allow_redirects=False) as response:
                status = response.status
                if status < 300:
                    await _body_start(response)
                    return
                if status < 400:
                    raise SinkUnavailable(self.name, f"HTTP {status}: the receiver redirects "
                                          f"({_location_host(response.headers.get('Location'))}); "
                                          "redirects are not followed: configure the final URL")
                text = (await _body_start(response)).decode("utf-8", errors="replace")[:200]
                if status >= 500 or status in _RETRYABLE_4XX:
                    raise SinkUnavailable(self.name, f"HTTP {status}: {text}",
                                          retry_after=_retry_after(response.headers.get("Retry-After")))
                raise SinkRejected(self.name, f"HTTP {status}: {text}")
        except TimeoutError as exc:
            raise SinkTimeout(self.name, f"no answer within {self.config.timeout_seconds:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:  # ssl.SSLError is an OSError
            raise SinkUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        """Webhooks get events only."""

    async def clear_state(self, cluster: str, target: str) -> None:
        """Webhooks get events only."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let the connector close its transports
        self._session = None
