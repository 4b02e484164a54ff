"""Typed errors at quotapilot's boundaries (VMS, brokers, receivers, config)."""

from __future__ import annotations


class QuotapilotError(Exception):
    """Base of every error quotapilot raises on purpose."""


class ConfigError(QuotapilotError):
    """Invalid configuration; `field` is the dotted path of the offending setting. `problems`
    holds every problem found (this one first), so a user can fix them all in one go."""

    def __init__(self, field: str, reason: str, *, others: list[ConfigError] | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.problems: list[ConfigError] = [self, *(others or [])]


class TemporaryError(QuotapilotError):
    """Worth retrying later: network trouble, 5xx, 429. `delay` is a server-requested wait."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(QuotapilotError):
    """Retrying will not help (401, 400, 404, a refused PATCH): alert and stop acting on it."""
