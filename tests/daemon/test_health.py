"""runtime/health.py: /healthz as a pure function of poll health, crashed tasks and settings."""

from __future__ import annotations

from quotapilot.daemon.runtime.health import health_report
from quotapilot.daemon.runtime.snapshot import PollHealth
from quotapilot.daemon.runtime.supervisor import TaskCrash
from quotapilot.daemon.settings import PollSettings

POLL = PollSettings(interval_seconds=60, stale_after_intervals=3)


class TestHealthReport:
    def test_fresh_polls_and_no_crash_are_healthy(self) -> None:
        healthy, report = health_report({"c1": PollHealth(last_success_t=1000.0, polls=1)}, {}, POLL,
                                        now=1100.0, mode="observe")
        assert (healthy, report["status"], report["reasons"], report["mode"]) == (True, "ok", [], "observe")
        assert report["clusters"]["c1"] == {"ok": True, "last_success_age_seconds": 100.0,
                                            "consecutive_failures": 0, "last_error": None}

    def test_stale_never_polled_and_crashed_each_give_a_reason(self) -> None:
        polls = {"old": PollHealth(last_success_t=1000.0, last_error="timeout", consecutive_failures=4),
                 "new": PollHealth(last_error="connection refused")}
        crashes = {"alerts": TaskCrash("alerts", "RuntimeError: boom", 1200.0)}
        healthy, report = health_report(polls, crashes, POLL, now=1200.0, mode=None)
        assert not healthy and report["status"] == "unhealthy"
        assert report["reasons"] == ["old: last successful poll 200s ago (bound 180s): timeout",
                                     "new: no successful poll yet (connection refused)",
                                     "task alerts crashed: RuntimeError: boom"]
        assert report["crashed_tasks"] == {"alerts": "RuntimeError: boom"}
        assert "mode" not in report

    def test_a_task_that_keeps_failing_is_unhealthy_and_listed_apart_from_crashes(self) -> None:
        """Guards the running-but-failing task (a fleet's lease loop whose rounds fail: it retries,
        so it never crashes): unhealthy with its own reason, under `failing_tasks`."""
        polls = {"c1": PollHealth(last_success_t=1000.0, polls=1)}
        crashes = {"leases": TaskCrash("leases", "c2: RuntimeError: boom", 1000.0, still_running=True)}
        healthy, report = health_report(polls, crashes, POLL, now=1010.0, mode=None)
        assert (healthy, report["reasons"]) == (False, ["task leases keeps failing: c2: RuntimeError: boom"])
        assert (report["crashed_tasks"], report["failing_tasks"]) == ({}, {"leases": "c2: RuntimeError: boom"})

    def test_store_out_of_reach_is_unhealthy_with_its_error(self) -> None:
        """A fleet's PostgreSQL down: polls are fresh, but no instance can lead or grow anything."""
        polls = {"c1": PollHealth(last_success_t=1000.0, polls=1)}
        healthy, report = health_report(polls, {}, POLL, now=1010.0, mode="enforce",
                                        store_outage="PostgreSQL at postgresql://db/qp unavailable: refused")
        assert (healthy, report["status"]) == (False, "unhealthy")
        assert report["reasons"] == ["store: PostgreSQL at postgresql://db/qp unavailable: refused"]
        assert report["store"] == {"ok": False, "error": "PostgreSQL at postgresql://db/qp unavailable: refused"}
        assert health_report(polls, {}, POLL, now=1010.0, mode=None)[1]["store"] == {"ok": True, "error": None}
