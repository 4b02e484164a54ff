"""Plain data of the alerting layer: severities, per-alert state, notifications.

Everything here is a frozen dataclass or an enum, JSON-friendly, and free of IO, so the rules can
be tested as functions and the state can be persisted and reloaded as JSON.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PAYLOAD_SCHEMA = "quotapilot.alert/v1"
"""The `schema` field of every JSON notification (README, "Alerts"). Bumped on a breaking change."""


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class Status(enum.StrEnum):
    """What a notification says about its alert."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Phase(enum.StrEnum):
    """Where an alert is in its state machine."""

    INACTIVE = "inactive"
    PENDING = "pending"   # the condition holds, but not yet for `for_seconds`
    FIRING = "firing"


def alert_id(cluster: str, target: str, kind: str) -> str:
    """The stable id `cluster/target/kind` (the parts never contain '/')."""
    return "/".join(part.replace("/", "_") for part in (cluster, target, kind))


@dataclass(frozen=True, slots=True)
class Condition:
    """What one rule concluded about one alert this evaluation.

    `severity` None means "the condition does not hold" (resolve if firing). A rule that cannot
    tell (no data this cycle) emits no Condition at all, so the alert keeps its state. `event`
    conditions are one-shot: they notify once and go straight back to inactive (no resolve).
    `memory` is the rule's own state (counters, the previous sample), kept with the alert.
    """

    alert_id: str
    kind: str
    cluster: str
    target: str
    path: str
    severity: Severity | None
    summary: str
    value: float | None = None
    threshold: float | None = None
    runway_seconds: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    memory: tuple[tuple[str, float], ...] = ()
    event: bool = False
    for_seconds: float | None = None  # None: the rule settings' default


@dataclass(frozen=True, slots=True)
class AlertState:
    """One alert's persisted state (the `alert_state` table holds it as JSON).

    `sequence` counts notifications of this alert over its whole life; it orders them and makes
    the dedup key (`{id}#{sequence}`), so a restart never re-uses a key. `episode` counts firings.
    """

    alert_id: str
    phase: Phase = Phase.INACTIVE
    severity: Severity | None = None
    pending_since: float | None = None
    started_at: float | None = None
    last_notified_at: float | None = None
    episode: int = 0
    sequence: int = 0
    summary: str = ""
    kind: str = ""
    memory: tuple[tuple[str, float], ...] = ()
    notified_severity: Severity | None = None
    """The severity of the last firing notification (None when none is out: inactive, or firing
    from a state stored before this field, which the rules re-send at its next evaluation).
    `severity` may drop below it silently; the next re-send is due by the shorter of the two
    severities' intervals, so it comes before the last notification expires."""

    def remembered(self, key: str, default: float | None = None) -> float | None:
        for name, value in self.memory:
            if name == key:
                return value
        return default

    def to_json(self) -> str:
        data = asdict(self)
        data["memory"] = [list(pair) for pair in self.memory]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        data: dict[str, Any] = json.loads(text)
        data["phase"] = Phase(data["phase"])
        data["severity"] = Severity(data["severity"]) if data.get("severity") else None
        data["notified_severity"] = Severity(data["notified_severity"]) if data.get("notified_severity") else None
        data["memory"] = tuple((str(k), float(v)) for k, v in data.get("memory", ()))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def evolve(self, **changes: Any) -> AlertState:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one alert, sink-independent; `payload()` is the documented JSON."""

    alert_id: str
    dedup_key: str
    sequence: int
    episode: int
    status: Status
    severity: Severity
    kind: str
    cluster: str
    target: str
    path: str
    summary: str
    evaluated_at: float
    started_at: float
    ended_at: float | None = None
    value: float | None = None
    threshold: float | None = None
    runway_seconds: float | None = None
    event: bool = False
    renotify: bool = False
    labels: tuple[tuple[str, str], ...] = field(default=())
    previous_severity: Severity | None = None
    """The severity this alert was last notified with, when this notification changes it (an
    escalation; a re-send or a resolve after a silent drop); None otherwise. A receiver that
    keys alerts by severity (Alertmanager's labels) ends that one."""

    def payload(self, *, generator_url: str | None = None,
                expires_after_seconds: float | None = None) -> dict[str, Any]:
        """The JSON notification (schema `quotapilot.alert/v1`, README "Alerts"). `expires_at` is
        `evaluated_at + expires_after_seconds` while firing (None: no expiry given)."""
        from quotapilot.alerts.words import iso8601, runway_in_words

        return {
            "schema": PAYLOAD_SCHEMA,
            "id": self.alert_id,
            "dedup_key": self.dedup_key,
            "sequence": self.sequence,
            "episode": self.episode,
            "status": str(self.status),
            "severity": str(self.severity),
            "previous_severity": None if self.previous_severity is None else str(self.previous_severity),
            "kind": self.kind,
            "cluster": self.cluster,
            "target": self.target,
            "path": self.path,
            "summary": self.summary,
            "value": self.value,
            "threshold": self.threshold,
            "runway_seconds": self.runway_seconds,
            "runway_text": runway_in_words(self.runway_seconds) if self.runway_seconds is not None else None,
            "event": self.event,
            "renotify": self.renotify,
            "started_at": iso8601(self.started_at),
            "ended_at": iso8601(self.ended_at) if self.ended_at is not None else None,
            "evaluated_at": iso8601(self.evaluated_at),
            "evaluated_at_epoch": self.evaluated_at,
            "expires_at": (iso8601(self.evaluated_at + expires_after_seconds)
                           if self.status is Status.FIRING and expires_after_seconds is not None else None),
            "labels": dict(self.labels),
            "generator_url": generator_url,
        }
