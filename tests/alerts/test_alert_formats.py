"""Routing, quiet windows, wire formats (Alertmanager v2 schema, Slack), durations in words."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from quotapilot.alerts.formats import alertname, to_alertmanager, to_slack
from quotapilot.alerts.model import Notification, Severity, Status
from quotapilot.alerts.routing import QuietWindow, Route, route
from quotapilot.alerts.words import iso8601, runway_in_words

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
SCHEMA = json.loads((Path(__file__).parent / "alertmanager_postable_alerts.schema.json").read_text())


def note(severity: Severity = Severity.WARNING, status: Status = Status.FIRING, *,
         target: str = "cosmos7-raw", runway: float | None = 30 * 3600.0,
         previous: Severity | None = None) -> Notification:
    return Notification(
        alert_id=f"cosmos7/{target}/runway", dedup_key=f"cosmos7/{target}/runway#1", sequence=1, episode=1,
        status=status, severity=severity, kind="runway", cluster="cosmos7", target=target,
        path=f"/cosmos7/{target.split('-')[-1]}", summary=f"{target} bytes full in 1 day 6 hours",
        evaluated_at=T0 + 3600, started_at=T0, ended_at=T0 + 3600 if status is Status.RESOLVED else None,
        value=runway, threshold=72 * 3600.0, runway_seconds=runway, previous_severity=previous)


def validated(body: list[dict[str, object]]) -> list[dict[str, object]]:
    jsonschema.validate(body, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return body


class TestWords:
    @pytest.mark.parametrize(("seconds", "words"), [
        (None, "beyond the forecast horizon"), (0, "now"), (30, "under a minute"),
        (61, "1 minute"), (3 * 3600 + 20 * 60, "3 hours 20 minutes"), (86400, "1 day"),
        (2 * 86400 + 4 * 3600 + 59, "2 days 4 hours"), (2 * 86400 + 5 * 60, "2 days"),
    ])
    def test_runway_in_words(self, seconds: float | None, words: str) -> None:
        assert words == runway_in_words(seconds)

    def test_iso8601(self) -> None:
        assert iso8601(T0) == "2026-01-01T00:00:00.000Z"


class TestRouting:
    def test_no_routes_means_every_sink_now(self) -> None:
        assert route(note(), (), ["mqtt", "webhook-0"], T0) == {"mqtt": T0, "webhook-0": T0}

    def test_severity_and_glob(self) -> None:
        routes = (Route(match="/cosmos7/raw*", min_severity=Severity.CRITICAL, sinks=("pager",)),
                  Route(match="*", sinks=("chat",)))
        assert route(note(Severity.WARNING), routes, ["pager", "chat"], T0) == {"chat": T0}
        assert route(note(Severity.CRITICAL), routes, ["pager", "chat"], T0) == {"pager": T0, "chat": T0}
        assert route(note(Severity.CRITICAL, target="cosmos7-temp"), routes,
                                     ["pager", "chat"], T0) == {"chat": T0}

    def test_quiet_window_holds_non_critical_until_it_ends(self) -> None:
        quiet = (QuietWindow.parse("22:00", "07:00"),)
        routes = (Route(sinks=("chat",), quiet=quiet),)
        at_23h = T0 + 23 * 3600
        assert route(note(), routes, ["chat"], at_23h) == {"chat": T0 + 31 * 3600}
        assert {"chat": at_23h} == route(note(Severity.CRITICAL), routes, ["chat"], at_23h)
        assert route(note(), routes, ["chat"], T0 + 12 * 3600) == {"chat": T0 + 12 * 3600}
        assert route(note(), routes, ["chat"], T0 + 3600) == {"chat": T0 + 7 * 3600}


class TestAlertmanager:
    @pytest.mark.parametrize("status", list(Status))
    def test_validates_against_postable_alerts(self, status: Status) -> None:
        body = to_alertmanager(note(status=status).payload(
            generator_url="http://127.0.0.1:9187/metrics", expires_after_seconds=8 * 3600))
        jsonschema.validate(body, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        alert = body[0]
        assert alert["labels"]["alertname"] == "QuotapilotRunway"
        assert alert["labels"]["alert_id"] == "cosmos7/cosmos7-raw/runway"
        assert alert["annotations"]["runway"] == "1 day 6 hours"
        if status is Status.RESOLVED:
            assert alert["endsAt"] == "2026-01-01T01:00:00.000Z"
        else:
            assert alert["endsAt"] == "2026-01-01T09:00:00.000Z"

    def test_a_severity_change_ends_the_alert_under_the_previous_severity(self) -> None:
        """Alertmanager tells alerts apart by their labels, `severity` among them. Before: an
        escalated warning stayed firing there beside the critical, and after the resolve, until
        its own `endsAt` (48 h for a warning); a resolve carrying a silently dropped severity left
        the critical one firing. The notification that changes the severity ends the old one."""
        escalated = validated(to_alertmanager(note(Severity.CRITICAL, previous=Severity.WARNING).payload(
            expires_after_seconds=8 * 3600)))
        assert [(a["labels"]["severity"], a["endsAt"]) for a in escalated] == [
            ("critical", "2026-01-01T09:00:00.000Z"), ("warning", "2026-01-01T01:00:00.000Z")]
        assert escalated[0]["labels"] | {"severity": "warning"} == escalated[1]["labels"]
        resolved = validated(to_alertmanager(note(Severity.WARNING, Status.RESOLVED,
                                                  previous=Severity.CRITICAL).payload()))
        assert [(a["labels"]["severity"], a["endsAt"]) for a in resolved] == [
            ("warning", "2026-01-01T01:00:00.000Z"), ("critical", "2026-01-01T01:00:00.000Z")]

    @pytest.mark.parametrize("status", list(Status))
    def test_every_post_ends_the_alert_under_the_other_severities_of_its_kind(self, status: Status) -> None:
        """Review round 8: `previous_severity` belongs to one notification, and the outbox sends
        only the newest pending one of an alert. An escalation queued while Alertmanager was down
        and superseded by the critical re-send or by the resolve (neither carries a previous
        severity) left the warning firing there until its `endsAt`, up to 48 h. So every post of
        a kind that fires as warning and as critical ends it under the other severity — at the
        notification's time, from the episode's start — and a resolve ends it under both."""
        body = validated(to_alertmanager(note(Severity.CRITICAL, status).payload(expires_after_seconds=8 * 3600)))
        ends = "2026-01-01T01:00:00.000Z" if status is Status.RESOLVED else "2026-01-01T09:00:00.000Z"
        assert [(a["labels"]["severity"], a["startsAt"], a["endsAt"]) for a in body] == [
            ("critical", "2026-01-01T00:00:00.000Z", ends),
            ("warning", "2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z")]
        assert body[0]["labels"] | {"severity": "warning"} == body[1]["labels"]
        assert body[0]["annotations"] == body[1]["annotations"]

    def test_a_quota_state_change_ends_the_earlier_state_in_alertmanager(self) -> None:
        """CHANGELOG "Known" until 2026-12-05: `quota_state` carried the quota's state
        (`SOFT_EXCEEDED`, `HARD_EXCEEDED`) as a label, so each state was another Alertmanager
        alert, and the post that escalated to HARD_EXCEEDED (or the resolve) ended only
        `{severity="warning", quota_state="HARD_EXCEEDED"}`: the SOFT_EXCEEDED warning stayed
        firing until its `endsAt`, up to 48 h. What describes an alert's current state is an
        annotation; its labels are its identity, the same through the episode (an event's labels
        stay: each is its own alert)."""
        def state_note(severity: Severity, status: Status, state: str,
                       previous: Severity | None = None) -> Notification:
            return replace(note(severity, status, previous=previous), kind="quota_state",
                           alert_id="cosmos7/cosmos7-raw/quota_state", dedup_key="cosmos7/cosmos7-raw/quota_state#1",
                           labels=(("quota_state", state),))
        soft = validated(to_alertmanager(state_note(Severity.WARNING, Status.FIRING, "SOFT_EXCEEDED").payload(
            expires_after_seconds=48 * 3600)))
        hard = validated(to_alertmanager(state_note(Severity.CRITICAL, Status.FIRING, "HARD_EXCEEDED",
                                                    Severity.WARNING).payload(expires_after_seconds=8 * 3600)))
        resolved = validated(to_alertmanager(state_note(Severity.CRITICAL, Status.RESOLVED, "OK").payload()))
        ended = {json.dumps(a["labels"], sort_keys=True) for body in (hard, resolved) for a in body
                 if a["endsAt"] == "2026-01-01T01:00:00.000Z"}
        for fired in (soft[0], hard[0]):
            assert json.dumps(fired["labels"], sort_keys=True) in ended, fired["labels"]
        assert (soft[0]["annotations"]["quota_state"], hard[0]["annotations"]["quota_state"]) == (
            "SOFT_EXCEEDED", "HARD_EXCEEDED")

    def test_an_events_labels_stay_labels(self) -> None:
        event = Notification(alert_id="c1/fleet/leadership", dedup_key="leadership/c1@2", sequence=2, episode=2,
                             status=Status.FIRING, severity=Severity.INFO, kind="leadership", cluster="c1",
                             target="fleet", path="", summary="b leads c1", evaluated_at=T0, started_at=T0,
                             event=True, labels=(("holder", "b"), ("transition", "takeover")))
        [alert] = validated(to_alertmanager(event.payload(expires_after_seconds=0.0)))
        assert (alert["labels"]["holder"], alert["labels"]["transition"]) == ("b", "takeover")

    @pytest.mark.parametrize(("kind", "severity"), [
        ("growth_would_grow", Severity.INFO), ("collector", Severity.CRITICAL),
        ("ingest_anomaly", Severity.WARNING), ("leadership", Severity.INFO)])
    def test_a_kind_with_one_severity_is_one_alert(self, kind: str, severity: Severity) -> None:
        """Info-only kinds, and kinds that fire with one severity only, are one alert in
        Alertmanager as well: nothing else to end."""
        for status in Status:
            single = replace(note(severity, status), kind=kind)
            [alert] = validated(to_alertmanager(single.payload(expires_after_seconds=3600)))
            assert alert["labels"]["severity"] == str(severity)

    def test_an_event_ends_when_it_happens(self) -> None:
        """An event (`event: true`) has no resolve: its `endsAt` is its end, or, lacking one (a
        leadership change), its expiry, which is the moment it happened — never absent, which
        Alertmanager would read as "firing until resolve_timeout"."""
        event = Notification(alert_id="c1/fleet/leadership", dedup_key="leadership/c1@2", sequence=2, episode=2,
                             status=Status.FIRING, severity=Severity.INFO, kind="leadership", cluster="c1",
                             target="fleet", path="", summary="b leads c1", evaluated_at=T0, started_at=T0,
                             event=True)
        [alert] = validated(to_alertmanager(event.payload(expires_after_seconds=0.0)))
        assert alert["endsAt"] == "2026-01-01T00:00:00.000Z"

    def test_schema_catches_a_bad_body(self) -> None:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([{"labels": {"a": 1}}], SCHEMA)

    def test_alertnames(self) -> None:
        assert alertname("utilization_inodes") == "QuotapilotUtilization"
        assert alertname("growth_blocked") == "QuotapilotGrowth"


class TestSlack:
    def test_firing_has_runway_in_words(self) -> None:
        text = to_slack(note(Severity.CRITICAL).payload())["text"]
        assert "CRITICAL" in text and "runway: 1 day 6 hours" in text and "cosmos7/cosmos7-raw/runway" in text

    def test_resolved(self) -> None:
        assert to_slack(note(status=Status.RESOLVED).payload())["text"].startswith(":white_check_mark: RESOLVED")


def test_filesystem_unreachable_keeps_its_tier_label_in_alertmanager() -> None:
    """README's alert table: `filesystem_unreachable` ... "(label `tier`)", the per-tier alert an
    operator routes on (`tier="hot"` pages). The tier never changes within an episode; a first fix
    of `quota_state` made every payload label an annotation, and a route matching `tier` no longer
    matched (review of 2026-12-05's change)."""
    t0 = T0
    notification = Notification(
        alert_id="filesystems/nas/filesystem_unreachable", dedup_key="filesystems/nas/filesystem_unreachable#1",
        sequence=1, episode=1, status=Status.FIRING, severity=Severity.CRITICAL, kind="filesystem_unreachable",
        cluster="filesystems", target="nas", path="/", summary="filesystem nas (hot tier) is unreachable",
        evaluated_at=t0, started_at=t0, labels=(("tier", "hot"),))
    [alert] = to_alertmanager(notification.payload(expires_after_seconds=8 * 3600))
    assert alert["labels"].get("tier") == "hot", alert


def test_quota_state_moves_to_annotations() -> None:
    notification = Notification(
        alert_id="c1/q/quota_state", dedup_key="c1/q/quota_state#1", sequence=1, episode=1, status=Status.FIRING,
        severity=Severity.WARNING, kind="quota_state", cluster="c1", target="q", path="/q", summary="s",
        evaluated_at=T0, started_at=T0, labels=(("quota_state", "SOFT_EXCEEDED"),))
    alerts = to_alertmanager(replace(notification).payload(expires_after_seconds=3600))
    assert "quota_state" not in alerts[0]["labels"]
