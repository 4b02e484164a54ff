"""Human units in config and on the command line: byte sizes ("1TiB", "500 TB") and durations
("90s", "24h", "7d", "2w"). Plain numbers are bytes / seconds."""

from __future__ import annotations

import math
import re

from quotapilot.forecasting.words import format_bytes, format_duration, format_limit

__all__ = ["format_bytes", "format_duration", "format_limit", "parse_bytes", "parse_duration"]

_BYTE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15, "eb": 10**18,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50, "eib": 2**60,
}
_DURATION_UNITS: dict[str, float] = {
    "": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0,
}
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: object) -> int:
    """`1099511627776`, `"1TiB"`, `"1.5 TB"` → bytes. Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError("a byte size must be a number or a string like '10TiB'")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _whole_bytes(value, value)
    if not isinstance(value, str):
        raise ValueError("a byte size must be a number or a string like '10TiB'")
    match = _NUMBER_UNIT.match(value)
    if not match or match.group(2).lower() not in _BYTE_UNITS:
        raise ValueError(f"not a byte size: {value!r} (e.g. 1099511627776, '10TiB', '500TB')")
    return _whole_bytes(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()], value)


def _whole_bytes(n: float, given: object) -> int:
    if not math.isfinite(n):
        raise ValueError(f"not a finite byte size: {given!r}")
    return int(n)


def parse_duration(value: object) -> float:
    """`3600`, `"1h"`, `"7d"` → seconds. Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '24h'")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError("a duration must be a number of seconds or a string like '24h'")
    match = _NUMBER_UNIT.match(value)
    if not match or match.group(2).lower() not in _DURATION_UNITS:
        raise ValueError(f"not a duration: {value!r} (e.g. 90, '15m', '24h', '7d')")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
