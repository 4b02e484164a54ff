"""The pure alert rules: thresholds, hysteresis, for:, re-notify, resolve, counters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotapilot.alerts.model import AlertState, Condition, Notification, Phase, Severity, Status
from quotapilot.alerts.rules import (
    KIND_SEVERITIES,
    NEVER_RESENT_EXPIRY_SECONDS,
    GrowthInput,
    RuleConfig,
    RuleInputs,
    SeriesInput,
    TargetInput,
    TaskHealth,
    cycle_conditions,
    evaluate,
    expiry_seconds,
    runway_severity,
    task_conditions,
    utilization_severity,
)

T0 = 1_767_225_600.0
CONFIG = RuleConfig(renotify_seconds=4 * 3600.0)


def quota(used: float, limit: float = 100.0, *, t: float = T0, state: str = "OK",
          runway: float | None = None, known: bool = False,
          growth: tuple[GrowthInput, ...] = (), inodes: SeriesInput | None = None,
          expect: tuple[float, float, float] | None = None) -> TargetInput:
    return TargetInput(
        cluster="c1", target="raw", path="/c1/raw", is_pool=False, t=t, state=state,
        bytes=SeriesInput(used=used, limit=limit, forecast_known=known or runway is not None,
                          runway_p50_seconds=runway, runway_p90_seconds=runway, expected=expect),
        inodes=inodes, growth=growth)


class Run:
    """Feeds cycles through the rules, keeping states, collecting notifications."""

    def __init__(self, config: RuleConfig = CONFIG) -> None:
        self.config = config
        self.states: dict[str, AlertState] = {}
        self.notes: list[Notification] = []

    def cycle(self, now: float, *targets: TargetInput, poll_ok: bool = True) -> list[Notification]:
        inputs = RuleInputs(cluster="c1", now=now, poll_ok=poll_ok,
                            poll_error=None if poll_ok else "connection refused", targets=targets)
        result = evaluate(self.states, cycle_conditions(inputs, self.states, self.config), self.config, now)
        self.states.update(result.states)
        self.notes.extend(result.notifications)
        for note in result.notifications:  # the Alertmanager format ends an alert under the others
            assert note.severity in KIND_SEVERITIES[note.kind], f"{note.kind} fired {note.severity}"
        return list(result.notifications)

    def of(self, alert_id: str) -> list[tuple[Status, Severity]]:
        return [(n.status, n.severity) for n in self.notes if n.alert_id == alert_id]


class TestUtilization:
    """warning ≥ 0.80, critical ≥ 0.90, hysteresis on the way down."""

    def test_fires_escalates_resolves(self) -> None:
        run = Run()
        run.cycle(T0, quota(79))
        run.cycle(T0 + 60, quota(81))
        run.cycle(T0 + 120, quota(91))
        run.cycle(T0 + 180, quota(89.5))   # within hysteresis of critical: stays critical
        run.cycle(T0 + 240, quota(85))     # warning again: recorded, not sent
        run.cycle(T0 + 300, quota(79))     # within hysteresis of warning: holds
        assert run.states["c1/raw/utilization"].severity is Severity.WARNING
        run.cycle(T0 + 360, quota(70))
        assert run.of("c1/raw/utilization") == [
            (Status.FIRING, Severity.WARNING),
            (Status.FIRING, Severity.CRITICAL),
            (Status.RESOLVED, Severity.WARNING),
        ]

    def test_ids_payload_and_dedup_keys(self) -> None:
        run = Run()
        [note] = run.cycle(T0, quota(95))
        payload = note.payload()
        assert payload["id"] == "c1/raw/utilization"
        assert payload["dedup_key"] == "c1/raw/utilization#1"
        assert (
            payload["severity"], payload["status"], payload["schema"]) == ("critical", "firing", "quotapilot.alert/v1")
        [resolved] = run.cycle(T0 + 60, quota(10))
        assert resolved.dedup_key == "c1/raw/utilization#2"
        assert resolved.ended_at == T0 + 60

    def test_inodes_get_their_own_kind(self) -> None:
        run = Run()
        run.cycle(T0, quota(10, inodes=SeriesInput(used=950, limit=1000)))
        assert run.of("c1/raw/utilization_inodes") == [(Status.FIRING, Severity.CRITICAL)]
        assert run.of("c1/raw/utilization") == []

    def test_renotify_after_interval(self) -> None:
        run = Run()
        run.cycle(T0, quota(95))
        run.cycle(T0 + 3600, quota(95))
        run.cycle(T0 + 4 * 3600, quota(95))
        renotified = [n for n in run.notes if n.alert_id == "c1/raw/utilization"]
        assert [n.renotify for n in renotified] == [False, True]
        assert [n.dedup_key for n in renotified] == ["c1/raw/utilization#1", "c1/raw/utilization#2"]

    def test_warnings_renotify_daily_info_never(self) -> None:
        run = Run()
        run.cycle(T0, quota(85))
        run.cycle(T0 + 5 * 3600, quota(85))
        run.cycle(T0 + 24 * 3600, quota(85))
        assert [n.renotify for n in run.notes if n.alert_id == "c1/raw/utilization"] == [False, True]
        would = (GrowthInput("bytes", "would_grow", "p90 crosses"),)
        for day in range(3):
            run.cycle(T0 + (2 + day) * 86400, quota(10, growth=would))
        assert len([n for n in run.notes if n.alert_id == "c1/raw/growth_would_grow"]) == 1

    def test_for_duration_delays_firing(self) -> None:
        run = Run(RuleConfig(for_seconds=300))
        run.cycle(T0, quota(95))
        run.cycle(T0 + 120, quota(95))
        assert run.of("c1/raw/utilization") == []
        run.cycle(T0 + 300, quota(95))
        assert run.of("c1/raw/utilization") == [(Status.FIRING, Severity.CRITICAL)]

    def test_pending_that_clears_never_notifies(self) -> None:
        run = Run(RuleConfig(for_seconds=300))
        run.cycle(T0, quota(95))
        run.cycle(T0 + 120, quota(10))
        run.cycle(T0 + 600, quota(10))
        assert run.of("c1/raw/utilization") == []

    def test_missing_data_keeps_the_alert(self) -> None:
        run = Run()
        run.cycle(T0, quota(95))
        run.cycle(T0 + 60, poll_ok=False)  # no observations: nothing to say about raw
        assert Phase.FIRING is run.states["c1/raw/utilization"].phase


class TestExpiry:
    """A firing notification tells its receivers how long to hold the alert without hearing more
    (`expires_at`, Alertmanager's `endsAt`): twice the interval at which the rules re-send it.
    Review round 7: every alert got 2 × `renotify_seconds` (the critical interval, 8 h), so
    Alertmanager resolved a still-firing warning (re-sent every 24 h) from hour 8 to hour 24, and
    an info alert (never re-sent) for good 8 h after it fired."""

    @staticmethod
    def first(run: Run, alert: str) -> Notification:
        return next(n for n in run.notes if n.alert_id == alert)

    def test_twice_the_resend_interval_of_its_severity(self) -> None:
        run = Run()
        run.cycle(T0, quota(95))
        critical = self.first(run, "c1/raw/utilization")
        warning = Run()
        warning.cycle(T0, quota(85))
        pool = Run()
        pool.cycle(T0, TargetInput(cluster="c1", target="pool", path="/", is_pool=True, t=T0,
                                   bytes=SeriesInput(used=95, limit=100)))
        assert expiry_seconds(critical, CONFIG) == 8 * 3600
        assert expiry_seconds(self.first(warning, "c1/raw/utilization"), CONFIG) == 48 * 3600
        assert expiry_seconds(self.first(pool, "c1/pool/utilization"), CONFIG) == 48 * 3600  # pool_renotify 24 h

    def test_never_before_the_next_evaluation_can_resend(self) -> None:
        """Re-sends happen at evaluations: a re-send interval shorter than the poll interval is the poll's."""
        run = Run(RuleConfig(renotify_seconds=60))
        run.cycle(T0, quota(95))
        assert expiry_seconds(self.first(run, "c1/raw/utilization"), run.config,
                              evaluated_every_seconds=300) == 600

    def test_an_alert_never_resent_does_not_expire_while_it_fires(self) -> None:
        """Info alerts (and any severity whose interval is 0) are never re-sent. Omitting the
        expiry is no answer: Alertmanager ends an alert without `endsAt` after its
        `resolve_timeout` (5 min)."""
        run = Run(RuleConfig(renotify_seconds=0))
        run.cycle(T0, quota(95, growth=(GrowthInput("bytes", "would_grow", "p90 crosses"),)))
        would_grow = self.first(run, "c1/raw/growth_would_grow")
        assert would_grow.severity is Severity.INFO
        assert expiry_seconds(would_grow, run.config) == NEVER_RESENT_EXPIRY_SECONDS >= 10 * 365 * 86400
        assert expiry_seconds(self.first(run, "c1/raw/utilization"), run.config) == NEVER_RESENT_EXPIRY_SECONDS

    def test_an_event_expires_when_it_happens(self) -> None:
        run = Run()
        run.cycle(T0, quota(50, growth=(GrowthInput("bytes", "grown", "runway", 100, 200),)))
        grown = self.first(run, "c1/raw/growth")
        assert grown.event
        assert expiry_seconds(grown, CONFIG) == 0.0
        assert grown.payload(expires_after_seconds=0.0)["expires_at"] == grown.payload()["evaluated_at"]

    def test_a_silent_drop_is_resent_before_the_last_notification_expires(self) -> None:
        """A critical that drops to warning is recorded silently; the next re-send carries it. It
        comes after the critical interval (4 h), not the warning's (24 h): the critical notification
        expires at 8 h. From then on the warning's interval holds."""
        run = Run()
        run.cycle(T0, quota(95))
        run.cycle(T0 + 3600, quota(85))                 # silent
        assert run.cycle(T0 + 3 * 3600, quota(85)) == []
        [resent] = run.cycle(T0 + 4 * 3600, quota(85))
        assert (resent.severity, resent.renotify, resent.previous_severity) == (
            Severity.WARNING, True, Severity.CRITICAL)
        assert run.cycle(T0 + 27 * 3600, quota(85)) == []
        [daily] = run.cycle(T0 + 28 * 3600, quota(85))
        assert (daily.severity, daily.previous_severity) == (Severity.WARNING, None)

    def test_a_silent_drop_to_a_severity_never_resent_is_still_resent_once(self) -> None:
        config = RuleConfig(renotify_warning_seconds=0)
        run = Run(config)
        run.cycle(T0, quota(95))
        run.cycle(T0 + 3600, quota(85))
        [resent] = run.cycle(T0 + 4 * 3600, quota(85))
        assert (resent.severity, resent.previous_severity) == (Severity.WARNING, Severity.CRITICAL)
        assert expiry_seconds(resent, config) == NEVER_RESENT_EXPIRY_SECONDS
        assert run.cycle(T0 + 400 * 3600, quota(85)) == []

    def test_previous_severity_names_the_severity_a_notification_replaces(self) -> None:
        """Receivers that key alerts by severity (Alertmanager's labels) end that one."""
        run = Run()
        run.cycle(T0, quota(85))
        run.cycle(T0 + 60, quota(95))                  # escalation
        run.cycle(T0 + 120, quota(85))                 # silent drop
        run.cycle(T0 + 180, quota(10))                 # resolve, carrying the warning
        run.cycle(T0 + 240, quota(95))                 # a new episode
        assert [(n.status, n.severity, n.previous_severity) for n in run.notes] == [
            (Status.FIRING, Severity.WARNING, None),
            (Status.FIRING, Severity.CRITICAL, Severity.WARNING),
            (Status.RESOLVED, Severity.WARNING, Severity.CRITICAL),
            (Status.FIRING, Severity.CRITICAL, None),
        ]
        assert run.notes[1].payload()["previous_severity"] == "warning"

    def test_the_notified_severity_survives_a_restart(self) -> None:
        run = Run()
        run.cycle(T0, quota(95))
        run.cycle(T0 + 3600, quota(85))
        state = run.states["c1/raw/utilization"]
        assert (state.severity, state.notified_severity) == (Severity.WARNING, Severity.CRITICAL)
        assert AlertState.from_json(state.to_json()) == state
        stored_before = state.to_json().replace(', "notified_severity": "critical"', "")
        assert "notified_severity" not in stored_before
        assert AlertState.from_json(stored_before).notified_severity is None  # see TestStatesStoredBeforeAnUpgrade


class TestStatesStoredBeforeAnUpgrade:
    """Review round 8: an alert state stored before `notified_severity` existed loads with None.
    Its last notification went out with the old expiry (2 × `renotify_seconds` = 8 h at every
    severity), so its receivers have ended it since (Alertmanager: resolved). The new code never
    re-sends an info alert, and a warning only after 24 h: an info alert firing across the upgrade
    stayed resolved at its receivers for good, a warning for up to 16 h. Only such a stored state
    is firing without a notified severity: it is re-sent once, at its next evaluation."""

    @staticmethod
    def legacy(state: AlertState) -> AlertState:
        """`state` as the previous release stored it (no `notified_severity` key)."""
        data = json.loads(state.to_json())
        del data["notified_severity"]
        return AlertState.from_json(json.dumps(data))

    def test_a_firing_info_alert_is_sent_again_once(self) -> None:
        would = (GrowthInput("bytes", "would_grow", "p90 crosses"),)
        run = Run()
        run.cycle(T0 - 86400, quota(10, growth=would))
        stored = self.legacy(run.states["c1/raw/growth_would_grow"])
        assert (stored.phase, stored.notified_severity) == (Phase.FIRING, None)
        run.states["c1/raw/growth_would_grow"] = stored
        [resent] = run.cycle(T0, quota(10, growth=would))
        assert (resent.status, resent.severity, resent.renotify, resent.sequence) == (
            Status.FIRING, Severity.INFO, True, 2)
        assert expiry_seconds(resent, run.config) == NEVER_RESENT_EXPIRY_SECONDS  # the new expiry
        assert run.states["c1/raw/growth_would_grow"].notified_severity is Severity.INFO
        assert run.cycle(T0 + 60, quota(10, growth=would)) == []
        assert run.cycle(T0 + 30 * 86400, quota(10, growth=would)) == []

    def test_a_firing_warning_is_sent_again_at_once_then_daily(self) -> None:
        run = Run()
        run.cycle(T0 - 9 * 3600, quota(85))
        run.states["c1/raw/utilization"] = self.legacy(run.states["c1/raw/utilization"])
        [resent] = run.cycle(T0, quota(85))  # 9 h after its last send: expired at 8 h
        assert (resent.severity, resent.renotify, resent.previous_severity) == (Severity.WARNING, True, None)
        assert run.cycle(T0 + 23 * 3600, quota(85)) == []
        assert len(run.cycle(T0 + 24 * 3600, quota(85))) == 1

    def test_an_escalation_is_sent_as_one(self) -> None:
        run = Run()
        run.cycle(T0 - 3600, quota(85))
        run.states["c1/raw/utilization"] = self.legacy(run.states["c1/raw/utilization"])
        [escalated] = run.cycle(T0, quota(95))
        assert (escalated.severity, escalated.renotify) == (Severity.CRITICAL, False)

    def test_states_with_nothing_out_are_not_sent(self) -> None:
        """Inactive and pending states have no notified severity either: nothing to re-send."""
        run = Run(RuleConfig(for_seconds=300))
        run.cycle(T0, quota(10, growth=(GrowthInput("bytes", "would_grow", "p90 crosses"),)))
        run.cycle(T0 + 60, quota(95, growth=(GrowthInput("bytes", "none"),)))  # resolved; utilization pending
        phases = {alert: str(run.states[alert].phase) for alert in ("c1/raw/utilization", "c1/raw/growth_would_grow")}
        assert phases == {"c1/raw/utilization": "pending", "c1/raw/growth_would_grow": "inactive"}
        run.states = {alert: self.legacy(state) for alert, state in run.states.items()}
        assert run.cycle(T0 + 120, quota(95, growth=(GrowthInput("bytes", "none"),))) == []


class TestRunway:
    def test_windows(self) -> None:
        run = Run()
        run.cycle(T0, quota(50, runway=100 * 3600))
        run.cycle(T0 + 60, quota(50, runway=70 * 3600))
        run.cycle(T0 + 120, quota(50, runway=20 * 3600))
        run.cycle(T0 + 180, quota(50, runway=None, known=True))  # beyond the horizon: resolves
        assert run.of("c1/raw/runway") == [
            (Status.FIRING, Severity.WARNING),
            (Status.FIRING, Severity.CRITICAL),
            (Status.RESOLVED, Severity.CRITICAL),
        ]
        assert "c1/raw/runway" in {n.alert_id for n in run.notes}
        fired = next(n for n in run.notes if n.alert_id == "c1/raw/runway")
        assert fired.payload()["runway_text"] == "2 days 22 hours"

    def test_no_forecast_says_nothing(self) -> None:
        run = Run()
        run.cycle(T0, quota(50))
        assert "c1/raw/runway" not in run.states

    def test_pool_uses_procurement_windows(self) -> None:
        pool = TargetInput(cluster="c1", target="pool", path="/", is_pool=True, t=T0,
                           bytes=SeriesInput(used=10, limit=100, forecast_known=True,
                                             runway_p50_seconds=60 * 86400.0, runway_p90_seconds=40 * 86400.0))
        run = Run()
        run.cycle(T0, pool)
        assert run.of("c1/pool/runway") == [(Status.FIRING, Severity.WARNING)]
        assert "c1/pool/quota_state" not in run.states

    def test_runway_hysteresis(self) -> None:
        assert Severity.WARNING is runway_severity(73 * 3600, 72 * 3600, 24 * 3600, Severity.WARNING, 0.1)
        assert runway_severity(73 * 3600, 72 * 3600, 24 * 3600, None, 0.1) is None

    def test_beyond_a_horizon_shorter_than_the_window_keeps_the_pool_alert(self) -> None:
        """A 14-day forecast that no longer sees the pool fill says "at least 14 days": that does
        not clear a 30-day procurement window (it used to resolve, and re-fire one cycle later);
        a day without any forecast seeing it fill does."""
        def pool(t: float, runway_days: float | None) -> TargetInput:
            runway = None if runway_days is None else runway_days * 86400.0
            return TargetInput(cluster="c1", target="pool", path="/", is_pool=True, t=t,
                               bytes=SeriesInput(used=10, limit=100, forecast_known=True,
                                                 runway_p50_seconds=runway, runway_p90_seconds=runway,
                                                 horizon_seconds=14 * 86400.0))
        run = Run()
        for t, runway_days in ((T0, None), (T0 + 60, 13.5), (T0 + 120, None), (T0 + 180, 13.9),
                               (T0 + 240, None), (T0 + 180 + 86000, None)):
            run.cycle(t, pool(t, runway_days))
        assert run.of("c1/pool/runway") == [(Status.FIRING, Severity.CRITICAL)]  # beyond alone never fires
        assert run.states["c1/pool/runway"].summary == "pool bytes full in more than 14 days"
        run.cycle(T0 + 180 + 86400, pool(T0 + 180 + 86400, None))
        assert run.of("c1/pool/runway") == [(Status.FIRING, Severity.CRITICAL),
                                            (Status.RESOLVED, Severity.CRITICAL)]
        assert Severity.WARNING is runway_severity(None, 90 * 86400, 30 * 86400, Severity.CRITICAL, 0.1,
                                                   40 * 86400.0)
        assert runway_severity(None, 72 * 3600, 24 * 3600, Severity.CRITICAL, 0.1, 14 * 86400.0) is None


class TestQuotaStateGrowthCollectorDaemon:
    def test_quota_states(self) -> None:
        run = Run()
        run.cycle(T0, quota(10, state="SOFT_EXCEEDED"))
        run.cycle(T0 + 60, quota(10, state="HARD_EXCEEDED"))
        run.cycle(T0 + 120, quota(10, state="OK"))
        assert run.of("c1/raw/quota_state") == [(Status.FIRING, Severity.WARNING), (Status.FIRING, Severity.CRITICAL),
                (Status.RESOLVED, Severity.CRITICAL)]

    def test_growth_event_and_would_grow_and_blocked(self) -> None:
        run = Run()
        grown = GrowthInput("bytes", "grown", "runway", 2**40, 2 * 2**40)
        run.cycle(T0, quota(10, growth=(grown,)))
        [event] = [n for n in run.notes if n.alert_id == "c1/raw/growth"]
        assert event.event and Severity.INFO is event.severity and event.ended_at == T0
        run.cycle(T0 + 60, quota(10, growth=(GrowthInput("bytes", "would_grow", "p90 crosses"),)))
        run.cycle(T0 + 120, quota(10, growth=(GrowthInput("bytes", "would_grow", "p90 crosses"),)))
        run.cycle(T0 + 180, quota(10, growth=(GrowthInput("bytes", "blocked", "cluster_reserve: full"),)))
        run.cycle(T0 + 240, quota(10, growth=(GrowthInput("bytes", "none"),)))
        assert run.of("c1/raw/growth_would_grow") == \
            [(Status.FIRING, Severity.INFO), (Status.RESOLVED, Severity.INFO)]
        assert run.of("c1/raw/growth_blocked") == \
            [(Status.FIRING, Severity.CRITICAL), (Status.RESOLVED, Severity.CRITICAL)]

    def test_an_inode_growth_is_told_in_files(self) -> None:
        """An inode limit is a count of files: its growth and would-grow texts said "0.0 TiB"."""
        run = Run()
        grown = GrowthInput("inodes", "grown", "runway", 1_000_000, 1_500_000)
        run.cycle(T0, quota(10, growth=(grown,)))
        run.cycle(T0 + 60, quota(10, growth=(GrowthInput("inodes", "would_grow", "p90 crosses", 1_500_000,
                                                         2_000_000),)))
        [event] = [n for n in run.notes if n.alert_id == "c1/raw/growth_inodes"]
        [would] = [n for n in run.notes if n.alert_id == "c1/raw/growth_would_grow_inodes"]
        assert "from 1,000,000 files to 1,500,000 files" in event.summary
        assert "from 1,500,000 files to 2,000,000 files" in would.summary
        assert "TiB" not in event.summary + would.summary

    def test_verify_failed_latches_until_a_verified_growth(self) -> None:
        run = Run()
        run.cycle(T0, quota(10, growth=(GrowthInput("bytes", "failed", "read back 1 TiB"),)))
        run.cycle(T0 + 60, quota(10))
        run.cycle(T0 + 120, quota(10, growth=(GrowthInput("bytes", "grown", "ok", 1, 2),)))
        assert run.of("c1/raw/growth_failed") == \
            [(Status.FIRING, Severity.CRITICAL), (Status.RESOLVED, Severity.CRITICAL)]

    def test_collector_after_n_failed_polls(self) -> None:
        run = Run(RuleConfig(collector_failed_intervals=3))
        for i in range(2):
            run.cycle(T0 + 60 * i, poll_ok=False)
        assert run.of("c1/vms/collector") == []
        run.cycle(T0 + 120, poll_ok=False)
        run.cycle(T0 + 180, poll_ok=False)
        run.cycle(T0 + 240, quota(10))
        assert run.of("c1/vms/collector") == \
            [(Status.FIRING, Severity.CRITICAL), (Status.RESOLVED, Severity.CRITICAL)]

    def test_daemon_task_crash(self) -> None:
        states: dict[str, AlertState] = {}
        result = evaluate(states, task_conditions([TaskHealth("poll.c1", True, "boom")]), CONFIG, T0)
        assert [n.alert_id for n in result.notifications] == ["_daemon/poll.c1/daemon"]
        states.update(result.states)
        again = evaluate(states, task_conditions([TaskHealth("poll.c1", True, "boom")]), CONFIG, T0 + 1)
        assert again.notifications == ()

    def test_daemon_task_that_keeps_failing_says_so(self) -> None:
        """A task still running whose work keeps failing (the lease loop) is critical as a crash
        is, and its summary does not claim it crashed."""
        [condition] = task_conditions([TaskHealth("leases", True, "c2: boom", still_running=True)])
        assert (condition.severity, condition.summary) == (
            Severity.CRITICAL, "daemon task leases keeps failing: c2: boom")


class TestIngestAnomaly:
    """What one window (3 polls of 60 s) wrote against what the forecast expected for it."""

    RATE = 1e9  # bytes per second expected (p50); the band is ±20 %
    WINDOW = 180.0

    def feed(self, run: Run, t: float, used: float) -> None:
        expect = (t + self.WINDOW, used + 0.8 * self.RATE * self.WINDOW, used + 1.2 * self.RATE * self.WINDOW)
        run.cycle(t, quota(used, 1e15, t=t, expect=expect))

    def run_windows(self, run: Run, rates: list[float], t: float = T0,
                    used: float = 1e13) -> tuple[float, float]:
        """One poll per minute; each entry of `rates` is the write rate during one window."""
        for rate in rates:
            for _ in range(3):
                self.feed(run, t, used)
                t, used = t + 60, used + rate * 60
        return t, used

    def test_stall_fires_and_a_normal_window_resolves(self) -> None:
        run = Run(RuleConfig(anomaly_samples=3, anomaly_floor_bytes_per_second=0.0))
        self.feed(run, *self.run_windows(run, [self.RATE, 0.0]))
        assert run.of("c1/raw/ingest_anomaly") == [(Status.FIRING, Severity.WARNING)]
        assert "stall" in run.notes[-1].summary
        run2 = Run(RuleConfig(anomaly_samples=3, anomaly_floor_bytes_per_second=0.0))
        self.feed(run2, *self.run_windows(run2, [self.RATE, 0.0, self.RATE]))
        assert run2.of("c1/raw/ingest_anomaly") == [(Status.FIRING, Severity.WARNING),
                                                    (Status.RESOLVED, Severity.WARNING)]

    @pytest.mark.parametrize("state", ["GRACE_EXPIRED", "HARD_EXCEEDED"])
    def test_a_stall_of_a_quota_that_refuses_writes_says_so(self, state: str) -> None:
        """Growth-scenario review (2026-12-05): a quota VAST holds (its soft limit's grace expired,
        or its hard limit reached) stops taking writes, and the ingest rule paged "ingest stall" as
        if the feed had stopped — the on-call looked at the pipeline. The stall says the quota
        refuses writes, and why."""
        run = Run(RuleConfig(anomaly_samples=3, anomaly_floor_bytes_per_second=0.0))
        t, used = self.run_windows(run, [self.RATE, 0.0])
        expect = (t + self.WINDOW, used + 0.8 * self.RATE * self.WINDOW, used + 1.2 * self.RATE * self.WINDOW)
        run.cycle(t, quota(used, 1e15, t=t, expect=expect, state=state))
        assert run.of("c1/raw/ingest_anomaly") == [(Status.FIRING, Severity.WARNING)]
        assert f"the quota refuses writes ({state})" in run.notes[-1].summary, run.notes[-1].summary

    def test_within_the_margin_is_normal(self) -> None:
        run = Run(RuleConfig(anomaly_samples=3, anomaly_floor_bytes_per_second=0.0, anomaly_margin_ratio=1.0))
        # the band is 0.8–1.2 × RATE; margin 1.0 allows 0.4–2.4 × RATE
        self.feed(run, *self.run_windows(run, [0.45 * self.RATE, 2.3 * self.RATE, self.RATE]))
        assert run.of("c1/raw/ingest_anomaly") == []

    def test_a_spike_fires_and_deletes_say_nothing(self) -> None:
        run = Run(RuleConfig(anomaly_samples=3, anomaly_floor_bytes_per_second=0.0))
        t, used = self.run_windows(run, [-5 * self.RATE, -5 * self.RATE])  # a sweep: usage goes down
        assert run.of("c1/raw/ingest_anomaly") == []
        t, used = self.run_windows(run, [3 * self.RATE], t, used)
        self.feed(run, t, used)
        assert run.of("c1/raw/ingest_anomaly") == [(Status.FIRING, Severity.WARNING)]
        assert "spike" in run.notes[-1].summary


class TestQuietNoise:
    def test_runway_of_a_quota_quotapilot_grows_is_not_an_alert(self) -> None:
        run = Run()
        run.cycle(T0, quota(50, runway=10 * 3600))
        managed = TargetInput(cluster="c1", target="raw", path="/c1/raw", is_pool=False, t=T0 + 60,
                              bytes=SeriesInput(used=50, limit=100, forecast_known=True,
                                                runway_p50_seconds=3600.0, runway_p90_seconds=3600.0),
                              growth_managed=True)
        run.cycle(T0 + 60, managed)
        assert run.of("c1/raw/runway") == [(Status.FIRING, Severity.CRITICAL), (Status.RESOLVED, Severity.CRITICAL)]

    def test_pool_alerts_renotify_daily(self) -> None:
        def pool(t: float) -> TargetInput:
            return TargetInput(cluster="c1", target="pool", path="/", is_pool=True, t=t,
                               bytes=SeriesInput(used=10, limit=100, forecast_known=True,
                                                 runway_p50_seconds=10 * 86400.0, runway_p90_seconds=10 * 86400.0))
        run = Run()
        for hour in range(0, 49, 4):
            run.cycle(T0 + hour * 3600, pool(T0 + hour * 3600))
        assert [n.renotify for n in run.notes if n.alert_id == "c1/pool/runway"] == [False, True, True]


class TestUnconfirmedSamples:
    """A sample the collector has not confirmed yet (a target's first, or one whose hard limit moved
    without a write of ours) is VMS's word alone: what is computed from it — utilization, runway,
    quota state, ingest, what the planner made of it — neither fires nor resolves an alert; the
    next, confirmed sample does. What we did ourselves (a growth, a failed write) is said at once."""

    @staticmethod
    def unconfirmed(target: TargetInput) -> TargetInput:
        return replace(target, confirmed=False)

    def test_a_glitch_fires_nothing(self) -> None:
        run = Run()
        run.cycle(T0, quota(50))
        blocked = GrowthInput("bytes", "blocked", "external change: hard limit moved from 100 to 55")
        glitch = quota(50, 55, state="HARD_EXCEEDED", runway=0.0, inodes=SeriesInput(used=990, limit=1000),
                       growth=(blocked, GrowthInput("inodes", "would_grow", "p90 crosses")),
                       expect=(T0 + 120, 60.0, 61.0))
        assert run.cycle(T0 + 60, self.unconfirmed(glitch)) == []
        assert run.cycle(T0 + 120, self.unconfirmed(quota(50))) == []  # the truth, not confirmed yet
        assert run.cycle(T0 + 180, quota(50)) == []
        assert [a for a, s in run.states.items() if s.phase is not Phase.INACTIVE] == []

    def test_a_glitch_resolves_nothing(self) -> None:
        run = Run()
        run.cycle(T0, quota(95, runway=3600.0, state="SOFT_EXCEEDED"))
        firing = {"c1/raw/utilization", "c1/raw/runway", "c1/raw/quota_state"}
        assert firing == {n.alert_id for n in run.notes}
        assert run.cycle(T0 + 60, self.unconfirmed(quota(10, 1000, runway=None, known=True))) == []
        assert firing == {a for a, s in run.states.items() if s.phase is Phase.FIRING}
        resolved = run.cycle(T0 + 120, quota(10, 1000, runway=None, known=True))
        assert firing == {n.alert_id for n in resolved if n.status is Status.RESOLVED}

    def test_the_confirming_sample_fires(self) -> None:
        run = Run()
        assert run.cycle(T0, self.unconfirmed(quota(95))) == []
        assert run.of("c1/raw/utilization") == []
        run.cycle(T0 + 60, quota(95))
        assert run.of("c1/raw/utilization") == [(Status.FIRING, Severity.CRITICAL)]

    def test_the_pool_too(self) -> None:
        pool = TargetInput(cluster="c1", target="pool", path="/", is_pool=True, t=T0,
                           bytes=SeriesInput(used=95, limit=100, forecast_known=True,
                                             runway_p50_seconds=86400.0, runway_p90_seconds=86400.0))
        run = Run()
        assert run.cycle(T0, self.unconfirmed(pool)) == []
        run.cycle(T0 + 60, replace(pool, t=T0 + 60))
        assert {"c1/pool/utilization", "c1/pool/runway"} == {n.alert_id for n in run.notes}

    def test_what_we_did_is_said_at_once(self) -> None:
        run = Run()
        grown = GrowthInput("bytes", "grown", "runway", 2**40, 2 * 2**40)
        failed = GrowthInput("inodes", "failed", "read back 1000")
        run.cycle(T0, self.unconfirmed(quota(95, growth=(grown, failed))))
        assert {"c1/raw/growth", "c1/raw/growth_failed_inodes"} == {n.alert_id for n in run.notes}


# ------------------------------------------------------------------------------------ properties
def _utilization_run(values: Sequence[float], config: RuleConfig) -> list[Notification]:
    run = Run(config)
    for i, value in enumerate(values):
        run.cycle(T0 + 60 * i, quota(value * 100))
    return [n for n in run.notes if n.alert_id == "c1/raw/utilization"]


class TestProperties:
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.floats(min_value=0.0, max_value=1.2), min_size=1, max_size=60))
    def test_fire_and_resolve_alternate(self, values: list[float]) -> None:
        notes = _utilization_run(values, RuleConfig(renotify_seconds=0))
        firing = False
        for note in notes:
            if note.status is Status.RESOLVED:
                assert firing, "a resolve without a fire"
                firing = False
            else:
                firing = True
        sequences = [n.sequence for n in notes]
        assert sequences == sorted(set(sequences))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=2, max_size=60))
    def test_no_flapping_within_hysteresis(self, wiggles: list[float]) -> None:
        """A value that moves only within the hysteresis band around the warning threshold
        notifies at most once (the first crossing), never fire/resolve/fire."""
        config = RuleConfig(renotify_seconds=0, hysteresis_ratio=0.02)
        values = [0.80 + 0.0199 * w for w in wiggles]  # crosses 0.80, never leaves [0.78, 0.82]
        notes = _utilization_run(values, config)
        assert len(notes) <= 1
        assert all(n.status is Status.FIRING for n in notes)

    @settings(max_examples=100, deadline=None)
    @given(st.floats(min_value=0.0, max_value=1.5), st.sampled_from([*list(Severity), None]))
    def test_severity_is_monotonic_in_value(self, value: float, current: Severity | None) -> None:
        lower = utilization_severity(value, 0.8, 0.9, current, 0.02)
        higher = utilization_severity(value + 0.05, 0.8, 0.9, current, 0.02)
        def rank(severity: Severity | None) -> int:
            return -1 if severity is None else severity.rank

        assert rank(higher) >= rank(lower)


def _states(run: Run) -> Mapping[str, AlertState]:
    return run.states


def test_state_roundtrips_through_json() -> None:
    run = Run()
    run.cycle(T0, quota(95, expect=(T0 + 60, 100.0, 120.0)))
    run.cycle(T0 + 60, quota(95, expect=(T0 + 120, 100.0, 120.0)))
    for state in _states(run).values():
        assert state == AlertState.from_json(state.to_json())


def test_condition_event_without_severity_is_silent() -> None:
    cond = Condition(alert_id="c/t/growth", kind="growth", cluster="c", target="t", path="/",
                     severity=None, summary="", event=True)
    assert evaluate({}, [cond], CONFIG, T0).notifications == ()
