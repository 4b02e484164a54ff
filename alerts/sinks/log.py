"""The built-in log sink: every notification, through the outbox like any sink, to the structured
log as one `alert.notified` event (id, severity, status, summary, dedup key).

It is always there unless `[alerts] log_sink = false`, so the journal shows every alert even when
no broker or webhook is configured, and the delivery metrics have series from the start. Writing a
log line is cheap and synchronous; the dispatcher gives this sink its own worker like any other,
so it can never hold back a broker or a receiver. It publishes no retained state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from quotapilot.alerts.errors import SinkUnavailable

log = structlog.get_logger(logger_name=__name__)


class LogSink:
    """Writes notifications to the structured log (stderr: JSON lines under systemd)."""

    publishes_state = False

    def __init__(self, name: str = "log") -> None:
        self.name = name

    async def send(self, payload: Mapping[str, Any]) -> None:
        try:
            log.info("alert.notified", alert_id=payload.get("id"), severity=payload.get("severity"),
                     status=payload.get("status"), summary=payload.get("summary"),
                     dedup_key=payload.get("dedup_key"), renotify=payload.get("renotify", False))
        except (OSError, ValueError) as exc:  # stderr closed or full: retried like any sink
            raise SinkUnavailable(self.name, f"cannot write the log: {exc}") from exc

    async def send_state(self, cluster: str, target: str, state: Mapping[str, Any]) -> None:
        """The log gets events only."""

    async def clear_state(self, cluster: str, target: str) -> None:
        """The log gets events only."""

    async def close(self) -> None:
        """Nothing to close."""
