"""Human units in config and on the command line: byte sizes ("1TiB", "500 TB") and durations
("90s", "24h", "7d", "2w"). Plain numbers are bytes / seconds."""

from __future__ import annotations

import math
import re

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


def format_bytes(n: float) -> str:
    """Bytes in binary units, 3 significant digits: 1.50 TiB."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_limit(n: float, dimension: str) -> str:
    """A limit as people read it: bytes in binary units (`format_bytes`), an inode limit
    (`dimension` "inodes") as the count of files it is."""
    return f"{n:,.0f} files" if dimension == "inodes" else format_bytes(n)


def format_duration(seconds: float | None) -> str:
    """Seconds in words for humans: '3d 4h', '45m', 'never'."""
    if seconds is None:
        return "never"
    if seconds < 0:
        return "now"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"
