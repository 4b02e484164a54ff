"""systemd notifications (`Type=notify`, `WatchdogSec=`) over the NOTIFY_SOCKET datagram protocol.

No dependency: one `AF_UNIX`/`SOCK_DGRAM` datagram per message, e.g. `READY=1`. The socket path
(and the watchdog period) come from the environment systemd sets, read in `settings.py`
(`systemd_notify_environment()`); without them every call is a no-op.
"""

from __future__ import annotations

import socket

from quotapilot.daemon.logs import TransitionLog, get_logger

log = get_logger(__name__)


class Notifier:
    """Sends state lines to systemd. Never raises: a lost notification must not stop the daemon."""

    def __init__(self, socket_path: str | None, *, watchdog_usec: int | None = None) -> None:
        self.socket_path = socket_path or None
        if self.socket_path and self.socket_path.startswith("@"):  # abstract namespace
            self.socket_path = "\0" + self.socket_path[1:]
        self.watchdog_interval_seconds: float | None = (
            watchdog_usec / 2_000_000 if watchdog_usec and self.socket_path else None)
        """How often to send WATCHDOG=1 (half of systemd's WatchdogSec), or None."""
        self._ready_sent = False
        self._failures = TransitionLog(log, "sdnotify")
        """`sdnotify.failed` once when sending starts failing, `sdnotify.recovered` when it works again."""

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def notify(self, message: str) -> bool:
        """Send one datagram; False when not under systemd or when sending failed."""
        if self.socket_path is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.socket_path)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            self._failures.failed(self.socket_path, str(exc))
            return False
        self._failures.ok(self.socket_path)
        return True

    def ready(self, status: str = "polling") -> None:
        """READY=1, once (after the first successful poll)."""
        if not self._ready_sent and self.notify(f"READY=1\nSTATUS={status}"):
            self._ready_sent = True

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
