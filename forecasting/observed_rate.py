"""Observed write rates of a target: the running sums the growth planner sizes with on a cold start.

Pure: plain `Observation`s in, rates per second out; no IO, no clock (time is the samples' own),
no import of `quotapilot.daemon`. The growth stage feeds it every accepted sample and asks it
for `write_rates` (the last day) and `latest_rates` (the last two samples) per target.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from quotapilot.forecasting.types import Dimension, Observation, TargetId


@dataclass(slots=True)
class _Window:
    """One target's samples over the window, with the running sums `UsageHistory` answers from.

    Each entry is (t, used_bytes, used_inodes, bytes_in, inodes_in): `*_in` is the increase since
    the previous entry. Samples closer than the resolution are merged into the last entry (its
    increases accumulate), so a 60 s poll keeps ~288 entries a day per target, not 1,440.
    """

    entries: deque[tuple[float, int, int | None, int, int]] = field(default_factory=deque)
    bytes_increase: int = 0
    inodes_increase: int = 0
    unknown_inodes: int = 0
    """Entries without an inode count: the inode rate is given only when every sample has one."""
    previous: tuple[float, int, int | None] | None = None
    """The sample before the latest (for `latest_rates`), whether or not it was merged."""


class UsageHistory:
    """The last day of samples per target: the observed rates the planner sizes with when there
    is no forecast yet (cold start), so a new quota is never left unprotected.

    O(1) per sample and per question (running sums), so a 10,000-quota cycle stays linear."""

    def __init__(self, window_seconds: float = 86400.0, resolution_seconds: float | None = None) -> None:
        self.window_seconds = window_seconds
        self.resolution_seconds = window_seconds / 288 if resolution_seconds is None else resolution_seconds
        self._windows: dict[TargetId, _Window] = {}

    def add(self, obs: Observation) -> None:
        window = self._windows.get(obs.target)
        if window is None:
            window = self._windows[obs.target] = _Window()
        entries = window.entries
        if entries and obs.t <= entries[-1][0]:
            return
        if not entries:
            entries.append((obs.t, obs.used_bytes, obs.used_inodes, 0, 0))
            window.unknown_inodes += obs.used_inodes is None
            return
        last_t, last_b, last_i, last_b_in, last_i_in = entries[-1]
        window.previous = (last_t, last_b, last_i)
        grew_b = max(0, obs.used_bytes - last_b)
        grew_i = max(0, obs.used_inodes - last_i) if obs.used_inodes is not None and last_i is not None else 0
        window.bytes_increase += grew_b
        window.inodes_increase += grew_i
        if len(entries) >= 2 and last_t - entries[-2][0] < self.resolution_seconds:
            entries.pop()  # merged: the new sample replaces the last entry, increases accumulate
            window.unknown_inodes -= last_i is None
            entries.append((obs.t, obs.used_bytes, obs.used_inodes, last_b_in + grew_b, last_i_in + grew_i))
        else:
            entries.append((obs.t, obs.used_bytes, obs.used_inodes, grew_b, grew_i))
        window.unknown_inodes += obs.used_inodes is None
        while entries[0][0] < obs.t - self.window_seconds:
            gone = entries.popleft()
            window.unknown_inodes -= gone[2] is None
            t, b, i, b_in, i_in = entries[0]  # now the first: its increase came from a sample gone
            window.bytes_increase -= b_in
            window.inodes_increase -= i_in
            entries[0] = (t, b, i, 0, 0)

    def write_rates(self, target: TargetId) -> dict[Dimension, float]:
        """Sum of the increases over the window, per second of the window (deletes ignored)."""
        window = self._windows.get(target)
        if window is None or len(window.entries) < 2:
            return {}
        span = window.entries[-1][0] - window.entries[0][0]
        rates = {Dimension.BYTES: window.bytes_increase / span}
        if window.unknown_inodes == 0:
            rates[Dimension.INODES] = window.inodes_increase / span
        return rates

    def latest_rates(self, target: TargetId) -> dict[Dimension, float]:
        """Increase per second between the last two samples."""
        window = self._windows.get(target)
        if window is None or window.previous is None or not window.entries:
            return {}
        (t0, b0, i0), (t1, b1, i1) = window.previous, window.entries[-1][:3]
        rates = {Dimension.BYTES: max(0.0, (b1 - b0) / (t1 - t0))}
        if i0 is not None and i1 is not None:
            rates[Dimension.INODES] = max(0.0, (i1 - i0) / (t1 - t0))
        return rates

    def forget(self, target: TargetId) -> None:
        """Drop a removed target's window (its samples no longer matter; memory stays bounded)."""
        self._windows.pop(target, None)
