"""Small pure formatters shared by the payload formats: times in ISO 8601, durations in words."""

from __future__ import annotations

import datetime as dt


def iso8601(t: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds, e.g. `2026-01-01T00:00:00.000Z`."""
    moment = dt.datetime.fromtimestamp(t, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))


def runway_in_words(seconds: float | None) -> str:
    """`2 days 4 hours`, `3 hours 20 minutes`, `under a minute`, `now`: the largest unit and the
    next one (when not zero)."""
    if seconds is None:
        return "beyond the forecast horizon"
    if seconds <= 0:
        return "now"
    whole = int(seconds)
    for index, (name, size) in enumerate(_UNITS):
        count = whole // size
        if count == 0:
            continue
        words = [_plural(count, name)]
        if index + 1 < len(_UNITS):
            next_name, next_size = _UNITS[index + 1]
            rest = (whole - count * size) // next_size
            if rest:
                words.append(_plural(rest, next_name))
        return " ".join(words)
    return "under a minute"


def _plural(count: int, name: str) -> str:
    return f"{count} {name}{'' if count == 1 else 's'}"
