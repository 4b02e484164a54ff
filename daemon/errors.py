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
    """Retrying will not help (401, 400, 404, a refused PATCH): alert and stop acting on it.

    `after_lost_answer`: the refusal answered a retry, and an earlier attempt of the same request
    went out and got no trustworthy answer (a timeout, a dropped connection, a 5xx): that attempt
    may have been carried out, or may still be. For a write, the refusal says nothing about what
    the target now holds. Set by the transport that retried."""

    def __init__(self, message: str, *, after_lost_answer: bool = False) -> None:
        super().__init__(message)
        self.after_lost_answer = after_lost_answer
