"""The MQTT sink (aiomqtt ≥ 2).

- events: `{prefix}/{cluster}/{target}/alert`, QoS 1, the JSON notification;
- state:  `{prefix}/{cluster}/{target}/state`, QoS 1, retained (utilization, runway, last
  action), so a dashboard that subscribes late sees the current picture; deleted (an empty
  retained message) when the target is removed;
- status: `{prefix}/status`, retained `online` after connecting, `offline` on a clean close and
  as the last will when the daemon dies.

Reconnecting lives outside the client. aiomqtt has no public "is connected" flag, so the sink
learns that a connection died the public way: a publish on it fails at once with paho's
`MQTT_ERR_NO_CONN`. That send then drops the client, connects a fresh one and publishes once more
(a broker restart between two alerts costs no failed delivery); any other failure raises
`SinkUnavailable` and drops the client, and the dispatcher's backoff decides when the next send
(and so the next connect) happens. Every aiomqtt/paho/OS error is translated into the
`quotapilot.alerts.errors` hierarchy.

A message no broker could ever take — a topic that is not UTF-8 (a lone surrogate in a target
name) or longer than MQTT's 65,535 bytes, which paho refuses with ValueError — is `SinkRejected`:
retrying cannot help, so the dispatcher drops it (counted, logged once) instead of backing off the
whole sink for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTT_ERR_NO_CONN

from quotapilot.alerts.errors import SinkRejected, SinkTimeout, SinkUnavailable

# aiomqtt warns "There are N pending publish calls" beyond 10 in flight; a backlog drain has
# hundreds in flight on purpose. Our own errors say what matters.
_CLIENT_LOG = logging.getLogger("quotapilot.alerts.sinks.mqtt.aiomqtt")
_CLIENT_LOG.setLevel(logging.ERROR)

_MAX_TOPIC_BYTES = 65535
"""MQTT's limit on a topic name (a UTF-8 string with a 16-bit length)."""


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    port: int = 1883
    topic_prefix: str = "quotapilot"
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    client_id: str | None = None
    keepalive_seconds: int = 30
    timeout_seconds: float = 10.0
    name: str = "mqtt"


def topic_level(text: str) -> str:
    """One topic level: MQTT wildcards and separators are not allowed inside it."""
    cleaned = "".join("_" if ch in "/+#\x00" else ch for ch in text)
    return cleaned or "_"


class MqttSink:
    """Publishes alert events and retained state to one broker."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.name = config.name
        self.prefix = config.topic_prefix.rstrip("/")
        self._client: aiomqtt.Client | None = None
        self._connect_lock: asyncio.Lock | None = None
        self.connects = 0

    # ------------------------------------------------------------------------------ topics
    def alert_topic(self, cluster: str, target: str) -> str:
        return f"{self.prefix}/{topic_level(cluster)}/{topic_level(target)}/alert"

    def state_topic(self, cluster: str, target: str) -> str:
        return f"{self.prefix}/{topic_level(cluster)}/{topic_level(target)}/state"

    @property
    def status_topic(self) -> str:
        return f"{self.prefix}/status"

    # -------------------------------------------------------------------------- connection
    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        return ssl.create_default_context(cafile=str(self.config.ca_file) if self.config.ca_file else None)

    async def _connected(self) -> aiomqtt.Client:
        client = self._client
        if client is not None:
            return client
        if self._connect_lock is None:
            self._connect_lock = asyncio.Lock()
        async with self._connect_lock:
            client = self._client
            if client is not None:
                return client
            await self._drop_client()
            client = aiomqtt.Client(
                self.config.host, self.config.port,
                username=self.config.username, password=self.config.password,
                identifier=self.config.client_id,
                will=aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True),
                keepalive=self.config.keepalive_seconds, timeout=self.config.timeout_seconds,
                tls_context=self._tls_context(), max_inflight_messages=1000, logger=_CLIENT_LOG)
            try:
                async with asyncio.timeout(self.config.timeout_seconds):
                    await client.__aenter__()
            except TimeoutError as exc:
                raise SinkTimeout(self.name, f"connect to {self._where} timed out") from exc
            except aiomqtt.MqttCodeError as exc:
                if exc.rc in (4, 5, 134, 135):  # bad user/password, not authorised
                    raise SinkUnavailable(self.name, f"broker refused us: {exc}") from exc
                raise SinkUnavailable(self.name, f"connect to {self._where}: {exc}") from exc
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                raise SinkUnavailable(self.name, f"connect to {self._where}: {exc}") from exc
            self._client = client
            self.connects += 1
            try:
                await client.publish(self.status_topic, b"online", qos=1, retain=True,
                                     timeout=self.config.timeout_seconds)
            except aiomqtt.MqttError as exc:
                await self._drop_client()
                raise SinkUnavailable(self.name, f"publish status: {exc}") from exc
            return client

    @property
    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        # it is probably dead already; that is why we drop it
        with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
            await asyncio.wait_for(client.__aexit__(None, None, None), timeout=1.0)

    # ------------------------------------------------------------------------------ sending
    def _check_topic(self, topic: str) -> None:
        try:
            size = len(topic.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise SinkRejected(self.name, f"topic {topic[:100]!r} is not valid UTF-8: {exc.reason}") from exc
        if size > _MAX_TOPIC_BYTES:
            raise SinkRejected(self.name, f"topic {topic[:100]!r}… is {size} bytes, MQTT allows {_MAX_TOPIC_BYTES}")

    async def _publish(self, topic: str, payload: Mapping[str, Any], *, retain: bool) -> None:
        try:
            body = json.dumps(dict(payload), sort_keys=True).encode()
        except (TypeError, ValueError) as exc:
            raise SinkRejected(self.name, f"payload is not JSON: {exc}") from exc
        await self._publish_body(topic, body, retain=retain)

    async def _publish_body(self, topic: str, body: bytes, *, retain: bool) -> None:
        self._check_topic(topic)
        client = await self._connected()
        try:
            try:
                await client.publish(topic, body, qos=1, retain=retain, timeout=self.config.timeout_seconds)
            except aiomqtt.MqttCodeError as exc:
                if exc.rc != MQTT_ERR_NO_CONN:
                    raise
                # the connection died since the last send: connect afresh and publish once more
                if self._client is client:
                    await self._drop_client()
                client = await self._connected()
                await client.publish(topic, body, qos=1, retain=retain, timeout=self.config.timeout_seconds)
        except ValueError as exc:  # paho refuses the message itself (topic, size): it never will take it
            raise SinkRejected(self.name, f"publish to {topic[:100]!r}: {exc}") from exc
        except aiomqtt.MqttError as exc:
            await self._drop_client()
            if "timed out" in str(exc):
                raise SinkTimeout(self.name, f"publish to {topic}: no PUBACK") from exc
            raise SinkUnavailable(self.name, f"publish to {topic}: {exc}") from exc

    async def send(self, payload: Mapping[str, Any]) -> None:
        await self._publish(self.alert_topic(str(payload["cluster"]), str(payload["target"])), payload,
                            retain=False)

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        await self._publish(self.state_topic(cluster, target), state, retain=True)

    async def clear_state(self, cluster: str, target: str) -> None:
        """An empty retained message: MQTT's way to delete the retained one (a late subscriber
        then gets nothing on the topic)."""
        await self._publish_body(self.state_topic(cluster, target), b"", retain=True)

    async def close(self) -> None:
        """Say `offline` (retained) and disconnect cleanly; a crash leaves it to the last will."""
        client = self._client
        if client is not None:
            # on a dead connection this fails at once (MQTT_ERR_NO_CONN): the last will says it
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(self.status_topic, b"offline", qos=1, retain=True, timeout=1.0)
        await self._drop_client()
