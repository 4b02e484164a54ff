"""Structured logging with structlog: JSON lines under systemd, a console renderer on a TTY.

Event names are stable `noun.verb` strings (`poll.failed`, `quota.grown`) with fields, never
sentences; tests assert on them with `structlog.testing.capture_logs()`.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of writing, not at configure time (a
    redirected or replaced stderr — pytest's capture, a daemon's re-opened stream — must not leave
    loggers holding a closed file)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


_stderr: TextIO = _CurrentStderr()  # type: ignore[assignment]  # a write/flush duck, all structlog needs of a file


def configure_logging(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Configure structlog once per process. Logs go to stderr; stdout is for command output."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()) if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound with `logger_name=<module name>` (structlog reserves the keyword `logger`)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(logger_name=name)
    return logger


class TransitionLog:
    """Log on transitions only (Home Assistant's coordinator habit): one line when something starts
    failing (or fails differently), one when it recovers — never a line per failed attempt.

        bandwidth = TransitionLog(log, "bandwidth")       # events bandwidth.failed / bandwidth.recovered
        bandwidth.failed(cluster, str(exc), cluster=cluster)
        bandwidth.ok(cluster, cluster=cluster)

    Keys let one instance track many things (a stage per cluster, a sink per name). `failing`
    answers whether a key is failing now; `failures(key)` how many attempts in a row.
    """

    def __init__(self, logger: structlog.typing.FilteringBoundLogger, noun: str, *,
                 failed_level: Literal["info", "warning", "error"] = "warning", failed_event: str | None = None,
                 recovered_event: str | None = None, once_per_outage: bool = False) -> None:
        """`failed_event`/`recovered_event` override `<noun>.failed`/`<noun>.recovered` (events
        other tools already read); `once_per_outage`: a key that fails differently while failing is
        not logged again (one line per outage, as a poller's coordinator does)."""
        self._log = logger
        self._noun = noun
        self._failed_level = failed_level
        self._failed_event = failed_event or f"{noun}.failed"
        self._recovered_event = recovered_event or f"{noun}.recovered"
        self._once_per_outage = once_per_outage
        self._errors: dict[object, str] = {}
        self._counts: dict[object, int] = {}

    def failed(self, key: object, error: str, *, exc_info: bool = False, **fields: object) -> bool:
        """Record a failure; logs `<noun>.failed` when `key` was fine or failed differently. True if it logged."""
        self._counts[key] = self._counts.get(key, 0) + 1
        known = self._errors.get(key)
        if known == error or (self._once_per_outage and known is not None):
            return False
        self._errors[key] = error
        emit = getattr(self._log, self._failed_level)
        emit(self._failed_event, error=error, exc_info=exc_info, **fields)
        return True

    def ok(self, key: object, **fields: object) -> bool:
        """Record a success; logs `<noun>.recovered` (with `failures`) when `key` was failing. True if it logged."""
        failures = self._counts.pop(key, 0)
        if self._errors.pop(key, None) is None:
            return False
        self._log.info(self._recovered_event, failures=failures, **fields)
        return True

    def failing(self, key: object) -> bool:
        return key in self._errors

    def failures(self, key: object) -> int:
        return self._counts.get(key, 0)

    def forget(self, key: object) -> None:
        """Drop a key that no longer exists (a removed target or sink), without logging."""
        self._errors.pop(key, None)
        self._counts.pop(key, None)
