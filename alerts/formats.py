"""Notification payload → what each receiver format wants on the wire. Pure.

- `json`: our documented schema (`quotapilot.alert/v1`, README "Alerts"), as is;
- `alertmanager`: Alertmanager's API v2 `postableAlerts` (the alert, and the same alert ended
  under the other severities of its kind);
- `slack`: an incoming-webhook message with the runway in words.
"""

from __future__ import annotations

from typing import Any

from quotapilot.alerts.rules import KIND_SEVERITIES

ALERTNAMES = {
    "utilization": "QuotapilotUtilization",
    "runway": "QuotapilotRunway",
    "quota_state": "QuotapilotQuotaState",
    "growth": "QuotapilotGrowth",
    "ingest_anomaly": "QuotapilotIngestAnomaly",
    "collector": "QuotapilotCollector",
    "daemon": "QuotapilotDaemon",
}


STATE_LABELS = frozenset({"quota_state"})
"""Payload labels whose value changes within an alert's episode: annotations in Alertmanager."""


def alertname(kind: str) -> str:
    """`runway_inodes` → `QuotapilotRunway`, `growth_blocked` → `QuotapilotGrowth`."""
    for prefix in sorted(ALERTNAMES, key=len, reverse=True):
        if kind == prefix or kind.startswith(prefix + "_"):
            return ALERTNAMES[prefix]
    return "Quotapilot" + "".join(part.title() for part in kind.split("_"))


def to_alertmanager(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The postable alert, and the same alert ended under its other severities. Firing alerts
    carry `endsAt` = the payload's `expires_at` (so a daemon that dies does not leave them firing
    forever); resolved ones and events carry their end.

    Alertmanager tells alerts apart by their labels, `severity` among them: an alert of a kind
    that fires as warning and as critical (`KIND_SEVERITIES`) is two alerts there. Which of them
    it holds firing must not depend on which notifications arrived: the outbox sends only the
    newest pending notification of an alert, so the escalation that carried `previous_severity`
    may have been superseded by a re-send or the resolve. Every post therefore also ends the alert
    under each other severity of its kind (and under `previous_severity`): `endsAt` the
    notification's time, `startsAt` the episode's start (Alertmanager merges it into an alert it
    holds firing under those labels, whose span it overlaps, or replaces it: either way it ends).

    Most of those were never firing there. Alertmanager stores such an alert as resolved (until
    its garbage collection) and does not page for it: its dedup notifies a group of resolved
    alerts only if the group's last notification had firing ones. Where a route's `group_by` puts
    both severities in one group (no `severity` in it) and the receiver has `send_resolved`, it
    is listed among that group's resolved alerts, and a group with firing alerts is notified once
    more when such an alert joins it that its last notification did not list.

    The payload's labels that change within an episode (`STATE_LABELS`: a quota's `quota_state`)
    are annotations here: as labels each value was another alert."""
    labels = {
        "alertname": alertname(payload["kind"]),
        "alert_id": payload["id"],
        "kind": payload["kind"],
        "severity": payload["severity"],
        "cluster": payload["cluster"],
        "target": payload["target"],
        "path": payload["path"],
    }
    annotations = {"summary": payload["summary"], "dedup_key": payload["dedup_key"]}
    # a label that says what the alert is *now* (a quota's state) would make each value another
    # Alertmanager alert, which no later post ends: those are annotations; the others (a tier, an
    # event's holder) are the alert's identity for its whole episode, and routes match on them
    for key, value in (payload.get("labels") or {}).items():
        name = str(key)
        if name not in labels and name not in annotations:
            (annotations if name in STATE_LABELS else labels)[name] = str(value)
    if payload.get("runway_text"):
        annotations["runway"] = payload["runway_text"]
    if payload.get("value") is not None:
        annotations["value"] = f"{payload['value']:.6g}"
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations,
        "startsAt": payload["started_at"],
    }
    if payload["status"] == "resolved":
        ends = payload.get("ended_at")
    elif payload.get("event"):
        ends = payload.get("ended_at") or payload.get("expires_at")
    else:
        ends = payload.get("expires_at")
    if ends:
        alert["endsAt"] = ends
    if payload.get("generator_url"):
        alert["generatorURL"] = payload["generator_url"]
    others = [str(severity) for severity in KIND_SEVERITIES.get(payload["kind"], ())]
    if payload.get("previous_severity"):
        others.append(payload["previous_severity"])
    ended = [{**alert, "labels": {**labels, "severity": severity}, "endsAt": payload["evaluated_at"]}
             for severity in dict.fromkeys(others) if severity != payload["severity"]]
    return [alert, *ended]


_ICONS = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


def to_slack(payload: dict[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: one line of text, the runway in words when there is one."""
    if payload["status"] == "resolved":
        head = f":white_check_mark: RESOLVED {payload['summary']}"
    else:
        head = f"{_ICONS.get(payload['severity'], '')} {payload['severity'].upper()} {payload['summary']}"
    parts = [head.strip()]
    if payload.get("runway_text") and payload["status"] != "resolved":
        parts.append(f"runway: {payload['runway_text']}")
    parts.append(f"`{payload['id']}`")
    return {"text": " — ".join(parts)}
