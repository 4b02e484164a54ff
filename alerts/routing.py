"""Which sinks get a notification, and when: routes by severity and target glob, quiet windows.

Pure. A notification goes to the union of the sinks of every route that matches it (a route with
no sinks means every sink). With no routes at all, everything goes everywhere. A quiet window of a
route holds that route's non-critical notifications until the window ends (they are delivered
then, not dropped); resolves of critical alerts are critical too, so they are never held.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from quotapilot.alerts.model import Notification, Severity

DAY_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class QuietWindow:
    """A daily UTC window, in minutes after midnight; `end < start` wraps past midnight."""

    start_minute: int
    end_minute: int

    @classmethod
    def parse(cls, start: str, end: str) -> QuietWindow:
        def minutes(text: str) -> int:
            hours, mins = text.split(":")
            return int(hours) * 60 + int(mins)

        return cls(minutes(start), minutes(end))

    def end_if_inside(self, t: float) -> float | None:
        """When the window containing `t` ends, or None if `t` is outside every day's window."""
        day_start = t - (t % DAY_SECONDS)
        minute = (t - day_start) / 60.0
        start, end = self.start_minute, self.end_minute
        if start == end:
            return None
        if start < end:
            return day_start + end * 60.0 if start <= minute < end else None
        if minute >= start:
            return day_start + DAY_SECONDS + end * 60.0
        if minute < end:
            return day_start + end * 60.0
        return None


@dataclass(frozen=True, slots=True)
class Route:
    match: str = "*"
    min_severity: Severity = Severity.INFO
    sinks: tuple[str, ...] = ()
    quiet: tuple[QuietWindow, ...] = ()

    def matches(self, note: Notification) -> bool:
        if note.severity.rank < self.min_severity.rank:
            return False
        return any(fnmatch.fnmatchcase(candidate, self.match)
                   for candidate in (note.target, note.path, f"{note.cluster}/{note.target}"))


def route(note: Notification, routes: Sequence[Route], sink_names: Sequence[str],
          now: float) -> dict[str, float]:
    """Sink name → earliest delivery time (now, or the end of a quiet window)."""
    if not routes:
        return dict.fromkeys(sink_names, now)
    out: dict[str, float] = {}
    for candidate in routes:
        if not candidate.matches(note):
            continue
        not_before = now
        if note.severity is not Severity.CRITICAL:
            for window in candidate.quiet:
                end = window.end_if_inside(now)
                if end is not None:
                    not_before = max(not_before, end)
        for sink in candidate.sinks or sink_names:
            if sink in sink_names:
                out[sink] = min(out.get(sink, not_before), not_before)
    return out
