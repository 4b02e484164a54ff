"""sd_notify over a real unix datagram socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotapilot.daemon.runtime.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1)
    yield sock, path
    sock.close()


class TestNotifier:
    """READY=1 once, WATCHDOG=1, STOPPING=1, as datagrams; silent without NOTIFY_SOCKET."""

    def test_messages_arrive_as_datagrams(self, listener: tuple[socket.socket, str]) -> None:
        sock, path = listener
        notifier = Notifier(path, watchdog_usec=10_000_000)
        assert notifier.watchdog_interval_seconds == 5.0
        notifier.ready()
        notifier.ready()  # only once
        notifier.watchdog()
        notifier.stopping()
        received = [sock.recv(4096).decode() for _ in range(3)]
        assert received == ["READY=1\nSTATUS=polling", "WATCHDOG=1", "STOPPING=1"]

    def test_abstract_socket_name(self) -> None:
        name = f"@quotapilot-test-{id(self)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("\0" + name[1:])
        sock.settimeout(1)
        try:
            assert Notifier(name).notify("READY=1")
            assert sock.recv(64) == b"READY=1"
        finally:
            sock.close()

    def test_without_socket_everything_is_a_noop(self) -> None:
        notifier = Notifier(None, watchdog_usec=1_000_000)
        assert not notifier.enabled
        assert notifier.watchdog_interval_seconds is None
        assert not notifier.notify("READY=1")

    def test_a_vanished_socket_does_not_raise(self, tmp_path: Path) -> None:
        assert not Notifier(str(tmp_path / "missing.sock")).notify("WATCHDOG=1")
