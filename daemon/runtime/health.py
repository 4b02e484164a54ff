"""`/healthz` as a pure function of state: the clusters' poll health, supervised task crashes, the
store's reachability, the poll settings and the growth mode. No IO, no clock (`now` is passed in).

Healthy while every cluster's last successful poll is younger than `poll.stale_after_intervals`
intervals, no supervised task crashed or reports that it keeps failing (a fleet's lease loop whose
rounds fail) and the store answers (a fleet's PostgreSQL); otherwise unhealthy, with one reason
per problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quotapilot.daemon import __version__
from quotapilot.daemon.runtime.snapshot import PollHealth
from quotapilot.daemon.runtime.supervisor import TaskCrash
from quotapilot.daemon.settings import PollSettings

HealthReport = tuple[bool, dict[str, Any]]
"""(healthy, the JSON body of /healthz)."""


def health_report(polls: Mapping[str, PollHealth], crashes: Mapping[str, TaskCrash], poll: PollSettings, *,
                  now: float, mode: str | None, store_outage: str | None = None) -> HealthReport:
    """(healthy, report) for /healthz from each cluster's poll health, the crashed tasks (and those
    still running that keep failing: `TaskCrash.still_running`) and the store's outage (a fleet's
    PostgreSQL out of reach: no instance can lead, nothing is grown)."""
    bound = poll.stale_after_intervals * poll.interval_seconds
    reasons: list[str] = []
    clusters: dict[str, Any] = {}
    for name, state in polls.items():
        age = None if state.last_success_t is None else max(0.0, now - state.last_success_t)
        fresh = age is not None and age <= bound
        if age is None:
            reasons.append(f"{name}: no successful poll yet"
                           + (f" ({state.last_error})" if state.last_error else ""))
        elif not fresh:
            reasons.append(f"{name}: last successful poll {age:.0f}s ago (bound {bound:.0f}s)"
                           + (f": {state.last_error}" if state.last_error else ""))
        clusters[name] = {
            "ok": fresh, "last_success_age_seconds": None if age is None else round(age, 3),
            "consecutive_failures": state.consecutive_failures, "last_error": state.last_error,
        }
    for crash in crashes.values():
        reasons.append(f"task {crash.name} {'keeps failing' if crash.still_running else 'crashed'}: {crash.error}")
    if store_outage is not None:
        reasons.append(f"store: {store_outage}")
    report: dict[str, Any] = {
        "status": "ok" if not reasons else "unhealthy",
        "reasons": reasons,
        "clusters": clusters,
        "crashed_tasks": {name: crash.error for name, crash in crashes.items() if not crash.still_running},
        "failing_tasks": {name: crash.error for name, crash in crashes.items() if crash.still_running},
        "store": {"ok": store_outage is None, "error": store_outage},
        "version": __version__,
    }
    if mode is not None:
        report["mode"] = mode
    return not reasons, report
