"""daemon/logs.py: the one log-on-transition helper."""

from __future__ import annotations

from structlog.testing import capture_logs

from quotapilot.daemon.logs import TransitionLog, get_logger


class TestTransitionLog:
    """One line when a key starts failing or fails differently, one when it recovers."""

    def test_logs_transitions_only(self) -> None:
        transitions = TransitionLog(get_logger("test"), "thing")
        with capture_logs() as logs:
            assert transitions.failed("a", "boom", cluster="a") is True
            assert transitions.failed("a", "boom", cluster="a") is False
            assert transitions.failed("a", "other", cluster="a") is True
            assert transitions.failing("a")
            assert transitions.failures("a") == 3
            assert transitions.ok("a", cluster="a") is True
            assert transitions.ok("a", cluster="a") is False
        events = [(e["event"], e.get("error"), e.get("failures")) for e in logs]
        assert events == [("thing.failed", "boom", None), ("thing.failed", "other", None),
                ("thing.recovered", None, 3)]

    def test_keys_are_independent_and_forget_is_silent(self) -> None:
        transitions = TransitionLog(get_logger("test"), "stage", failed_level="error")
        with capture_logs() as logs:
            transitions.failed(("growth", "c1"), "x")
            transitions.failed(("growth", "c2"), "x")
            transitions.forget(("growth", "c1"))
            transitions.ok(("growth", "c1"))
        assert [(e["event"], e["log_level"]) for e in logs] == [("stage.failed", "error"), ("stage.failed", "error")]
        assert not transitions.failing(("growth", "c1"))
        assert transitions.failing(("growth", "c2"))

    def test_event_names_and_one_line_per_outage_are_configurable(self) -> None:
        """The machines it replaced keep their event names (`metrics.collect_failed`) and, for a
        poller, one `failed` line per outage even when the error changes during it."""
        transitions = TransitionLog(get_logger("test"), "metrics", failed_event="metrics.collect_failed",
                                    recovered_event="metrics.collect_recovered", once_per_outage=True)
        with capture_logs() as logs:
            transitions.failed("m", "boom")
            transitions.failed("m", "other")
            transitions.ok("m")
        assert [(e["event"], e.get("error"), e.get("failures")) for e in logs] == [
            ("metrics.collect_failed", "boom", None), ("metrics.collect_recovered", None, 2)]
