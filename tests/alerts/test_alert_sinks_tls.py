"""The sinks over TLS with credentials: a Mosquitto broker with a TLS listener and a password
file, and an HTTPS webhook receiver, both with a CA made here."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alert_receivers import Broker, Receiver, run_receiver

from quotapilot.alerts.errors import SinkUnavailable
from quotapilot.alerts.sinks.mqtt import MqttConfig, MqttSink
from quotapilot.alerts.sinks.webhook import WebhookConfig, WebhookSink
from quotapilot.daemon.simulator.tls import TlsFiles, make_certificates

PAYLOAD: dict[str, Any] = {"id": "c1/raw/utilization", "dedup_key": "c1/raw/utilization#1",
                           "cluster": "c1", "target": "raw", "status": "firing"}


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_certificates(tmp_path / "pki")


class TlsBroker(Broker):
    def __init__(self, directory: Path, tls: TlsFiles) -> None:
        super().__init__(directory)
        passwords = directory / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "quotapilot", "s3cret"], check=True)
        self.conf.write_text(
            f"user root\nlistener {self.port} 127.0.0.1\ncafile {tls.ca_file}\ncertfile {tls.cert_file}\n"
            f"keyfile {tls.key_file}\nallow_anonymous false\npassword_file {passwords}\npersistence false\n")


@pytest.fixture
def tls_broker(tmp_path: Path, tls: TlsFiles) -> Iterator[TlsBroker]:
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto is not installed")
    broker = TlsBroker(tmp_path, tls)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class TestMqttTls:
    async def test_publishes_with_tls_and_password(self, tls_broker: TlsBroker, tls: TlsFiles) -> None:
        sink = MqttSink(MqttConfig(host="127.0.0.1", port=tls_broker.port, topic_prefix="qp", tls=True,
                                   ca_file=tls.ca_file, username="quotapilot", password="s3cret",
                                   timeout_seconds=3))
        try:
            await sink.send(PAYLOAD)
            await sink.send_state("c1", "raw", {"utilization_ratio": 0.5})
            assert sink.connects == 1
        finally:
            await sink.close()

    async def test_wrong_password_is_a_typed_error(self, tls_broker: TlsBroker, tls: TlsFiles) -> None:
        sink = MqttSink(MqttConfig(host="127.0.0.1", port=tls_broker.port, tls=True, ca_file=tls.ca_file,
                                   username="quotapilot", password="wrong", timeout_seconds=3))
        try:
            with pytest.raises(SinkUnavailable, match="refused"):
                await sink.send(PAYLOAD)
        finally:
            await sink.close()

    async def test_unknown_ca_is_a_typed_error(self, tls_broker: TlsBroker) -> None:
        sink = MqttSink(MqttConfig(host="127.0.0.1", port=tls_broker.port, tls=True, username="quotapilot",
                                   password="s3cret", timeout_seconds=3))
        try:
            with pytest.raises(SinkUnavailable):
                await sink.send(PAYLOAD)
        finally:
            await sink.close()


@pytest.fixture
async def https_receiver(tls: TlsFiles) -> AsyncIterator[Receiver]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    async for receiver in run_receiver(context):
        yield receiver


class TestWebhookTls:
    async def test_verified_with_the_ca_file(self, https_receiver: Receiver, tls: TlsFiles) -> None:
        url = https_receiver.url
        sink = WebhookSink(WebhookConfig(name="hook", url=url, ca_file=tls.ca_file))
        try:
            await sink.send(PAYLOAD)
        finally:
            await sink.close()
        posts = https_receiver.bodies()
        assert posts == [PAYLOAD]

    async def test_unverifiable_certificate_is_not_sent(self, https_receiver: Receiver) -> None:
        url = https_receiver.url
        sink = WebhookSink(WebhookConfig(name="hook", url=url))
        try:
            with pytest.raises(SinkUnavailable):
                await sink.send(PAYLOAD)
        finally:
            await sink.close()
        posts = https_receiver.bodies()
        assert posts == []

    async def test_verification_off_when_configured(self, https_receiver: Receiver) -> None:
        url = https_receiver.url
        sink = WebhookSink(WebhookConfig(name="hook", url=url, verify_tls=False))
        try:
            await sink.send(PAYLOAD)
        finally:
            await sink.close()
        posts = https_receiver.bodies()
        assert posts == [PAYLOAD]
