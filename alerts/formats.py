"""Notification payload → what each receiver format wants on the wire. Pure.

- `json`: our documented schema (`quotapilot.alert/v1`, README "Alerts"), as is;
- `alertmanager`: Alertmanager's API v2 `postableAlerts` (a list of one alert);
- `slack`: an incoming-webhook message with the runway in words.
"""

from __future__ import annotations

from typing import Any

ALERTNAMES = {
    "utilization": "QuotapilotUtilization",
    "runway": "QuotapilotRunway",
    "quota_state": "QuotapilotQuotaState",
    "growth": "QuotapilotGrowth",
    "ingest_anomaly": "QuotapilotIngestAnomaly",
    "collector": "QuotapilotCollector",
    "daemon": "QuotapilotDaemon",
}


def alertname(kind: str) -> str:
    """`runway_inodes` → `QuotapilotRunway`, `growth_blocked` → `QuotapilotGrowth`."""
    for prefix in sorted(ALERTNAMES, key=len, reverse=True):
        if kind == prefix or kind.startswith(prefix + "_"):
            return ALERTNAMES[prefix]
    return "Quotapilot" + "".join(part.title() for part in kind.split("_"))


def to_alertmanager(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One postable alert. Firing alerts carry `endsAt` = the payload's `expires_at` (so a daemon
    that dies does not leave them firing forever); resolved ones and events carry their end.

    Alertmanager tells alerts apart by their labels, `severity` among them: when the notification
    changes the severity (`previous_severity`), a second postable alert ends the one under the
    previous severity now, or an escalated warning would stay firing there until it expired."""
    labels = {
        "alertname": alertname(payload["kind"]),
        "alert_id": payload["id"],
        "kind": payload["kind"],
        "severity": payload["severity"],
        "cluster": payload["cluster"],
        "target": payload["target"],
        "path": payload["path"],
    }
    labels.update({str(k): str(v) for k, v in (payload.get("labels") or {}).items()})
    annotations = {"summary": payload["summary"], "dedup_key": payload["dedup_key"]}
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
    previous = payload.get("previous_severity")
    if not previous or previous == payload["severity"]:
        return [alert]
    ended = {**alert, "labels": {**labels, "severity": previous},
             "endsAt": payload.get("ended_at") or payload["evaluated_at"]}
    return [alert, ended]


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
