"""Amounts and durations as people read them, for reasons, alerts and the command line: bytes in
binary units, an inode limit as a count of files, seconds as '3d 4h'. Pure."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """Bytes in binary units, 3 significant digits: 1.50 TiB (never '1e+03 GiB': a value that
    rounds to 1000 or more of a unit is read in the next one)."""
    return _scaled(n, 1024, ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"))


def format_decimal_bytes(n: float) -> str:
    """Bytes in decimal units, as capacity is bought and priced (per TB): 300 GB, 1.2 TB, 8.7 PB."""
    return _scaled(n, 1000, ("B", "kB", "MB", "GB", "TB", "PB", "EB"))


def _scaled(n: float, base: int, units: tuple[str, ...]) -> str:
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < base:
        return f"{sign}{n:.0f} {units[0]}"
    for unit in units[1:]:
        n /= base
        if float(f"{n:.3g}") < 1000 or unit == units[-1]:
            return f"{sign}{n:.3g} {unit}" if n < 1000 else f"{sign}{n:.0f} {unit}"
    raise AssertionError("unreachable")


def format_limit(n: float, dimension: str) -> str:
    """A limit as people read it: bytes in binary units (`format_bytes`), an inode limit
    (`dimension` "inodes") as the count of files it is."""
    return f"{n:,.0f} files" if dimension == "inodes" else format_bytes(n)


def format_duration(seconds: float | None) -> str:
    """Seconds in words for humans: '3d 4h', '45m', '30s', 'never'."""
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
    return f"{minutes}m" if minutes else f"{int(seconds)}s"
