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


_stderr: TextIO = _CurrentStderr()  # type: ignore[assignment]


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
