"""The one error hierarchy of alert delivery. Sinks translate every third-party error (aiohttp,
aiomqtt/paho, ssl, OSError, timeouts) into one of these, `raise ... from exc`."""

from __future__ import annotations


class SinkError(Exception):
    """Delivery to a sink failed."""

    def __init__(self, sink: str, message: str) -> None:
        super().__init__(f"{sink}: {message}")
        self.sink = sink


class SinkUnavailable(SinkError):
    """Temporary: the receiver or broker is down, slow, or asked us to back off. Retried with
    backoff; `retry_after` is a server-requested wait (seconds), honoured as a minimum."""

    def __init__(self, sink: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(sink, message)
        self.retry_after = retry_after


class SinkTimeout(SinkUnavailable):
    """The receiver or broker did not answer within the sink's timeout."""


class SinkRejected(SinkError):
    """Permanent: the receiver refused this notification (4xx other than 408/429, bad auth).
    Retrying will not help; the notification is dropped (counted and logged)."""
